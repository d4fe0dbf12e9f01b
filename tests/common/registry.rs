//! A local registry for the tests: Debian's `docker-registry` on a free
//! 127.0.0.1 port (plain HTTP, htpasswd basic auth, TLS or bearer-token
//! auth as asked), killed when dropped; and cairn run with its own cache.

use super::{Who, cairn_as, run_ok, scratch};
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

pub fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An htpasswd file (bcrypt, as docker-registry wants) with one user,
/// `alice`, password `s3cret`, in a scratch dir named after `label`.
pub fn htpasswd_alice(label: &str) -> PathBuf {
    let file = scratch(label).join("htpasswd");
    super::run_ok(
        Command::new("htpasswd")
            .args(["-Bbc"])
            .arg(&file)
            .args(["alice", "s3cret"]),
        "htpasswd",
    );
    file
}

/// A running docker-registry; killed on drop.
pub struct Registry {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    htpasswd: Option<PathBuf>,
    /// (certificate, key) in PEM: serve HTTPS.
    tls: Option<(PathBuf, PathBuf)>,
    /// (token service port, its signing certificate): bearer-token auth.
    token: Option<(u16, PathBuf)>,
}

impl Registry {
    pub fn start(name: &str, htpasswd: Option<PathBuf>) -> Registry {
        Registry::start_tls(name, htpasswd, None)
    }

    pub fn start_tls(
        name: &str,
        htpasswd: Option<PathBuf>,
        tls: Option<(PathBuf, PathBuf)>,
    ) -> Registry {
        let dir = scratch(name);
        let mut r = Registry {
            child: None,
            port: free_port(),
            dir,
            htpasswd,
            tls,
            token: None,
        };
        r.restart();
        r
    }

    pub fn start_token(name: &str, token_port: u16, cert: PathBuf) -> Registry {
        let mut r = Registry {
            child: None,
            port: free_port(),
            dir: scratch(name),
            htpasswd: None,
            tls: None,
            token: Some((token_port, cert)),
        };
        r.restart();
        r
    }

    pub fn restart(&mut self) {
        self.stop();
        let auth = match &self.htpasswd {
            Some(p) => format!(
                "auth:\n  htpasswd:\n    realm: cairn\n    path: {}\n",
                p.display()
            ),
            None => match &self.token {
                Some((port, cert)) => format!(
                    "auth:\n  token:\n    realm: http://127.0.0.1:{port}/token\n    \
                     service: cairn-registry\n    issuer: {TOKEN_ISSUER}\n    \
                     rootcertbundle: {}\n",
                    cert.display()
                ),
                None => String::new(),
            },
        };
        let tls = match &self.tls {
            Some((cert, key)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ),
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}/storage\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{}\n{tls}{auth}",
            self.dir.display(),
            self.port
        );
        let config_path = self.dir.join("config.yml");
        fs::write(&config_path, config).expect("config");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        self.child = Some(child);
        wait_port(self.port);
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Successful GETs of one blob, from the access log.
    pub fn blob_gets(&self, repo: &str, hex: &str) -> usize {
        let log = fs::read_to_string(self.log()).unwrap_or_default();
        let needle = format!("\"GET /v2/{repo}/blobs/sha256:{hex} ");
        log.lines()
            .filter(|l| l.contains(&needle) && l.contains("\" 200 "))
            .count()
    }

    /// The file the registry stores blob `hex` in.
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.dir.join(format!(
            "storage/docker/registry/v2/blobs/sha256/{}/{hex}/data",
            &hex[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

pub const TOKEN_ISSUER: &str = "cairn-test-token-issuer";

/// `cairn` as `who` with the image cache `cache` (`CAIRN_CACHE`).
pub fn cairn_in(who: &Who, cache: &Path) -> Command {
    let mut cmd = cairn_as(who);
    cmd.env("CAIRN_CACHE", cache);
    cmd
}

/// `skopeo copy` of `reference` (a `docker://` one on a plain-HTTP
/// registry) into an OCI layout in `dir`, then `umoci unpack` of it (as
/// root: owners kept): the unpacked root filesystem.
pub fn unpack_pushed(reference: &str, dir: &Path) -> PathBuf {
    let layout = dir.join("copied");
    run_ok(
        Command::new("skopeo")
            .args([
                "--insecure-policy",
                "copy",
                "--quiet",
                "--src-tls-verify=false",
            ])
            .arg(reference)
            .arg(format!("oci:{}:t", layout.display())),
        "skopeo copy of the pushed image",
    );
    let bundle = dir.join("bundle");
    run_ok(
        Command::new("umoci")
            .args(["unpack", "--image"])
            .arg(format!("{}:t", layout.display()))
            .arg(&bundle),
        "umoci unpack of the pushed image",
    );
    bundle.join("rootfs")
}
