//! The site policy's `insecure_registries` reach `cairn pull`: a registry
//! outside loopback is HTTPS-only unless the site lists it. Debian's
//! `docker-registry` listens on 127.0.0.1; it is addressed as `0.0.0.0:PORT`,
//! which the kernel routes to loopback but cairn does not count as one.

mod common;

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Registry {
    child: Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = dir.join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.display()
        ),
    )
    .expect("config");
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry { child, port }
}

#[track_caller]
fn run_ok(cmd: &mut Command, what: &str) {
    let out = output(cmd);
    assert_success(&out, what);
}

/// Push the busybox rootfs as `test/app:v1` (umoci builds, skopeo pushes).
fn push_image(dir: &Path, port: u16) {
    let layout = dir.join("layout");
    let image = format!("{}:v1", layout.display());
    run_ok(
        Command::new("umoci")
            .args(["init", "--layout"])
            .arg(&layout),
        "umoci init",
    );
    run_ok(
        Command::new("umoci").args(["new", "--image", &image]),
        "umoci new",
    );
    let tar = dir.join("base.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(busybox_rootfs())
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .arg("."),
        "tar",
    );
    run_ok(
        Command::new("umoci")
            .args(["raw", "add-layer", "--image", &image])
            .arg(&tar),
        "umoci raw add-layer",
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = output(
            Command::new("skopeo")
                .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
                .arg(format!("oci:{image}"))
                .arg(format!("docker://127.0.0.1:{port}/test/app:v1")),
        );
        if out.status.success() {
            return;
        }
        // A registry that just opened its port may still be settling.
        assert!(Instant::now() < deadline, "skopeo: {}", stderr_of(&out));
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn insecure_registries_allow_plain_http() {
    let tools = ["docker-registry", "skopeo", "umoci"];
    if !tools.iter().all(|t| require(have_tool(t), t)) {
        return;
    }
    let dir = scratch("cfg-insecure");
    let reg = start_registry(&dir);
    push_image(&dir, reg.port);
    let reference = format!("docker://0.0.0.0:{}/test/app:v1", reg.port);
    let strict = dir.join("strict.toml");
    fs::write(&strict, "").expect("write");
    let insecure = dir.join("insecure.toml");
    fs::write(
        &insecure,
        format!(
            "[policy]\ninsecure_registries = [\"0.0.0.0:{}\"]\n",
            reg.port
        ),
    )
    .expect("write");
    for who in callers() {
        let cache = scratch("cfg-insecure-cache");
        let pull = |site: &Path| {
            output(
                cairn_as(&who)
                    .env("CAIRN_CONFIG", site)
                    .env("XDG_CONFIG_HOME", dir.join("xdg"))
                    .env("CAIRN_CACHE", &cache)
                    .args(["pull", "-q", "--retries", "1", &reference]),
            )
        };
        let out = pull(&strict);
        assert_eq!(
            out.status.code(),
            Some(125),
            "plain HTTP without the policy: {}",
            stderr_of(&out)
        );
        // It failed because cairn spoke TLS to a plain-HTTP registry.
        assert!(
            stderr_of(&out).contains("https://0.0.0.0"),
            "{}",
            stderr_of(&out)
        );
        let out = pull(&insecure);
        assert_success(&out, "pull from an insecure registry the site allows");
        let out = output(
            cairn_as(&who)
                .env("CAIRN_CONFIG", &insecure)
                .env("XDG_CONFIG_HOME", dir.join("xdg"))
                .env("CAIRN_CACHE", &cache)
                .args(["images", "-q"]),
        );
        assert!(stdout_of(&out).contains("test/app"), "{}", stdout_of(&out));
    }
}
