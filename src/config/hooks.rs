//! Pure conversions from the config's tables to container edits: a hook's
//! binds, devices and environment, an `[env]` table, a list of bind specs.
//! The `cdi` side applies the resulting [`ContainerEdits`] in a run.

use std::path::{Path, PathBuf};

use crate::config::{ConfigError, EnvTable, Hook};
use crate::spec::bind::{normalize_absolute, parse_bind};
use crate::spec::edits::{ContainerEdits, DeviceNode, EditBind, EnvEdit, NamedEdits};

/// An `[env]` table as edits, in the documented order: unset, set,
/// prepend, append (each sorted by name, as the table is).
pub fn env_edits(table: &EnvTable) -> Vec<EnvEdit> {
    let mut out: Vec<EnvEdit> = table.unset.iter().cloned().map(EnvEdit::Unset).collect();
    out.extend(
        table
            .set
            .iter()
            .map(|(k, v)| EnvEdit::Set(k.clone(), v.clone())),
    );
    out.extend(
        table
            .prepend
            .iter()
            .map(|(k, v)| EnvEdit::Prepend(k.clone(), v.clone())),
    );
    out.extend(
        table
            .append
            .iter()
            .map(|(k, v)| EnvEdit::Append(k.clone(), v.clone())),
    );
    out
}

/// Check the `unset` globs of an `[env]` table (as `--unset-env` checks
/// its own): `origin` and `key` name the table in errors.
pub fn check_unset_globs(origin: &str, key: &str, table: &EnvTable) -> Result<(), ConfigError> {
    for glob in &table.unset {
        if let Some(reason) = crate::spec::env::glob_problem(glob) {
            return Err(ConfigError::BadValue {
                origin: origin.to_owned(),
                key: key.to_owned(),
                value: glob.clone(),
                reason,
            });
        }
    }
    Ok(())
}

/// A bind spec of the site config (`SRC[:DST[:ro]]`, SRC absolute) as an
/// edit bind. `origin` names where it came from in errors.
pub fn edit_bind(origin: &str, spec: &str) -> Result<EditBind, ConfigError> {
    let parsed = parse_bind(spec).map_err(|source| ConfigError::Bind {
        origin: origin.to_owned(),
        spec: spec.to_owned(),
        source,
    })?;
    let src = Some(parsed.src.as_path())
        .filter(|s| s.is_absolute())
        .and_then(normalize_absolute)
        .ok_or_else(|| ConfigError::RelativeBindSource {
            origin: origin.to_owned(),
            spec: spec.to_owned(),
        })?;
    Ok(EditBind {
        src,
        dst: parsed.dst,
        read_only: parsed.read_only,
    })
}

/// `HOST[:CONTAINER]`, both absolute (CONTAINER defaults to HOST).
pub fn parse_device(origin: &str, spec: &str) -> Result<DeviceNode, ConfigError> {
    let bad = || ConfigError::Device {
        origin: origin.to_owned(),
        spec: spec.to_owned(),
    };
    let mut parts = spec.split(':');
    let host = parts.next().unwrap_or_default();
    let inside = parts.next().unwrap_or(host);
    if parts.next().is_some() {
        return Err(bad());
    }
    let absolute = |p: &str| {
        Some(Path::new(p))
            .filter(|p| p.is_absolute())
            .and_then(normalize_absolute)
            .filter(|p| p != Path::new("/"))
    };
    let host_path: PathBuf = absolute(host).ok_or_else(bad)?;
    let path: PathBuf = absolute(inside).ok_or_else(bad)?;
    Ok(DeviceNode { host_path, path })
}

/// A hook as the edits it makes, named `hook NAME`.
pub fn hook_edits(name: &str, hook: &Hook) -> Result<NamedEdits, ConfigError> {
    let origin = format!("hook {name}");
    check_unset_globs(&origin, "env.unset", &hook.env)?;
    let binds = hook
        .binds
        .iter()
        .map(|b| edit_bind(&origin, b))
        .collect::<Result<Vec<_>, _>>()?;
    let devices = hook
        .devices
        .iter()
        .map(|d| parse_device(&origin, d))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NamedEdits {
        origin,
        edits: ContainerEdits {
            binds,
            env: env_edits(&hook.env),
            devices,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn table() -> EnvTable {
        EnvTable {
            set: BTreeMap::from([("B".into(), "2".into()), ("A".into(), "1".into())]),
            prepend: BTreeMap::from([("PATH".into(), "/opt/bin".into())]),
            append: BTreeMap::from([("MANPATH".into(), "/opt/man".into())]),
            unset: vec!["OMPI_*".into()],
        }
    }

    #[test]
    fn env_table_order_is_unset_set_prepend_append() {
        assert_eq!(
            env_edits(&table()),
            vec![
                EnvEdit::Unset("OMPI_*".into()),
                EnvEdit::Set("A".into(), "1".into()),
                EnvEdit::Set("B".into(), "2".into()),
                EnvEdit::Prepend("PATH".into(), "/opt/bin".into()),
                EnvEdit::Append("MANPATH".into(), "/opt/man".into()),
            ]
        );
        assert!(env_edits(&EnvTable::default()).is_empty());
    }

    #[test]
    fn binds_need_an_absolute_source() {
        let b = edit_bind("x", "/usr/lib/openmpi:/opt/host-mpi/lib:ro").expect("bind");
        assert_eq!(
            b,
            EditBind {
                src: "/usr/lib/openmpi".into(),
                dst: "/opt/host-mpi/lib".into(),
                read_only: true
            }
        );
        let same = edit_bind("x", "/data/./a/../b").expect("bind");
        assert_eq!(same.src, PathBuf::from("/data/b"));
        assert_eq!(same.dst, PathBuf::from("/data/b"));
        assert!(!same.read_only);
        let rel = edit_bind("hook mpi", "lib:/opt/lib").expect_err("relative");
        assert!(matches!(rel, ConfigError::RelativeBindSource { .. }));
        assert!(rel.to_string().contains("hook mpi"), "{rel}");
        assert!(matches!(
            edit_bind("x", "/a:/b:rx"),
            Err(ConfigError::Bind { .. })
        ));
        assert!(matches!(
            edit_bind("x", "/a:rel"),
            Err(ConfigError::Bind { .. })
        ));
        assert!(matches!(edit_bind("x", ""), Err(ConfigError::Bind { .. })));
    }

    #[test]
    fn devices_default_to_the_host_path() {
        assert_eq!(
            parse_device("x", "/dev/nvidia0").expect("dev"),
            DeviceNode {
                host_path: "/dev/nvidia0".into(),
                path: "/dev/nvidia0".into()
            }
        );
        assert_eq!(
            parse_device("x", "/dev/fake0:/dev/nvidia0")
                .expect("dev")
                .path,
            PathBuf::from("/dev/nvidia0")
        );
        for bad in ["", "dev/x", "/dev/x:rel", "/a:/b:/c", "/", "/dev/x:"] {
            assert!(
                matches!(parse_device("x", bad), Err(ConfigError::Device { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn hook_becomes_named_edits() {
        let hook = Hook {
            description: Some("host MPI".into()),
            binds: vec!["/usr/lib/x86_64-linux-gnu/openmpi:/opt/host-mpi/lib:ro".into()],
            devices: vec!["/dev/infiniband/uverbs0".into()],
            env: EnvTable {
                prepend: BTreeMap::from([("LD_LIBRARY_PATH".into(), "/opt/host-mpi/lib".into())]),
                ..EnvTable::default()
            },
        };
        let named = hook_edits("mpi", &hook).expect("hook");
        assert_eq!(named.origin, "hook mpi");
        assert_eq!(named.edits.binds.len(), 1);
        assert_eq!(named.edits.binds[0].dst, PathBuf::from("/opt/host-mpi/lib"));
        assert_eq!(
            named.edits.devices[0].path,
            PathBuf::from("/dev/infiniband/uverbs0")
        );
        assert_eq!(
            named.edits.env,
            vec![EnvEdit::Prepend(
                "LD_LIBRARY_PATH".into(),
                "/opt/host-mpi/lib".into()
            )]
        );
        let broken = Hook {
            devices: vec!["nope".into()],
            ..Hook::default()
        };
        let err = hook_edits("gpu", &broken).expect_err("bad device");
        assert!(err.to_string().contains("hook gpu"), "{err}");
    }
}
