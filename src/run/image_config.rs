//! The image's stored OCI config applied to a run (pure): Env over the
//! host's (a PATH the image does not set and the user does not set with
//! `-e` stays the host's, extended to reach the image's `/bin` and `/sbin`),
//! Entrypoint + Cmd (combined by Docker's rules) when no command is
//! given, WorkingDir unless `--cd`,
//! User (numeric or looked up in the image's passwd/group) unless
//! `--uid`/`--gid`. An image without stored config changes nothing.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::image::meta::RunConfig;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageConfigError {
    #[error("image config User {spec:?}: no user {name:?} in the image's /etc/passwd")]
    UnknownUser { spec: String, name: String },
    #[error("image config User {spec:?}: no group {name:?} in the image's /etc/group")]
    UnknownGroup { spec: String, name: String },
    #[error("image config User {spec:?}: empty user")]
    EmptyUser { spec: String },
}

/// The host's environment with the image's `Env` set over it (the image's
/// PATH included: the host's would name host directories).
pub fn merge_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    config: Option<&RunConfig>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = host.into_iter().collect();
    for entry in config.map(|c| c.env.as_slice()).unwrap_or_default() {
        // An entry without '=' is Docker's "pass the host's through": the
        // host's value is already there.
        let Some((k, v)) = entry.split_once('=') else {
            continue;
        };
        if k.is_empty() {
            continue;
        }
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.into(),
            None => env.push((k.into(), v.into())),
        }
    }
    env
}

/// Whether the job's PATH is the host's: neither the image's `Env` nor a
/// `-e PATH=...` (or env file) sets it. Prepends and appends of hooks and
/// sites keep it the host's.
pub fn path_from_host(config: Option<&RunConfig>, ops: &[crate::run::env::EnvOp]) -> bool {
    let image_sets = config
        .map(|c| c.env.as_slice())
        .unwrap_or_default()
        .iter()
        .any(|e| e.starts_with("PATH="));
    let user_sets = ops
        .iter()
        .any(|op| matches!(op, crate::run::env::EnvOp::Set(k, _) if k == "PATH"));
    !image_sets && !user_sets
}

/// The command to run: the one given on the command line as it is (a batch
/// script's `cairn run img -- ./app` runs `./app`, as `ch-run` and
/// `apptainer exec` do); with none, the image's Entrypoint followed by its
/// Cmd (Docker's rule for combining the two); `/bin/sh` when that leaves
/// nothing.
pub fn command(config: Option<&RunConfig>, given: &[OsString]) -> Vec<OsString> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut argv: Vec<OsString> = Vec::new();
    if let Some(c) = config {
        argv.extend(c.entrypoint.iter().flatten().map(OsString::from));
        argv.extend(c.cmd.iter().flatten().map(OsString::from));
    }
    if argv.is_empty() {
        argv.push("/bin/sh".into());
    }
    argv
}

/// `--cd`, else the image's WorkingDir (relative ones taken from `/`, as
/// Docker does), else `/`.
pub fn working_dir(config: Option<&RunConfig>, cd: Option<&PathBuf>) -> Option<PathBuf> {
    if let Some(dir) = cd {
        return Some(dir.clone());
    }
    let wd = config?.working_dir.as_deref().filter(|w| !w.is_empty())?;
    Some(PathBuf::from("/").join(wd))
}

/// The ids of the image's `User` (`user`, `uid`, `user:group`, `uid:gid`):
/// names looked up in the image's passwd and group text. A user without a
/// group gets its passwd entry's primary group (none when it has no entry).
pub fn user_ids(
    spec: &str,
    passwd: &str,
    group: &str,
) -> Result<(u32, Option<u32>), ImageConfigError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(ImageConfigError::EmptyUser { spec: spec.into() });
    }
    let entries = |text: &str| -> Vec<Vec<String>> {
        text.lines()
            .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
            .filter(|f| f.len() >= 3)
            .collect()
    };
    let users = entries(passwd);
    let by_name = users.iter().find(|f| f[0] == user);
    let uid = match user.parse::<u32>() {
        Ok(n) => n,
        Err(_) => by_name.and_then(|f| f[2].parse().ok()).ok_or_else(|| {
            ImageConfigError::UnknownUser {
                spec: spec.into(),
                name: user.into(),
            }
        })?,
    };
    let gid = match grp.filter(|g| !g.is_empty()) {
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => entries(group)
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| ImageConfigError::UnknownGroup {
                    spec: spec.into(),
                    name: g.into(),
                })?,
        }),
        None => users
            .iter()
            .find(|f| f[2].parse::<u32>().ok() == Some(uid))
            .and_then(|f| f.get(3))
            .and_then(|g| g.parse().ok()),
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RunConfig {
        RunConfig {
            env: vec![
                "PATH=/opt/bin:/usr/bin".into(),
                "LANG=C".into(),
                "EMPTY=".into(),
                "NOVALUE".into(),
                "=x".into(),
            ],
            entrypoint: Some(vec!["/entry".into(), "-x".into()]),
            cmd: Some(vec!["serve".into(), "--port=1".into()]),
            working_dir: Some("/work".into()),
            user: Some("app".into()),
            ..RunConfig::default()
        }
    }

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn image_env_is_set_over_the_hosts() {
        let host = vec![
            (OsString::from("PATH"), OsString::from("/host/bin")),
            ("SLURM_JOB_ID".into(), "7".into()),
            ("LANG".into(), "fr".into()),
        ];
        let env = merge_env(host.clone(), Some(&cfg()));
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/opt/bin:/usr/bin".into()),
                ("SLURM_JOB_ID".into(), "7".into()),
                ("LANG".into(), "C".into()),
                ("EMPTY".into(), "".into()),
            ]
        );
        assert_eq!(merge_env(host.clone(), None), host);
    }

    #[test]
    fn docker_rules_for_entrypoint_and_cmd() {
        let c = cfg();
        assert_eq!(
            command(Some(&c), &[]),
            os(&["/entry", "-x", "serve", "--port=1"])
        );
        // A given command runs as it is: the Entrypoint does not wrap it.
        assert_eq!(command(Some(&c), &os(&["a", "b"])), os(&["a", "b"]));
        let cmd_only = RunConfig {
            entrypoint: None,
            ..cfg()
        };
        assert_eq!(command(Some(&cmd_only), &[]), os(&["serve", "--port=1"]));
        assert_eq!(command(Some(&cmd_only), &os(&["ls"])), os(&["ls"]));
        let entry_only = RunConfig { cmd: None, ..cfg() };
        assert_eq!(command(Some(&entry_only), &[]), os(&["/entry", "-x"]));
        let empty_entry = RunConfig {
            entrypoint: Some(vec![]),
            cmd: Some(vec![]),
            ..cfg()
        };
        assert_eq!(command(Some(&empty_entry), &[]), os(&["/bin/sh"]));
        assert_eq!(command(None, &[]), os(&["/bin/sh"]));
        assert_eq!(command(None, &os(&["id"])), os(&["id"]));
    }

    #[test]
    fn working_dir_unless_cd() {
        let c = cfg();
        assert_eq!(working_dir(Some(&c), None), Some(PathBuf::from("/work")));
        let cd = PathBuf::from("/tmp");
        assert_eq!(working_dir(Some(&c), Some(&cd)), Some(cd.clone()));
        assert_eq!(working_dir(None, None), None);
        let rel = RunConfig {
            working_dir: Some("srv".into()),
            ..cfg()
        };
        assert_eq!(working_dir(Some(&rel), None), Some(PathBuf::from("/srv")));
        let empty = RunConfig {
            working_dir: Some(String::new()),
            ..cfg()
        };
        assert_eq!(working_dir(Some(&empty), None), None);
    }

    #[test]
    fn users_by_number_and_by_name() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\nstaff:x:50:\napp:x:1001:\n";
        assert_eq!(user_ids("app", passwd, group), Ok((1000, Some(1001))));
        assert_eq!(user_ids("1000", passwd, group), Ok((1000, Some(1001))));
        assert_eq!(user_ids("4242", passwd, group), Ok((4242, None)));
        assert_eq!(user_ids("app:staff", passwd, group), Ok((1000, Some(50))));
        assert_eq!(user_ids("0:7", passwd, group), Ok((0, Some(7))));
        assert_eq!(user_ids("root", passwd, group), Ok((0, Some(0))));
        assert_eq!(
            user_ids("ghost", passwd, group),
            Err(ImageConfigError::UnknownUser {
                spec: "ghost".into(),
                name: "ghost".into()
            })
        );
        assert_eq!(
            user_ids("app:nogroup", passwd, group),
            Err(ImageConfigError::UnknownGroup {
                spec: "app:nogroup".into(),
                name: "nogroup".into()
            })
        );
        assert!(matches!(
            user_ids(":5", passwd, group),
            Err(ImageConfigError::EmptyUser { .. })
        ));
    }
}
