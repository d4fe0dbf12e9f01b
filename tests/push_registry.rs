//! `cairn push` against a real registry (Debian's `docker-registry` on a
//! free 127.0.0.1 port, see tests/common/registry.rs), as root and as the
//! test user. The image is the import oracle's (tests/common/oracle_image.rs:
//! five layers with whiteouts, hard links, a fifo, setuid files, other
//! owners, long names and xattrs) imported into the caller's cache. The
//! pushed image is checked by peers' tools (`skopeo inspect`; `skopeo copy`
//! then `umoci unpack`, against `cairn unsquash` of the original, mtimes
//! included), pulled back by cairn into another cache, pushed twice (the
//! second uploads nothing, same digest), and refused inputs end with 125
//! naming what was wrong. Sockets are left out with a warning; a file
//! named like a whiteout is refused; basic auth works as for `cairn pull`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::oracle_image::test_image;
use common::registry::{Registry, cairn_in, free_port, htpasswd_alice, unpack_pushed};
use common::tree::assert_same_tree_and_mtimes;
use common::*;

/// What every test here needs: the registry, and root (umoci unpack and
/// `cairn unsquash` keep owners only as root; the test image is built with
/// umoci as root).
fn tools_ok() -> bool {
    require(
        is_root(),
        "root (umoci unpack and cairn unsquash keep owners)",
    ) && require(have_tool("docker-registry"), "docker-registry")
        && require(have_tool("skopeo"), "skopeo")
        && require(have_tool("umoci"), "umoci")
        && require(have_tool("getfattr"), "getfattr")
}

/// The reproducible time cairn stamps what it adds to an image: the same
/// source imported by root and by the user gives the same bytes.
const EPOCH: &str = "1700000000";

/// `cairn import SRC --name NAME` as `who` into `cache`.
fn import_named(who: &Who, cache: &Path, src: &str, name: &str) {
    run_ok(
        cairn_in(who, cache)
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["import", src, "--name", name]),
        &format!("cairn import {src} --name {name} as {}", who.label()),
    );
}

/// The oracle image imported as `who` into a fresh cache under the name
/// `oracle`: (scratch dir, cache).
fn oracle_in_a_cache(who: &Who, label: &str) -> (PathBuf, PathBuf) {
    let dir = scratch(label);
    let cache = dir.join("cache");
    let src = format!("oci:{}:t", test_image().layout.display());
    import_named(who, &cache, &src, "oracle");
    (dir, cache)
}

/// The busybox rootfs imported as `who` into a fresh cache (in a scratch
/// dir named after `label`) under the name `bb`: the cache.
fn busybox_in_a_cache(who: &Who, label: &str) -> PathBuf {
    let cache = scratch(label).join("cache");
    let src = format!("dir:{}", busybox_rootfs().display());
    import_named(who, &cache, &src, "bb");
    cache
}

/// The squashfs file a name of `cache` points at.
fn cached_image(cache: &Path, name: &str) -> PathBuf {
    let record: serde_json::Value =
        serde_json::from_slice(&fs::read(cache.join("refs").join(name)).expect("ref"))
            .expect("ref json");
    let digest = record["digest"].as_str().expect("digest");
    cache.join("images").join(format!(
        "sha256-{}.sqfs",
        digest.trim_start_matches("sha256:")
    ))
}

/// `cairn push NAME REFERENCE` as `who`: the digest it printed, and its
/// stderr.
#[track_caller]
fn push_ok(who: &Who, cache: &Path, name: &str, reference: &str) -> (String, String) {
    let out = output(cairn_in(who, cache).args(["push", name, reference]));
    assert_success(
        &out,
        &format!("cairn push {name} {reference} as {}", who.label()),
    );
    let digest = stdout_of(&out).trim().to_owned();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "stdout is the manifest digest: {digest:?}"
    );
    (digest, stderr_of(&out))
}

/// `cairn unsquash` (as root: owners, setuid bits and xattrs kept).
fn unsquash(image: &Path, into: &Path) {
    run_ok(
        cairn_as(&Who::Me).arg("unsquash").arg(image).arg(into),
        "cairn unsquash",
    );
}

/// A tag per caller, so each pushes its own.
fn tag_of(who: &Who) -> String {
    who.label()
        .replace(|c: char| !c.is_ascii_alphanumeric(), "-")
}

#[test]
fn pushed_image_matches_skopeo_and_umoci() {
    if !tools_ok() {
        return;
    }
    let reg = Registry::start("push-oracle", None);
    let mut digests = Vec::new();
    for who in callers() {
        let (dir, cache) = oracle_in_a_cache(&who, "push-oracle");
        let reference = format!("docker://{}/push/oracle:{}", reg.host(), tag_of(&who));
        let (digest, _) = push_ok(&who, &cache, "oracle", &reference);

        // skopeo sees a one-layer image with the stored config.
        let inspect = run_ok(
            Command::new("skopeo")
                .args(["inspect", "--tls-verify=false"])
                .arg(&reference),
            "skopeo inspect",
        );
        let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
        assert_eq!(v["Digest"], digest.as_str(), "{inspect}");
        assert_eq!(v["Layers"].as_array().map(Vec::len), Some(1), "{inspect}");
        assert_eq!(v["Labels"]["org.example"], "cairn", "{inspect}");
        assert!(
            v["Env"]
                .as_array()
                .is_some_and(|e| e.iter().any(|x| x == "FOO=bar")),
            "{inspect}"
        );

        // skopeo copy + umoci unpack (as root) = cairn unsquash of the
        // original, entry by entry, mtimes too.
        let rootfs = unpack_pushed(&reference, &dir);
        let original = dir.join("original");
        unsquash(&cached_image(&cache, "oracle"), &original);
        assert_same_tree_and_mtimes(
            &original,
            &rootfs,
            &format!("pushed by {}, unpacked by umoci", who.label()),
        );
        digests.push(digest);
    }
    // The same image bytes pushed by root and by the user: the same layer,
    // config and manifest.
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");
}

#[test]
fn pull_of_a_pushed_image_gives_the_same_tree_and_config() {
    if !tools_ok() {
        return;
    }
    let reg = Registry::start("push-pull", None);
    for who in callers() {
        let (dir, cache) = oracle_in_a_cache(&who, "push-pull");
        let reference = format!("docker://{}/push/back:{}", reg.host(), tag_of(&who));
        let (digest, _) = push_ok(&who, &cache, "oracle", &reference);
        let other = dir.join("other-cache");
        let pulled = run_ok(
            cairn_in(&who, &other)
                .env("SOURCE_DATE_EPOCH", EPOCH)
                .args(["pull", &reference]),
            "cairn pull of the pushed image",
        );
        assert!(pulled.contains(&digest), "{pulled}");
        // The squashfs files are not byte-identical, for a good reason:
        // /.cairn/image.json records where each came from (the oci: layout
        // and its five layers, or the registry reference, its manifest and
        // its one layer). Everything else is compared: the trees (all but
        // /.cairn, mtimes included) and the runtime config.
        let original_tree = dir.join("original");
        let pulled_tree = dir.join("pulled");
        unsquash(&cached_image(&cache, "oracle"), &original_tree);
        let pulled_image = fs::read_dir(other.join("images"))
            .expect("images")
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "sqfs"))
            .expect("the pulled image");
        unsquash(&pulled_image, &pulled_tree);
        assert_same_tree_and_mtimes(
            &pulled_tree,
            &original_tree,
            &format!("pushed and pulled back by {}", who.label()),
        );
        let meta = |cache: &Path, name: &str| -> serde_json::Value {
            let json = run_ok(
                cairn_in(&who, cache).args(["inspect", "--json", name]),
                "cairn inspect --json",
            );
            let v: serde_json::Value = serde_json::from_str(&json).expect("inspect json");
            v["meta"].clone()
        };
        let (before, after) = (meta(&cache, "oracle"), meta(&other, &reference));
        for key in ["config", "os", "architecture", "created"] {
            assert_eq!(before[key], after[key], "{key}");
        }
        assert_eq!(after["layers"].as_array().map(Vec::len), Some(1));
    }
}

/// Blob uploads the registry started for `repo`, from its access log.
fn uploads_started(reg: &Registry, repo: &str) -> usize {
    let log = fs::read_to_string(reg.log()).unwrap_or_default();
    let needle = format!("\"POST /v2/{repo}/blobs/uploads/");
    log.lines().filter(|l| l.contains(&needle)).count()
}

#[test]
fn a_second_push_uploads_nothing_and_gives_the_same_digest() {
    if !tools_ok() {
        return;
    }
    let reg = Registry::start("push-twice", None);
    for who in callers() {
        let cache = busybox_in_a_cache(&who, "push-twice");
        let repo = format!("push/twice-{}", tag_of(&who));
        let reference = format!("docker://{}/{repo}:v1", reg.host());
        let (first, steps) = push_ok(&who, &cache, "bb", &reference);
        assert_eq!(steps.matches("uploading").count(), 2, "{steps}");
        assert_eq!(uploads_started(&reg, &repo), 2, "layer and config");
        let (second, steps) = push_ok(&who, &cache, "bb", &reference);
        assert_eq!(first, second, "the same image, the same manifest");
        assert_eq!(
            steps.matches("already in the registry, skipped").count(),
            2,
            "{steps}"
        );
        assert!(!steps.contains("uploading"), "{steps}");
        // The layer was remembered, not written again.
        assert!(
            steps.contains("as an earlier push of this image wrote it"),
            "{steps}"
        );
        assert!(!steps.contains("writing the layer"), "{steps}");
        assert_eq!(uploads_started(&reg, &repo), 2, "no upload the second time");
        // Another repository of the registry lacks the blobs: they are
        // mounted from the one they were pushed to (nothing sent, the
        // layer not written again); with the layer's record damaged, the
        // layer is written again (the same bytes) and still mounted; with
        // the record of where blobs went gone too, both are sent.
        let records: Vec<PathBuf> = fs::read_dir(cache.join("images"))
            .expect("images")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.to_string_lossy().ends_with(".layer.json"))
            .collect();
        assert_eq!(records.len(), 1, "{records:?}");
        let places = cache.join("pushed").join(format!("{}.json", reg.host()));
        assert!(places.is_file(), "no record of where blobs went");
        for (i, damage) in [None, Some("{not json"), Some("places")]
            .into_iter()
            .enumerate()
        {
            match damage {
                Some("places") => fs::write(&places, "[{\"digest\": 3").expect("damage places"),
                Some(bytes) => fs::write(&records[0], bytes).expect("damage the record"),
                None => {}
            }
            let other_repo = format!("{repo}-other{i}");
            let other = format!("docker://{}/{other_repo}:v1", reg.host());
            let (digest, steps) = push_ok(&who, &cache, "bb", &other);
            assert_eq!(digest, first, "{steps}");
            assert_eq!(
                steps.contains("writing the layer"),
                damage.is_some(),
                "{steps}"
            );
            if damage == Some("places") {
                assert_eq!(steps.matches("uploading").count(), 2, "{steps}");
            } else {
                assert_eq!(
                    steps.matches("of the same registry, not sent").count(),
                    2,
                    "{steps}"
                );
                assert!(!steps.contains("uploading"), "{steps}");
            }
            // The registry serves every blob the tag names, mounted or
            // sent: skopeo copies it and umoci unpacks it.
            let unpacked = unpack_pushed(
                &other,
                &scratch(&format!("push-twice-copy-{}-{i}", tag_of(&who))),
            );
            assert!(unpacked.join("bin").exists(), "{}", unpacked.display());
        }
        // -q: the digest alone.
        let quiet = output(cairn_in(&who, &cache).args(["push", "-q", "bb", &reference]));
        assert_success(&quiet, "cairn push -q");
        assert_eq!(stdout_of(&quiet).trim(), first);
        assert_eq!(stderr_of(&quiet), "");
        assert_no_staging_left(&cache);
    }
}

/// No push staging directory is left in the cache.
#[track_caller]
fn assert_no_staging_left(cache: &Path) {
    let left: Vec<String> = fs::read_dir(cache.join("tmp"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("push-"))
        .collect();
    assert!(left.is_empty(), "staging left behind: {left:?}");
}

/// `cairn push ARGS` as `who` fails with 125 and a message naming `names`.
#[track_caller]
fn assert_refused(who: &Who, cache: &Path, args: &[&str], names: &str) {
    let out = output(cairn_in(who, cache).arg("push").args(args));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(125), "push {args:?}: {err}");
    assert!(
        err.contains(names),
        "push {args:?} should name {names}: {err}"
    );
    assert_eq!(stdout_of(&out), "", "no digest printed");
}

#[test]
fn bad_inputs_exit_125_naming_what_was_wrong() {
    if !require(have_tool("docker-registry"), "docker-registry") {
        return;
    }
    let reg = Registry::start("push-bad", None);
    for who in callers() {
        let cache = busybox_in_a_cache(&who, "push-bad");
        let good = format!("docker://{}/push/bad:v1", reg.host());
        assert_refused(&who, &cache, &["no-such-image", &good], "no-such-image");
        let malformed = format!("docker://{}/Not/Lower:v1", reg.host());
        assert_refused(&who, &cache, &["bb", &malformed], "Not");
        assert_refused(
            &who,
            &cache,
            &["bb", "docker://x.io/a:"],
            "docker://x.io/a:",
        );
        let by_digest = format!("docker://{}/push/bad@sha256:{}", reg.host(), "a".repeat(64));
        assert_refused(&who, &cache, &["bb", &by_digest], "needs a tag");
        // Nothing listens on a freshly freed port.
        let closed = format!("127.0.0.1:{}", free_port());
        let unreachable = format!("docker://{closed}/push/bad:v1");
        assert_refused(
            &who,
            &cache,
            &["--retries", "1", "bb", &unreachable],
            &closed,
        );
        // A directory is no flattened image.
        let tree = busybox_rootfs().display().to_string();
        assert_refused(&who, &cache, &[&tree, &good], "not a squashfs image");
        assert_no_staging_left(&cache);
    }
}

#[test]
fn push_with_basic_auth() {
    if !require(have_tool("docker-registry"), "docker-registry")
        || !require(have_tool("htpasswd"), "htpasswd (apache2-utils)")
    {
        return;
    }
    let reg = Registry::start("push-auth", Some(htpasswd_alice("push-htpasswd")));
    for who in callers() {
        let cache = busybox_in_a_cache(&who, "push-auth");
        let reference = format!("docker://{}/secret/app:{}", reg.host(), tag_of(&who));
        // Anonymous, then a wrong password: refused, naming the registry.
        assert_refused(&who, &cache, &["bb", &reference], "refused access");
        assert_refused(
            &who,
            &cache,
            &["--creds", "alice:wrong", "bb", &reference],
            &reg.host(),
        );
        assert_no_staging_left(&cache);
        // --creds, then an auth file: the second push finds the blobs.
        let out = output(cairn_in(&who, &cache).args([
            "push",
            "--creds",
            "alice:s3cret",
            "bb",
            &reference,
        ]));
        assert_success(&out, "cairn push --creds");
        let auth_file = cache.with_file_name("auth.json");
        fs::write(
            &auth_file,
            format!(
                r#"{{"auths":{{"{}":{{"auth":"YWxpY2U6czNjcmV0"}}}}}}"#,
                reg.host()
            ),
        )
        .expect("auth file");
        let out = output(
            cairn_in(&who, &cache)
                .env("REGISTRY_AUTH_FILE", &auth_file)
                .args(["push", "bb", &reference]),
        );
        assert_success(&out, "cairn push with REGISTRY_AUTH_FILE");
        assert!(
            stderr_of(&out).contains("already in the registry"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn sockets_are_left_out_and_whiteout_names_refused() {
    if !require(have_tool("docker-registry"), "docker-registry") {
        return;
    }
    let reg = Registry::start("push-odd", None);
    for who in callers() {
        let dir = scratch("push-odd");
        let cache = dir.join("cache");
        // A socket: left out of the layer, with a warning naming it.
        let with_socket = dir.join("with-socket");
        copy_busybox_rootfs(&with_socket);
        let _listener =
            std::os::unix::net::UnixListener::bind(with_socket.join("run/app.sock")).expect("bind");
        import_named(
            &who,
            &cache,
            &format!("dir:{}", with_socket.display()),
            "sock",
        );
        let reference = format!("docker://{}/push/odd:{}", reg.host(), tag_of(&who));
        let (_, steps) = push_ok(&who, &cache, "sock", &reference);
        assert!(steps.contains("/run/app.sock"), "{steps}");
        // A file named like a whiteout (kept literally by a dir: import):
        // refused, since every reader of the layer would take it for one.
        let with_whiteout = dir.join("with-whiteout");
        copy_busybox_rootfs(&with_whiteout);
        fs::write(with_whiteout.join("etc/.wh.hosts"), b"not a whiteout\n").expect("write");
        import_named(
            &who,
            &cache,
            &format!("dir:{}", with_whiteout.display()),
            "wh",
        );
        assert_refused(&who, &cache, &["wh", &reference], "/etc/.wh.hosts");
        assert_no_staging_left(&cache);
    }
}
