//! The site policy's registry settings reach `cairn pull`: a registry
//! outside loopback is HTTPS-only unless `insecure_registries` lists it
//! (Debian's `docker-registry` listens on 127.0.0.1 and is addressed as
//! `0.0.0.0:PORT`, which the kernel routes to loopback but cairn does not
//! count as one); `ca_file` makes a registry's private CA trusted.

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

/// A registry on 127.0.0.1, over TLS with `(cert, key)` when given.
fn start_registry(dir: &Path, tls: Option<(&Path, &Path)>) -> Registry {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let config = dir.join("config.yml");
    fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n{}",
            dir.display(),
            tls.map(|(c, k)| format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                c.display(),
                k.display()
            ))
            .unwrap_or_default()
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
    let reg = start_registry(&dir, None);
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

#[test]
fn site_ca_file_is_trusted_for_pulls() {
    let tools = ["docker-registry", "skopeo", "umoci", "openssl"];
    if !tools.iter().all(|t| require(have_tool(t), t)) {
        return;
    }
    let dir = scratch("cfg-ca");
    // A CA and a leaf for 127.0.0.1 signed by it.
    let (ca, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (cert, key, csr, ext) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("leaf.csr"),
        dir.join("leaf.ext"),
    );
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=cairn site CA", "-keyout"])
            .arg(&ca_key)
            .arg("-out")
            .arg(&ca),
        "openssl req (CA)",
    );
    run_ok(
        Command::new("openssl")
            .args([
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr),
        "openssl req (leaf)",
    );
    fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .expect("ext");
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
            .arg(&csr)
            .arg("-CA")
            .arg(&ca)
            .arg("-CAkey")
            .arg(&ca_key)
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(&cert),
        "openssl x509 (sign leaf)",
    );
    let reg = start_registry(&dir, Some((&cert, &key)));
    push_image(&dir, reg.port);
    let reference = format!("docker://127.0.0.1:{}/test/app:v1", reg.port);
    let without = dir.join("without.toml");
    fs::write(&without, "").expect("write");
    let with = dir.join("with.toml");
    fs::write(
        &with,
        format!("[policy]\nca_file = {:?}\n", ca.display().to_string()),
    )
    .expect("write");
    for who in callers() {
        let cache = scratch("cfg-ca-cache");
        let pull = |site: &Path| {
            output(
                cairn_as(&who)
                    .env("CAIRN_CONFIG", site)
                    .env("XDG_CONFIG_HOME", dir.join("xdg"))
                    .env("CAIRN_CACHE", &cache)
                    .env_remove("CAIRN_REGISTRY_CA")
                    .args(["pull", "-q", "--retries", "1", &reference]),
            )
        };
        let out = pull(&without);
        assert_eq!(
            out.status.code(),
            Some(125),
            "untrusted: {}",
            stderr_of(&out)
        );
        let out = pull(&with);
        assert_success(&out, "pull trusting the site's CA");
    }
}
