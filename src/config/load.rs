//! Reading the config files: the site file (`$CAIRN_CONFIG`, else
//! `/etc/cairn/cairn.toml`) and the user's file
//! (`$XDG_CONFIG_HOME/cairn/config.toml`, else `~/.config/cairn/config.toml`).
//! A missing default file costs one failed open and means "all defaults";
//! a present but unreadable or malformed one is an error naming the file
//! (and, through toml's error, the line and the key).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::config::{ConfigError, Policy, SITE_FILE, SITE_FILE_ENV, SiteFile, UserFile};
use crate::spec::env::lookup;

/// A parsed file and where it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<T> {
    pub path: PathBuf,
    pub file: T,
}

/// Both files, each absent when it does not exist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    pub site: Option<Loaded<SiteFile>>,
    pub user: Option<Loaded<UserFile>>,
}

fn non_empty<'a>(env: &'a [(OsString, OsString)], key: &str) -> Option<&'a OsStr> {
    lookup(env, key).filter(|v| !v.is_empty())
}

/// The site file's path, and whether `$CAIRN_CONFIG` named it (then it
/// must exist).
pub fn site_path(env: &[(OsString, OsString)]) -> (PathBuf, bool) {
    match non_empty(env, SITE_FILE_ENV) {
        Some(p) => (PathBuf::from(p), true),
        None => (PathBuf::from(SITE_FILE), false),
    }
}

/// The user file's path (`None` without `$XDG_CONFIG_HOME` or `$HOME`).
pub fn user_path(env: &[(OsString, OsString)]) -> Option<PathBuf> {
    let xdg = non_empty(env, "XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute());
    let base = xdg.or_else(|| non_empty(env, "HOME").map(|h| Path::new(h).join(".config")))?;
    Some(base.join("cairn/config.toml"))
}

/// Parse the text of a site file (pure).
pub fn parse_site(path: &Path, text: &str) -> Result<SiteFile, ConfigError> {
    let mut site: SiteFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
        which: "site",
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    site.policy.site_file = Some(path.to_path_buf());
    Ok(site)
}

/// Parse the text of a user file (pure). A `[policy]` or `[hooks]` table
/// gets its own error: the generic "unknown field" would not say why.
pub fn parse_user(path: &Path, text: &str, site: &Path) -> Result<UserFile, ConfigError> {
    let parse_error = |e| ConfigError::Parse {
        which: "user",
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
    if let Some(key) = ["policy", "hooks"]
        .into_iter()
        .find(|k| table.contains_key(*k))
    {
        return Err(ConfigError::UserSetsPolicy {
            path: path.to_path_buf(),
            table: key.to_owned(),
            site: site.display().to_string(),
        });
    }
    toml::from_str(text).map_err(parse_error)
}

/// Read a file; `Ok(None)` when it does not exist and `optional`.
fn read_optional(path: &Path, optional: bool) -> Result<Option<String>, ConfigError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if optional && e.kind() == ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Read and parse both files as `env` locates them.
pub fn load(env: &[(OsString, OsString)]) -> Result<Files, ConfigError> {
    let (site_file, explicit) = site_path(env);
    let site = match read_optional(&site_file, !explicit)? {
        Some(text) => Some(Loaded {
            file: parse_site(&site_file, &text)?,
            path: site_file.clone(),
        }),
        None => None,
    };
    let user = match user_path(env) {
        Some(path) => match read_optional(&path, true)? {
            Some(text) => Some(Loaded {
                file: parse_user(&path, &text, &site_file)?,
                path,
            }),
            None => None,
        },
        None => None,
    };
    Ok(Files { site, user })
}

/// Replace the policy's host paths by their canonical form when they exist
/// (`/scratch` may be a symlink to `/lustre/scratch`, and images and bind
/// sources are compared after canonicalisation). A path that does not
/// exist stays as written: it still refuses or allows by its components.
pub fn canonicalize_policy_paths(policy: &mut Policy) {
    for list in [&mut policy.image_paths, &mut policy.forbidden_bind_sources] {
        for entry in list.iter_mut() {
            if let Ok(canonical) = Path::new(entry.as_str()).canonicalize() {
                *entry = canonical.to_string_lossy().into_owned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::env::from_pairs as env;

    #[test]
    fn paths_follow_the_environment() {
        assert_eq!(site_path(&env(&[])), (PathBuf::from(SITE_FILE), false));
        assert_eq!(
            site_path(&env(&[("CAIRN_CONFIG", "")])),
            (PathBuf::from(SITE_FILE), false)
        );
        assert_eq!(
            site_path(&env(&[("CAIRN_CONFIG", "/x/c.toml")])),
            (PathBuf::from("/x/c.toml"), true)
        );
        assert_eq!(user_path(&env(&[])), None);
        assert_eq!(
            user_path(&env(&[("HOME", "/home/a")])),
            Some(PathBuf::from("/home/a/.config/cairn/config.toml"))
        );
        assert_eq!(
            user_path(&env(&[("HOME", "/home/a"), ("XDG_CONFIG_HOME", "/xdg")])),
            Some(PathBuf::from("/xdg/cairn/config.toml"))
        );
        // A relative XDG_CONFIG_HOME is ignored, as the XDG spec says.
        assert_eq!(
            user_path(&env(&[("HOME", "/home/a"), ("XDG_CONFIG_HOME", "rel")])),
            Some(PathBuf::from("/home/a/.config/cairn/config.toml"))
        );
    }

    #[test]
    fn unknown_keys_name_the_key_the_file_and_the_line() {
        let path = Path::new("/etc/cairn/cairn.toml");
        let err = parse_site(path, "[defaults]\nmount = \"fuse\"\ncahce_dir = \"/x\"\n")
            .expect_err("typo");
        let text = crate::error::error_chain(&err);
        assert!(text.contains("/etc/cairn/cairn.toml"), "{text}");
        assert!(text.contains("cahce_dir"), "{text}");
        assert!(text.contains("line 3"), "{text}");
        let err = parse_site(path, "[polcy]\n").expect_err("table typo");
        assert!(crate::error::error_chain(&err).contains("polcy"));
        let err = parse_site(path, "[defaults]\nmount = \"loop\"\n").expect_err("bad mode");
        assert!(crate::error::error_chain(&err).contains("loop"));
    }

    #[test]
    fn site_file_records_its_path_in_the_policy() {
        let site = parse_site(Path::new("/s.toml"), "").expect("empty");
        assert_eq!(site.policy.site_file, Some(PathBuf::from("/s.toml")));
        assert_eq!(site.defaults, Default::default());
    }

    #[test]
    fn users_cannot_set_policy_or_hooks() {
        let user = Path::new("/home/a/.config/cairn/config.toml");
        let site = Path::new("/etc/cairn/cairn.toml");
        for text in [
            "[policy]\nimage_paths = [\"/\"]\n",
            "[hooks.x]\nbinds = []\n",
        ] {
            let err = parse_user(user, text, site).expect_err("policy");
            let msg = err.to_string();
            assert!(msg.contains("users cannot set policy"), "{msg}");
            assert!(msg.contains("config.toml"), "{msg}");
        }
        let ok = parse_user(user, "[defaults]\nfuse_threads = 3\n", site).expect("defaults");
        assert_eq!(ok.defaults.fuse_threads, Some(3));
        let err = parse_user(user, "[defaults]\nthreads = 3\n", site).expect_err("typo");
        assert!(crate::error::error_chain(&err).contains("threads"));
    }

    #[test]
    fn load_reads_both_files_and_tolerates_missing_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = dir.path().join("site.toml");
        let xdg = dir.path().join("xdg");
        let vars = env(&[
            ("CAIRN_CONFIG", site.to_str().expect("utf8")),
            ("XDG_CONFIG_HOME", xdg.to_str().expect("utf8")),
        ]);
        // An explicit $CAIRN_CONFIG must exist.
        assert!(matches!(load(&vars), Err(ConfigError::Read { .. })));
        fs::write(&site, "[defaults]\nmount = \"fuse\"\n").expect("write");
        let files = load(&vars).expect("load");
        assert_eq!(files.user, None);
        let loaded = files.site.expect("site");
        assert_eq!(loaded.path, site);
        fs::create_dir_all(xdg.join("cairn")).expect("mkdir");
        fs::write(
            xdg.join("cairn/config.toml"),
            "[defaults]\nmount = \"auto\"\n",
        )
        .expect("w");
        let files = load(&vars).expect("load");
        assert_eq!(
            files.user.expect("user").file.defaults.mount,
            Some(crate::config::MountMode::Auto)
        );
        // Nothing at all: all defaults.
        let none = load(&env(&[(
            "HOME",
            dir.path().join("nohome").to_str().expect("u"),
        )]));
        // (the real /etc/cairn/cairn.toml may exist on a host: only the user part is pinned)
        if let Ok(files) = none {
            assert_eq!(files.user, None);
        }
    }
}
