//! `cairn run IMAGE.sqfs` end to end, as root and as the ordinary user, with
//! the FUSE server and (as root) the kernel mount: the tree inside equals
//! `unsquashfs -d` output, the image is read-only and setuid bits give
//! nothing, a daemon left by the job keeps the image and nothing remains
//! after it, a killed server fails the job without hanging, broken images
//! give 125 naming the file, and images from ch-convert and `mksquashfs
//! -comp lzo` run.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn have(tool: &str) -> bool {
    require(have_tool(tool), tool)
}

/// `cairn run --mount MODE [OPTS] IMAGE -- sh -c SCRIPT` as `who`.
fn run_sh(who: &Who, mode: &str, opts: &[&str], img: &Path, script: &str) -> Output {
    let mut cmd = cairn_as(who);
    cmd.args(["run", "--mount", mode])
        .args(opts)
        .arg(img)
        .args(["--", "/bin/sh", "-c", script]);
    output_within(&mut cmd, 60)
}

/// `stat` lines for every path below `root` (relative names, sorted),
/// without the mount points and the files cairn replaces. Directory sizes
/// are left out: they are the filesystem's business (squashfs counts its
/// entries, ext4 its blocks).
const STAT_WALK: &str = "walk() { (cd \"$1\" && find . -xdev | sort | while read -r f; do \
    stat -c '%n|%f|%Y|%h' \"$f\"; [ -d \"$f\" ] || stat -c '%n size %s' \"$f\"; if [ -L \"$f\" ]; then echo \"$f -> $(readlink \"$f\")\"; fi; done); }";

fn comparable(text: &str) -> Vec<String> {
    let skipped = [
        "./dev",
        "./proc",
        "./sys",
        "./tmp",
        "./etc/passwd",
        "./etc/group",
        "./etc/hosts",
        "./etc/resolv.conf",
        ".|",
    ];
    text.lines()
        .filter(|l| !skipped.iter().any(|s| l.starts_with(s)))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_tree_inside_equals_unsquashfs_output() {
    if !have("unsquashfs") {
        return;
    }
    let dir = scratch("sqfs-tree");
    let unpacked = dir.join("unpacked");
    assert_success(
        &output(
            Command::new("unsquashfs")
                .args(["-q", "-n", "-d"])
                .arg(&unpacked)
                .arg(busybox_sqfs()),
        ),
        "unsquashfs",
    );
    let host = output(
        Command::new("/bin/busybox")
            .args(["sh", "-c", &format!("{STAT_WALK}; walk \"$0\"")])
            .arg(&unpacked),
    );
    assert_success(&host, "host stat walk");
    let expected = comparable(&stdout_of(&host));
    assert!(expected.len() > 100, "{expected:?}");
    for who in fuse_runners() {
        for mode in mount_modes(&who) {
            let bind = format!("{}:/mnt:ro", unpacked.display());
            let script = format!(
                "{STAT_WALK}; walk / && diff -r /mnt/bin /bin && diff -r /mnt/usr /usr && echo DIFF-OK >&2"
            );
            let out = run_sh(&who, mode, &["-b", &bind], busybox_sqfs(), &script);
            assert_success(&out, &format!("stat walk as {} via {mode}", who.label()));
            assert!(stderr_of(&out).contains("DIFF-OK"), "{}", stderr_of(&out));
            let inside: Vec<String> = comparable(&stdout_of(&out))
                .into_iter()
                .filter(|l| !l.starts_with("./mnt/") && !l.starts_with("./mnt|"))
                .collect();
            let expected: Vec<&String> = expected
                .iter()
                .filter(|l| !l.starts_with("./mnt/") && !l.starts_with("./mnt|"))
                .collect();
            let inside: Vec<&String> = inside.iter().collect();
            assert_eq!(inside, expected, "as {} via {mode}", who.label());
        }
    }
}

#[test]
fn mount_kind_follows_the_mode_and_the_image_is_read_only_without_setuid() {
    for who in fuse_runners() {
        for mode in mount_modes(&who) {
            // busybox picks the applet from argv[0]: the setuid copy is
            // called as "id" through a symlink in the private /tmp. An
            // ioctl on an image file (isatty's TCGETS) answers "not a
            // terminal" through the FUSE server too.
            let script = "grep ' / / ' /proc/self/mountinfo; \
                touch /bin/new 2>/dev/null && echo WROTE; \
                test -t 0 < /bin/sh && echo TTY; \
                ln -s /usr/local/bin/suid-busybox /tmp/id && /tmp/id -u; id -u";
            let out = run_sh(&who, mode, &["--private-tmp"], busybox_sqfs(), script);
            assert_success(&out, &format!("as {} via {mode}", who.label()));
            let text = stdout_of(&out);
            let fstype = if mode == "kernel" {
                "squashfs"
            } else {
                "fuse.cairn"
            };
            assert!(text.contains(&format!(" - {fstype} ")), "{text}");
            assert!(text.contains(" ro,nosuid,nodev"), "{text}");
            assert!(!text.contains("WROTE"), "{text}");
            assert!(!text.contains("TTY"), "{text}");
            let ids: Vec<&str> = text.lines().skip(1).collect();
            // The setuid-root copy runs with the caller's id, not root's.
            assert_eq!(ids.first(), ids.get(1), "{text}");
        }
    }
    // Auto: the kernel for root, FUSE for the ordinary user; --mount kernel
    // is refused for the ordinary user.
    for who in fuse_runners() {
        let out = run_sh(
            &who,
            "auto",
            &[],
            busybox_sqfs(),
            "grep ' / / ' /proc/self/mountinfo",
        );
        assert_success(&out, "auto");
        let root = matches!(who, Who::Me) && is_root();
        let expected = if root { "squashfs" } else { "fuse.cairn" };
        assert!(stdout_of(&out).contains(expected), "{}", stdout_of(&out));
        if !root {
            let out = run_sh(&who, "kernel", &[], busybox_sqfs(), "true");
            assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
            assert!(stderr_of(&out).contains("--mount kernel"));
        }
    }
}

fn loop_devices_of(img: &Path) -> String {
    let out = output(Command::new("losetup").arg("-j").arg(img));
    stdout_of(&out)
}

/// A private copy of the image per test, so that "nothing maps it" is not
/// disturbed by other tests running at the same time.
fn private_image(name: &str) -> PathBuf {
    let dir = scratch(name);
    let img = dir.join("img.sqfs");
    fs::copy(busybox_sqfs(), &img).expect("copy image");
    img
}

#[test]
fn a_daemon_keeps_the_image_and_nothing_remains_after_it() {
    for who in fuse_runners() {
        for mode in mount_modes(&who) {
            let img = private_image("sqfs-daemon");
            let marks = img.parent().expect("parent").join("marks");
            fs::create_dir(&marks).expect("mkdir");
            fs::set_permissions(&marks, std::os::unix::fs::PermissionsExt::from_mode(0o777))
                .expect("chmod");
            let bind = format!("{}:/mnt", marks.display());
            let script = "(sleep 2; cat /bin/busybox > /dev/null && echo ok > /mnt/marker) \
                </dev/null >/dev/null 2>&1 &";
            let out = run_sh(&who, mode, &["-b", &bind], &img, script);
            assert_success(&out, &format!("daemon job as {} via {mode}", who.label()));
            let marker = marks.join("marker");
            assert!(
                wait_until(20, || fs::read_to_string(&marker)
                    .is_ok_and(|t| t == "ok\n")),
                "the daemon did not finish its read as {} via {mode}",
                who.label()
            );
            assert!(
                wait_until(10, || processes_mapping(&img, None).is_empty()),
                "processes still map {}: {:?}",
                img.display(),
                processes_mapping(&img, None)
            );
            if mode == "kernel" {
                assert!(
                    wait_until(10, || loop_devices_of(&img).trim().is_empty()),
                    "loop device left: {}",
                    loop_devices_of(&img)
                );
            }
        }
    }
}

#[test]
fn killing_the_fuse_server_fails_the_job_without_hanging() {
    for who in fuse_runners() {
        let img = private_image("sqfs-kill");
        let mut cmd = cairn_as(&who);
        cmd.args(["run", "--mount", "fuse"]).arg(&img).args([
            "--",
            "/bin/sh",
            "-c",
            // Small reads with pauses: each new stretch of the file is a
            // FUSE read (cached pages would not notice the server is gone).
            "i=0; while dd if=/usr/local/bin/suid-busybox of=/dev/null bs=4096 count=1 skip=$i 2>/dev/null; do \
             [ $i = 1 ] && echo started; i=$((i+1)); [ $i -gt 480 ] && break; sleep 0.05; done; \
             [ $i -gt 480 ] && exit 0; echo read-failed; exit 3",
        ]);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut first = [0u8; 8];
        std::io::Read::read_exact(&mut stdout, &mut first).expect("started");
        assert_eq!(&first, b"started\n");
        let servers = processes_mapping(&img, None);
        assert_eq!(servers.len(), 1, "one FUSE server: {servers:?}");
        let comm = fs::read_to_string(format!("/proc/{}/comm", servers[0])).expect("comm");
        assert_eq!(comm.trim(), "cairn-fuse");
        assert!(
            Command::new("kill")
                .args(["-9", &servers[0]])
                .status()
                .expect("kill")
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the job did not end within 20s after the server was killed");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest");
        assert!(!status.success(), "{status:?}");
        assert!(rest.contains("read-failed"), "{rest}");
    }
}

#[test]
fn broken_images_give_125_naming_the_file() {
    let Some(who) = fuse_runners().into_iter().next() else {
        return;
    };
    let dir = scratch("sqfs-broken");
    let good = fs::read(busybox_sqfs()).expect("read image");
    let truncated = dir.join("truncated.sqfs");
    fs::write(&truncated, &good[..good.len() / 2]).expect("write");
    let corrupt = dir.join("corrupt.sqfs");
    let mut bytes = good.clone();
    for b in &mut bytes[4..96] {
        *b = 0xa5;
    }
    fs::write(&corrupt, &bytes).expect("write");
    let not_squashfs = dir.join("notes.sqfs");
    fs::write(&not_squashfs, "just some text\n").expect("write");
    let empty = dir.join("empty.sqfs");
    fs::write(&empty, "").expect("write");
    let missing = dir.join("missing.sqfs");
    for (img, what) in [
        (&truncated, "truncated"),
        (&corrupt, "superblock"),
        (&not_squashfs, "neither a directory nor a squashfs"),
        (&empty, "neither a directory nor a squashfs"),
        (&missing, "no such file or directory"),
    ] {
        let out = run_sh(&who, "fuse", &[], img, "true");
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(125), "{}: {err}", img.display());
        assert!(err.contains(&img.display().to_string()), "{err}");
        assert!(
            err.contains(what),
            "{}: expected {what:?} in {err}",
            img.display()
        );
    }
}

#[test]
fn images_from_ch_convert_and_mksquashfs_lzo_run() {
    let runners = fuse_runners();
    if runners.is_empty() {
        return;
    }
    let dir = scratch("sqfs-foreign");
    let mut images = Vec::new();
    let lzo = dir.join("lzo.sqsh");
    busybox_sqfs_at(&lzo, &["-comp", "lzo"]);
    images.push(lzo);
    if have("ch-convert") {
        let ch = dir.join("ch.sqfs");
        let out = output(
            Command::new("ch-convert")
                .args(["-i", "dir", "-o", "squash"])
                .arg(busybox_rootfs())
                .arg(&ch),
        );
        assert_success(&out, "ch-convert");
        images.push(ch);
    }
    for who in &runners {
        for img in &images {
            for mode in mount_modes(who) {
                let out = run_sh(who, mode, &[], img, "cat /etc/os-release; ls /bin | wc -l");
                assert_success(&out, &format!("{} via {mode}", img.display()));
                assert!(stdout_of(&out).contains("cairn test image"));
            }
        }
    }
}
