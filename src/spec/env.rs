//! Environments as `(name, value)` pairs (pure): looking a variable up,
//! the globs of variable names a site or a user may unset, and the search
//! of PATH for a program. Shared by the site config (which reads settings
//! from the process environment) and the run (the job's environment).

use std::ffi::{OsStr, OsString};

/// Why a glob of variable names is refused, `None` when it is usable.
/// Only `*` and `?` are wildcards; a shell's `[...]` classes and `\`
/// escapes are refused rather than matched literally, so that `[` (an
/// unterminated class to a shell) does not silently unset nothing.
pub fn glob_problem(glob: &str) -> Option<&'static str> {
    if glob.is_empty() {
        Some("an empty glob matches no variable (use '*' for all)")
    } else if glob.contains(['[', ']', '\\']) {
        Some("'[', ']' and '\\' are not supported: only '*' and '?' are wildcards")
    } else if glob.contains('=') {
        Some("a variable name cannot contain '=', so this glob matches nothing")
    } else {
        None
    }
}

/// The value of `key` in a composed environment.
pub fn lookup<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a OsStr> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_os_str())
}

/// An environment from `(name, value)` pairs, for tests.
#[cfg(test)]
pub(crate) fn from_pairs(pairs: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

/// The directories execvp(3) searches for `program`, in order: `None` when
/// the name has a '/' (it is used as given), else each `:`-separated entry
/// of `path`, an empty entry meaning the working directory. The caller
/// joins each with `program`, relative to whichever working directory it
/// stands for (the job's own, or the job's seen from outside).
pub fn path_search<'a>(program: &[u8], path: &'a [u8]) -> Option<Vec<&'a [u8]>> {
    if program.contains(&b'/') {
        return None;
    }
    Some(path.split(|b| *b == b':').collect())
}
