//! Dockerfile variable substitution: the words of ENV, LABEL, ARG, COPY,
//! WORKDIR, ... go through one lexer that removes quotes, applies escapes
//! and expands `$VAR` / `${VAR...}` in a single pass, as BuildKit's
//! `frontend/dockerfile/shell/lex.go` does. The rules below follow that
//! lexer, not POSIX sh, wherever the two differ:
//!
//! - an unset variable expands to nothing; `$` before a character that
//!   cannot start a name stays a literal `$`;
//! - `$@`, `$*`, `$#`, `$?`, `$-`, `$$`, `$!` and `$0` are names that are
//!   never set (so they expand to nothing), and `$12` is the name `12`;
//! - inside double quotes the escape character only escapes `"`, `$` and
//!   itself; outside quotes it escapes any character; inside single quotes
//!   nothing is special;
//! - `${V#pat}` and friends take `*` and `?` (never `[...]`); `*` and `?`
//!   do not match a newline (they are Go regexp `.`);
//! - `${V/pat/repl}` and `${V//pat/repl}` insert `repl` literally (BuildKit
//!   passes it to Go's `ReplaceAllString`, where `$1` would mean a group;
//!   there are no groups, so only a literal `$` followed by a name differs).
//!
//! Pure functions of the text and a lookup: the caller decides what is set
//! (build args, ENV so far) and wraps errors with the instruction's line.

/// Nesting of `${...}` inside `${...}` beyond this is refused, so that a
/// hostile Dockerfile cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// Why a word could not be expanded; the caller adds the line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpandError {
    #[error("unexpected end of statement while looking for matching {0}")]
    Unterminated(&'static str),
    #[error("syntax error: missing '}}'")]
    MissingBrace,
    #[error("syntax error: missing '/' in ${{}}")]
    MissingSlash,
    #[error("syntax error: bad substitution")]
    BadSubstitution,
    #[error("unsupported modifier ({0}) in substitution")]
    UnsupportedModifier(String),
    /// `${V?msg}` / `${V:?msg}` on an unset (or empty) variable.
    #[error("{name}: {message}")]
    Required { name: String, message: String },
    #[error("invalid pattern ({pattern}) in substitution: invalid escape after '\\'")]
    InvalidPattern { pattern: String },
    #[error("variable substitutions nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Expand one word: quotes removed, escapes applied, variables substituted;
/// unquoted whitespace is kept as it is (this is `ENV k v w`'s value).
pub fn word(
    raw: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<String, ExpandError> {
    let mut lexer = Lexer::new(raw, vars, escape);
    Ok(lexer.process_until(None, false)?.0)
}

/// Expand and split on unquoted whitespace, whitespace produced by a
/// variable included (`EXPOSE $PORTS`, COPY sources, VOLUME's shell form).
/// As in BuildKit, an empty quoted string alone makes no word.
pub fn words(
    raw: &str,
    vars: &dyn Fn(&str) -> Option<String>,
    escape: char,
) -> Result<Vec<String>, ExpandError> {
    let mut lexer = Lexer::new(raw, vars, escape);
    Ok(lexer.process_until(None, false)?.1)
}

/// Expand a COPY/ADD heredoc body whose delimiter was unquoted: variables
/// and `\` escapes, but quotes stay as they are (BuildKit's lexer with
/// `SkipProcessQuotes`, always with `\` as escape).
pub fn heredoc(raw: &str, vars: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut lexer = Lexer::new(raw, vars, '\\');
    lexer.quotes = false;
    Ok(lexer.process_until(None, false)?.0)
}

/// BuildKit's word accumulator: text that came from quotes or escapes is
/// never split, text that came from outside them (or from a variable) is.
#[derive(Default)]
struct Words {
    buf: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.buf.is_empty() {
                self.words.push(std::mem::take(&mut self.buf));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }

    fn add_raw_char(&mut self, ch: char) {
        self.buf.push(ch);
        self.in_word = true;
    }

    fn add_string(&mut self, s: &str) {
        s.chars().for_each(|c| self.add_char(c));
    }

    fn add_raw_string(&mut self, s: &str) {
        self.buf.push_str(s);
        self.in_word = true;
    }

    fn finish(mut self) -> Vec<String> {
        if !self.buf.is_empty() {
            self.words.push(self.buf);
        }
        self.words
    }
}

struct Lexer<'a> {
    chars: Vec<char>,
    pos: usize,
    vars: &'a dyn Fn(&str) -> Option<String>,
    escape: char,
    /// Quotes are syntax (false for heredoc bodies).
    quotes: bool,
    depth: usize,
}

impl<'a> Lexer<'a> {
    fn new(raw: &str, vars: &'a dyn Fn(&str) -> Option<String>, escape: char) -> Self {
        Lexer {
            chars: raw.chars().collect(),
            pos: 0,
            vars,
            escape,
            quotes: true,
            depth: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// The whole input (`stop` None) or up to and including `stop`.
    /// `raw_escapes` keeps escape characters in the result, for patterns,
    /// whose own matcher reads them.
    fn process_until(
        &mut self,
        stop: Option<char>,
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ExpandError> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            match ch {
                '$' => {
                    let value = self.dollar()?;
                    result.push_str(&value);
                    words.add_string(&value);
                }
                '<' => {
                    let text = self.possible_heredoc();
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                '\'' if self.quotes => {
                    let text = self.single_quoted()?;
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                '"' if self.quotes => {
                    let text = self.double_quoted(raw_escapes)?;
                    result.push_str(&text);
                    words.add_raw_string(&text);
                }
                _ => {
                    self.pos += 1;
                    if ch == self.escape {
                        if raw_escapes {
                            words.add_raw_char(ch);
                            result.push(ch);
                        }
                        // An escape at the very end is dropped.
                        let Some(escaped) = self.next() else { break };
                        words.add_raw_char(escaped);
                        result.push(escaped);
                    } else {
                        words.add_char(ch);
                        result.push(ch);
                    }
                }
            }
        }
        match stop {
            Some('}') => Err(ExpandError::Unterminated("}")),
            Some('/') => Err(ExpandError::Unterminated("/")),
            Some(_) => Err(ExpandError::Unterminated("delimiter")),
            None => Ok((result, words.finish())),
        }
    }

    fn single_quoted(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.next() {
                None => return Err(ExpandError::Unterminated("single-quote")),
                Some('\'') => return Ok(out),
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quoted(&mut self, raw_escapes: bool) -> Result<String, ExpandError> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(ExpandError::Unterminated("double-quote")),
                Some('"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some('$') => out.push_str(&self.dollar()?),
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.escape {
                        if raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            // The loop reports the missing quote.
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    /// `<<` keeps the whitespace after it, so that `<< EOF` stays one word
    /// (BuildKit finds heredocs with this lexer).
    fn possible_heredoc(&mut self) -> String {
        self.pos += 1;
        if self.peek() != Some('<') {
            return "<".into();
        }
        self.pos += 1;
        let mut out = String::from("<<");
        while let Some(c @ ('\t' | '\r' | ' ')) = self.peek() {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    fn lookup(&self, name: &str) -> Option<String> {
        (self.vars)(name)
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_numeric() {
                while let Some(d) = self.peek().filter(|d| d.is_numeric()) {
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return c.to_string();
            }
            if !(c.is_alphanumeric() || c == '_') {
                break;
            }
            name.push(c);
            self.pos += 1;
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ExpandError> {
        self.pos += 1;
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.lookup(&name).unwrap_or_default());
        }
        self.pos += 1;
        match self.peek() {
            None => return Err(ExpandError::MissingBrace),
            Some('{' | '}' | ':') => return Err(ExpandError::BadSubstitution),
            Some(_) => {}
        }
        if self.depth >= MAX_DEPTH {
            return Err(ExpandError::TooDeep);
        }
        self.depth += 1;
        let result = self.braced();
        self.depth -= 1;
        result
    }

    /// After `${`.
    fn braced(&mut self) -> Result<String, ExpandError> {
        let name = self.name();
        match self.next() {
            None => Err(ExpandError::MissingBrace),
            Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
            Some(':') => {
                let modifier = self.next();
                self.modifier(&name, modifier, true)
            }
            Some(c @ ('+' | '-' | '?' | '#' | '%')) => self.modifier(&name, Some(c), false),
            Some('/') => self.substitute(&name),
            Some(c) => Err(ExpandError::UnsupportedModifier(c.to_string())),
        }
    }

    /// Reads up to `stop`; running out of input is the missing delimiter.
    fn nested(&mut self, stop: char, raw_escapes: bool) -> Result<String, ExpandError> {
        match self.process_until(Some(stop), raw_escapes) {
            Ok((s, _)) => Ok(s),
            Err(_) if self.at_end() && stop == '}' => Err(ExpandError::MissingBrace),
            Err(_) if self.at_end() => Err(ExpandError::MissingSlash),
            Err(e) => Err(e),
        }
    }

    fn modifier(
        &mut self,
        name: &str,
        modifier: Option<char>,
        null_is_unset: bool,
    ) -> Result<String, ExpandError> {
        let shown = || {
            let m = modifier.map(String::from).unwrap_or_default();
            if null_is_unset { format!(":{m}") } else { m }
        };
        let pattern = matches!(modifier, Some('#' | '%'));
        if null_is_unset && pattern {
            return Err(ExpandError::UnsupportedModifier(shown()));
        }
        let word = self.nested('}', pattern)?;
        let value = self.lookup(name);
        let unset = match &value {
            None => true,
            Some(v) => null_is_unset && v.is_empty(),
        };
        match modifier {
            Some('-') => Ok(if unset {
                word
            } else {
                value.unwrap_or_default()
            }),
            Some('+') => Ok(if unset { String::new() } else { word }),
            Some('?') => {
                if unset {
                    let message = if !word.is_empty() {
                        word
                    } else if value.is_none() {
                        "is not allowed to be unset".into()
                    } else {
                        "is not allowed to be empty".into()
                    };
                    return Err(ExpandError::Required {
                        name: name.into(),
                        message,
                    });
                }
                Ok(value.unwrap_or_default())
            }
            Some(c @ ('#' | '%')) => {
                let (greedy, pat) = match word.strip_prefix(c) {
                    Some(rest) => (true, rest),
                    None => (false, word.as_str()),
                };
                let tokens = compile_pattern(pat)?;
                let value: Vec<char> = value.unwrap_or_default().chars().collect();
                Ok(if c == '#' {
                    trim_prefix(&tokens, &value, greedy)
                } else {
                    trim_suffix(&tokens, &value, greedy)
                })
            }
            _ => Err(ExpandError::UnsupportedModifier(shown())),
        }
    }

    /// `${V/pat/repl}` and `${V//pat/repl}`: the leftmost longest match.
    fn substitute(&mut self, name: &str) -> Result<String, ExpandError> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = self.nested('/', true)?;
        let replacement = self.nested('}', true)?;
        let tokens = compile_pattern(&pattern)?;
        let value: Vec<char> = self.lookup(name).unwrap_or_default().chars().collect();
        Ok(replace(&tokens, &value, &replacement, all))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Glob {
    Literal(char),
    /// `?`: any one character but a newline.
    One,
    /// `*`: any run of characters without a newline.
    Run,
}

fn compile_pattern(pattern: &str) -> Result<Vec<Glob>, ExpandError> {
    let mut chars = pattern.chars().peekable();
    let mut out = Vec::new();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push(Glob::Run),
            '?' => out.push(Glob::One),
            '\\' => {
                // `\}` and `\/` only kept the brace or slash out of the
                // `${...}` syntax: the backslash is not part of the pattern.
                if matches!(chars.peek(), Some('}' | '/')) {
                    continue;
                }
                match chars.next() {
                    Some(e @ ('*' | '?' | '\\')) => out.push(Glob::Literal(e)),
                    _ => {
                        return Err(ExpandError::InvalidPattern {
                            pattern: pattern.into(),
                        });
                    }
                }
            }
            c => out.push(Glob::Literal(c)),
        }
    }
    Ok(out)
}

/// Ends `e` such that `pattern` matches `text[start..e]` exactly, as a
/// set over positions: linear in the text per pattern element, so no
/// pattern can make it slow.
fn match_ends(pattern: &[Glob], text: &[char], start: usize) -> Vec<bool> {
    let n = text.len();
    let mut cur = vec![false; n + 1];
    if let Some(s) = cur.get_mut(start) {
        *s = true;
    }
    for glob in pattern {
        let mut next = vec![false; n + 1];
        match glob {
            Glob::Literal(c) => {
                for i in 0..n {
                    if cur[i] && text[i] == *c {
                        next[i + 1] = true;
                    }
                }
            }
            Glob::One => {
                for i in 0..n {
                    if cur[i] && text[i] != '\n' {
                        next[i + 1] = true;
                    }
                }
            }
            Glob::Run => {
                let mut live = false;
                for i in 0..=n {
                    live |= cur[i];
                    next[i] = live;
                    if i < n && text[i] == '\n' {
                        live = false;
                    }
                }
            }
        }
        cur = next;
        if !cur.iter().any(|&b| b) {
            break;
        }
    }
    cur
}

fn trim_prefix(pattern: &[Glob], value: &[char], greedy: bool) -> String {
    let ends = match_ends(pattern, value, 0);
    let mut matched = ends.iter().enumerate().filter(|(_, m)| **m).map(|(i, _)| i);
    let cut = if greedy {
        matched.next_back()
    } else {
        matched.next()
    };
    value[cut.unwrap_or(0)..].iter().collect()
}

/// BuildKit reverses both and trims a prefix; so do we.
fn trim_suffix(pattern: &[Glob], value: &[char], greedy: bool) -> String {
    let rev_pattern: Vec<Glob> = pattern.iter().rev().copied().collect();
    let rev_value: Vec<char> = value.iter().rev().copied().collect();
    let trimmed: String = trim_prefix(&rev_pattern, &rev_value, greedy);
    trimmed.chars().rev().collect()
}

/// The leftmost start with a match, and its longest end (Go regexp's
/// leftmost-first with greedy stars).
fn find(pattern: &[Glob], value: &[char], from: usize) -> Option<(usize, usize)> {
    (from..=value.len()).find_map(|s| {
        let ends = match_ends(pattern, value, s);
        ends.iter().rposition(|&m| m).map(|e| (s, e))
    })
}

/// Go's `Regexp.ReplaceAllString` loop (an empty match right after a match
/// is not replaced), or the first match only.
fn replace(pattern: &[Glob], value: &[char], replacement: &str, all: bool) -> String {
    let mut out = String::new();
    let mut last_end = 0;
    let mut search = 0;
    while search <= value.len() {
        let Some((s, e)) = find(pattern, value, search) else {
            break;
        };
        out.extend(&value[last_end..s]);
        if e > last_end || s == 0 {
            out.push_str(replacement);
        }
        last_end = e;
        if !all {
            break;
        }
        search = if e > search { e } else { search + 1 };
    }
    if let Some(rest) = value.get(last_end..) {
        out.extend(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "foo" => Some("bar".into()),
            "empty" => Some(String::new()),
            "path" => Some("/usr/local/bin/tool.tar.gz".into()),
            "spaced" => Some("a  b".into()),
            _ => None,
        }
    }

    fn w(raw: &str) -> String {
        word(raw, &env, '\\').unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn ws(raw: &str) -> Vec<String> {
        words(raw, &env, '\\').unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn err(raw: &str) -> ExpandError {
        match word(raw, &env, '\\') {
            Ok(s) => panic!("{raw} expanded to {s:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn documented_forms() {
        // Docker's reference, "Environment replacement".
        assert_eq!(w("$foo"), "bar");
        assert_eq!(w("${foo}"), "bar");
        assert_eq!(w("${foo}_x"), "bar_x");
        assert_eq!(w("${foo:-word}"), "bar");
        assert_eq!(w("${unset:-word}"), "word");
        assert_eq!(w("${empty:-word}"), "word");
        assert_eq!(w("${empty-word}"), "");
        assert_eq!(w("${unset-word}"), "word");
        assert_eq!(w("${foo:+word}"), "word");
        assert_eq!(w("${unset:+word}"), "");
        assert_eq!(w("${empty:+word}"), "");
        assert_eq!(w("${empty+word}"), "word");
        assert_eq!(w("${unset:-$foo}"), "bar");
        assert_eq!(w("${unset:-${foo:+nested}}"), "nested");
    }

    #[test]
    fn escapes_and_quotes() {
        assert_eq!(w(r"\$foo"), "$foo");
        assert_eq!(w(r"\${foo}"), "${foo}");
        assert_eq!(w("'$foo'"), "$foo");
        assert_eq!(w("\"$foo\""), "bar");
        assert_eq!(w(r#""a\"b""#), "a\"b");
        assert_eq!(w(r#""a\nb""#), r"a\nb");
        assert_eq!(w(r"a\ b"), "a b");
        assert_eq!(w(r"'a\b'"), r"a\b");
        assert_eq!(w("a b  c"), "a b  c");
        assert_eq!(w(r"trailing\"), "trailing");
        assert_eq!(word("`$foo", &env, '`').ok().as_deref(), Some("$foo"));
        assert_eq!(word(r"C:\dir", &env, '`').ok().as_deref(), Some(r"C:\dir"));
    }

    #[test]
    fn dollar_without_name_is_literal() {
        assert_eq!(w("$"), "$");
        assert_eq!(w("a$/b"), "a$/b");
        assert_eq!(w("$%"), "$%");
        assert_eq!(w("cost: 5$"), "cost: 5$");
        // Special parameters are names that are never set.
        assert_eq!(w("x$@y"), "xy");
        assert_eq!(w("$1x"), "x");
    }

    #[test]
    fn unset_is_empty() {
        assert_eq!(w("a${nope}b$nope"), "ab");
    }

    #[test]
    fn required() {
        assert_eq!(
            err("${unset:?must be set}"),
            ExpandError::Required {
                name: "unset".into(),
                message: "must be set".into()
            }
        );
        assert_eq!(
            err("${empty:?}").to_string(),
            "empty: is not allowed to be empty"
        );
        assert_eq!(w("${empty?}"), "");
        assert_eq!(
            err("${unset?}").to_string(),
            "unset: is not allowed to be unset"
        );
        assert_eq!(w("${foo:?x}"), "bar");
    }

    #[test]
    fn patterns() {
        assert_eq!(w("${path#*/}"), "usr/local/bin/tool.tar.gz");
        assert_eq!(w("${path##*/}"), "tool.tar.gz");
        assert_eq!(w("${path%.*}"), "/usr/local/bin/tool.tar");
        assert_eq!(w("${path%%.*}"), "/usr/local/bin/tool");
        assert_eq!(w("${path#/usr}"), "/local/bin/tool.tar.gz");
        assert_eq!(w("${path#nomatch}"), "/usr/local/bin/tool.tar.gz");
        assert_eq!(w("${path%t?r.gz}"), "/usr/local/bin/tool.");
        assert_eq!(w(r"${foo#\*}"), "bar");
        assert_eq!(w("${unset#x}"), "");
        assert!(matches!(
            err("${foo:#x}"),
            ExpandError::UnsupportedModifier(_)
        ));
        assert!(matches!(
            err(r"${foo#\x}"),
            ExpandError::InvalidPattern { .. }
        ));
    }

    #[test]
    fn substitution() {
        assert_eq!(w("${path/o/0}"), "/usr/l0cal/bin/tool.tar.gz");
        assert_eq!(w("${path//o/0}"), "/usr/l0cal/bin/t00l.tar.gz");
        assert_eq!(w("${path/*bin/X}"), "X/tool.tar.gz");
        assert_eq!(w("${foo//x/y}"), "bar");
        assert_eq!(w("${foo//a/}"), "br");
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(err("${"), ExpandError::MissingBrace);
        assert_eq!(err("${foo"), ExpandError::MissingBrace);
        assert_eq!(err("${foo:-x"), ExpandError::MissingBrace);
        assert_eq!(err("${}"), ExpandError::BadSubstitution);
        assert_eq!(err("${:a}"), ExpandError::BadSubstitution);
        assert_eq!(err("${foo/x"), ExpandError::MissingSlash);
        assert!(matches!(
            err("${foo.x}"),
            ExpandError::UnsupportedModifier(_)
        ));
        assert_eq!(err("'abc"), ExpandError::Unterminated("single-quote"));
        assert_eq!(err("\"abc"), ExpandError::Unterminated("double-quote"));
        let deep = "${a:-".repeat(200) + &"}".repeat(200);
        assert_eq!(err(&deep), ExpandError::TooDeep);
    }

    #[test]
    fn word_splitting() {
        assert_eq!(ws("a b\tc"), ["a", "b", "c"]);
        assert_eq!(ws("  a  "), ["a"]);
        assert_eq!(ws("\"a b\" c"), ["a b", "c"]);
        assert_eq!(ws(r"a\ b c"), ["a b", "c"]);
        assert_eq!(ws("$spaced x"), ["a", "b", "x"]);
        assert_eq!(ws("\"$spaced\" x"), ["a  b", "x"]);
        assert_eq!(ws("x$foo y"), ["xbar", "y"]);
        assert!(ws("").is_empty());
        assert!(ws("\"\"").is_empty());
    }

    #[test]
    fn heredoc_bodies_keep_quotes() {
        let h = heredoc("say \"$foo\" 'x' \\$foo ${unset:-d}\n", &env);
        assert_eq!(h.ok().as_deref(), Some("say \"bar\" 'x' $foo d\n"));
        assert_eq!(ws("80/tcp 443"), ["80/tcp", "443"]);
    }
}
