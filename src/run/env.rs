//! The job's environment (pure): the host's passes through (HPC jobs need
//! SLURM_*, OMPI_*, PMIX_*), HOME is set to the container's home, then the
//! `--env`, `--env-file`, `--unset-env` and `--clean-env` operations apply in
//! command-line order. Container edits (site defaults, hooks, CDI devices)
//! come first in the same list, so the user's own options win; they add
//! prepend/append (`:`-separated path lists such as LD_LIBRARY_PATH). A job
//! always gets a PATH: when none is left, a standard one is set.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use crate::spec::env::{glob_problem, lookup};

/// The PATH a job gets when the composed environment has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("--env {0:?}: expected NAME=VALUE")]
    BadAssignment(String),
    #[error("--env {0:?}: empty variable name")]
    EmptyName(String),
    #[error("--env-file {path}: line {line}: expected NAME=VALUE, got {text:?}")]
    BadFileLine {
        path: std::path::PathBuf,
        line: usize,
        text: String,
    },
    #[error("{option} {glob:?}: {reason}")]
    BadGlob {
        option: &'static str,
        glob: String,
        reason: &'static str,
    },
}

/// One environment operation, in command-line order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvOp {
    /// `--env K=V` or one line of `--env-file`.
    Set(OsString, OsString),
    /// `--unset-env GLOB`: remove every variable whose name matches.
    Unset(String),
    /// `--clean-env`: remove everything set so far.
    Clear,
    /// A container edit: `VALUE:old` (just `VALUE` when unset or empty).
    Prepend(OsString, OsString),
    /// A container edit: `old:VALUE` (just `VALUE` when unset or empty).
    Append(OsString, OsString),
}

/// Parse `--env K=V`.
pub fn parse_assignment(text: &str) -> Result<EnvOp, EnvError> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| EnvError::BadAssignment(text.to_string()))?;
    if k.is_empty() {
        return Err(EnvError::EmptyName(text.to_string()));
    }
    Ok(EnvOp::Set(k.into(), v.into()))
}

/// Parse the contents of an `--env-file`: `NAME=VALUE` lines (an optional
/// leading `export `), blank lines and `#` comments skipped; the value is
/// taken literally.
pub fn parse_env_file(path: &Path, contents: &[u8]) -> Result<Vec<EnvOp>, EnvError> {
    let mut ops = Vec::new();
    for (i, raw) in contents.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        let trimmed = line.trim_ascii_start();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let trimmed = trimmed.strip_prefix(b"export ").unwrap_or(trimmed);
        let bad = || EnvError::BadFileLine {
            path: path.to_path_buf(),
            line: i + 1,
            text: String::from_utf8_lossy(line).into_owned(),
        };
        let eq = trimmed.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        if eq == 0 {
            return Err(bad());
        }
        ops.push(EnvOp::Set(
            OsStr::from_bytes(&trimmed[..eq]).to_os_string(),
            OsStr::from_bytes(&trimmed[eq + 1..]).to_os_string(),
        ));
    }
    Ok(ops)
}

/// Parse `--unset-env GLOB` (see [`glob_problem`]).
pub fn parse_unset(glob: &str) -> Result<EnvOp, EnvError> {
    match glob_problem(glob) {
        Some(reason) => Err(EnvError::BadGlob {
            option: "--unset-env",
            glob: glob.to_string(),
            reason,
        }),
        None => Ok(EnvOp::Unset(glob.to_string())),
    }
}

/// Shell-style glob match of a variable name: `*` any run, `?` one byte.
pub fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = n;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            n = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == b'*')
}

fn set(env: &mut Vec<(OsString, OsString)>, key: &OsStr, value: &OsStr) {
    match env.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_os_string(),
        None => env.push((key.to_os_string(), value.to_os_string())),
    }
}

fn lookup_os<'a>(env: &'a [(OsString, OsString)], key: &OsStr) -> Option<&'a OsStr> {
    env.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_os_str())
}

/// `value:old` (or `old:value` when `append`); an absent or empty old value
/// gives `value` alone: an empty entry in LD_LIBRARY_PATH or PATH means the
/// current directory, which nobody asked for.
fn join_path_list(value: &OsStr, old: Option<&OsStr>, append: bool) -> OsString {
    match old {
        Some(old) if !old.is_empty() => {
            let (first, second) = if append { (old, value) } else { (value, old) };
            let mut joined = first.to_os_string();
            joined.push(":");
            joined.push(second);
            joined
        }
        _ => value.to_os_string(),
    }
}

/// Compose the job's environment from the host's, the container home and
/// the ordered operations.
pub fn compose_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    home: &Path,
    ops: &[EnvOp],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    for (k, v) in host {
        set(&mut env, &k, &v);
    }
    set(&mut env, OsStr::new("HOME"), home.as_os_str());
    for op in ops {
        match op {
            EnvOp::Set(k, v) => set(&mut env, k, v),
            EnvOp::Unset(glob) => env.retain(|(k, _)| !glob_match(glob.as_bytes(), k.as_bytes())),
            EnvOp::Clear => env.clear(),
            EnvOp::Prepend(k, v) => {
                let joined = join_path_list(v, lookup_os(&env, k), false);
                set(&mut env, k, &joined);
            }
            EnvOp::Append(k, v) => {
                let joined = join_path_list(v, lookup_os(&env, k), true);
                set(&mut env, k, &joined);
            }
        }
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// A PATH that came from the host, made to reach the image's own `/bin`
/// and `/sbin` (pure): each one missing is appended. Merged-/usr hosts
/// (Fedora, Arch) export `PATH=/usr/local/bin:/usr/bin`, while Alpine and
/// busybox images keep their programs only in `/bin`; ch-run appends
/// `/bin` for the same reason.
pub fn reach_image_bins(path: &OsStr) -> OsString {
    let mut out = path.to_os_string();
    for dir in ["/bin", "/sbin"] {
        let present = path
            .as_bytes()
            .split(|&b| b == b':')
            .any(|e| e == dir.as_bytes() || e == format!("{dir}/").as_bytes());
        if !present {
            if !out.is_empty() {
                out.push(":");
            }
            out.push(dir);
        }
    }
    out
}

/// Rewrite the composed environment's PATH (it always has one) with `f`.
pub fn set_path(env: &mut [(OsString, OsString)], f: impl Fn(&OsStr) -> OsString) {
    if let Some((_, v)) = env.iter_mut().find(|(k, _)| k == "PATH") {
        *v = f(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<(OsString, OsString)> {
        vec![
            ("PATH".into(), "/usr/bin".into()),
            ("SLURM_JOB_ID".into(), "42".into()),
            ("SLURM_NTASKS".into(), "4".into()),
            ("OMPI_X".into(), "1".into()),
            ("HOME".into(), "/host/home".into()),
        ]
    }

    fn get(env: &[(OsString, OsString)], k: &str) -> Option<String> {
        lookup(env, k).map(|v| v.to_string_lossy().into_owned())
    }

    #[test]
    fn host_environment_passes_through_with_container_home() {
        let env = compose_env(host(), Path::new("/home/u"), &[]);
        assert_eq!(get(&env, "SLURM_JOB_ID").as_deref(), Some("42"));
        assert_eq!(get(&env, "OMPI_X").as_deref(), Some("1"));
        assert_eq!(get(&env, "HOME").as_deref(), Some("/home/u"));
        assert_eq!(get(&env, "PATH").as_deref(), Some("/usr/bin"));
    }

    #[test]
    fn operations_apply_in_order() {
        let ops = vec![
            EnvOp::Set("A".into(), "1".into()),
            EnvOp::Unset("SLURM_*".into()),
            EnvOp::Set("SLURM_KEEP".into(), "yes".into()),
            EnvOp::Set("A".into(), "2".into()),
        ];
        let env = compose_env(host(), Path::new("/h"), &ops);
        assert_eq!(get(&env, "A").as_deref(), Some("2"));
        assert_eq!(get(&env, "SLURM_JOB_ID"), None);
        assert_eq!(get(&env, "SLURM_KEEP").as_deref(), Some("yes"));
    }

    #[test]
    fn clean_env_drops_what_came_before_only() {
        let ops = vec![
            EnvOp::Set("BEFORE".into(), "1".into()),
            EnvOp::Clear,
            EnvOp::Set("AFTER".into(), "1".into()),
        ];
        let env = compose_env(host(), Path::new("/h"), &ops);
        assert_eq!(get(&env, "BEFORE"), None);
        assert_eq!(get(&env, "SLURM_JOB_ID"), None);
        assert_eq!(get(&env, "HOME"), None);
        assert_eq!(get(&env, "AFTER").as_deref(), Some("1"));
        assert_eq!(get(&env, "PATH").as_deref(), Some(DEFAULT_PATH));
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn env_can_override_home() {
        let ops = vec![EnvOp::Set("HOME".into(), "/x".into())];
        let env = compose_env(host(), Path::new("/h"), &ops);
        assert_eq!(get(&env, "HOME").as_deref(), Some("/x"));
    }

    #[test]
    fn prepend_and_append_join_with_colons() {
        let ops = vec![
            EnvOp::Prepend("PATH".into(), "/opt/mpi/bin".into()),
            EnvOp::Append("PATH".into(), "/extra".into()),
            EnvOp::Prepend("LD_LIBRARY_PATH".into(), "/a".into()),
            EnvOp::Prepend("LD_LIBRARY_PATH".into(), "/b".into()),
            EnvOp::Append("MANPATH".into(), "/m".into()),
            EnvOp::Set("EMPTY".into(), "".into()),
            EnvOp::Prepend("EMPTY".into(), "/e".into()),
        ];
        let env = compose_env(host(), Path::new("/h"), &ops);
        assert_eq!(
            get(&env, "PATH").as_deref(),
            Some("/opt/mpi/bin:/usr/bin:/extra")
        );
        assert_eq!(get(&env, "LD_LIBRARY_PATH").as_deref(), Some("/b:/a"));
        assert_eq!(get(&env, "MANPATH").as_deref(), Some("/m"));
        assert_eq!(get(&env, "EMPTY").as_deref(), Some("/e"));
    }

    #[test]
    fn later_user_options_override_edits() {
        // Edits first, then the user's --unset-env / --env (as prepare orders them).
        let ops = vec![
            EnvOp::Prepend("LD_LIBRARY_PATH".into(), "/site".into()),
            EnvOp::Set("GPU".into(), "1".into()),
            EnvOp::Unset("LD_*".into()),
            EnvOp::Set("GPU".into(), "0".into()),
        ];
        let env = compose_env(host(), Path::new("/h"), &ops);
        assert_eq!(get(&env, "LD_LIBRARY_PATH"), None);
        assert_eq!(get(&env, "GPU").as_deref(), Some("0"));
    }

    #[test]
    fn assignment_parsing() {
        assert_eq!(
            parse_assignment("A=b=c"),
            Ok(EnvOp::Set("A".into(), "b=c".into()))
        );
        assert_eq!(
            parse_assignment("A="),
            Ok(EnvOp::Set("A".into(), "".into()))
        );
        assert!(matches!(
            parse_assignment("A"),
            Err(EnvError::BadAssignment(_))
        ));
        assert!(matches!(
            parse_assignment("=x"),
            Err(EnvError::EmptyName(_))
        ));
    }

    #[test]
    fn env_file_parsing() {
        let text = b"# comment\n\nA=1\nexport B=two words\r\n  C=\n";
        let ops = parse_env_file(Path::new("f"), text).expect("parse");
        assert_eq!(
            ops,
            vec![
                EnvOp::Set("A".into(), "1".into()),
                EnvOp::Set("B".into(), "two words".into()),
                EnvOp::Set("C".into(), "".into()),
            ]
        );
        let err = parse_env_file(Path::new("f"), b"A=1\nnonsense\n").expect_err("bad");
        assert!(matches!(err, EnvError::BadFileLine { line: 2, .. }));
        assert!(parse_env_file(Path::new("f"), b"=1\n").is_err());
    }

    #[test]
    fn bad_unset_globs_are_refused_naming_the_option_and_the_glob() {
        assert_eq!(parse_unset("SLURM_*"), Ok(EnvOp::Unset("SLURM_*".into())));
        assert_eq!(parse_unset("A?C"), Ok(EnvOp::Unset("A?C".into())));
        for bad in ["", "[", "]", "[A-Z]*", "A\\*", "A=B"] {
            let err = parse_unset(bad).expect_err(bad);
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("--unset-env {bad:?}: ")), "{msg}");
        }
        assert!(
            parse_unset("[")
                .expect_err("[")
                .to_string()
                .contains("only '*' and '?'")
        );
        assert!(
            parse_unset("")
                .expect_err("empty")
                .to_string()
                .contains("empty glob")
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match(b"SLURM_*", b"SLURM_JOB_ID"));
        assert!(glob_match(b"*", b"X"));
        assert!(glob_match(b"A?C", b"ABC"));
        assert!(!glob_match(b"A?C", b"AC"));
        assert!(glob_match(b"*_ID", b"SLURM_JOB_ID"));
        assert!(!glob_match(b"SLURM_*", b"XSLURM_A"));
        assert!(glob_match(b"EXACT", b"EXACT"));
        assert!(!glob_match(b"EXACT", b"EXACTLY"));
        assert!(glob_match(b"a*b*c", b"aXXbYYc"));
    }

    #[test]
    fn a_host_path_reaches_the_image_bins() {
        let got = |p: &str| {
            reach_image_bins(OsStr::new(p))
                .into_string()
                .expect("utf-8")
        };
        assert_eq!(
            got("/usr/local/bin:/usr/bin"),
            "/usr/local/bin:/usr/bin:/bin:/sbin"
        );
        assert_eq!(got("/usr/bin:/bin"), "/usr/bin:/bin:/sbin");
        assert_eq!(got("/sbin/:/bin/"), "/sbin/:/bin/");
        assert_eq!(got(DEFAULT_PATH), DEFAULT_PATH);
        assert_eq!(got(""), "/bin:/sbin");
        // Only whole entries count.
        assert_eq!(got("/usr/binx:/opt/bin"), "/usr/binx:/opt/bin:/bin:/sbin");
    }
}
