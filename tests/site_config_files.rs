//! Every file under site-config/ parses as a site file and resolves (hooks
//! defined, binds and devices valid); the documented cairn.toml equals the
//! built-in defaults; `cairn config show` reads each of them.

mod common;

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use cairn::config::load::{Files, Loaded, parse_site};
use cairn::config::resolve::{CommandLine, Effective, resolve};
use common::*;

fn site_config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("site-config")
}

/// Every file below `dir`, recursively (new examples are covered as added).
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    walk(&site_config_dir(), &mut files);
    files.sort();
    files
}

fn vars() -> Vec<(OsString, OsString)> {
    vec![
        ("HOME".into(), "/home/alice".into()),
        ("USER".into(), "alice".into()),
    ]
}

fn resolve_file(path: &Path) -> Effective {
    let text = fs::read_to_string(path).expect("read");
    let file = parse_site(path, &text).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
    let files = Files {
        site: Some(Loaded {
            path: path.to_path_buf(),
            file,
        }),
        user: None,
    };
    let eff = resolve(&files, &vars(), &CommandLine::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eff.run_edits()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    eff
}

#[test]
fn every_file_parses_and_resolves() {
    let files = all_files();
    assert!(files.len() >= 4, "{files:?}");
    for path in &files {
        assert_eq!(
            path.extension().and_then(|e| e.to_str()),
            Some("toml"),
            "only TOML files belong in site-config/: {}",
            path.display()
        );
        let eff = resolve_file(path);
        // Every hook a file defines converts into edits.
        for name in eff.hook_defs.keys() {
            let with_hook = CommandLine {
                hooks: vec![name.clone()],
                ..CommandLine::default()
            };
            let text = fs::read_to_string(path).expect("read");
            let files = Files {
                site: Some(Loaded {
                    path: path.clone(),
                    file: parse_site(path, &text).expect("parse"),
                }),
                user: None,
            };
            let eff = resolve(&files, &vars(), &with_hook).expect("resolve with hook");
            let edits = eff.run_edits().expect("edits");
            assert!(
                edits.iter().any(|e| e.origin == format!("hook {name}")),
                "{}: hook {name}",
                path.display()
            );
        }
    }
}

#[test]
fn documented_file_equals_the_built_in_defaults() {
    let documented = resolve_file(&site_config_dir().join("cairn.toml"));
    let builtin = resolve(&Files::default(), &vars(), &CommandLine::default()).expect("defaults");
    assert_eq!(documented.cache_dir.value, builtin.cache_dir.value);
    assert_eq!(documented.mount.value, builtin.mount.value);
    assert_eq!(documented.fuse_threads.value, builtin.fuse_threads.value);
    assert_eq!(documented.binds, builtin.binds);
    assert_eq!(documented.env, builtin.env);
    assert_eq!(documented.hooks.value, builtin.hooks.value);
    assert_eq!(documented.cdi_spec_dirs.value, builtin.cdi_spec_dirs.value);
    assert_eq!(documented.join_auto.value, builtin.join_auto.value);
    assert_eq!(
        documented.join_linger_ms.value,
        builtin.join_linger_ms.value
    );
    assert_eq!(documented.warm_linger.value, builtin.warm_linger.value);
    let mut policy = documented.policy.clone();
    policy.site_file = None;
    assert_eq!(policy, builtin.policy);
    assert!(documented.hook_defs.is_empty());
    assert_eq!(
        documented.run_edits().expect("edits"),
        builtin.run_edits().expect("edits")
    );
}

#[test]
fn the_examples_show_what_they_promise() {
    let dir = site_config_dir().join("examples");
    let mpi = resolve_file(&dir.join("host-mpi.toml"));
    let hook = &mpi.hook_defs["host-mpi"];
    assert!(
        hook.binds.iter().any(|b| b.contains(":/opt/host-mpi/lib")),
        "{hook:?}"
    );
    assert!(
        hook.env.prepend["LD_LIBRARY_PATH"].starts_with("/opt/host-mpi/lib"),
        "{hook:?}"
    );
    let gpu = resolve_file(&dir.join("gpu-cdi.toml"));
    assert!(gpu.cdi_spec_dirs().contains(&PathBuf::from("/etc/cdi")));
    assert!(gpu.hook_defs.contains_key("gpu-libs"));
    let text = fs::read_to_string(dir.join("gpu-cdi.toml")).expect("read");
    assert!(text.contains("nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"));
    assert!(text.contains("--device nvidia.com/gpu=0"));
    let slurm = resolve_file(&dir.join("slurm-cluster.toml"));
    assert_eq!(
        slurm.cache_dir.value,
        Some(PathBuf::from("/local/alice/cairn"))
    );
    assert!(slurm.join_auto.value);
    assert!(
        slurm
            .policy
            .image_paths
            .contains(&"/local/alice/cairn".to_owned())
    );
}

#[test]
fn config_show_reads_every_file() {
    for path in all_files() {
        let out = output(
            cairn_as(&Who::Me)
                .args(["config", "show"])
                .env("CAIRN_CONFIG", &path)
                .env("HOME", "/home/alice")
                .env("USER", "alice")
                .env("XDG_CONFIG_HOME", "/nonexistent-cairn-xdg")
                .env_remove("CAIRN_CACHE"),
        );
        assert_success(&out, &format!("config show {}", path.display()));
        let text = stdout_of(&out);
        assert!(
            text.contains(&format!("# site config: {} (read)", path.display())),
            "{text}"
        );
    }
}
