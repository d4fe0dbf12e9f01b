//! Printing errors: an error and its sources on one line, joined by ": ",
//! the way `main` prints them. At the bottom of the crate so that every
//! layer (the mount server, the namespace probe, the registry client, the
//! run) prints chains the same way without importing a higher one.

use std::error::Error;

/// The whole chain of an error on one line, as `main` prints it.
pub fn error_chain(err: &dyn Error) -> String {
    join_sources(err, false)
}

/// [`error_chain`], leaving out a source whose text the line already holds
/// (HTTP and TLS clients repeat their cause in their own message).
pub fn error_chain_deduplicated(err: &dyn Error) -> String {
    join_sources(err, true)
}

fn join_sources(err: &dyn Error, skip_repeats: bool) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !(skip_repeats && text.contains(&more)) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer step failed")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("request failed: timed out")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn chains_join_every_source() {
        let err = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(error_chain(&err), "outer step failed: disk on fire");
        assert_eq!(
            error_chain_deduplicated(&err),
            "outer step failed: disk on fire"
        );
    }

    #[test]
    fn deduplicated_chains_skip_repeated_sources() {
        let err = Repeats(std::io::Error::other("timed out"));
        assert_eq!(error_chain(&err), "request failed: timed out: timed out");
        assert_eq!(error_chain_deduplicated(&err), "request failed: timed out");
    }
}
