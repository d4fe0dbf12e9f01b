//! What the `cairn build` tests share.

/// (ran, from the cache) of a build's summary line ("7 steps: 6 ran, 0
/// from the cache; ...").
pub fn ran_and_cached(stderr: &str) -> (usize, usize) {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.contains(" ran, "))
        .unwrap_or_else(|| panic!("no summary line in:\n{stderr}"));
    let count = |after: &str| -> usize {
        let end = line.find(after).expect("field");
        line[..end]
            .rsplit(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("a count before {after:?} in {line:?}"))
    };
    (count(" ran"), count(" from the cache"))
}
