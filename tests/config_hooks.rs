//! Hooks from the site config reach the job: `--hook host-mpi` binds a
//! host library directory at a path the image lacks and prepends it to
//! LD_LIBRARY_PATH; a required hook is on without `--hook`; edits come in
//! the documented order (site defaults, then hooks, then `--env`).
//!
//! These need the `cdi` branch's application of ContainerEdits in
//! request::prepare; this branch only produces the edits. Run them with
//! `cargo test --test config_hooks -- --ignored` once both are merged.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn setup(name: &str, toml: impl Fn(&PathBuf) -> String) -> (PathBuf, PathBuf, PathBuf) {
    let base = scratch(name);
    let image = base.join("img");
    copy_busybox_rootfs(&image);
    let libs = base.join("host-mpi-lib");
    fs::create_dir_all(&libs).expect("mkdir");
    fs::write(libs.join("libmpi.so.40"), "not really a library\n").expect("write");
    let site = base.join("cairn.toml");
    fs::write(&site, toml(&libs)).expect("write");
    (base, image, site)
}

fn cairn_run(who: &Who, base: &Path, site: &Path) -> Command {
    let mut cmd = cairn_as(who);
    cmd.env("CAIRN_CONFIG", site)
        .env("XDG_CONFIG_HOME", base.join("xdg"))
        .env_remove("CAIRN_CACHE")
        .arg("run");
    cmd
}

#[test]
fn hook_binds_host_libraries_and_prepends_the_library_path() {
    let (base, image, site) = setup("cfg-hook-mpi", |libs| {
        format!(
            "[defaults.env]\nset = {{ LD_LIBRARY_PATH = \"/usr/lib\" }}\n\
             [hooks.host-mpi]\nbinds = [\"{}:/opt/host-mpi/lib:ro\"]\n\
             [hooks.host-mpi.env]\nprepend = {{ LD_LIBRARY_PATH = \"/opt/host-mpi/lib\" }}\n",
            libs.display()
        )
    });
    assert!(!image.join("opt").exists(), "the image lacks /opt");
    for who in runners("-Urm") {
        let out = output(
            cairn_run(&who, &base, &site)
                .args(["--hook", "host-mpi"])
                .arg(&image)
                .args([
                    "/bin/sh",
                    "-c",
                    "ls /opt/host-mpi/lib; echo $LD_LIBRARY_PATH",
                ]),
        );
        assert_success(&out, "--hook host-mpi");
        assert_eq!(
            stdout_of(&out),
            "libmpi.so.40\n/opt/host-mpi/lib:/usr/lib\n",
            "site default set first, then the hook's prepend"
        );
        // Without the hook: nothing of it.
        let out = output(cairn_run(&who, &base, &site).arg(&image).args([
            "/bin/sh",
            "-c",
            "echo $LD_LIBRARY_PATH; ls /opt 2>&1 || true",
        ]));
        assert_success(&out, "no hook");
        assert!(
            stdout_of(&out).starts_with("/usr/lib\n"),
            "{}",
            stdout_of(&out)
        );
        assert!(!stdout_of(&out).contains("host-mpi"), "{}", stdout_of(&out));
    }
}

#[test]
fn required_hook_is_on_and_env_options_override_it() {
    let (base, image, site) = setup("cfg-hook-required", |libs| {
        format!(
            "[policy]\nrequired_hooks = [\"audit\"]\n\
             [hooks.audit]\nbinds = [\"{}:/srv/audit:ro\"]\nenv.set = {{ AUDIT = \"on\", KEEP = \"site\" }}\n",
            libs.display()
        )
    });
    fs::create_dir_all(image.join("srv")).expect("mkdir");
    for who in runners("-Urm") {
        let out = output(
            cairn_run(&who, &base, &site)
                .args(["--env", "KEEP=user"])
                .arg(&image)
                .args(["/bin/sh", "-c", "echo $AUDIT $KEEP; ls /srv/audit"]),
        );
        assert_success(&out, "required hook");
        assert_eq!(stdout_of(&out), "on user\nlibmpi.so.40\n");
    }
}
