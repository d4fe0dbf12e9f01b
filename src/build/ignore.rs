//! `.dockerignore`: which paths of the build context are left out, by the
//! rules of moby/patternmatcher (`ignorefile.ReadAll` to read the file,
//! `MatchesOrParentMatches` to match) and BuildKit's fsutil (when a
//! matching directory must still be walked for its `!` exceptions).
//!
//! The file is read line by line: a line starting with `#` is a comment
//! (only in the first column, as in Docker), surrounding whitespace is
//! trimmed, a leading `!` makes an exception, the rest is cleaned like Go's
//! `filepath.Clean` and loses one leading `/`. A pattern matches a path or
//! any of its parents, so `dir` leaves out everything below `dir`; the last
//! pattern that matches decides.
//!
//! Pattern syntax: `*` (any run without `/`), `?` (one character but `/`),
//! `**` (any number of directories, including none), `[...]` classes
//! (`^` negates, `a-z` ranges, `\` escapes), `\` escaping any character.
//! Pure: paths in, booleans out; the context walk is the caller's.

/// Why a `.dockerignore` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IgnoreError {
    #[error(".dockerignore:{line}: illegal exclusion pattern: \"!\"")]
    LoneExclamation { line: usize },
    #[error(".dockerignore:{line}: syntax error in pattern {pattern:?}")]
    BadPattern { line: usize, pattern: String },
}

/// A parsed `.dockerignore`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ignore {
    patterns: Vec<Pattern>,
}

#[derive(Debug, Clone, PartialEq)]
struct Pattern {
    /// The cleaned text, without its `!`.
    text: String,
    exception: bool,
    kind: Kind,
}

/// patternmatcher's four match types: literal patterns compare strings,
/// which differs from the general matcher for `**` at either end.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Exact,
    /// `prefix**`: any path starting with the prefix (even mid-name).
    Prefix(String),
    /// `**suffix` with no other wildcard: the path ends with the suffix.
    Suffix(String),
    Glob(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Literal(char),
    /// `?`
    One,
    /// `*`
    Run,
    /// `**` followed by more pattern: `(.*/)?`
    Dirs,
    /// `**` at the end: `.*`
    Rest,
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Ignore {
    /// Read a `.dockerignore`'s text.
    pub fn parse(text: &str) -> Result<Ignore, IgnoreError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut patterns = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            if line.starts_with('#') {
                continue;
            }
            let mut pattern = line.trim();
            if pattern.is_empty() {
                continue;
            }
            let exception = pattern.starts_with('!');
            if exception {
                pattern = pattern[1..].trim();
                if pattern.is_empty() {
                    return Err(IgnoreError::LoneExclamation { line: number });
                }
            }
            let mut cleaned = clean(pattern);
            if cleaned.len() > 1 && cleaned.starts_with('/') {
                cleaned.remove(0);
            }
            let kind = compile(&cleaned).ok_or_else(|| IgnoreError::BadPattern {
                line: number,
                pattern: line.trim().into(),
            })?;
            patterns.push(Pattern {
                text: cleaned,
                exception,
                kind,
            });
        }
        Ok(Ignore { patterns })
    }

    /// Whether `rel` ('/'-separated, relative to the context) is left out.
    /// The context itself (`""`, `"."`) never is.
    pub fn matches(&self, rel: &str) -> bool {
        let path = clean(rel);
        let path = path.strip_prefix('/').unwrap_or(&path);
        if path.is_empty() || path == "." {
            return false;
        }
        let parents: Vec<&str> = path.match_indices('/').map(|(i, _)| &path[..i]).collect();
        let mut matched = false;
        for pattern in &self.patterns {
            // Only a pattern that could change the answer is tried.
            if pattern.exception != matched {
                continue;
            }
            if pattern.matches(path) || parents.iter().any(|p| pattern.matches(p)) {
                matched = !pattern.exception;
            }
        }
        matched
    }

    /// Whether a directory that [`matches`](Self::matches) must still be
    /// walked, because an exception could bring back something below it.
    /// fsutil's rule: yes if an exception has a wildcard before its
    /// trailing `/*` or `/**` (it might match anywhere), or if it names a
    /// path inside `dir_rel`.
    pub fn may_contain_exceptions(&self, dir_rel: &str) -> bool {
        let dir = clean(dir_rel);
        let dir = dir.strip_prefix('/').unwrap_or(&dir);
        let dir_slash = format!("{dir}/");
        let exceptions = self.patterns.iter().filter(|p| p.exception);
        let mut any = false;
        for pattern in exceptions.clone() {
            any = true;
            if without_trailing_glob(&pattern.text).contains(['*', '[', ']', '?', '^', '\\']) {
                return true;
            }
        }
        any && exceptions
            .map(|p| format!("{}/", without_trailing_glob(&p.text)))
            .any(|p| p.starts_with(&dir_slash))
    }
}

fn without_trailing_glob(pattern: &str) -> &str {
    let p = pattern.strip_suffix("/**").unwrap_or(pattern);
    p.strip_suffix("/*").unwrap_or(p)
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        match &self.kind {
            Kind::Exact => path == self.text,
            Kind::Prefix(prefix) => path.starts_with(prefix.as_str()),
            Kind::Suffix(suffix) => {
                path.ends_with(suffix.as_str())
                    || suffix.strip_prefix('/').is_some_and(|s| path == s)
            }
            Kind::Glob(tokens) => glob_matches(tokens, path),
        }
    }
}

/// Go's `filepath.Clean` for '/'-separated paths.
fn clean(path: &str) -> String {
    if path.is_empty() {
        return ".".into();
    }
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let joined = parts.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// patternmatcher's `compile`, with `filepath.Match`'s syntax check first
/// (None: a bad pattern).
fn compile(pattern: &str) -> Option<Kind> {
    check_syntax(pattern)?;
    let chars: Vec<char> = pattern.chars().collect();
    let mut tokens = Vec::new();
    let mut kind = Detected::Exact;
    let mut i = 0;
    while i < chars.len() {
        let start = i;
        let c = chars[i];
        i += 1;
        match c {
            '*' if chars.get(i) == Some(&'*') => {
                i += 1;
                if chars.get(i) == Some(&'/') {
                    i += 1;
                }
                if i == chars.len() {
                    kind = match kind {
                        Detected::Exact => Detected::Prefix,
                        _ => Detected::Glob,
                    };
                    tokens.push(Token::Rest);
                } else {
                    kind = Detected::Glob;
                    tokens.push(Token::Dirs);
                }
                if start == 0 {
                    kind = Detected::Suffix;
                }
            }
            '*' => {
                kind = Detected::Glob;
                tokens.push(Token::Run);
            }
            '?' => {
                kind = Detected::Glob;
                tokens.push(Token::One);
            }
            '\\' => match chars.get(i) {
                Some(&e) => {
                    i += 1;
                    kind = Detected::Glob;
                    tokens.push(Token::Literal(e));
                }
                None => tokens.push(Token::Literal('\\')),
            },
            '[' => {
                kind = Detected::Glob;
                let (token, next) = class(&chars, i)?;
                tokens.push(token);
                i = next;
            }
            c => tokens.push(Token::Literal(c)),
        }
    }
    Some(match kind {
        Detected::Exact => Kind::Exact,
        Detected::Prefix => Kind::Prefix(pattern.strip_suffix("**").unwrap_or(pattern).into()),
        Detected::Suffix => Kind::Suffix(pattern.get(2..).unwrap_or("").into()),
        Detected::Glob => Kind::Glob(tokens),
    })
}

/// patternmatcher's `detectedType` while it reads a pattern: a later
/// wildcard turns any of the others into `Glob`, a leading `**` makes
/// `Suffix` (which a later wildcard still overrides).
#[derive(Clone, Copy)]
enum Detected {
    Exact,
    Prefix,
    Suffix,
    Glob,
}

/// A `[...]` class starting after its `[`; returns the token and the index
/// after its `]`.
fn class(chars: &[char], mut i: usize) -> Option<(Token, usize)> {
    let negated = chars.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    loop {
        match chars.get(i) {
            None => return None,
            Some(']') if !ranges.is_empty() => {
                return Some((Token::Class { negated, ranges }, i + 1));
            }
            _ => {}
        }
        let (lo, next) = class_char(chars, i)?;
        i = next;
        let mut hi = lo;
        if chars.get(i) == Some(&'-') {
            let (h, next) = class_char(chars, i + 1)?;
            // Go's regexp refuses `[z-a]` when the pattern is first used.
            if h < lo {
                return None;
            }
            hi = h;
            i = next;
        }
        ranges.push((lo, hi));
    }
}

/// One character of a class, `\` escapes included; `-` and `]` must be
/// escaped, as `filepath.Match` requires.
fn class_char(chars: &[char], i: usize) -> Option<(char, usize)> {
    match chars.get(i)? {
        '-' | ']' => None,
        '\\' => chars.get(i + 1).map(|&c| (c, i + 2)),
        &c => Some((c, i + 1)),
    }
}

/// `filepath.Match`'s errors: a trailing `\`, or a malformed class.
fn check_syntax(pattern: &str) -> Option<()> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                chars.get(i + 1)?;
                i += 2;
            }
            '[' => i = class(&chars, i + 1)?.1,
            _ => i += 1,
        }
    }
    Some(())
}

/// Anchored match of the whole path, as a set of reachable positions per
/// token: linear in the path per token, whatever the pattern.
fn glob_matches(tokens: &[Token], path: &str) -> bool {
    let text: Vec<char> = path.chars().collect();
    let n = text.len();
    let mut cur = vec![false; n + 1];
    cur[0] = true;
    for token in tokens {
        let mut next = vec![false; n + 1];
        match token {
            Token::Literal(c) => step(&cur, &mut next, |i| text[i] == *c),
            Token::One => step(&cur, &mut next, |i| text[i] != '/'),
            Token::Class { negated, ranges } => step(&cur, &mut next, |i| {
                let c = text[i];
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }),
            Token::Run => {
                let mut live = false;
                for i in 0..=n {
                    live |= cur[i];
                    next[i] = live;
                    if i < n && text[i] == '/' {
                        live = false;
                    }
                }
            }
            Token::Dirs => {
                // Empty, or anything ending with '/'.
                let mut live = false;
                for i in 0..=n {
                    next[i] = cur[i] || (live && i > 0 && text[i - 1] == '/');
                    live |= cur[i];
                }
            }
            Token::Rest => {
                let mut live = false;
                for i in 0..=n {
                    live |= cur[i];
                    next[i] = live;
                }
            }
        }
        cur = next;
    }
    cur[n]
}

fn step(cur: &[bool], next: &mut [bool], accepts: impl Fn(usize) -> bool) {
    for i in 0..cur.len().saturating_sub(1) {
        if cur[i] && accepts(i) {
            next[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ignore(text: &str) -> Ignore {
        Ignore::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn double_star_any_depth() {
        let i = ignore("**/*.go");
        assert!(i.matches("main.go"));
        assert!(i.matches("a/b/c.go"));
        assert!(!i.matches("a/b/c.rs"));
        assert!(!i.matches("a/go"));
        let i = ignore("docs/**/secret");
        assert!(i.matches("docs/secret"));
        assert!(i.matches("docs/a/b/secret"));
        assert!(i.matches("docs/a/secret/file"));
        assert!(!i.matches("docs/a/notsecret"));
        assert!(!i.matches("other/secret"));
        let i = ignore("**/node_modules");
        assert!(i.matches("node_modules/x"));
        assert!(i.matches("a/node_modules"));
        assert!(!i.matches("a/xnode_modules"));
        let i = ignore("build/**");
        assert!(i.matches("build/x/y"));
        assert!(!i.matches("buil"));
    }

    #[test]
    fn exception_after_pattern_wins() {
        let i = ignore("*.txt\n!keep.txt\n");
        assert!(i.matches("a.txt"));
        assert!(!i.matches("keep.txt"));
        assert!(!i.matches("dir/a.txt"), "* does not cross '/'");
        let i = ignore("!keep.txt\n*.txt\n");
        assert!(i.matches("keep.txt"), "the last matching pattern wins");
    }

    #[test]
    fn directories_and_parents() {
        for text in ["dir", "dir/", "/dir", "./dir", "dir/./"] {
            let i = ignore(text);
            assert!(i.matches("dir"), "{text}");
            assert!(i.matches("dir/sub/file"), "{text}");
            assert!(!i.matches("dirx"), "{text}");
            assert!(!i.matches("other/dir"), "{text}");
        }
        let i = ignore("/abs/file");
        assert!(i.matches("abs/file"));
        assert!(!i.matches("x/abs/file"));
    }

    #[test]
    fn comments_blank_lines_and_whitespace() {
        let i = ignore("# comment\n\n   \n  spaced  \n #notcomment\n");
        assert!(i.matches("spaced"));
        assert!(i.matches("#notcomment"));
        assert!(!i.matches("# comment"));
        assert!(!i.matches("anything"));
    }

    #[test]
    fn classes_and_escapes() {
        let i = ignore("file[0-9].txt\n[^a]x\n");
        assert!(i.matches("file3.txt"));
        assert!(!i.matches("filea.txt"));
        assert!(i.matches("bx"));
        assert!(!i.matches("ax"));
        let i = ignore(r"star\*");
        assert!(i.matches("star*"));
        assert!(!i.matches("starx"));
        assert!(ignore("a?c").matches("abc"));
        assert!(!ignore("a?c").matches("a/c"));
    }

    #[test]
    fn bad_patterns() {
        assert_eq!(
            Ignore::parse("ok\n!\n"),
            Err(IgnoreError::LoneExclamation { line: 2 })
        );
        assert!(matches!(
            Ignore::parse("[a"),
            Err(IgnoreError::BadPattern { line: 1, .. })
        ));
        assert!(Ignore::parse("[]").is_err());
        assert!(Ignore::parse("[z-a]").is_err());
        assert!(Ignore::parse(r"x\").is_err());
    }

    #[test]
    fn context_root_never_matches() {
        let i = ignore("*\n**\n.\n");
        assert!(!i.matches(""));
        assert!(!i.matches("."));
        assert!(i.matches("x"));
    }

    #[test]
    fn walking_into_matched_directories() {
        let i = ignore("docs\n!docs/keep.md\n");
        assert!(i.matches("docs/other"));
        assert!(!i.matches("docs/keep.md"));
        assert!(i.may_contain_exceptions("docs"));
        assert!(!i.may_contain_exceptions("src"));
        assert!(!ignore("docs\n").may_contain_exceptions("docs"));
        // A wildcard in an exception could match anywhere.
        assert!(ignore("*\n!**/*.md\n").may_contain_exceptions("anything"));
        // A trailing /** does not count as a wildcard.
        assert!(ignore("*\n!a/b/**\n").may_contain_exceptions("a"));
        assert!(!ignore("*\n!a/b/**\n").may_contain_exceptions("c"));
    }

    #[test]
    fn clean_like_go() {
        assert_eq!(clean(""), ".");
        assert_eq!(clean("a//b/./c/.."), "a/b");
        assert_eq!(clean("/../a"), "/a");
        assert_eq!(clean("../../a"), "../../a");
        assert_eq!(clean("a/../.."), "..");
        assert_eq!(clean("/"), "/");
    }
}
