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

/// The paths execve(2) is tried with, in order, to run `program` as
/// execvp(3) finds it: the name itself when it has a '/', else each
/// `:`-separated entry of `path` joined with it, an empty entry meaning the
/// working directory. Written once for the job's exec and the FUSE
/// server's warm-up, so that the warm-up reads what the exec will run.
///
/// `cwd` is where relative paths start: `None` leaves them relative (the
/// job's own exec, already in its working directory; an empty entry is
/// `.`); `Some` resolves them against the job's working directory as seen
/// from outside (the warm-up, which reads the image before the job runs).
pub fn exec_candidates(program: &[u8], path: &[u8], cwd: Option<&[u8]>) -> Vec<Vec<u8>> {
    let resolve = |p: &[u8]| match cwd {
        Some(cwd) if !p.starts_with(b"/") => join(cwd, p),
        _ => p.to_vec(),
    };
    if program.contains(&b'/') {
        return vec![resolve(program)];
    }
    path.split(|b| *b == b':')
        .map(|dir| {
            if dir.is_empty() {
                join(cwd.unwrap_or(b"."), program)
            } else {
                join(&resolve(dir), program)
            }
        })
        .collect()
}

/// `dir/name`, with one '/' between them (as `Path::join` for a relative
/// `name`), on bytes: a PATH entry need not be UTF-8.
fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut joined = dir.to_vec();
    if !joined.ends_with(b"/") {
        joined.push(b'/');
    }
    joined.extend_from_slice(name);
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(program: &str, path: &str, cwd: Option<&str>) -> Vec<String> {
        exec_candidates(program.as_bytes(), path.as_bytes(), cwd.map(str::as_bytes))
            .into_iter()
            .map(|c| String::from_utf8(c).expect("utf8"))
            .collect()
    }

    #[test]
    fn the_job_tries_paths_relative_to_its_own_directory() {
        assert_eq!(
            candidates("ls", ":bin:/usr/bin/:/sbin", None),
            ["./ls", "bin/ls", "/usr/bin/ls", "/sbin/ls"]
        );
        // A name with '/' is used as given, never searched.
        assert_eq!(candidates("./run.sh", "/bin", None), ["./run.sh"]);
        assert_eq!(candidates("/opt/x", "/bin", None), ["/opt/x"]);
    }

    #[test]
    fn from_outside_relative_paths_start_at_the_jobs_directory() {
        assert_eq!(
            candidates("ls", ":bin:/usr/bin/", Some("/w")),
            ["/w/ls", "/w/bin/ls", "/usr/bin/ls"]
        );
        assert_eq!(candidates("./run.sh", "/bin", Some("/w/")), ["/w/./run.sh"]);
        assert_eq!(candidates("/opt/x", "/bin", Some("/w")), ["/opt/x"]);
    }
}
