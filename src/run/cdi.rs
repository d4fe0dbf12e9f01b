//! CDI (Container Device Interface) devices: `--device vendor.com/class=name`
//! (or `vendor.com/class=all`) read from the CDI spec files (`*.json`,
//! `*.yaml`, `*.yml`) of the spec directories (default `/etc/cdi` then
//! `/var/run/cdi`), mapped to [`ContainerEdits`] with the origin
//! `device vendor.com/class=name`.
//!
//! Parsing ([`parse_spec`]) is a pure function of a file's bytes (a fuzz
//! target covers it); [`load_specs`] reads the directories; [`resolve`]
//! picks the devices. As the CDI spec says, a later directory overrides an
//! earlier one for the same device; two files of one directory that define
//! the same device conflict (an error when that device is asked for).
//!
//! What cairn does with each part of a spec:
//! - `env` (`K=V`): set.
//! - `deviceNodes`: the host's node is bound (an unprivileged user namespace
//!   cannot mknod); `hostPath` defaults to `path`; `type`, `major`, `minor`,
//!   `fileMode`, `uid`, `gid` describe the node the host already has, and
//!   `permissions` (device cgroup rules) has nothing to act on: cairn
//!   creates no device cgroup.
//! - `mounts`: binds, read-only with the `ro` option (other options such as
//!   `nosuid`, `nodev`, `bind`, `rbind` are what a bind is anyway); a
//!   missing container path is created as a mount point. A mount of another
//!   `type` (a tmpfs) is skipped with a warning.
//! - `hooks`: cairn runs no OCI hooks. `update-ldcache` hooks (what
//!   `nvidia-ctk cdi generate` emits so the injected libraries are found)
//!   are honoured by prepending their `--folder` directories to
//!   LD_LIBRARY_PATH; every other hook is skipped with one warning naming
//!   it (`create-symlinks`, `enable-cuda-compat`, ...).
//! - `annotations`, `intelRdt`, `additionalGids`, `netDevices`: ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::run::edits::{ContainerEdits, DeviceNode, EditBind, EnvEdit, NamedEdits};

/// Where specs are looked for when the site names no directories.
pub const DEFAULT_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Largest spec file read: a hostile file must not make cairn allocate
/// without bound before the job starts.
pub const MAX_SPEC_BYTES: u64 = 4 * 1024 * 1024;

/// The `cdiVersion`s cairn reads (the CDI spec's 0.3.0 to 1.1.x: the fields
/// cairn uses did not change meaning in between).
fn version_supported(version: &str) -> bool {
    let mut parts = version.split('.');
    let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    let patch_ok = parts
        .next()
        .is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !patch_ok || parts.next().is_some() {
        return false;
    }
    matches!(
        (major, minor),
        ("0", "3" | "4" | "5" | "6" | "7" | "8") | ("1", "0" | "1")
    )
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CdiError {
    #[error("--device {reference:?}: expected vendor.com/class=name (or vendor.com/class=all)")]
    BadReference { reference: String },
    #[error("CDI spec directory {dir}: cannot read it: {reason}")]
    ReadDir { dir: PathBuf, reason: String },
    #[error("CDI spec {path}: cannot read it: {reason}")]
    ReadFile { path: PathBuf, reason: String },
    #[error("CDI spec {path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    #[error("CDI spec {path}: unsupported cdiVersion {version:?} (cairn reads 0.3.0 to 1.1.x)")]
    UnsupportedVersion { path: PathBuf, version: String },
    #[error(
        "--device {reference}: no such device in the CDI specs of {dirs} (they provide: {available})"
    )]
    UnknownDevice {
        reference: String,
        dirs: String,
        available: String,
    },
    #[error(
        "--device {reference}: defined by both {first} and {second} (one directory may define a device once)"
    )]
    Conflict {
        reference: String,
        first: PathBuf,
        second: PathBuf,
    },
}

// The spec as written (camelCase); unknown fields are ignored, since later
// spec versions add fields cairn has no use for.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    cdi_version: String,
    kind: String,
    #[serde(default)]
    devices: Option<Vec<RawDevice>>,
    #[serde(default)]
    container_edits: Option<RawEdits>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDevice {
    name: String,
    #[serde(default)]
    container_edits: Option<RawEdits>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEdits {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    device_nodes: Option<Vec<RawDeviceNode>>,
    #[serde(default)]
    mounts: Option<Vec<RawMount>>,
    #[serde(default)]
    hooks: Option<Vec<RawHook>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDeviceNode {
    path: String,
    #[serde(default)]
    host_path: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMount {
    host_path: String,
    container_path: String,
    #[serde(default)]
    options: Option<Vec<String>>,
    #[serde(default, rename = "type")]
    fs_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawHook {
    hook_name: String,
    path: String,
    #[serde(default)]
    args: Option<Vec<String>>,
}

/// A hook as cairn understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CdiHook {
    /// `update-ldcache --folder DIR...`: DIRs prepended to LD_LIBRARY_PATH.
    UpdateLdcache { folders: Vec<PathBuf> },
    /// Anything else: skipped with a warning naming it.
    Skipped { description: String },
}

/// The edits of a spec or of one of its devices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecEdits {
    pub edits: ContainerEdits,
    pub hooks: Vec<CdiHook>,
    /// Warnings about parts cairn skips (mounts of other types).
    pub skipped: Vec<String>,
}

/// One device of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    pub edits: SpecEdits,
}

/// A validated spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub path: PathBuf,
    pub version: String,
    /// `vendor.com/class`.
    pub kind: String,
    pub devices: Vec<Device>,
    /// Edits every device of the spec brings along (applied once).
    pub edits: SpecEdits,
}

/// `vendor.com/class`: a vendor of letters, digits and `-_.` (starting and
/// ending with a letter or digit), a class of letters, digits and `-_`.
pub fn valid_kind(kind: &str) -> bool {
    let Some((vendor, class)) = kind.split_once('/') else {
        return false;
    };
    let edges = |s: &str| {
        s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    edges(vendor)
        && edges(class)
        && vendor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
}

/// A device name: letters, digits and `-_.:`, starting and ending with a
/// letter or digit.
pub fn valid_device_name(name: &str) -> bool {
    name.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Parse and validate one spec file's bytes; JSON for `*.json`, YAML
/// otherwise (`path` only names the file and picks the format).
pub fn parse_spec(path: &Path, bytes: &[u8]) -> Result<Spec, CdiError> {
    let malformed = |reason: String| CdiError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let is_json = path.extension().is_some_and(|e| e == "json");
    let raw: RawSpec = if is_json {
        serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?
    } else {
        serde_norway::from_slice(bytes).map_err(|e| malformed(e.to_string()))?
    };
    if !version_supported(&raw.cdi_version) {
        return Err(CdiError::UnsupportedVersion {
            path: path.to_path_buf(),
            version: raw.cdi_version,
        });
    }
    if !valid_kind(&raw.kind) {
        return Err(malformed(format!(
            "kind {:?} is not vendor.com/class",
            raw.kind
        )));
    }
    let raw_devices = raw.devices.unwrap_or_default();
    if raw_devices.is_empty() {
        return Err(malformed("no devices".into()));
    }
    let mut devices: Vec<Device> = Vec::new();
    for d in raw_devices {
        if !valid_device_name(&d.name) {
            return Err(malformed(format!("device name {:?} is not valid", d.name)));
        }
        if devices.iter().any(|o| o.name == d.name) {
            return Err(malformed(format!("device {:?} is defined twice", d.name)));
        }
        let what = format!("device {:?}", d.name);
        let edits =
            convert_edits(&what, d.container_edits.unwrap_or_default()).map_err(malformed)?;
        devices.push(Device {
            name: d.name,
            edits,
        });
    }
    let edits = convert_edits("containerEdits", raw.container_edits.unwrap_or_default())
        .map_err(malformed)?;
    Ok(Spec {
        path: path.to_path_buf(),
        version: raw.cdi_version,
        kind: raw.kind,
        devices,
        edits,
    })
}

fn absolute(what: &str, field: &str, value: &str) -> Result<PathBuf, String> {
    if value.starts_with('/') {
        Ok(PathBuf::from(value))
    } else {
        Err(format!("{what}: {field} {value:?} is not an absolute path"))
    }
}

fn convert_edits(what: &str, raw: RawEdits) -> Result<SpecEdits, String> {
    let mut out = SpecEdits::default();
    for entry in raw.env.unwrap_or_default() {
        let (k, v) = entry
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("{what}: env entry {entry:?} is not NAME=VALUE"))?;
        out.edits.env.push(EnvEdit::Set(k.into(), v.into()));
    }
    for node in raw.device_nodes.unwrap_or_default() {
        let path = absolute(what, "deviceNodes path", &node.path)?;
        let host_path = match node.host_path.as_deref() {
            None | Some("") => path.clone(),
            Some(h) => absolute(what, "deviceNodes hostPath", h)?,
        };
        out.edits.devices.push(DeviceNode { host_path, path });
    }
    for mount in raw.mounts.unwrap_or_default() {
        let dst = absolute(what, "mounts containerPath", &mount.container_path)?;
        match mount.fs_type.as_deref() {
            None | Some("" | "bind" | "rbind" | "none") => {}
            Some(other) => {
                out.skipped.push(format!(
                    "{what}: mount of type {other:?} on {} skipped (cairn only binds)",
                    dst.display()
                ));
                continue;
            }
        }
        let src = absolute(what, "mounts hostPath", &mount.host_path)?;
        let options = mount.options.unwrap_or_default();
        out.edits.binds.push(EditBind {
            src,
            dst,
            read_only: options.iter().any(|o| o == "ro"),
        });
    }
    for hook in raw.hooks.unwrap_or_default() {
        let args = hook.args.unwrap_or_default();
        let hook = classify_hook(&hook.hook_name, &hook.path, &args);
        if let CdiHook::UpdateLdcache { folders } = &hook {
            for folder in folders {
                if !folder.is_absolute() {
                    return Err(format!(
                        "{what}: update-ldcache folder {} is not an absolute path",
                        folder.display()
                    ));
                }
            }
        }
        out.hooks.push(hook);
    }
    Ok(out)
}

/// `update-ldcache` (as `nvidia-cdi-hook update-ldcache --folder DIR` or
/// `nvidia-ctk hook update-ldcache --folder=DIR`) with folders, or a hook
/// to skip.
fn classify_hook(name: &str, path: &str, args: &[String]) -> CdiHook {
    if args.iter().any(|a| a == "update-ldcache") {
        let mut folders = Vec::new();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--folder" {
                if let Some(dir) = it.next() {
                    folders.push(PathBuf::from(dir));
                }
            } else if let Some(dir) = arg.strip_prefix("--folder=") {
                folders.push(PathBuf::from(dir));
            }
        }
        if !folders.is_empty() {
            return CdiHook::UpdateLdcache { folders };
        }
    }
    // The subcommand (args[0] is the program's own name).
    let what = args
        .iter()
        .skip(1)
        .find(|a| !a.starts_with('-') && *a != "hook")
        .map(|a| format!(" {a}"))
        .unwrap_or_default();
    CdiHook::Skipped {
        description: format!("{name} hook {path}{what}"),
    }
}

/// Every spec of the directories, in priority order (later directories
/// later), with each file's directory index.
#[derive(Debug, Clone, Default)]
pub struct SpecSet {
    pub dirs: Vec<PathBuf>,
    pub specs: Vec<(usize, Spec)>,
}

/// Read the spec files of `dirs` (a missing directory has none), each
/// directory's files in name order.
pub fn load_specs(dirs: &[PathBuf]) -> Result<SpecSet, CdiError> {
    use std::io::Read;
    let mut spec_set = SpecSet {
        dirs: dirs.to_vec(),
        specs: Vec::new(),
    };
    for (index, dir) in dirs.iter().enumerate() {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(CdiError::ReadDir {
                    dir: dir.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|e| e == "json" || e == "yaml" || e == "yml")
            })
            .collect();
        files.sort();
        for path in files {
            let unreadable = |e: std::io::Error| CdiError::ReadFile {
                path: path.clone(),
                reason: e.to_string(),
            };
            let file = std::fs::File::open(&path).map_err(unreadable)?;
            if !file.metadata().map_err(unreadable)?.is_file() {
                continue;
            }
            let mut bytes = Vec::new();
            file.take(MAX_SPEC_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(unreadable)?;
            if bytes.len() as u64 > MAX_SPEC_BYTES {
                return Err(CdiError::Malformed {
                    path,
                    reason: format!("larger than {MAX_SPEC_BYTES} bytes"),
                });
            }
            spec_set.specs.push((index, parse_spec(&path, &bytes)?));
        }
    }
    Ok(spec_set)
}

/// The devices asked for, as container edits, and the warnings to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    pub edits: Vec<NamedEdits>,
    pub warnings: Vec<String>,
}

/// Split `vendor.com/class=name`.
pub fn parse_reference(reference: &str) -> Result<(&str, &str), CdiError> {
    let bad = || CdiError::BadReference {
        reference: reference.to_string(),
    };
    let (kind, name) = reference.split_once('=').ok_or_else(bad)?;
    if !valid_kind(kind) || !valid_device_name(name) {
        return Err(bad());
    }
    Ok((kind, name))
}

/// Which spec defines each device: the highest-priority directory wins;
/// within one directory the first file, the others recorded as conflicts.
fn device_index(spec_set: &SpecSet) -> BTreeMap<(String, String), (usize, Vec<usize>)> {
    let mut index: BTreeMap<(String, String), (usize, Vec<usize>)> = BTreeMap::new();
    for (i, (dir, spec)) in spec_set.specs.iter().enumerate() {
        for device in &spec.devices {
            let key = (spec.kind.clone(), device.name.clone());
            match index.get_mut(&key) {
                Some((winner, conflicts)) if spec_set.specs[*winner].0 == *dir => {
                    conflicts.push(i);
                }
                Some(slot) => *slot = (i, Vec::new()),
                None => {
                    index.insert(key, (i, Vec::new()));
                }
            }
        }
    }
    index
}

/// Pick the devices asked for (in order; `all` expands to every device of
/// the kind, by name, unless a device is named `all`) and turn them into named edits: each spec's own edits
/// once, before its first device.
pub fn resolve_devices(spec_set: &SpecSet, references: &[String]) -> Result<Resolved, CdiError> {
    let index = device_index(spec_set);
    let mut picked: Vec<(String, usize)> = Vec::new();
    for reference in references {
        let (kind, name) = parse_reference(reference)?;
        // `all` is every device of the kind, unless a spec defines a
        // device of that name itself (as `nvidia-ctk cdi generate` does).
        let literal = index.contains_key(&(kind.to_string(), name.to_string()));
        let found: Vec<(String, usize)> = if name == "all" && !literal {
            index
                .iter()
                .filter(|((k, _), _)| k == kind)
                .map(|((k, n), (i, _))| (format!("{k}={n}"), *i))
                .collect()
        } else {
            match index.get(&(kind.to_string(), name.to_string())) {
                Some((i, conflicts)) => {
                    if let Some(other) = conflicts.first() {
                        return Err(CdiError::Conflict {
                            reference: reference.clone(),
                            first: spec_set.specs[*i].1.path.clone(),
                            second: spec_set.specs[*other].1.path.clone(),
                        });
                    }
                    vec![(reference.clone(), *i)]
                }
                None => Vec::new(),
            }
        };
        if found.is_empty() {
            let available = index
                .keys()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>();
            return Err(CdiError::UnknownDevice {
                reference: reference.clone(),
                dirs: spec_set
                    .dirs
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                available: if available.is_empty() {
                    "none".into()
                } else {
                    available.join(", ")
                },
            });
        }
        for f in found {
            if !picked.contains(&f) {
                picked.push(f);
            }
        }
    }
    let mut out = Resolved::default();
    let mut specs_done: Vec<usize> = Vec::new();
    for (reference, i) in picked {
        let spec = &spec_set.specs[i].1;
        if !specs_done.contains(&i) {
            specs_done.push(i);
            let origin = format!("device {} (spec {})", spec.kind, spec.path.display());
            push_edits(&mut out, origin, &spec.edits);
        }
        let name = reference
            .split_once('=')
            .map(|(_, n)| n)
            .unwrap_or_default();
        if let Some(device) = spec.devices.iter().find(|d| d.name == name) {
            push_edits(&mut out, format!("device {reference}"), &device.edits);
        }
    }
    Ok(out)
}

fn push_edits(out: &mut Resolved, origin: String, spec_edits: &SpecEdits) {
    let mut edits = spec_edits.edits.clone();
    for hook in &spec_edits.hooks {
        match hook {
            CdiHook::UpdateLdcache { folders } => {
                let list = folders
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":");
                edits
                    .env
                    .push(EnvEdit::Prepend("LD_LIBRARY_PATH".into(), list));
            }
            CdiHook::Skipped { description } => {
                let warning =
                    format!("{origin}: cairn runs no OCI hooks; skipped the {description}");
                if !out
                    .warnings
                    .iter()
                    .any(|w| w.ends_with(description.as_str()))
                {
                    out.warnings.push(warning);
                }
            }
        }
    }
    for skipped in &spec_edits.skipped {
        out.warnings.push(format!("{origin}: {skipped}"));
    }
    if edits != ContainerEdits::default() {
        out.edits.push(NamedEdits { origin, edits });
    }
}

/// `--device` values as container edits, from the specs in `dirs`.
pub fn device_edits(references: &[String], dirs: &[PathBuf]) -> Result<Resolved, CdiError> {
    if references.is_empty() {
        return Ok(Resolved::default());
    }
    // Refuse a malformed reference before reading any file.
    for reference in references {
        parse_reference(reference)?;
    }
    resolve_devices(&load_specs(dirs)?, references)
}

/// The `cdi_spec` fuzz target's harness (also run over the seeds in CI):
/// each input parsed as JSON and as YAML; errors are fine, panics are not,
/// and a spec that parses has a valid kind and device names and absolute
/// paths only.
pub fn fuzz_spec(data: &[u8]) {
    for name in ["fuzz.json", "fuzz.yaml"] {
        let Ok(spec) = parse_spec(Path::new(name), data) else {
            continue;
        };
        assert!(valid_kind(&spec.kind), "{spec:?}");
        let edits = std::iter::once(&spec.edits).chain(spec.devices.iter().map(|d| &d.edits));
        for e in edits {
            for b in &e.edits.binds {
                assert!(b.src.is_absolute() && b.dst.is_absolute(), "{b:?}");
            }
            for d in &e.edits.devices {
                assert!(d.path.is_absolute() && d.host_path.is_absolute(), "{d:?}");
            }
        }
        for d in &spec.devices {
            assert!(valid_device_name(&d.name), "{d:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: &str = r#"{
        "cdiVersion": "0.6.0",
        "kind": "cairn.test/gpu",
        "devices": [
            {"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/gpu0"}]}},
            {"name": "1", "containerEdits": {"deviceNodes": [{"path": "/dev/gpu1", "hostPath": "/dev/host1", "type": "c", "major": 195, "minor": 1, "permissions": "rw"}]}}
        ],
        "containerEdits": {
            "env": ["GPU_VENDOR=cairn", "EMPTY="],
            "mounts": [
                {"hostPath": "/usr/lib/gpu", "containerPath": "/usr/local/gpu/lib", "options": ["ro", "nosuid", "nodev", "bind"]},
                {"hostPath": "tmpfs", "containerPath": "/run/x", "type": "tmpfs"}
            ],
            "hooks": [
                {"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/local/gpu/lib"]},
                {"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "create-symlinks", "--link", "a::b"]}
            ]
        }
    }"#;

    fn spec(name: &str, text: &str) -> Spec {
        parse_spec(Path::new(name), text.as_bytes()).expect(name)
    }

    #[test]
    fn a_json_spec_maps_to_container_edits() {
        let s = spec("gpu.json", JSON);
        assert_eq!(s.kind, "cairn.test/gpu");
        assert_eq!(s.devices.len(), 2);
        assert_eq!(
            s.devices[1].edits.edits.devices,
            vec![DeviceNode {
                host_path: "/dev/host1".into(),
                path: "/dev/gpu1".into()
            }]
        );
        assert_eq!(
            s.devices[0].edits.edits.devices[0].host_path,
            PathBuf::from("/dev/gpu0")
        );
        assert_eq!(
            s.edits.edits.env,
            vec![
                EnvEdit::Set("GPU_VENDOR".into(), "cairn".into()),
                EnvEdit::Set("EMPTY".into(), "".into())
            ]
        );
        assert_eq!(
            s.edits.edits.binds,
            vec![EditBind {
                src: "/usr/lib/gpu".into(),
                dst: "/usr/local/gpu/lib".into(),
                read_only: true
            }]
        );
        assert_eq!(s.edits.skipped.len(), 1, "{:?}", s.edits.skipped);
        assert_eq!(
            s.edits.hooks[0],
            CdiHook::UpdateLdcache {
                folders: vec!["/usr/local/gpu/lib".into()]
            }
        );
        assert!(matches!(&s.edits.hooks[1], CdiHook::Skipped { description }
            if description == "createContainer hook /usr/bin/nvidia-cdi-hook create-symlinks"));
    }

    #[test]
    fn the_same_spec_in_yaml_parses_the_same() {
        let yaml = r#"
cdiVersion: 0.6.0
kind: cairn.test/gpu
devices:
- name: "0"
  containerEdits:
    deviceNodes:
    - path: /dev/gpu0
- name: "1"
  containerEdits:
    deviceNodes:
    - path: /dev/gpu1
      hostPath: /dev/host1
      type: c
      major: 195
      minor: 1
      permissions: rw
containerEdits:
  env: [GPU_VENDOR=cairn, EMPTY=]
  mounts:
  - hostPath: /usr/lib/gpu
    containerPath: /usr/local/gpu/lib
    options: [ro, nosuid, nodev, bind]
  - {hostPath: tmpfs, containerPath: /run/x, type: tmpfs}
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, update-ldcache, --folder, /usr/local/gpu/lib]
  - hookName: createContainer
    path: /usr/bin/nvidia-cdi-hook
    args: [nvidia-cdi-hook, create-symlinks, --link, "a::b"]
"#;
        let mut from_yaml = spec("gpu.yaml", yaml);
        from_yaml.path = "gpu.json".into();
        assert_eq!(from_yaml, spec("gpu.json", JSON));
    }

    #[test]
    fn malformed_specs_name_the_file_and_the_problem() {
        let bad = |name: &str, text: &str| {
            parse_spec(Path::new(name), text.as_bytes())
                .expect_err(text)
                .to_string()
        };
        let base = |edits: &str| {
            format!(
                r#"{{"cdiVersion":"0.5.0","kind":"v.com/c","devices":[{{"name":"a","containerEdits":{edits}}}]}}"#
            )
        };
        assert!(bad("x.json", "{").starts_with("CDI spec x.json: "));
        assert_eq!(
            bad(
                "x.json",
                r#"{"cdiVersion":"9.0.0","kind":"v.com/c","devices":[{"name":"a"}]}"#
            ),
            "CDI spec x.json: unsupported cdiVersion \"9.0.0\" (cairn reads 0.3.0 to 1.1.x)"
        );
        assert!(
            bad(
                "x.json",
                r#"{"cdiVersion":"0.6.0","kind":"noslash","devices":[{"name":"a"}]}"#
            )
            .contains("kind \"noslash\"")
        );
        assert!(
            bad(
                "x.json",
                r#"{"cdiVersion":"0.6.0","kind":"v.com/c","devices":[]}"#
            )
            .contains("no devices")
        );
        assert!(
            bad(
                "x.json",
                r#"{"cdiVersion":"0.6.0","kind":"v.com/c","devices":[{"name":"a"},{"name":"a"}]}"#
            )
            .contains("defined twice")
        );
        assert!(
            bad(
                "x.json",
                r#"{"cdiVersion":"0.6.0","kind":"v.com/c","devices":[{"name":"-a"}]}"#
            )
            .contains("device name")
        );
        assert!(bad("x.json", &base(r#"{"env":["NOEQUALS"]}"#)).contains("NAME=VALUE"));
        assert!(
            bad("x.json", &base(r#"{"deviceNodes":[{"path":"dev/x"}]}"#))
                .contains("not an absolute path")
        );
        assert!(
            bad(
                "x.json",
                &base(r#"{"mounts":[{"hostPath":"/a","containerPath":"b"}]}"#)
            )
            .contains("containerPath")
        );
        assert!(bad("x.yaml", "cdiVersion: [").starts_with("CDI spec x.yaml: "));
        assert!(bad("x.yaml", "kind: v.com/c\n").contains("cdiVersion"));
    }

    #[test]
    fn versions_kinds_and_names() {
        for v in ["0.3.0", "0.5.0", "0.6.0", "0.8.0", "1.0.0", "1.1.0", "0.6"] {
            assert!(version_supported(v), "{v}");
        }
        for v in [
            "0.2.0", "2.0.0", "1.2.0", "x", "", "0.6.0.1", "0.6.", "0.6.x",
        ] {
            assert!(!version_supported(v), "{v}");
        }
        assert!(valid_kind("nvidia.com/gpu"));
        assert!(valid_kind("vendor-x.example.org/class_1"));
        assert!(!valid_kind("nvidia.com"));
        assert!(!valid_kind("nvidia.com/gpu/x"));
        assert!(!valid_kind("/gpu"));
        assert!(!valid_kind(".com/gpu"));
        assert!(valid_device_name("0"));
        assert!(valid_device_name("GPU-1a2b:mig.3"));
        assert!(!valid_device_name(""));
        assert!(!valid_device_name("a/b"));
        assert!(parse_reference("nvidia.com/gpu=0").is_ok());
        assert!(parse_reference("nvidia.com/gpu").is_err());
        assert!(parse_reference("gpu=0").is_err());
        assert!(parse_reference("nvidia.com/gpu=").is_err());
    }

    fn spec_set(specs: Vec<(usize, Spec)>) -> SpecSet {
        SpecSet {
            dirs: vec!["/etc/cdi".into(), "/var/run/cdi".into()],
            specs,
        }
    }

    #[test]
    fn resolving_devices_applies_spec_edits_once_and_honours_ldcache() {
        let r = spec_set(vec![(0, spec("/etc/cdi/gpu.json", JSON))]);
        let got = resolve_devices(&r, &["cairn.test/gpu=1".into(), "cairn.test/gpu=0".into()])
            .expect("resolve");
        let origins: Vec<&str> = got.edits.iter().map(|e| e.origin.as_str()).collect();
        assert_eq!(
            origins,
            vec![
                "device cairn.test/gpu (spec /etc/cdi/gpu.json)",
                "device cairn.test/gpu=1",
                "device cairn.test/gpu=0"
            ]
        );
        assert!(got.edits[0].edits.env.contains(&EnvEdit::Prepend(
            "LD_LIBRARY_PATH".into(),
            "/usr/local/gpu/lib".into()
        )));
        // One warning for the hook, one for the tmpfs mount.
        assert_eq!(got.warnings.len(), 2, "{:?}", got.warnings);
        assert!(got.warnings.iter().any(|w| w.contains("create-symlinks")));
        let all = resolve_devices(&r, &["cairn.test/gpu=all".into()]).expect("all");
        assert_eq!(all.edits.len(), 3);
        assert_eq!(all.edits[2].origin, "device cairn.test/gpu=1");
    }

    #[test]
    fn unknown_devices_list_what_the_specs_provide() {
        let r = spec_set(vec![(0, spec("/etc/cdi/gpu.json", JSON))]);
        let err = resolve_devices(&r, &["cairn.test/gpu=7".into()]).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "--device cairn.test/gpu=7: no such device in the CDI specs of /etc/cdi, /var/run/cdi (they provide: cairn.test/gpu=0, cairn.test/gpu=1)"
        );
        let err = resolve_devices(&spec_set(vec![]), &["x.com/y=all".into()]).expect_err("none");
        assert!(err.to_string().ends_with("(they provide: none)"), "{err}");
        assert!(matches!(
            resolve_devices(&r, &["nonsense".into()]),
            Err(CdiError::BadReference { .. })
        ));
    }

    #[test]
    fn later_directories_override_and_one_directory_conflicts() {
        let other = JSON.replace("/dev/gpu0", "/dev/override0");
        let r = spec_set(vec![
            (0, spec("/etc/cdi/gpu.json", JSON)),
            (1, spec("/var/run/cdi/gpu.json", &other)),
        ]);
        let got = resolve_devices(&r, &["cairn.test/gpu=0".into()]).expect("resolve");
        assert_eq!(
            got.edits[1].edits.devices[0].path,
            PathBuf::from("/dev/override0")
        );
        assert!(got.edits[0].origin.contains("/var/run/cdi/gpu.json"));
        let r = spec_set(vec![
            (0, spec("/etc/cdi/a.json", JSON)),
            (0, spec("/etc/cdi/b.json", &other)),
        ]);
        let err = resolve_devices(&r, &["cairn.test/gpu=0".into()]).expect_err("conflict");
        assert!(matches!(err, CdiError::Conflict { .. }), "{err:?}");
    }

    #[test]
    fn loading_reads_spec_files_of_each_directory_and_skips_others() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a");
        std::fs::create_dir(&a).expect("mkdir");
        std::fs::write(a.join("gpu.json"), JSON).expect("write");
        std::fs::write(a.join("README"), "not a spec").expect("write");
        let dirs = vec![a.clone(), dir.path().join("missing")];
        let got = device_edits(&["cairn.test/gpu=0".into()], &dirs).expect("edits");
        assert_eq!(got.edits.len(), 2);
        std::fs::write(a.join("broken.yaml"), "cdiVersion: [").expect("write");
        let err = device_edits(&["cairn.test/gpu=0".into()], &dirs).expect_err("broken");
        assert!(
            matches!(&err, CdiError::Malformed { path, .. } if path.ends_with("broken.yaml")),
            "{err:?}"
        );
        assert_eq!(device_edits(&[], &dirs), Ok(Resolved::default()));
    }
}
