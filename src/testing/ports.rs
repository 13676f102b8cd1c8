//! Free TCP ports on 127.0.0.1 for test servers, never the same one twice in a process.
//!
//! Ports come from below the kernel's ephemeral range: a port picked by binding port 0 can be
//! taken as the source port of any outgoing connection before etcd binds it, which made
//! clusters fail with "address already in use". Below that range only explicit binds compete,
//! and each candidate is checked by binding it. Other processes can still race us between the
//! check and etcd's bind; `TestCluster` retries a start that hits that.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// Lowest port handed out; below are well-known and commonly configured service ports.
const LOWEST: u16 = 15000;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that was free when checked and that this process has not handed out
/// before. Nothing holds it: bind it soon.
///
/// # Errors
/// When every candidate is taken.
pub fn free_port() -> io::Result<u16> {
    let (low, high) = candidate_range();
    let span = u32::from(high - low) + 1;
    // A random start keeps concurrent test processes apart.
    let start = (RandomState::new().hash_one(std::process::id()) % u64::from(span)) as u32;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    let handed_out = handed_out.get_or_insert_with(HashSet::new);
    for k in 0..span {
        let port = low + ((start + k) % span) as u16;
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        "every candidate port on 127.0.0.1 is taken or already handed out",
    ))
}

/// Ports from [`LOWEST`] up to just below the ephemeral range (`ip_local_port_range`).
fn candidate_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    if ephemeral_low > LOWEST + 1000 {
        (LOWEST, ephemeral_low - 1)
    } else {
        // An unusual ephemeral range: fall back to the registered range above it.
        (LOWEST, u16::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_bindable() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for port in ports {
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        }
    }

    #[test]
    fn ports_avoid_the_ephemeral_range() {
        let (_, high) = candidate_range();
        assert!((LOWEST..=high).contains(&free_port().unwrap()));
    }
}
