//! One line for an error and its causes, for Events, status messages and logs that have no
//! room for a source chain.

/// `e: cause: cause...`, skipping a cause that repeats the text before it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Cuts `message` to at most `max_bytes` bytes, at a character boundary (Events and status
/// messages have byte limits). True when something was cut.
pub fn truncate_message(message: &mut String, max_bytes: usize) -> bool {
    if message.len() <= max_bytes {
        return false;
    }
    let mut end = max_bytes;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let mut m = "ab€".to_string(); // € is 3 bytes: 5 bytes in all
        assert!(truncate_message(&mut m, 3));
        assert_eq!(m, "ab");
        let mut short = "abc".to_string();
        assert!(!truncate_message(&mut short, 3));
        assert_eq!(short, "abc");
    }

    #[test]
    fn the_error_chain_names_the_cause() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }

    #[test]
    fn a_cause_that_repeats_the_text_before_it_is_skipped() {
        #[derive(Debug, thiserror::Error)]
        #[error("reading: inner")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "reading: inner");
    }
}
