//! The stored image config applied by `cairn run`: an OCI layout built with
//! umoci (Env, Entrypoint, Cmd, WorkingDir, User set by `umoci config`),
//! imported with `cairn import`, run as root and as the ordinary user; the
//! command line's `--cd`, `--uid` and arguments take precedence as Docker's
//! rules say. An image without stored config runs with the host's env
//! and `/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::*;

fn usable(who: &Who) -> bool {
    namespaces_work(who, "-Urm") && require(Path::new("/dev/fuse").exists(), "/dev/fuse")
}

/// The busybox rootfs as an OCI image with a config, imported (once).
fn configured_image() -> Option<&'static Path> {
    static IMG: OnceLock<Option<PathBuf>> = OnceLock::new();
    IMG.get_or_init(|| {
        if !require(have_tool("umoci"), "umoci") {
            return None;
        }
        let dir = scratch("image-config");
        let layout = dir.join("oci");
        let image = format!("{}:t", layout.display());
        let umoci = |args: &[&str]| {
            let out = output(Command::new("umoci").args(args));
            assert_success(&out, &format!("umoci {args:?}"));
        };
        umoci(&["init", "--layout", &layout.display().to_string()]);
        umoci(&["new", "--image", &image]);
        umoci(&[
            "insert",
            "--rootless",
            "--image",
            &image,
            &busybox_rootfs().display().to_string(),
            "/",
        ]);
        umoci(&[
            "config",
            "--image",
            &image,
            "--config.env",
            "FOO=from-image",
            "--config.env",
            "PATH=/usr/bin:/bin",
            "--config.entrypoint",
            "/bin/sh",
            "--config.entrypoint",
            "-c",
            "--config.cmd",
            "echo cmd:$FOO:$PATH:$(pwd):$(id -u):$(id -g)",
            "--config.workingdir",
            "/etc",
            "--config.user",
            "1234:5678",
        ]);
        let img = dir.join("configured.sqfs");
        let out = output(
            cairn_as(&Who::Me)
                .arg("import")
                .arg(format!("oci:{image}"))
                .arg("-o")
                .arg(&img),
        );
        assert_success(&out, "cairn import");
        std::fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .expect("chmod");
        Some(img)
    })
    .as_deref()
}

fn run(who: &Who, args: &[&str]) -> String {
    let mut cmd = cairn_as(who);
    cmd.arg("run").args(args);
    cmd.env("FOO", "from-host").env("KEEP", "host-var");
    let out = output(&mut cmd);
    assert_success(&out, &format!("cairn run {args:?} as {}", who.label()));
    stdout_of(&out).trim().to_owned()
}

#[test]
fn stored_config_sets_env_command_cwd_and_user() {
    let Some(img) = configured_image() else {
        return;
    };
    let img = img.display().to_string();
    for who in callers().into_iter().filter(usable) {
        // No command: Entrypoint + Cmd, with the image's env, dir and user.
        assert_eq!(
            run(&who, &["--mount", "fuse", &img]),
            "cmd:from-image:/usr/bin:/bin:/etc:1234:5678"
        );
        // A given command runs as it is (no Entrypoint); --cd and
        // --uid/--gid win over WorkingDir and User; the host's other
        // variables pass.
        assert_eq!(
            run(
                &who,
                &[
                    "--cd",
                    "/tmp",
                    "--uid",
                    "0",
                    "--gid",
                    "0",
                    &img,
                    "/bin/sh",
                    "-c",
                    "echo args:$FOO:$KEEP:$(pwd):$(id -u):$(id -g)"
                ]
            ),
            "args:from-image:host-var:/tmp:0:0"
        );
        // --env still applies over the image's Env.
        assert_eq!(
            run(
                &who,
                &["-e", "FOO=from-cli", &img, "/bin/sh", "-c", "echo $FOO"]
            ),
            "from-cli"
        );
    }
}

#[test]
fn an_image_without_config_runs_with_the_hosts_env_and_root_dir() {
    if !require(have_tool("mksquashfs"), "mksquashfs") {
        return;
    }
    let dir = scratch("no-config");
    let img = dir.join("plain.sqfs");
    busybox_sqfs_at(&img, &[]);
    let img = img.display().to_string();
    for who in callers().into_iter().filter(usable) {
        assert_eq!(
            run(&who, &[&img, "/bin/sh", "-c", "echo $FOO:$KEEP:$(pwd)"]),
            "from-host:host-var:/"
        );
    }
}

/// A merged-/usr host's PATH (`/usr/local/bin:/usr/bin`, Fedora, Arch) and
/// an image whose programs live only in `/bin` (busybox, Alpine): a bare
/// `sh` is found, because a PATH that comes from the host is extended to
/// the image's `/bin` and `/sbin`; one the user sets with `-e` is kept as
/// given.
#[test]
fn a_host_path_without_bin_still_finds_the_images_programs() {
    let img = busybox_sqfs().display().to_string();
    for who in callers().into_iter().filter(usable) {
        let out = output(
            cairn_as(&who)
                .args(["run", &img, "--", "sh", "-c", "echo $PATH"])
                .env("PATH", "/usr/local/bin:/usr/bin"),
        );
        assert_success(&out, "sh with a host PATH lacking /bin");
        assert_eq!(
            stdout_of(&out).trim(),
            "/usr/local/bin:/usr/bin:/bin:/sbin",
            "as {}",
            who.label()
        );
        let out = output(
            cairn_as(&who)
                .args(["run", "-e", "PATH=/usr/bin", &img, "--", "sh"])
                .env("PATH", "/usr/local/bin:/usr/bin"),
        );
        assert_eq!(out.status.code(), Some(127), "{}", stderr_of(&out));
    }
}
