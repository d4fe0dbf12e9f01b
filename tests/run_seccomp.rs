//! `cairn run --seccomp`, as root and as the ordinary user, through FUSE
//! and (as root) the kernel mount: chown, the id changes and mknod of a
//! device succeed without effect, a FIFO is still made, and a 32-bit x86
//! program (its own syscall numbers: chown32, setuid32, the 16-bit chown)
//! gets the same answers instead of being killed. Without the option the
//! ordinary user's chown fails as it always did.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

fn run(who: &Who, mode: &str, opts: &[&str], script: &str) -> Output {
    let mut cmd = cairn_as(who);
    cmd.args(["run", "--mount", mode, "--uid", "0", "-w"])
        .args(opts)
        .arg(busybox_sqfs())
        .args(["--", "/bin/sh", "-c", script]);
    output_within(without_warm_runs(&mut cmd), 60)
}

/// busybox's applets differ between builds: the ones this test uses must
/// be in the fixture's /bin.
fn applets_present() -> bool {
    let missing: Vec<&str> = ["touch", "chown", "stat", "mknod", "mkfifo", "id"]
        .into_iter()
        .filter(|a| !busybox_rootfs().join("bin").join(a).exists())
        .collect();
    require(missing.is_empty(), &format!("busybox applets {missing:?}"))
}

const SCRIPT: &str = "touch /f; chown 1234:1234 /f && echo CHOWN_OK; stat -c OWNER=%u /f; \
    mknod /c c 1 3 && echo MKNOD_OK; [ -c /c ] && echo DEVICE_MADE; \
    mkfifo /p && [ -p /p ] && echo FIFO_REAL; true";

#[test]
fn chown_setuid_and_device_mknod_succeed_without_effect() {
    if !applets_present() {
        return;
    }
    for who in fuse_runners() {
        for mode in mount_modes(&who) {
            let what = format!("{} via {mode}", who.label());
            let out = run(&who, mode, &["--seccomp"], SCRIPT);
            assert_success(&out, &what);
            let text = stdout_of(&out);
            assert!(text.contains("CHOWN_OK"), "{what}: {text}");
            assert!(
                !text.contains("OWNER=1234"),
                "{what}: the owner changed: {text}"
            );
            assert!(text.contains("MKNOD_OK"), "{what}: {text}");
            assert!(!text.contains("DEVICE_MADE"), "{what}: {text}");
            assert!(text.contains("FIFO_REAL"), "{what}: {text}");
        }
        if matches!(who, Who::User(_)) {
            // Without the filter one mapped uid cannot chown to another.
            let out = run(&who, "fuse", &[], SCRIPT);
            assert_success(&out, "without --seccomp");
            let text = stdout_of(&out);
            assert!(!text.contains("CHOWN_OK"), "{text}");
            assert!(!text.contains("MKNOD_OK"), "{text}");
        }
    }
}

/// A static 32-bit x86 program calling chown (chown32), the 16-bit chown
/// and lchown, setuid (setuid32), setgroups and mknod of a device.
const PROG32: &str = r#"
#include <stdio.h>
#include <unistd.h>
#include <grp.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int c32 = chown(argv[1], 1234, 1234);
    int c16 = syscall(SYS_chown, argv[1], 1234, 1234);
    int l16 = syscall(SYS_lchown, argv[1], 1234, 1234);
    gid_t g = 5;
    int sg = setgroups(1, &g);
    int su = setuid(1234);
    int mk = mknod(argv[2], S_IFCHR | 0600, makedev(1, 3));
    struct stat st;
    int made = stat(argv[2], &st) == 0;
    stat(argv[1], &st);
    printf("chown32=%d chown16=%d lchown16=%d setgroups=%d setuid=%d mknod=%d made=%d uid=%d owner=%d\n",
           c32, c16, l16, sg, su, mk, made, (int)getuid(), (int)st.st_uid);
    return 0;
}
"#;

/// Build PROG32 with `gcc -m32 -static` into `dir`; false (a skip, or a
/// failure under CAIRN_MUST_WORK) without a 32-bit toolchain.
fn build_prog32(dir: &Path) -> bool {
    if !require(have_tool("gcc"), "gcc") {
        return false;
    }
    let src = dir.join("prog32.c");
    std::fs::write(&src, PROG32).expect("write prog32.c");
    let out = Command::new("gcc")
        .args(["-m32", "-static", "-O1", "-o"])
        .arg(dir.join("prog32"))
        .arg(&src)
        .output()
        .expect("run gcc");
    require(
        out.status.success(),
        &format!(
            "gcc -m32 -static (gcc-multilib): {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn a_32_bit_x86_program_gets_the_same_answers() {
    if std::env::consts::ARCH != "x86_64" {
        return;
    }
    let dir = scratch("seccomp-prog32");
    if !build_prog32(&dir) {
        return;
    }
    let bind = format!("{}:/t", dir.display());
    for who in fuse_runners() {
        let out = run(
            &who,
            "fuse",
            &["--seccomp", "-b", &bind],
            "touch /f; /t/prog32 /f /c",
        );
        assert_success(&out, &format!("prog32 as {}", who.label()));
        let text = stdout_of(&out);
        assert!(
            text.contains(
                "chown32=0 chown16=0 lchown16=0 setgroups=0 setuid=0 mknod=0 made=0 uid=0 owner=0"
            ),
            "{}: {text}",
            who.label()
        );
        if matches!(who, Who::User(_)) {
            // Without the filter the calls fail (and nothing is killed).
            let out = run(&who, "fuse", &["-b", &bind], "touch /f; /t/prog32 /f /c");
            assert_success(&out, "prog32 without --seccomp");
            let text = stdout_of(&out);
            assert!(text.contains("chown32=-1"), "{text}");
            assert!(text.contains("setuid=-1"), "{text}");
        }
    }
}
