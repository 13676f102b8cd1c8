//! Parsing of the Kubernetes quantities and durations the specs accept (`10Gi`, `7d`), so
//! both runtimes read them the same way and validation can reject bad ones early.

use std::time::Duration;

use thiserror::Error;

/// A quantity or duration that could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not a number followed by a known suffix.
    #[error("{0:?} is not a quantity like 8Gi, 500M or 1024")]
    Quantity(String),
    /// Not a number followed by s, m, h, d or w.
    #[error("{0:?} is not a duration like 90s, 30m, 12h, 7d or 2w")]
    Duration(String),
}

/// Reads a byte quantity in Kubernetes notation (binary `Ki..Ei`, decimal `k..E`, or plain).
pub fn parse_bytes(s: &str) -> Result<u64, ParseError> {
    let err = || ParseError::Quantity(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let mult: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(err()),
    };
    n.checked_mul(mult).ok_or_else(err)
}

/// Reads a duration such as `90s`, `30m`, `12h`, `7d` or `2w` (one unit).
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let err = || ParseError::Duration(s.to_string());
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(err()),
    };
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_accept_binary_decimal_and_plain() {
        assert_eq!(parse_bytes("8Gi"), Ok(8 << 30));
        assert_eq!(parse_bytes("500M"), Ok(500_000_000));
        assert_eq!(parse_bytes("1024"), Ok(1024));
    }

    #[test]
    fn bytes_reject_garbage_and_overflow() {
        assert!(parse_bytes("8GB").is_err());
        assert!(parse_bytes("").is_err());
        assert!(parse_bytes("-1Gi").is_err());
        assert!(parse_bytes("99999999999Ei").is_err());
    }

    #[test]
    fn durations_read_one_unit() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("7").is_err());
        assert!(parse_duration("1h30m").is_err());
        assert!(parse_duration("d").is_err());
    }
}
