//! The FUSE server's limits and failures, as root and as the ordinary
//! user: `--fuse-threads` and `fuse_threads` are bounded.

mod common;

use common::*;

#[test]
fn fuse_threads_beyond_the_bound_are_refused_naming_the_option() {
    let img = busybox_sqfs();
    for who in callers() {
        let out = output_within(
            cairn_as(&who)
                .args(["run", "--fuse-threads", "20000"])
                .arg(img)
                .args(["--", "true"]),
            20,
        );
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(125), "{}: {err}", who.label());
        assert!(
            err.contains("--fuse-threads") && err.contains("20000") && err.contains("256"),
            "{}: {err}",
            who.label()
        );
    }
    // The same bound for the config key, naming the file.
    let dir = scratch("threads-config");
    let site = dir.join("cairn.toml");
    std::fs::write(&site, "[defaults]\nfuse_threads = 1000\n").expect("write the site config");
    for who in callers() {
        let out = output_within(
            cairn_as(&who)
                .env("CAIRN_CONFIG", &site)
                .env("XDG_CONFIG_HOME", &dir)
                .arg("run")
                .arg(img)
                .args(["--", "true"]),
            20,
        );
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(125), "{}: {err}", who.label());
        assert!(
            err.contains("fuse_threads")
                && err.contains("256")
                && err.contains(&site.display().to_string()),
            "{}: {err}",
            who.label()
        );
    }
}
