//! What an IMAGE argument of `cairn run` and `cairn inspect` names, as a
//! path: an existing file or directory as it is; else a name or `docker://`
//! reference in the node-local cache ([`super::cache::lookup`]). A
//! `docker://` reference not cached yet may be pulled first, by a `cairn
//! pull` CHILD process: `run` must stay single-threaded until it has
//! unshared its namespaces, and pulling starts threads (tokio, the squash
//! writer's workers).

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use super::cache::{Cache, lookup};

#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    #[error("image {arg}: no such file or directory, and no cached image of that name")]
    Missing { arg: PathBuf },
    #[error("cannot find the cairn binary to pull with")]
    CurrentExe(#[source] std::io::Error),
    #[error("cannot start cairn pull {name}")]
    StartPull {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot pull {name} (cairn pull failed: {status})")]
    PullFailed { name: String, status: ExitStatus },
    #[error("{name} was pulled but is not in the cache {root}")]
    NotCachedAfterPull { name: String, root: PathBuf },
}

/// The image file or directory `arg` names. `cache`: `None` when there is
/// no cache location at all. With `pull_missing`, a `docker://` reference
/// not in the cache is pulled into it by `cairn pull -q` (this binary).
pub fn locate_image(
    arg: &Path,
    pull_missing: bool,
    cache: Option<&Cache>,
) -> Result<PathBuf, LocateError> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let name = arg.to_string_lossy();
    let missing = || LocateError::Missing {
        arg: arg.to_path_buf(),
    };
    // No cache location (no HOME, no CAIRN_CACHE): it is simply a missing file.
    let Some(cache) = cache else {
        return Err(missing());
    };
    if let Some(path) = lookup(cache, &name) {
        return Ok(path);
    }
    if !(pull_missing && name.starts_with("docker://")) {
        return Err(missing());
    }
    pull_in_child(&name)?;
    lookup(cache, &name).ok_or_else(|| LocateError::NotCachedAfterPull {
        name: name.clone().into_owned(),
        root: cache.root().to_path_buf(),
    })
}

/// `cairn pull -q NAME` in a child process, waited for.
fn pull_in_child(name: &str) -> Result<(), LocateError> {
    let exe = std::env::current_exe().map_err(LocateError::CurrentExe)?;
    let status = std::process::Command::new(exe)
        .args(["pull", "-q", name])
        .status()
        .map_err(|source| LocateError::StartPull {
            name: name.to_owned(),
            source,
        })?;
    if !status.success() {
        return Err(LocateError::PullFailed {
            name: name.to_owned(),
            status,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_itself_and_a_name_comes_from_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("image.sqfs");
        std::fs::write(&file, b"x").expect("write");
        assert_eq!(locate_image(&file, false, None).expect("path"), file);
        let cache = Cache::at(dir.path().join("cache"));
        for (arg, cache) in [("nosuch", None), ("nosuch", Some(&cache))] {
            let err = locate_image(Path::new(arg), false, cache).expect_err(arg);
            assert!(matches!(err, LocateError::Missing { .. }), "{err}");
        }
        // Not pulled without pull_missing, nor when it is no reference.
        for (arg, pull) in [("docker://x.io/a:b", false), ("plain-name", true)] {
            let err = locate_image(Path::new(arg), pull, Some(&cache)).expect_err(arg);
            assert!(matches!(err, LocateError::Missing { .. }), "{err}");
        }
    }
}
