//! cairn's FUSE server over real mounts: a varied tree squashed with
//! mksquashfs (zstd, gzip) and served by `cairn::mount::fuse` must equal
//! `unsquashfs -d` of the same image (diff -r, a stat walk, xattrs by
//! getfattr, random-offset reads); writes fail with EROFS; unmounting ends
//! the server with Ok; the ordinary user mounts it inside `unshare -Urm`;
//! killing the server mid-read gives the reader an error, not a hang.
//!
//! Processes that must mount in a fresh namespace re-run this test binary
//! as a helper (`helper_process`, driven by `CAIRN_FUSE_HELPER`): the test
//! process itself is multithreaded and cannot unshare.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cairn::mount::fuse::{self, ServeOptions};
use cairn::squashfs::reader::Archive;
use common::{Who, assert_success, have_tool, is_root, output, require, scratch, stdout_of};

/// Shell that builds the varied tree in "$1" (as root: owners, devices,
/// trusted xattrs).
const BUILD_TREE: &str = r#"
set -eu
cd "$1"
mkdir -p sub/deep/er empty bigdir setgid sticky links
: > empty-file
printf x > one-byte
head -c 4095 /dev/urandom > small
head -c 131072 /dev/urandom > exact-block
head -c 131073 /dev/urandom > block-plus-one
head -c 1500000 /dev/urandom > sub/random-1.5M
yes 'compressible line of text for the zstd and gzip paths' | head -c 3000000 > sub/deep/text-3M
truncate -s 5000000 sparse
printf 'in the middle' | dd of=sparse bs=1 seek=2000000 conv=notrunc status=none
truncate -s 3000000 all-hole
ln -s ../one-byte links/rel
ln -s /etc/hostname links/abs
ln -s does-not-exist links/dangling
ln -s "$(printf 'a%.0s' $(seq 1 200))" links/long
ln -s ../sub/deep links/dir
printf 'hard linked' > hard
ln hard sub/hard2
ln hard sub/deep/hard3
mkfifo fifo0
mknod chardev0 c 1 3
mknod blockdev0 b 7 200
i=0
while [ $i -lt 5000 ]; do : > "bigdir/entry-$i"; i=$((i+1)); done
printf 'a' > bigdir/entry-42
printf '#!/bin/sh\necho suid\n' > suid; chmod 4755 suid
printf 'sgid' > sgid-file; chmod 2711 sgid-file
chmod 2775 setgid
chmod 1777 sticky
printf 'secret' > private; chmod 0600 private
chown 1000:1000 sub/random-1.5M
chown 1234:5678 sub/deep
chown 65534:65534 small
chown 0:100 private
setfattr -n user.greeting -v hello one-byte
setfattr -n user.empty one-byte
setfattr -n user.big -v "$(head -c 2000 /dev/zero | tr '\0' 'v')" sub
setfattr -n trusted.cairn -v t small
setfattr -n user.link-target-only -v f hard
touch -h -d '2001-02-03 04:05:06' links/abs
touch -d '1999-12-31 23:59:59' sub/deep/text-3M
touch -d '2030-01-01 00:00:00' one-byte
"#;

/// A small tree the ordinary user can build and read.
const BUILD_USER_TREE: &str = r#"
set -eu
cd "$1"
mkdir -p d/e many
printf hello > d/e/f
head -c 700000 /dev/urandom > big
ln -s d/e/f link
ln big big-hard
i=0
while [ $i -lt 300 ]; do printf "$i" > "many/$i"; i=$((i+1)); done
"#;

fn sh(script: &str, arg: &Path) {
    let out = output(Command::new("sh").arg("-c").arg(script).arg("sh").arg(arg));
    assert_success(&out, "building the test tree");
}

fn unsquashfs(img: &Path, dest: &Path) {
    let out = output(
        Command::new("unsquashfs")
            .arg("-d")
            .arg(dest)
            .args(["-no-progress", "-quiet"])
            .arg(img),
    );
    assert_success(&out, "unsquashfs");
}

/// Every path below `root` (relative, sorted), without following links.
fn walk(root: &Path) -> Vec<PathBuf> {
    fn go(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) {
        let dir = root.join(rel);
        let mut names: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").file_name())
            .collect();
        names.sort();
        for name in names {
            let p = rel.join(&name);
            out.push(p.clone());
            if fs::symlink_metadata(root.join(&p)).expect("lstat").is_dir() {
                go(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    go(root, Path::new(""), &mut out);
    out
}

/// What stat says about a path, minus what differs by filesystem (inode
/// numbers, directory sizes and blocks, atime/ctime).
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    mode: u32,
    uid: u32,
    gid: u32,
    size: Option<u64>,
    mtime: i64,
    nlink: u64,
    rdev: u64,
    target: Option<PathBuf>,
}

fn seen(p: &Path) -> Seen {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()));
    Seen {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        size: (!m.is_dir()).then_some(m.size()),
        mtime: m.mtime(),
        nlink: m.nlink(),
        rdev: m.rdev(),
        target: m.is_symlink().then(|| fs::read_link(p).expect("readlink")),
    }
}

fn getfattr(p: &Path) -> String {
    let out = output(
        Command::new("getfattr")
            .args(["-h", "-d", "-e", "hex", "-m", "-", "--absolute-names"])
            .arg(p),
    );
    assert_success(&out, "getfattr");
    // The first line names the file; the rest must match.
    stdout_of(&out)
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths grouped by inode number: hard links must group the same way.
fn link_groups(root: &Path, paths: &[PathBuf]) -> Vec<Vec<PathBuf>> {
    let mut by_ino: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    for p in paths {
        let m = fs::symlink_metadata(root.join(p)).expect("lstat");
        if !m.is_dir() {
            by_ino.entry(m.ino()).or_default().push(p.clone());
        }
    }
    let mut groups: Vec<_> = by_ino.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

fn errno_of(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Unmount, retrying EBUSY for a while. The tests of this binary run in
/// parallel threads, and a thread that forks (mksquashfs, getfattr, ...)
/// hands its child a copy of every open fd until the child execs, files
/// open on this mount included: for that instant the mount is busy
/// although this test closed everything.
fn umount_when_idle(mnt: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match nix::mount::umount(mnt) {
            Ok(()) => return,
            Err(nix::errno::Errno::EBUSY) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("umount {}: {e}", mnt.display()),
        }
    }
}

/// A mount served by a thread of this process. Dropped without
/// [`Served::unmount`] (a failed assertion), it detaches the mount so
/// nothing is left behind.
struct Served {
    mnt: PathBuf,
    server: Option<std::thread::JoinHandle<Result<(), fuse::FuseError>>>,
}

impl Served {
    /// Unmount and wait (bounded) for `serve()` to return; it must be Ok.
    fn unmount(mut self) {
        umount_when_idle(&self.mnt);
        let server = self.server.take().expect("server thread");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(server.join());
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("serve() did not return after umount")
            .expect("server thread panicked")
            .expect("serve() returned an error after umount");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if self.server.is_some() {
            let _ = nix::mount::umount2(&self.mnt, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Serve `img` in this process at `mnt`.
fn mount_in_process(img: &Path, mnt: &Path) -> Served {
    mount_in_process_with(img, mnt, ServeOptions::default())
}

fn mount_in_process_with(img: &Path, mnt: &Path, options: ServeOptions) -> Served {
    let archive = Arc::new(Archive::open(img).expect("open image"));
    let fd = fuse::open_device().expect("open /dev/fuse");
    fuse::mount(mnt, fd.as_fd(), true).expect("mount fuse");
    let server = std::thread::spawn(move || fuse::serve(archive, fd, options));
    Served {
        mnt: mnt.to_path_buf(),
        server: Some(server),
    }
}

fn tools_for_root_tests() -> bool {
    require(is_root(), "root (mknod, chown, mount of /dev/fuse)")
        && require(
            have_tool("mksquashfs") && have_tool("unsquashfs"),
            "squashfs-tools",
        )
        && require(have_tool("getfattr") && have_tool("setfattr"), "attr tools")
        && require(Path::new("/dev/fuse").exists(), "/dev/fuse")
}

fn tree_equals_unsquashfs(comp: &str) {
    if !tools_for_root_tests() {
        return;
    }
    let dir = scratch(&format!("fuse-tree-{comp}"));
    let src = dir.join("src");
    fs::create_dir(&src).expect("mkdir src");
    sh(BUILD_TREE, &src);
    let img = dir.join("img.sqfs");
    common::mksquashfs(&src, &img, &["-comp", comp]);
    let extracted = dir.join("extracted");
    unsquashfs(&img, &extracted);
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    let server = mount_in_process(&img, &mnt);

    // Several first readers at once (nothing cached yet): the workers
    // serve them in parallel.
    std::thread::scope(|scope| {
        for i in 0..4 {
            let (mnt, extracted) = (&mnt, &extracted);
            scope.spawn(move || {
                let mut names = ["sub/random-1.5M", "sub/deep/text-3M", "sparse", "small"];
                names.rotate_left(i);
                for name in names {
                    let got = fs::read(mnt.join(name)).expect("read through the mount");
                    let want = fs::read(extracted.join(name)).expect("read extracted");
                    assert!(got == want, "{name}: parallel read differs");
                }
            });
        }
    });

    // Contents: diff -r, symlinks compared as links. GNU diff calls two
    // fifos "different", so special files are left to the stat walk.
    let out = output(
        Command::new("diff")
            .args(["-r", "--no-dereference"])
            .args([
                "--exclude=fifo0",
                "--exclude=chardev0",
                "--exclude=blockdev0",
            ])
            .arg(&extracted)
            .arg(&mnt),
    );
    assert_success(&out, "diff -r unsquashfs-output mount");

    // The stat walk.
    let want_paths = walk(&extracted);
    let got_paths = walk(&mnt);
    assert_eq!(got_paths, want_paths, "the mount lists other names");
    assert!(want_paths.len() > 5000);
    for p in &want_paths {
        assert_eq!(
            seen(&mnt.join(p)),
            seen(&extracted.join(p)),
            "stat of {}",
            p.display()
        );
        if !p.starts_with("bigdir") {
            assert_eq!(
                getfattr(&mnt.join(p)),
                getfattr(&extracted.join(p)),
                "xattrs of {}",
                p.display()
            );
        }
    }
    assert!(getfattr(&mnt.join("one-byte")).contains("user.greeting=0x68656c6c6f"));
    assert_eq!(
        link_groups(&mnt, &got_paths),
        link_groups(&extracted, &want_paths)
    );
    assert_eq!(link_groups(&mnt, &got_paths).len(), 1);
    // The kernel's own view of the root.
    assert_eq!(seen(&mnt).mode, seen(&extracted).mode);

    // Random-offset reads, including across block and hole boundaries.
    let mut offsets = common::XorShift::new(0x9e37_79b9_7f4a_7c15);
    for name in [
        "sub/random-1.5M",
        "sub/deep/text-3M",
        "sparse",
        "all-hole",
        "block-plus-one",
        "exact-block",
    ] {
        let a = fs::File::open(extracted.join(name)).expect("open extracted");
        let b = fs::File::open(mnt.join(name)).expect("open mounted");
        let len = a.metadata().expect("stat").len();
        for _ in 0..40 {
            let off = offsets.next_u64() % (len + 10);
            let n = (offsets.next_u64() % 300_000) as usize;
            let (mut x, mut y) = (vec![0u8; n], vec![0u8; n]);
            let rx = a.read_at(&mut x, off).expect("read extracted");
            let mut ry = 0;
            // A FUSE read may return fewer bytes than asked: read on.
            while ry < n {
                let k = b
                    .read_at(&mut y[ry..], off + ry as u64)
                    .expect("read mount");
                if k == 0 {
                    break;
                }
                ry += k;
            }
            let mut rx_all = rx;
            while rx_all < n {
                let k = a
                    .read_at(&mut x[rx_all..], off + rx_all as u64)
                    .expect("read");
                if k == 0 {
                    break;
                }
                rx_all += k;
            }
            assert_eq!(ry, rx_all, "{name} @{off}+{n}: length");
            assert!(x[..rx_all] == y[..ry], "{name} @{off}+{n}: bytes differ");
        }
    }
    // dd, as a user of the mount would read.
    let dd = |root: &Path| {
        let out = output(
            Command::new("dd")
                .arg(format!("if={}", root.join("sub/random-1.5M").display()))
                .args(["bs=4096", "skip=77", "count=9", "status=none"]),
        );
        assert_success(&out, "dd");
        out.stdout
    };
    assert_eq!(dd(&mnt), dd(&extracted));

    // Read-only: every kind of write fails with EROFS.
    let erofs = Some(libc::EROFS);
    assert_eq!(errno_of(fs::File::create(mnt.join("new"))), erofs);
    assert_eq!(
        errno_of(fs::OpenOptions::new().write(true).open(mnt.join("small"))),
        erofs
    );
    assert_eq!(
        errno_of(
            fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(mnt.join("one-byte"))
        ),
        erofs
    );
    assert_eq!(errno_of(fs::create_dir(mnt.join("newdir"))), erofs);
    assert_eq!(errno_of(fs::remove_file(mnt.join("small"))), erofs);
    assert_eq!(
        errno_of(fs::rename(mnt.join("small"), mnt.join("renamed"))),
        erofs
    );
    assert_eq!(
        errno_of(std::os::unix::fs::symlink("x", mnt.join("newlink"))),
        erofs
    );
    assert_eq!(
        errno_of(fs::set_permissions(
            mnt.join("small"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777)
        )),
        erofs
    );
    let out = output(
        Command::new("setfattr")
            .args(["-n", "user.new", "-v", "1"])
            .arg(mnt.join("small")),
    );
    assert!(!out.status.success(), "setfattr on the mount succeeded");

    // The mount is what the caller asked for.
    let mounts = fs::read_to_string("/proc/self/mounts").expect("mounts");
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(mnt.to_str().expect("utf-8 path")))
        .expect("the mount is listed");
    assert!(line.starts_with("cairn "), "{line}");
    assert!(line.contains(" fuse.cairn ro,nosuid,nodev"), "{line}");

    // Unmount: the server sees the connection end and returns Ok.
    server.unmount();
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn zstd_image_served_equals_unsquashfs_output() {
    tree_equals_unsquashfs("zstd");
}

#[test]
fn gzip_image_served_equals_unsquashfs_output() {
    tree_equals_unsquashfs("gzip");
}

/// This test binary, where the ordinary user can run it.
fn helper_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dst = common::shared_dir().join("fuse-helper");
        fs::copy(std::env::current_exe().expect("current exe"), &dst).expect("copy helper");
        fs::set_permissions(&dst, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod helper");
        dst
    })
}

/// `helper_process` under `who`, wrapped by `prefix` (e.g. `unshare -Urm`).
fn helper_command(who: &Who, prefix: &[&str], args: &[&Path]) -> Command {
    let mut cmd = common::command_as(who, prefix.first().copied().unwrap_or("env"));
    cmd.args(prefix.iter().skip(1))
        .arg(helper_bin())
        .args([
            "helper_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(
            "CAIRN_FUSE_HELPER",
            args.iter()
                .map(|p| p.to_str().expect("utf-8 path"))
                .collect::<Vec<_>>()
                .join("\n"),
        );
    cmd
}

/// Not a test on its own: the process the other tests start to mount in a
/// fresh namespace or to be killed. `CAIRN_FUSE_HELPER` holds lines:
/// IMAGE, MOUNTPOINT, then an optional command. Without a command: print
/// `ready`, serve until unmounted. With one: run it while serving, then
/// unmount and check that the server ended with Ok.
#[test]
#[ignore = "a helper process started by the other tests"]
fn helper_process() {
    let Ok(spec) = std::env::var("CAIRN_FUSE_HELPER") else {
        return;
    };
    let mut lines = spec.lines();
    let img = PathBuf::from(lines.next().expect("image"));
    let mnt = PathBuf::from(lines.next().expect("mountpoint"));
    let command: Vec<&str> = lines.collect();
    let archive = Arc::new(Archive::open(&img).expect("open image"));
    let fd = fuse::open_device().expect("open /dev/fuse");
    fuse::mount(&mnt, fd.as_fd(), true).expect("mount fuse");
    if command.is_empty() {
        println!("ready");
        fuse::serve(archive, fd, ServeOptions::default()).expect("serve");
        return;
    }
    let server = std::thread::spawn(move || fuse::serve(archive, fd, ServeOptions::default()));
    let out = output(Command::new(command[0]).args(&command[1..]));
    print!("{}", stdout_of(&out));
    eprint!("{}", common::stderr_of(&out));
    umount_when_idle(&mnt);
    server
        .join()
        .expect("server thread panicked")
        .expect("serve() after umount");
    assert!(out.status.success(), "{command:?} failed: {:?}", out.status);
    println!("helper: server ended");
}

#[test]
fn ordinary_user_mounts_fuse_in_a_user_namespace() {
    let Some(user) = common::ordinary_user() else {
        return;
    };
    if !require(have_tool("unshare"), "unshare (util-linux)")
        || !require(have_tool("mksquashfs"), "mksquashfs")
        || !require(Path::new("/dev/fuse").exists(), "/dev/fuse")
    {
        return;
    }
    // Can this user create a user namespace here at all?
    let probe = output(common::command_as(&user, "unshare").args(["-Urm", "true"]));
    if !require(probe.status.success(), "unprivileged user namespaces") {
        return;
    }
    let dir = scratch("fuse-userns");
    let src = dir.join("src");
    fs::create_dir(&src).expect("mkdir src");
    sh(BUILD_USER_TREE, &src);
    let img = dir.join("img.sqfs");
    common::mksquashfs(&src, &img, &["-comp", "zstd"]);
    fs::set_permissions(&img, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod image");
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    let script = dir.join("inside.sh");
    fs::write(
        &script,
        format!(
            "set -e\nfind {m} -ls >/dev/null\ncat {m}/d/e/f; echo\ncat {m}/link; echo\n\
             diff -r --no-dereference {s} {m} && echo same-tree\n\
             ls {m}/many | wc -l\n\
             if touch {m}/x 2>/dev/null; then echo writable; fi\n\
             grep ' {m} ' /proc/self/mounts\n",
            m = mnt.display(),
            s = src.display()
        ),
    )
    .expect("write script");
    let sh_path = PathBuf::from("/bin/sh");
    let out = output(
        helper_command(
            &user,
            &["unshare", "-Urm"],
            &[&img, &mnt, &sh_path, &script],
        )
        .stdin(Stdio::null()),
    );
    assert_success(&out, "the FUSE mount inside unshare -Urm");
    let text = stdout_of(&out);
    assert!(text.contains("hello\nhello\n"), "{text}");
    assert!(text.contains("same-tree"), "{text}");
    assert!(text.contains("\n300\n"), "{text}");
    assert!(!text.contains("writable"), "{text}");
    assert!(text.contains("fuse.cairn ro,nosuid,nodev"), "{text}");
    assert!(text.contains("helper: server ended"), "{text}");
    // Nothing leaked into this mount namespace.
    let mounts = fs::read_to_string("/proc/self/mounts").expect("mounts");
    assert!(!mounts.contains(mnt.to_str().expect("utf-8")), "{mounts}");
    fs::remove_dir_all(&dir).ok();
}

/// A child process that is killed if the test fails before it ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Wait (bounded) until every thread of `pid` is in the stopped state.
fn wait_until_stopped(pid: u32) {
    for _ in 0..500 {
        let tasks = fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
        let all_stopped = tasks.flatten().all(|t| {
            fs::read_to_string(t.path().join("stat"))
                .ok()
                .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('T')))
                .unwrap_or(true)
        });
        if all_stopped {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the server did not stop");
}

#[test]
fn killing_the_server_mid_read_gives_an_error_not_a_hang() {
    if !require(is_root(), "root (mount of /dev/fuse in this namespace)")
        || !require(have_tool("mksquashfs"), "mksquashfs")
        || !require(Path::new("/dev/fuse").exists(), "/dev/fuse")
    {
        return;
    }
    let dir = scratch("fuse-kill");
    let src = dir.join("src");
    fs::create_dir(&src).expect("mkdir src");
    sh(
        "head -c 4000000 /dev/urandom > \"$1/big\"; echo hi > \"$1/small\"",
        &src,
    );
    let img = dir.join("img.sqfs");
    common::mksquashfs(&src, &img, &["-comp", "zstd"]);
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    let mut child = KillOnDrop(
        helper_command(&Who::Me, &[], &[&img, &mnt])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start helper"),
    );
    let stdout = child.0.stdout.take().expect("helper stdout");
    let mut lines = BufReader::new(stdout).lines();
    loop {
        let line = lines
            .next()
            .expect("helper ended before ready")
            .expect("read helper");
        if line.trim() == "ready" {
            break;
        }
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).expect("a pid fits pid_t"));
    // Open (lookup + open answered), then freeze the server so the read
    // below is pending in the kernel when the server dies.
    let mut file = fs::File::open(mnt.join("big")).expect("open through the mount");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("stop server");
    // SIGSTOP takes effect as each thread next runs: wait until all of the
    // server's threads are stopped, or a request could still be answered.
    wait_until_stopped(child.0.id());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let _ = tx.send(file.read(&mut buf).map(|_| ()));
    });
    if let Ok(r) = rx.recv_timeout(Duration::from_millis(300)) {
        panic!("the read finished while the server was stopped: {r:?}");
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill server");
    let result = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the read hangs after the server was killed");
    let errno = result
        .expect_err("read succeeded without a server")
        .raw_os_error();
    assert!(
        matches!(
            errno,
            Some(libc::ENOTCONN) | Some(libc::ECONNABORTED) | Some(libc::EIO)
        ),
        "unexpected error {errno:?}"
    );
    let _ = child.0.wait();
    // Later access: ENOTCONN at once, no hang.
    let again = fs::metadata(mnt.join("small"));
    assert!(again.is_err(), "stat through a dead server succeeded");
    nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH).expect("lazy umount");
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_corrupt_data_block_reads_as_eio_and_the_server_keeps_serving() {
    if !require(is_root(), "root (mount of /dev/fuse in this namespace)")
        || !require(have_tool("mksquashfs"), "mksquashfs")
        || !require(Path::new("/dev/fuse").exists(), "/dev/fuse")
    {
        return;
    }
    let dir = scratch("fuse-corrupt");
    let src = dir.join("src");
    fs::create_dir(&src).expect("mkdir src");
    // "a" sorts first, so its compressed blocks open the data area right
    // after the 96-byte superblock; gzip (zlib) checksums every block, so
    // damage there is always detected.
    sh(
        "yes 'first file, compressible' | head -c 600000 > \"$1/a\"; \
         yes 'second file' | head -c 300000 > \"$1/b\"",
        &src,
    );
    let img = dir.join("img.sqfs");
    common::mksquashfs(&src, &img, &["-comp", "gzip"]);
    let mut bytes = fs::read(&img).expect("read image");
    for b in &mut bytes[200..260] {
        *b ^= 0x5a;
    }
    fs::write(&img, &bytes).expect("write image");
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).expect("mkdir mnt");
    // Also the other serving mode: three workers sharing one fd.
    let options = ServeOptions {
        threads: 3,
        clone_fd: false,
        ..ServeOptions::default()
    };
    let server = mount_in_process_with(&img, &mnt, options);

    let mut buf = Vec::new();
    let err = fs::File::open(mnt.join("a"))
        .expect("open a")
        .read_to_end(&mut buf)
        .expect_err("reading a damaged block succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    // The server is still there for everything else.
    let b = fs::read(mnt.join("b")).expect("read b");
    assert_eq!(b, fs::read(src.join("b")).expect("read source b"));
    assert_eq!(fs::read_dir(&mnt).expect("readdir").count(), 2);

    server.unmount();
    fs::remove_dir_all(&dir).ok();
}
