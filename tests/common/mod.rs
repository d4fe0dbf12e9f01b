//! Shared helpers for the integration tests: the cairn binary in a place an
//! ordinary user can run it from, running it as root or as the test user,
//! the "must work" switch that turns skips into failures, and fixtures.
//!
//! Each test file includes this with `mod common;` and uses only part of it.
#![allow(dead_code)]

pub mod build;
pub mod oracle_image;
pub mod registry;
pub mod tree;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Set by `.ci/run`: a feature the CI says must work may not be skipped.
pub fn must_work() -> bool {
    std::env::var_os("CAIRN_MUST_WORK").is_some_and(|v| v == "1")
}

/// Returns true when `available`; otherwise skips (prints why, returns false)
/// or, under `CAIRN_MUST_WORK=1`, fails the test.
pub fn require(available: bool, what: &str) -> bool {
    if !available {
        assert!(
            !must_work(),
            "{what} is required (CAIRN_MUST_WORK=1) but not available"
        );
        eprintln!("SKIP: {what} not available");
    }
    available
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The ordinary user tests run cairn as (created by tests/setup-host.sh).
#[derive(Debug, Clone)]
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub fn test_user() -> Option<TestUser> {
    user_from_env("CAIRN_TEST_USER", "cairn-test")
}

/// The user named by `$VAR` (else `default`), if it exists.
fn user_from_env(var: &str, default: &str) -> Option<TestUser> {
    let name = std::env::var(var).unwrap_or_else(|_| default.into());
    let user = nix::unistd::User::from_name(&name).ok()??;
    Some(TestUser {
        name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir,
    })
}

/// A second ordinary user, the hostile neighbour of the security tests
/// (created by tests/setup-host.sh).
pub fn second_user() -> Option<TestUser> {
    user_from_env("CAIRN_TEST_USER2", "cairn-evil")
}

/// The test user and the second user (a victim and a neighbour), when the
/// test can play both: root, with both users present; a skip, or a failure
/// under CAIRN_MUST_WORK=1.
pub fn two_users() -> Option<(TestUser, TestUser)> {
    if !require(is_root(), "root (to play two users)") {
        return None;
    }
    let (first, second) = (test_user(), second_user());
    require(
        first.is_some() && second.is_some(),
        "the test users cairn-test and cairn-evil (tests/setup-host.sh)",
    );
    Some((first?, second?))
}

/// Who runs cairn in a test.
#[derive(Debug, Clone)]
pub enum Who {
    /// The test process itself (root in CI, so this is the root path).
    Me,
    /// The ordinary test user, via setpriv (no PAM, no setuid helper).
    User(TestUser),
}

impl Who {
    pub fn uid(&self) -> u32 {
        match self {
            Who::Me => nix::unistd::geteuid().as_raw(),
            Who::User(u) => u.uid,
        }
    }

    pub fn gid(&self) -> u32 {
        match self {
            Who::Me => nix::unistd::getegid().as_raw(),
            Who::User(u) => u.gid,
        }
    }

    pub fn label(&self) -> &str {
        match self {
            Who::Me => "self",
            Who::User(u) => &u.name,
        }
    }
}

/// The callers every runtime test should run as: root (when the tests run as
/// root) and the ordinary test user. Missing the user is a skip, or a failure
/// under `CAIRN_MUST_WORK=1`.
pub fn callers() -> Vec<Who> {
    let mut who = Vec::new();
    if is_root() {
        who.push(Who::Me);
        if let Some(user) = test_user() {
            who.push(Who::User(user));
        } else {
            require(
                false,
                "the test user cairn-test (tests/setup-host.sh creates it)",
            );
        }
    } else {
        // Not root: the test process is the ordinary user itself.
        who.push(Who::Me);
    }
    who
}

/// The ordinary user, when the tests can run as one: as root, the test user;
/// otherwise the caller itself (`Who::Me` means "this process").
pub fn ordinary_user() -> Option<Who> {
    if is_root() {
        let user = test_user();
        require(user.is_some(), "the test user cairn-test");
        user.map(Who::User)
    } else {
        Some(Who::Me)
    }
}

/// Can `who` unshare these namespaces here (`unshare FLAGS --fork true`,
/// e.g. `-Urm`)? A skip, or a failure under `CAIRN_MUST_WORK=1`.
pub fn namespaces_work(who: &Who, flags: &str) -> bool {
    let ok = command_as(who, "unshare")
        .args([flags, "--fork", "true"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require(ok, &format!("namespaces {flags} for {}", who.label()))
}

/// The callers for which `unshare FLAGS` works (see [`namespaces_work`]).
pub fn runners(flags: &str) -> Vec<Who> {
    callers()
        .into_iter()
        .filter(|w| namespaces_work(w, flags))
        .collect()
}

/// A world-readable directory for test files that the test user must reach
/// (a fresh clone may sit below a 0700 directory such as `mktemp -d`).
pub fn shared_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        sweep_stale_test_dirs();
        let dir = std::env::temp_dir().join(format!("cairn-tests-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("create shared test dir");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod shared dir");
        dir
    })
}

/// Remove the shared directories of earlier test processes that are gone:
/// the harness has no hook at process exit, so each test binary cleans up
/// after the ones before it (a run of the whole suite would otherwise leave
/// gigabytes of images in /tmp).
fn sweep_stale_test_dirs() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("cairn-tests-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            // Mounts a crashed test left behind make this fail: best effort.
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh world-accessible scratch directory (0777, sticky) below [`shared_dir`].
pub fn scratch(name: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(&format!("{name}-"))
        .tempdir_in(shared_dir())
        .expect("scratch dir")
        .keep();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).expect("chmod scratch");
    dir
}

/// The cairn binary, copied where the test user can execute it.
pub fn cairn_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dst = shared_dir().join("cairn");
        copy_executable(Path::new(env!("CARGO_BIN_EXE_cairn")), &dst);
        fs::set_permissions(&dst, fs::Permissions::from_mode(0o755)).expect("chmod cairn");
        dst
    })
}

/// The variable that sets how long a run leaves its mount warm, and the
/// value every command the tests start gets: off, so that a run leaves
/// nothing behind (the tests count servers, mounts and loop devices after
/// it). Only tests/run_warm.rs turns warm runs on, with `.env(...)` after
/// [`cairn_as`].
pub const WARM_LINGER_VAR: &str = "CAIRN_WARM_LINGER";
pub const WARM_LINGER_OFF: &str = "0";

/// Warm runs off for `cmd` and every cairn it starts (see [`WARM_LINGER_VAR`]):
/// for a cairn started without [`command_as`] (e.g. `Command::new(cairn_bin())`).
pub fn without_warm_runs(cmd: &mut Command) -> &mut Command {
    cmd.env(WARM_LINGER_VAR, WARM_LINGER_OFF)
}

/// A `Command` for `program` run as `who`. As the test user the environment
/// is cleared to what a login would give (HOME, USER, PATH, ...). Either
/// way warm runs are off for any cairn it starts, directly or through a
/// shell, `srun` or `mpirun` (see [`WARM_LINGER_VAR`]).
pub fn command_as(who: &Who, program: impl AsRef<OsStr>) -> Command {
    match who {
        Who::Me => {
            let mut cmd = Command::new(program);
            without_warm_runs(&mut cmd);
            cmd
        }
        Who::User(u) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={}", u.uid))
                .arg(format!("--regid={}", u.gid))
                .arg("--init-groups")
                .arg("--")
                .arg(program)
                .env_clear()
                .env("HOME", &u.home)
                .env("USER", &u.name)
                .env("LOGNAME", &u.name)
                .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
                .env("LANG", "C.UTF-8")
                .current_dir(shared_dir());
            for var in ["CAIRN_LOG", "CAIRN_MUST_WORK", "RUST_BACKTRACE"] {
                if let Some(v) = std::env::var_os(var) {
                    cmd.env(var, v);
                }
            }
            without_warm_runs(&mut cmd);
            cmd
        }
    }
}

/// Copy a program that will be executed, with `cp` in a child process: a
/// copy written from this multithreaded test process would leave its write
/// fd in children forked meanwhile by other tests, and exec of the copy then
/// fails with ETXTBSY.
pub fn copy_executable(from: &Path, to: &Path) {
    let out = output(Command::new("cp").arg(from).arg(to));
    assert_success(&out, "cp of an executable");
}

/// `cairn ARGS...` as `who`, with warm runs off unless the test sets
/// [`WARM_LINGER_VAR`] itself.
pub fn cairn_as(who: &Who) -> Command {
    command_as(who, cairn_bin())
}

/// Run a command and return its output; panics only if it could not start.
pub fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"))
}

pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run with a deadline so a hung job fails the test instead of the suite.
pub fn output_within(cmd: &mut Command, secs: u64) -> Output {
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while child.try_wait().expect("try_wait").is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {secs}s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.wait_with_output().expect("wait")
}

/// Run a command; its stdout, or a panic with both streams unless it
/// exited 0.
#[track_caller]
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = output(cmd);
    assert_success(&out, what);
    stdout_of(&out)
}

/// Panic with both streams unless the command exited 0.
#[track_caller]
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        stdout_of(out),
        stderr_of(out)
    );
}

/// Is an external tool on PATH?
pub fn have_tool(name: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

/// A small busybox-static root filesystem, built once per test process:
/// every applet linked into /bin, an /etc/os-release that names it, the
/// mount points the runtime needs, and a setuid-root copy of busybox at
/// /usr/local/bin/suid-busybox (to prove setuid bits give no privilege).
pub fn busybox_rootfs() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox missing: install busybox-static (tests/setup-host.sh)"
        );
        let root = shared_dir().join("busybox-rootfs");
        for dir in [
            "bin",
            "dev",
            "etc",
            "home",
            "proc",
            "root",
            "run",
            "sys",
            "tmp",
            "mnt",
            "usr/bin",
            "usr/local/bin",
            "var/tmp",
        ] {
            fs::create_dir_all(root.join(dir)).expect("mkdir rootfs");
        }
        copy_executable(busybox, &root.join("bin/busybox"));
        let list = output(Command::new(busybox).arg("--list"));
        for applet in stdout_of(&list).lines().filter(|a| *a != "busybox") {
            let _ = symlink("busybox", root.join("bin").join(applet));
        }
        fs::write(
            root.join("etc/os-release"),
            "NAME=\"cairn test image\"\nID=cairn-test\nVERSION_ID=1\n",
        )
        .expect("os-release");
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        fs::write(root.join("etc/group"), "root:x:0:\n").expect("group");
        fs::write(root.join("etc/hosts"), "").expect("hosts");
        fs::write(root.join("etc/resolv.conf"), "").expect("resolv.conf");
        let suid = root.join("usr/local/bin/suid-busybox");
        copy_executable(busybox, &suid);
        fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)).expect("chmod suid");
        fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))
            .expect("chmod tmp");
        root
    })
}

/// A private copy of [`busybox_rootfs`] at `to` (`cp -a`), for a test that
/// changes its image.
pub fn copy_busybox_rootfs(to: &Path) {
    let out = output(Command::new("cp").arg("-a").arg(busybox_rootfs()).arg(to));
    assert_success(&out, "copy the busybox rootfs");
}

/// `mksquashfs SRC IMG -noappend -quiet -no-progress FLAGS...`; panics
/// with both streams unless it succeeds. The image keeps mksquashfs's mode.
pub fn mksquashfs(src: &Path, img: &Path, flags: &[&str]) {
    let out = output(
        Command::new("mksquashfs")
            .arg(src)
            .arg(img)
            .args(["-noappend", "-quiet", "-no-progress"])
            .args(flags),
    );
    assert_success(&out, &format!("mksquashfs {flags:?}"));
}

/// The busybox rootfs squashed by mksquashfs (gzip), built once per test
/// process, readable by the test user.
pub fn busybox_sqfs() -> &'static Path {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let img = shared_dir().join("busybox.sqfs");
        busybox_sqfs_at(&img, &["-comp", "gzip"]);
        img
    })
}

/// The busybox rootfs squashed at `img` with mksquashfs `flags` (see
/// [`mksquashfs`]), readable by the test user: for a test that needs an
/// image file of its own or other settings than [`busybox_sqfs`]'s.
pub fn busybox_sqfs_at(img: &Path, flags: &[&str]) {
    mksquashfs(busybox_rootfs(), img, flags);
    fs::set_permissions(img, fs::Permissions::from_mode(0o644)).expect("chmod image");
}

/// A busybox image with more in it: a private copy of the busybox rootfs at
/// `root` (see [`copy_busybox_rootfs`]), to which `add` adds files, squashed
/// at `img` with mksquashfs `flags`, readable by the test user.
pub fn busybox_sqfs_with(root: &Path, img: &Path, flags: &[&str], add: impl FnOnce(&Path)) {
    copy_busybox_rootfs(root);
    add(root);
    mksquashfs(root, img, flags);
    fs::set_permissions(img, fs::Permissions::from_mode(0o644)).expect("chmod image");
}

/// Poll `done` until it holds or `secs` have passed; its last answer.
pub fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    done()
}

/// The pids of live processes (named `comm`, if given) that map `img`: a
/// FUSE server, a join supervisor, a holder of the namespace.
pub fn processes_mapping(img: &Path, comm: Option<&str>) -> Vec<String> {
    let needle = img.display().to_string();
    fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let maps = fs::read_to_string(e.path().join("maps")).unwrap_or_default();
            let c = fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            (maps.contains(&needle) && comm.is_none_or(|want| c.trim() == want)).then_some(name)
        })
        .collect()
}

/// Another user holding abstract socket names: each bound, and listening
/// (never accepting) where asked. Released on drop.
pub struct Squatter {
    child: std::process::Child,
    stop: PathBuf,
}

impl Squatter {
    /// `squatter` holds each `(name, listening)`.
    pub fn hold(squatter: &TestUser, names: &[(&str, bool)]) -> Squatter {
        let work = scratch("squat");
        let ready = work.join("ready");
        let stop = work.join("stop");
        let mut cmd = command_as(&Who::User(squatter.clone()), "python3");
        cmd.args([
            "-c",
            "import socket, os, sys, time\n\
             ready, stop = sys.argv[1:3]\n\
             held = []\n\
             for name, listen in zip(sys.argv[3::2], sys.argv[4::2]):\n\
             \x20   s = socket.socket(socket.AF_UNIX)\n\
             \x20   s.bind(b'\\0' + name.encode())\n\
             \x20   if listen == '1': s.listen(64)\n\
             \x20   held.append(s)\n\
             open(ready, 'w').close()\n\
             while not os.path.exists(stop): time.sleep(0.05)\n",
        ])
        .arg(&ready)
        .arg(&stop);
        for (name, listening) in names {
            cmd.arg(name).arg(if *listening { "1" } else { "0" });
        }
        let child = cmd.spawn().expect("start the squatter");
        assert!(wait_until(10, || ready.exists()), "the squatter is ready");
        Squatter { child, stop }
    }

    /// A victim's `--join` rendezvous: `name` bound and never listened on,
    /// `name/1` bound and listening.
    pub fn join(squatter: &TestUser, name: &str) -> Squatter {
        Squatter::hold(squatter, &[(name, false), (&format!("{name}/1"), true)])
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = fs::write(&self.stop, b"");
        let _ = self.child.wait();
    }
}

/// The user's cairn secret as cairn keeps it (made by an earlier run).
pub fn secret_of(user: &TestUser) -> cairn::trust::UserSecret {
    let places = [
        PathBuf::from(format!("/var/tmp/cairn-{}/secret", user.name)),
        user.home.join(".cache/cairn/private/secret"),
    ];
    for p in &places {
        if let Ok(bytes) = fs::read(p) {
            let bytes: [u8; 32] = bytes.as_slice().try_into().expect("32-byte secret");
            return cairn::trust::UserSecret::from_bytes(bytes);
        }
    }
    panic!("no secret of {} in {places:?}", user.name);
}

/// Marsaglia's xorshift64 (shifts 13, 7, 17): cheap deterministic test
/// inputs, so a failure reproduces. The seed must not be 0 (it would stay 0).
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> XorShift {
        XorShift(seed)
    }

    /// Step the state and return it (the seed itself is never returned).
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `len` bytes: each step's state in little-endian order, the last one
    /// cut short.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// The kind of a file as the tree comparisons of the import tests name it.
pub fn file_kind(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_symlink() {
        "symlink"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else {
        "socket"
    }
}

/// The sha256 of a file's content, in hex (the import tests compare trees
/// by it).
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("read for hash");
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `/dev/fuse` is there (a test that needs it says so, and fails
/// under CAIRN_MUST_WORK).
pub fn fuse_works() -> bool {
    require(Path::new("/dev/fuse").exists(), "/dev/fuse")
}

/// The callers that can run a squashfs image through FUSE (none without
/// `/dev/fuse`).
pub fn fuse_runners() -> Vec<Who> {
    if !fuse_works() {
        return Vec::new();
    }
    runners("-Urm")
}

/// The mount modes (`--mount`) `who` can use: fuse always, kernel as root.
pub fn mount_modes(who: &Who) -> Vec<&'static str> {
    if matches!(who, Who::Me) && is_root() {
        vec!["fuse", "kernel"]
    } else {
        vec!["fuse"]
    }
}

/// The MPI image fixture (tests/fixtures/mpi-image.sh: bookworm minbase
/// with OpenMPI, gcc and libc6-dev), built (as root) or found in the fixture
/// cache.
pub fn mpi_image() -> Option<&'static Path> {
    static IMG: OnceLock<Option<PathBuf>> = OnceLock::new();
    IMG.get_or_init(|| {
        let cache = std::env::var_os("CAIRN_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/cairn-fixtures"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mpi-image.sh");
        // A first build is a debootstrap: minutes, not seconds.
        let out = output_within(
            Command::new(script)
                .arg(&cache)
                .arg(Path::new(env!("CARGO_BIN_EXE_cairn"))),
            1500,
        );
        if !out.status.success() {
            eprintln!("mpi-image.sh: {}", stderr_of(&out));
            return None;
        }
        let img = PathBuf::from(stdout_of(&out).trim());
        img.is_file().then_some(img)
    })
    .as_deref()
}
