//! `cairn pull` against a real registry: Debian's `docker-registry` started
//! on a free 127.0.0.1 port per test (killed by a guard), images built with
//! umoci from the busybox rootfs and pushed with `skopeo copy`. Covers tag
//! and digest pulls, a two-platform index, htpasswd basic auth, a corrupted
//! blob, the registry dying mid-download (through a throttling proxy),
//! 16 concurrent pulls making one GET per blob, and `kill -9` mid-pull.
//! Bearer-token auth runs against tests/fixtures/token-server.py (python3-jwt)
//! as the registry's `auth: token:` realm. A registry whose certificate is not
//! trusted fails at once with a message naming --ca.

mod common;

use common::registry::*;
use common::*;
use sha2::Digest as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn tools_ok() -> bool {
    require(have_tool("docker-registry"), "docker-registry")
        && require(have_tool("skopeo"), "skopeo")
        && require(have_tool("umoci"), "umoci")
}

/// tests/fixtures/token-server.py, killed on drop.
struct TokenServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl TokenServer {
    fn start(dir: &Path, cert: &Path, key: &Path, users: &[&str]) -> TokenServer {
        let port = free_port();
        let log = dir.join("token-server.log");
        let child = Command::new("/usr/bin/python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/token-server.py"))
            .arg(port.to_string())
            .arg(key)
            .arg(cert)
            .arg(TOKEN_ISSUER)
            .args(users)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("token log"))
            .spawn()
            .expect("start token-server.py");
        wait_port(port);
        TokenServer { child, port, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's python3 with python3-jwt and python3-cryptography.
fn python_jwt() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import jwt, cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// An OCI layout with image `tag`: the busybox rootfs plus one layer per
/// `(path, content)` extra, built with umoci.
fn build_image(layout: &Path, tag: &str, extras: &[(&str, Vec<u8>)], arch: Option<&str>) {
    let image = format!("{}:{tag}", layout.display());
    if !layout.join("index.json").exists() {
        run_ok(
            Command::new("umoci").args(["init", "--layout"]).arg(layout),
            "umoci init",
        );
    }
    run_ok(
        Command::new("umoci").args(["new", "--image", &image]),
        "umoci new",
    );
    if let Some(arch) = arch {
        run_ok(
            Command::new("umoci").args(["config", "--architecture", arch, "--image", &image]),
            "umoci config",
        );
    }
    let work = layout.with_extension(format!("{tag}.layers"));
    fs::create_dir_all(&work).expect("work dir");
    let base = work.join("base.tar");
    run_ok(
        Command::new("tar")
            .arg("-C")
            .arg(busybox_rootfs())
            .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
            .arg(&base)
            .arg("."),
        "tar base layer",
    );
    let mut tars = vec![base];
    for (i, (path, content)) in extras.iter().enumerate() {
        let root = work.join(format!("l{i}"));
        let file = root.join(path);
        fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        fs::write(&file, content).expect("write extra");
        let tar = work.join(format!("l{i}.tar"));
        run_ok(
            Command::new("tar")
                .arg("-C")
                .arg(&root)
                .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
                .arg(&tar)
                .arg("."),
            "tar extra layer",
        );
        tars.push(tar);
    }
    for tar in tars {
        run_ok(
            Command::new("umoci")
                .args(["raw", "add-layer", "--image", &image])
                .arg(&tar),
            "umoci raw add-layer",
        );
    }
}

fn push(layout: &Path, tag: &str, dest: &str, creds: Option<&str>, all: bool) {
    let mut cmd = Command::new("skopeo");
    cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"]);
    if all {
        cmd.arg("--all");
    }
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    cmd.arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{dest}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = output(&mut cmd);
        if out.status.success() {
            return;
        }
        // A registry that just opened its port may still be settling.
        assert!(
            Instant::now() < deadline,
            "skopeo copy failed: {}",
            stderr_of(&out)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn sha256_hex(data: &[u8]) -> String {
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest of `tag` in an OCI layout (single-platform image).
fn layout_manifest(layout: &Path, tag: &str) -> (String, serde_json::Value) {
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("index")).expect("json");
    let desc = index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("tag in layout");
    let digest = desc["digest"].as_str().expect("digest").to_owned();
    let hex = digest.trim_start_matches("sha256:");
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("blobs/sha256").join(hex)).expect("blob"))
            .expect("manifest json");
    (digest, manifest)
}

fn blob_hexes(manifest: &serde_json::Value) -> Vec<String> {
    let mut out = vec![
        manifest["config"]["digest"]
            .as_str()
            .expect("config")
            .trim_start_matches("sha256:")
            .to_owned(),
    ];
    for l in manifest["layers"].as_array().expect("layers") {
        out.push(
            l["digest"]
                .as_str()
                .expect("layer")
                .trim_start_matches("sha256:")
                .to_owned(),
        );
    }
    out
}

fn cat_in_image(image: &Path, path: &str) -> String {
    let out = output(Command::new("unsquashfs").arg("-cat").arg(image).arg(path));
    assert_success(&out, "unsquashfs -cat");
    stdout_of(&out)
}

fn cache_files(cache: &Path) -> Vec<String> {
    match fs::read_dir(cache.join("images")) {
        Ok(e) => e
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".sqfs"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// A three-layer image `repo:v1` pushed to a fresh registry.
fn registry_with_image(name: &str, big: usize) -> (Registry, PathBuf, String, serde_json::Value) {
    let reg = Registry::start(name, None);
    let layout = reg.dir.join("layout");
    let mut noise = vec![0u8; big];
    // Incompressible content so a download takes a while through the proxy.
    let mut x = XorShift::new(0x9e37_79b9_7f4a_7c15);
    for b in noise.iter_mut() {
        *b = x.next_u64().to_le_bytes()[0];
    }
    build_image(
        &layout,
        "v1",
        &[
            ("etc/hello", b"hello from layer 2\n".to_vec()),
            ("opt/noise.bin", noise),
        ],
        None,
    );
    push(
        &layout,
        "v1",
        &format!("{}/test/app:v1", reg.host()),
        None,
        false,
    );
    let (digest, manifest) = layout_manifest(&layout, "v1");
    (reg, layout, digest, manifest)
}

#[test]
fn pull_by_tag_and_digest_as_every_caller() {
    if !tools_ok() || !require(have_tool("unsquashfs"), "unsquashfs") {
        return;
    }
    let (reg, _layout, digest, _) = registry_with_image("pull-tag", 4096);
    for who in callers() {
        let cache = scratch("cache-tag").join("cache");
        let reference = format!("docker://{}/test/app:v1", reg.host());
        let full = output(cairn_in(&who, &cache).args(["pull", &reference]));
        assert_success(&full, "cairn pull by tag");
        let out = stdout_of(&full);
        assert!(out.contains(&digest), "{out}");
        // Not a terminal: one line per finished step.
        let steps = stderr_of(&full);
        assert_eq!(steps.matches("bytes verified").count(), 4, "{steps}");
        assert!(steps.contains("flattening 3 layers"), "{steps}");
        let image = cache.join("images").join(format!(
            "sha256-{}.sqfs",
            digest.trim_start_matches("sha256:")
        ));
        assert!(image.is_file(), "{out}");
        assert_eq!(cat_in_image(&image, "etc/hello"), "hello from layer 2\n");
        assert!(cat_in_image(&image, "etc/os-release").contains("cairn test image"));
        let meta = cat_in_image(&image, ".cairn/image.json");
        assert!(meta.contains(&reference), "{meta}");
        // Pulling again is a cache hit; `images` names it.
        let again = run_ok(
            cairn_in(&who, &cache).args(["pull", &reference]),
            "cairn pull again",
        );
        assert!(again.contains("already cached"), "{again}");
        let list = run_ok(cairn_in(&who, &cache).arg("images"), "cairn images");
        assert!(
            list.contains(&format!("{}/test/app:v1", reg.host())),
            "{list}"
        );
        // By digest, and with -o to a file.
        let by_digest = format!("docker://{}/test/app@{digest}", reg.host());
        let file = cache.join("out.sqfs");
        run_ok(
            cairn_in(&who, &cache)
                .args(["pull", "-q", &by_digest, "-o"])
                .arg(&file),
            "cairn pull by digest",
        );
        assert_eq!(
            fs::read(&file).expect("out"),
            fs::read(&image).expect("cached")
        );
        let quiet = output(cairn_in(&who, &cache).args(["pull", "-q", &by_digest]));
        assert_success(&quiet, "cairn pull by digest into the cache");
        assert_eq!(stderr_of(&quiet), "", "-q prints nothing");
        assert_eq!(stdout_of(&quiet), "", "-q prints nothing");
        let list = run_ok(cairn_in(&who, &cache).arg("images"), "cairn images");
        assert!(list.contains(&format!("@{digest}")), "{list}");
        // rm both names, gc removes the image.
        run_ok(cairn_in(&who, &cache).args(["rm", &reference]), "cairn rm");
        run_ok(
            cairn_in(&who, &cache).args(["rm", &by_digest]),
            "cairn rm digest",
        );
        let gc = run_ok(cairn_in(&who, &cache).arg("gc"), "cairn gc");
        assert!(gc.contains(&digest), "{gc}");
        assert!(cache_files(&cache).is_empty());
        // cairn run docker://... pulls first when the image is not cached,
        // then runs it (and the second run finds it in the cache).
        for _ in 0..2 {
            let ran = run_ok(
                cairn_in(&who, &cache).args([
                    "run",
                    &reference,
                    "--",
                    "/bin/cat",
                    "/etc/os-release",
                ]),
                "cairn run docker://",
            );
            assert!(ran.contains("cairn test image"), "{ran}");
        }
        run_ok(cairn_in(&who, &cache).args(["rm", &reference]), "cairn rm");
        run_ok(cairn_in(&who, &cache).arg("gc"), "cairn gc");
        // A tag that does not exist: exit 125 naming the reference.
        let out = output(
            cairn_in(&who, &cache)
                .args(["pull", &format!("docker://{}/test/app:nope", reg.host())]),
        );
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr_of(&out).contains("test/app:nope"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn pull_picks_a_platform_from_an_index() {
    if !tools_ok() || !require(have_tool("unsquashfs"), "unsquashfs") {
        return;
    }
    let reg = Registry::start("pull-multi", None);
    let layout = reg.dir.join("layout");
    build_image(
        &layout,
        "amd",
        &[("etc/platform", b"amd64\n".to_vec())],
        Some("amd64"),
    );
    build_image(
        &layout,
        "arm",
        &[("etc/platform", b"arm64\n".to_vec())],
        Some("arm64"),
    );
    // The index, made by hand: both manifests with their platforms.
    let entry = |tag: &str, arch: &str| {
        let (digest, _) = layout_manifest(&layout, tag);
        let size = fs::metadata(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .expect("manifest size")
        .len();
        serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest,
            "size": size,
            "platform": {"os": "linux", "architecture": arch},
        })
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [entry("amd", "amd64"), entry("arm", "arm64")],
    });
    let bytes = serde_json::to_vec(&index).expect("index");
    let hex = sha256_hex(&bytes);
    fs::write(layout.join("blobs/sha256").join(&hex), &bytes).expect("index blob");
    let mut top: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).expect("read")).expect("json");
    top["manifests"]
        .as_array_mut()
        .expect("manifests")
        .push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": format!("sha256:{hex}"),
            "size": bytes.len(),
            "annotations": {"org.opencontainers.image.ref.name": "multi"},
        }));
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&top).expect("json"),
    )
    .expect("write");
    push(
        &layout,
        "multi",
        &format!("{}/test/multi:latest", reg.host()),
        None,
        true,
    );

    let cache = scratch("cache-multi").join("cache");
    for (platform, want) in [("linux/arm64", "arm64\n"), ("linux/amd64", "amd64\n")] {
        let out = run_ok(
            cairn_in(&Who::Me, &cache)
                .args([
                    "pull",
                    "-q",
                    "--platform",
                    platform,
                    &format!("{}/test/multi", reg.host()),
                    "-o",
                ])
                .arg(cache.join(format!("{}.sqfs", platform.replace('/', "-")))),
            "cairn pull --platform",
        );
        let _ = out;
        let image = cache.join(format!("{}.sqfs", platform.replace('/', "-")));
        assert_eq!(cat_in_image(&image, "etc/platform"), want);
    }
    let out = output(cairn_in(&Who::Me, &cache).args([
        "pull",
        "--platform",
        "linux/s390x",
        &format!("{}/test/multi", reg.host()),
    ]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr_of(&out).contains("s390x"), "{}", stderr_of(&out));

    // An index whose entry is the index above (nested one level): followed.
    let index_type = "application/vnd.oci.image.index.v1+json";
    let (status, inner) = http(
        reg.port,
        "GET",
        "/v2/test/multi/manifests/latest",
        &[("Accept", index_type)],
        b"",
    );
    assert_eq!(status, 200);
    let nest = |digest: String, size: usize| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": index_type,
            "manifests": [{"mediaType": index_type, "digest": digest, "size": size}],
        }))
        .expect("json")
    };
    let outer = nest(format!("sha256:{}", sha256_hex(&inner)), inner.len());
    let (status, _) = http(
        reg.port,
        "PUT",
        "/v2/test/multi/manifests/nested",
        &[("Content-Type", index_type)],
        &outer,
    );
    assert_eq!(status, 201, "PUT of the nested index");
    let image = cache.join("nested.sqfs");
    run_ok(
        cairn_in(&Who::Me, &cache)
            .args(["pull", "-q", "--platform", "linux/arm64"])
            .arg(format!("{}/test/multi:nested", reg.host()))
            .arg("-o")
            .arg(&image),
        "cairn pull of a nested index",
    );
    assert_eq!(cat_in_image(&image, "etc/platform"), "arm64\n");
    // Two levels of nesting: refused, saying so.
    let deeper = nest(format!("sha256:{}", sha256_hex(&outer)), outer.len());
    let (status, _) = http(
        reg.port,
        "PUT",
        "/v2/test/multi/manifests/deeper",
        &[("Content-Type", index_type)],
        &deeper,
    );
    assert_eq!(status, 201, "PUT of the doubly nested index");
    let out = output(
        cairn_in(&Who::Me, &cache)
            .args(["pull", "-q", "--platform", "linux/arm64"])
            .arg(format!("{}/test/multi:deeper", reg.host())),
    );
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr_of(&out).contains("nested"), "{}", stderr_of(&out));
}

/// One plain HTTP/1.1 request to 127.0.0.1:`port`: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send");
    stream.write_all(body).expect("send body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("receive");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&response[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, response[split + 4..].to_vec())
}

#[test]
fn pull_with_basic_auth() {
    if !tools_ok() || !require(have_tool("htpasswd"), "htpasswd (apache2-utils)") {
        return;
    }
    let reg = Registry::start("pull-auth", Some(htpasswd_alice("htpasswd")));
    let layout = reg.dir.join("layout");
    build_image(&layout, "v1", &[("etc/hello", b"auth\n".to_vec())], None);
    push(
        &layout,
        "v1",
        &format!("{}/secret/app:v1", reg.host()),
        Some("alice:s3cret"),
        false,
    );
    let reference = format!("docker://{}/secret/app:v1", reg.host());
    let cache = scratch("cache-auth").join("cache");
    // Anonymous: refused, exit 125 naming the registry.
    let out = output(cairn_in(&Who::Me, &cache).args(["pull", "-q", &reference]));
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr_of(&out).contains(&reg.host()), "{}", stderr_of(&out));
    // Wrong password: refused.
    let out = output(cairn_in(&Who::Me, &cache).args([
        "pull",
        "-q",
        "--creds",
        "alice:wrong",
        &reference,
    ]));
    assert_eq!(out.status.code(), Some(125));
    // --creds, then an auth file.
    run_ok(
        cairn_in(&Who::Me, &cache).args(["pull", "-q", "--creds", "alice:s3cret", &reference]),
        "cairn pull --creds",
    );
    let dir2 = scratch("cache-auth2");
    let cache2 = dir2.join("cache");
    let auth_file = dir2.join("auth.json");
    fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.host()
        ),
    )
    .expect("auth file");
    run_ok(
        cairn_in(&Who::Me, &cache2)
            .env("REGISTRY_AUTH_FILE", &auth_file)
            .args(["pull", "-q", &reference]),
        "cairn pull with REGISTRY_AUTH_FILE",
    );
    assert_eq!(cache_files(&cache2).len(), 1);
}

#[test]
fn pull_with_bearer_token_auth() {
    if !tools_ok()
        || !require(have_tool("openssl"), "openssl")
        || !require(python_jwt(), "python3-jwt and python3-cryptography")
    {
        return;
    }
    let dir = scratch("token");
    let (cert, key) = (dir.join("issuer.pem"), dir.join("issuer.key"));
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=cairn token issuer", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        "openssl req (token issuer)",
    );
    let tokens = TokenServer::start(&dir, &cert, &key, &["alice:s3cret"]);
    let reg = Registry::start_token("pull-token", tokens.port, cert);
    let layout = reg.dir.join("layout");
    build_image(&layout, "v1", &[("etc/hello", b"token\n".to_vec())], None);
    push(
        &layout,
        "v1",
        &format!("{}/secret/app:v1", reg.host()),
        Some("alice:s3cret"),
        false,
    );
    let reference = format!("docker://{}/secret/app:v1", reg.host());
    let cache = scratch("cache-token").join("cache");
    // Anonymous and wrong password: refused, exit 125 naming the registry.
    for creds in [None, Some("alice:wrong")] {
        let mut cmd = cairn_in(&Who::Me, &cache);
        cmd.args(["pull", "-q"]);
        if let Some(c) = creds {
            cmd.args(["--creds", c]);
        }
        let out = output(cmd.arg(&reference));
        assert_eq!(out.status.code(), Some(125), "{creds:?}");
        let err = stderr_of(&out);
        assert!(err.contains(&reg.host()), "{err}");
        assert!(err.contains("refused access"), "{err}");
    }
    assert!(cache_files(&cache).is_empty());
    // --creds, then an auth file, as every caller.
    run_ok(
        cairn_in(&Who::Me, &cache).args(["pull", "-q", "--creds", "alice:s3cret", &reference]),
        "cairn pull --creds (token)",
    );
    assert_eq!(cache_files(&cache).len(), 1);
    assert!(
        tokens.log().contains("user=alice"),
        "no token was issued: {}",
        tokens.log()
    );
    for who in callers() {
        let dir2 = scratch("cache-token2");
        let cache2 = dir2.join("cache");
        let auth_file = dir2.join("auth.json");
        fs::write(
            &auth_file,
            format!(
                r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
                reg.host()
            ),
        )
        .expect("auth file");
        run_ok(
            cairn_in(&who, &cache2)
                .env("REGISTRY_AUTH_FILE", &auth_file)
                .args(["pull", "-q", &reference]),
            "cairn pull with REGISTRY_AUTH_FILE (token)",
        );
        assert_eq!(cache_files(&cache2).len(), 1);
        assert_eq!(
            cat_in_image(
                &cache2.join("images").join(&cache_files(&cache2)[0]),
                "/etc/hello"
            ),
            "token\n"
        );
    }
}

#[test]
fn corrupted_blob_is_refused_and_nothing_cached() {
    if !tools_ok() {
        return;
    }
    let (reg, _layout, _digest, manifest) = registry_with_image("pull-corrupt", 4096);
    let hexes = blob_hexes(&manifest);
    let victim = &hexes[2];
    let file = reg.blob_file(victim);
    let mut data = fs::read(&file).expect("blob data");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&file, &data).expect("corrupt blob");
    let cache = scratch("cache-corrupt").join("cache");
    let reference = format!("docker://{}/test/app:v1", reg.host());
    let out = output(cairn_in(&Who::Me, &cache).args(["pull", &reference]));
    assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains(victim.as_str()), "{err}");
    assert!(err.contains("digest"), "{err}");
    assert!(err.contains("test/app:v1"), "{err}");
    assert!(cache_files(&cache).is_empty());
    let list = run_ok(cairn_in(&Who::Me, &cache).args(["images", "-q"]), "images");
    assert!(list.trim().is_empty(), "{list}");
}

/// A TCP proxy that forwards at ~`rate` bytes per second, so a download
/// can be interrupted halfway. Stopped (listener closed) on drop.
struct SlowProxy {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    fn start(upstream: u16, rate: usize) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let flag = Arc::clone(&flag);
                        std::thread::spawn(move || {
                            let _ = client.set_nonblocking(false);
                            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                                return;
                            };
                            let (c2, s2) = (
                                client.try_clone().expect("clone"),
                                server.try_clone().expect("clone"),
                            );
                            std::thread::spawn(move || pipe(c2, s2, usize::MAX, None));
                            pipe(server, client, rate, Some(flag));
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        SlowProxy { port, stop }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, rate: usize, stop: Option<Arc<AtomicBool>>) {
    let chunk = 16 * 1024;
    let mut buf = vec![0u8; chunk];
    let _ = from.set_read_timeout(Some(Duration::from_secs(120)));
    loop {
        if stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            break;
        }
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if rate != usize::MAX {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// Waits until a blob download in `cache` (a blob file not yet marked
/// `.verified`) has some bytes.
fn wait_partial(cache: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let found = fs::read_dir(cache.join("tmp"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| {
                fs::read_dir(d.path().join("blobs/sha256"))
                    .into_iter()
                    .flatten()
            })
            .flatten()
            .any(|f| {
                let name = f.file_name().to_string_lossy().into_owned();
                let marker = f.path().with_file_name(format!("{name}.verified"));
                name.len() == 64
                    && !marker.exists()
                    && f.metadata().is_ok_and(|m| m.len() > 256 * 1024)
            });
        if found {
            return;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "pull ended before the download was halfway"
        );
        assert!(Instant::now() < deadline, "no partial download appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn registry_stopped_mid_download_retries_then_fails() {
    if !tools_ok() {
        return;
    }
    let (mut reg, _layout, _digest, manifest) = registry_with_image("pull-stop", 6 << 20);
    let proxy = SlowProxy::start(reg.port, 2 << 20);
    let cache = scratch("cache-stop").join("cache");
    let reference = format!("docker://127.0.0.1:{}/test/app:v1", proxy.port);
    let mut child = cairn_in(&Who::Me, &cache)
        .args(["pull", "--retries", "3", &reference])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn pull");
    wait_partial(&cache, &mut child);
    reg.stop();
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(125));
    let err = stderr_of(&out);
    let big = &blob_hexes(&manifest)[3];
    assert!(err.contains(big.as_str()), "{err}");
    assert!(err.contains("3 attempts"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", proxy.port)), "{err}");
    assert!(cache_files(&cache).is_empty());
    drop(proxy);
}

/// `n` `cairn pull -q REFERENCE` started at once, output captured.
fn concurrent_pulls(who: &Who, cache: &Path, reference: &str, n: usize) -> Vec<Child> {
    (0..n)
        .map(|_| {
            cairn_in(who, cache)
                .args(["pull", "-q", reference])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn pull")
        })
        .collect()
}

#[test]
fn sixteen_concurrent_pulls_download_each_blob_once() {
    if !tools_ok() {
        return;
    }
    let (reg, _layout, digest, manifest) = registry_with_image("pull-16", 1 << 20);
    let cache = scratch("cache-16").join("cache");
    let who = ordinary_user().unwrap_or(Who::Me);
    let reference = format!("docker://{}/test/app:v1", reg.host());
    let children = concurrent_pulls(&who, &cache, &reference, 16);
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert_success(&out, "concurrent cairn pull");
    }
    for hex in blob_hexes(&manifest) {
        assert_eq!(reg.blob_gets("test/app", &hex), 1, "GETs of blob {hex}");
    }
    assert_eq!(
        cache_files(&cache),
        vec![format!(
            "sha256-{}.sqfs",
            digest.trim_start_matches("sha256:")
        )]
    );
}

/// An image every blob of which downloads and verifies, but whose flatten
/// refuses it (a layer entry `../escape`, written by Python's tarfile).
fn registry_with_refused_image(name: &str) -> (Registry, serde_json::Value) {
    let reg = Registry::start(name, None);
    let layout = reg.dir.join("layout");
    build_image(&layout, "v1", &[("etc/hello", b"hello\n".to_vec())], None);
    let tar = reg.dir.join("escape.tar");
    run_ok(
        Command::new("python3")
            .args([
                "-c",
                "import io, sys, tarfile\n\
             with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as t:\n\
             \x20   i = tarfile.TarInfo('../escape'); data = b'out\\n'; i.size = len(data)\n\
             \x20   t.addfile(i, io.BytesIO(data))\n",
            ])
            .arg(&tar),
        "python3 tarfile",
    );
    run_ok(
        Command::new("umoci")
            .args(["raw", "add-layer", "--image"])
            .arg(format!("{}:v1", layout.display()))
            .arg(&tar),
        "umoci raw add-layer",
    );
    push(
        &layout,
        "v1",
        &format!("{}/test/bad:v1", reg.host()),
        None,
        false,
    );
    let (_, manifest) = layout_manifest(&layout, "v1");
    (reg, manifest)
}

/// Sixteen pulls of an image the flatten refuses: the first downloads every
/// blob and fails; the others, waiting on its lock, reuse the verified
/// blobs (no second download) and fail the same way; nothing is cached.
#[test]
fn pulls_after_a_refused_flatten_reuse_the_blobs() {
    if !tools_ok() || !require(have_tool("python3"), "python3") {
        return;
    }
    let (reg, manifest) = registry_with_refused_image("pull-refused");
    let cache = scratch("cache-refused").join("cache");
    let who = ordinary_user().unwrap_or(Who::Me);
    let reference = format!("docker://{}/test/bad:v1", reg.host());
    let children = concurrent_pulls(&who, &cache, &reference, 16);
    for child in children {
        let out = child.wait_with_output().expect("wait");
        assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
        assert!(stderr_of(&out).contains("escape"), "{}", stderr_of(&out));
    }
    for hex in blob_hexes(&manifest) {
        assert_eq!(reg.blob_gets("test/bad", &hex), 1, "GETs of blob {hex}");
    }
    assert!(cache_files(&cache).is_empty());
}

#[test]
fn kill_9_halfway_then_pull_again() {
    if !tools_ok() {
        return;
    }
    let (reg, _layout, digest, _manifest) = registry_with_image("pull-kill", 6 << 20);
    let proxy = SlowProxy::start(reg.port, 2 << 20);
    let cache = scratch("cache-kill").join("cache");
    let reference = format!("docker://127.0.0.1:{}/test/app:v1", proxy.port);
    let mut child = cairn_in(&Who::Me, &cache)
        .args(["pull", "-q", &reference])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn pull");
    wait_partial(&cache, &mut child);
    let list = run_ok(cairn_in(&Who::Me, &cache).args(["images", "-q"]), "images");
    assert!(list.trim().is_empty(), "half-pulled image listed: {list}");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let list = run_ok(cairn_in(&Who::Me, &cache).args(["images", "-q"]), "images");
    assert!(list.trim().is_empty(), "killed image listed: {list}");
    assert!(cache_files(&cache).is_empty());
    drop(proxy);
    // The next pull (straight to the registry) finishes the job.
    let out = run_ok(
        cairn_in(&Who::Me, &cache).args(["pull", &format!("docker://{}/test/app:v1", reg.host())]),
        "pull after kill",
    );
    assert!(out.contains(&digest), "{out}");
    let list = run_ok(cairn_in(&Who::Me, &cache).args(["images", "-q"]), "images");
    assert!(list.contains(&digest), "{list}");
    // Nothing stale is left for gc but the lock files.
    let gc = run_ok(cairn_in(&Who::Me, &cache).arg("gc"), "gc");
    assert!(gc.contains("0 images, 0 stale"), "{gc}");
}

#[test]
fn pull_over_tls_with_a_site_ca() {
    if !tools_ok() || !require(have_tool("openssl"), "openssl") {
        return;
    }
    let dir = scratch("tls");
    // A CA and a leaf signed by it (webpki refuses a self-signed CA
    // certificate used as the server's own).
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
            .args(["-subj", "/CN=cairn test CA", "-keyout"])
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
    let reg = Registry::start_tls("pull-tls", None, Some((cert, key)));
    let layout = reg.dir.join("layout");
    build_image(&layout, "v1", &[("etc/hello", b"tls\n".to_vec())], None);
    push(
        &layout,
        "v1",
        &format!("{}/tls/app:v1", reg.host()),
        None,
        false,
    );
    let reference = format!("docker://{}/tls/app:v1", reg.host());
    let cache = scratch("cache-tls").join("cache");
    run_ok(
        cairn_in(&Who::Me, &cache)
            .args(["pull", "-q", "--ca"])
            .arg(&ca)
            .arg(&reference),
        "cairn pull --ca",
    );
    assert_eq!(cache_files(&cache).len(), 1);
    // Without the CA the certificate is not trusted (CAIRN_REGISTRY_CA
    // pointing at the wrong file: the system roots only).
    let other = scratch("cache-tls2").join("cache");
    let out = output(
        cairn_in(&Who::Me, &other)
            .args(["pull", "-q", "--ca", "/etc/ssl/certs/ca-certificates.crt"])
            .arg(&reference),
    );
    assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
    // Not retried (a retry cannot make it trusted), and the message says
    // what to do.
    let err = stderr_of(&out);
    assert!(err.contains("not trusted"), "{err}");
    assert!(err.contains("--ca"), "{err}");
    assert!(err.contains(&reg.host()), "{err}");
    assert!(!err.contains("retrying"), "{err}");
    assert!(cache_files(&other).is_empty());
    // The site's `[policy] ca_file` trusts the same CA, for every caller.
    let site = dir.join("site.toml");
    fs::write(
        &site,
        format!("[policy]\nca_file = {:?}\n", ca.display().to_string()),
    )
    .expect("site file");
    for who in callers() {
        let cache = scratch("cache-tls-site").join("cache");
        run_ok(
            cairn_in(&who, &cache)
                .env("CAIRN_CONFIG", &site)
                .env("XDG_CONFIG_HOME", dir.join("xdg"))
                .env_remove("CAIRN_REGISTRY_CA")
                .args(["pull", "-q", "--retries", "1"])
                .arg(&reference),
            "cairn pull trusting the site's ca_file",
        );
        assert_eq!(cache_files(&cache).len(), 1);
    }
}

/// A registry outside loopback is HTTPS-only unless the site's
/// `insecure_registries` lists it. The registry listens on 127.0.0.1 and is
/// addressed as `0.0.0.0:PORT`, which the kernel routes to loopback but
/// cairn does not count as loopback.
#[test]
fn insecure_registries_allow_plain_http() {
    if !tools_ok() {
        return;
    }
    let reg = Registry::start("pull-insecure", None);
    let layout = reg.dir.join("layout");
    build_image(&layout, "v1", &[("etc/hello", b"http\n".to_vec())], None);
    push(
        &layout,
        "v1",
        &format!("{}/test/app:v1", reg.host()),
        None,
        false,
    );
    let reference = format!("docker://0.0.0.0:{}/test/app:v1", reg.port);
    let strict = reg.dir.join("strict.toml");
    fs::write(&strict, "").expect("write");
    let insecure = reg.dir.join("insecure.toml");
    fs::write(
        &insecure,
        format!(
            "[policy]\ninsecure_registries = [\"0.0.0.0:{}\"]\n",
            reg.port
        ),
    )
    .expect("write");
    for who in callers() {
        let cache = scratch("cache-insecure").join("cache");
        let pull = |site: &Path| {
            output(
                cairn_in(&who, &cache)
                    .env("CAIRN_CONFIG", site)
                    .env("XDG_CONFIG_HOME", reg.dir.join("xdg"))
                    .args(["pull", "-q", "--retries", "1", &reference]),
            )
        };
        let out = pull(&strict);
        assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
        // It failed because cairn spoke TLS to a plain-HTTP registry.
        assert!(
            stderr_of(&out).contains("https://0.0.0.0"),
            "{}",
            stderr_of(&out)
        );
        assert!(cache_files(&cache).is_empty());
        assert_success(
            &pull(&insecure),
            "pull from a registry the site allows over HTTP",
        );
        assert_eq!(cache_files(&cache).len(), 1);
    }
}
