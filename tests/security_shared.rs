//! Another user of the node must never reach into a run. Root drives two
//! ordinary users: the victim (`cairn-test`) runs cairn, the neighbour
//! (`cairn-evil`) plants directories and files in `/var/tmp`, swaps them
//! while the victim runs, forges block-store files and squats `--join`
//! rendezvous names. The victim's jobs must see only the image's bytes and
//! must not be stopped.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;

use cairn::run::facts::{Facts, sealed};
use cairn::squashfs::reader::{Archive, BlockStore, StoreOptions, identity};
use cairn::trust::UserSecret;
use common::*;

const GENUINE: &str = "genuine!";
const FORGED: &str = "ATTACKER";

/// The victim and the neighbour, when this test can play both (root with
/// both users present); a skip, or a failure under CAIRN_MUST_WORK=1.
fn users() -> Option<(TestUser, TestUser)> {
    let (victim, evil) = two_users()?;
    let ok = namespaces_work(&Who::User(victim.clone()), "-Urm")
        && require(Path::new("/dev/fuse").exists(), "/dev/fuse")
        && require(have_tool("mksquashfs"), "mksquashfs")
        && require(have_tool("python3"), "python3");
    ok.then_some((victim, evil))
}

/// The busybox image plus `/msg` (4 KiB of "genuine!") in a data block of
/// its own (no fragments), gzip: a run that uses the block store reads
/// `/msg` from it.
fn image() -> &'static Path {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = scratch("sec-img");
        let img = dir.join("img.sqfs");
        busybox_sqfs_with(
            &dir.join("root"),
            &img,
            &["-comp", "gzip", "-no-fragments"],
            |root| fs::write(root.join("msg"), GENUINE.repeat(512)).expect("write /msg"),
        );
        img
    })
}

/// A store file for `img` whose block of `/msg` says FORGED, with valid
/// MACs under `secret`: what its owner could write. Returns its bytes and
/// the name the store gives it.
fn forged_store(img: &Path, secret: &UserSecret) -> (Vec<u8>, String) {
    let archive = Archive::open(img).expect("open image");
    let msg = archive.follow_path(b"/msg").expect("read").expect("/msg");
    let key = msg.block_offsets()[0];
    let meta = fs::metadata(img).expect("stat image");
    let work = tempfile::tempdir().expect("tempdir");
    let options = StoreOptions {
        dir: work.path().join("blocks"),
        budget: 1 << 20,
        identity: identity(&meta, archive.head()),
        secret: secret.clone(),
    };
    let store = BlockStore::open(options.clone()).expect("store");
    store.offer(key, FORGED.repeat(512).as_bytes());
    let path = store.path();
    store.finish();
    let name = path
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    (fs::read(&path).expect("read forged store"), name)
}

/// A run of the neighbour's own (its store under `/var/tmp/cairn-TAG-PID`,
/// removed on drop), so that they have a secret: the only key they can
/// forge with.
fn neighbour_run(evil: &TestUser, img: &Path, tag: &str) -> Planted {
    let store = PathBuf::from(format!("/var/tmp/cairn-{tag}-{}", std::process::id()));
    let planted = Planted(store.clone());
    assert_success(
        &cat_msg(evil, img, &store.join("blocks")),
        "the neighbour's run",
    );
    planted
}

/// `bytes` at `target` as a file of `owner`'s own (theirs, 0600), as one
/// of their runs would have left it.
fn plant_own(target: &Path, bytes: &[u8], owner: &TestUser) {
    fs::write(target, bytes).expect("plant a file");
    std::os::unix::fs::chown(target, Some(owner.uid), Some(owner.gid)).expect("chown");
    fs::set_permissions(target, fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// `cairn run --mount fuse IMG -- cat /msg` as `who`, with the block store
/// in `store`.
fn cat_msg(who: &TestUser, img: &Path, store: &Path) -> std::process::Output {
    output_within(
        cairn_as(&Who::User(who.clone()))
            .args(["run", "--mount", "fuse"])
            .arg(img)
            .args(["--", "cat", "/msg"])
            .env("CAIRN_BLOCK_CACHE", store),
        30,
    )
}

fn as_user(who: &TestUser, script: &str) -> std::process::Output {
    output(command_as(&Who::User(who.clone()), "sh").args(["-c", script]))
}

/// The pids of processes with a descriptor on `dir` or below it.
fn holders_of(dir: &Path) -> Vec<String> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter(|p| {
            fs::read_dir(p.path().join("fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| fs::read_link(fd.path()).is_ok_and(|t| t.starts_with(dir)))
            })
        })
        .map(|p| p.file_name().to_string_lossy().into_owned())
        .collect()
}

/// A directory of /var/tmp removed (as root) when the test ends.
struct Planted(PathBuf);

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The attack: the neighbour creates the victim's store parent
/// first (0777), puts a decoy directory with a forged store file beside
/// the victim's `blocks`, and swaps the two in a loop
/// (renameat2(RENAME_EXCHANGE)) while the victim runs 200 times. Before
/// the fix, a few runs in a hundred printed the neighbour's text.
#[test]
fn a_planted_parent_never_gets_a_byte_of_the_neighbour_into_the_job() {
    let Some((victim, evil)) = users() else {
        return;
    };
    let img = image();
    let parent = PathBuf::from(format!("/var/tmp/cairn-sec-{}", std::process::id()));
    let _cleanup = Planted(parent.clone());
    let p = parent.display();
    assert_success(
        &as_user(
            &evil,
            &format!("mkdir -m 0777 {p} && mkdir -m 0755 {p}/evil"),
        ),
        "plant the parent",
    );
    // The forged file is MACed under the neighbour's own key: the only
    // one they have.
    let (bytes, name) = forged_store(img, &UserSecret::from_bytes([0xee; 32]));
    let forged = parent.join("evil").join(&name);
    fs::write(&forged, bytes).expect("write forged store");
    std::os::unix::fs::chown(&forged, Some(evil.uid), Some(evil.gid)).expect("chown");
    fs::set_permissions(&forged, fs::Permissions::from_mode(0o644)).expect("chmod");
    // The victim's own `blocks`, as an earlier run would have left it.
    let blocks = parent.join("blocks");
    fs::create_dir(&blocks).expect("mkdir blocks");
    std::os::unix::fs::chown(&blocks, Some(victim.uid), Some(victim.gid)).expect("chown");
    fs::set_permissions(&blocks, fs::Permissions::from_mode(0o700)).expect("chmod");

    // Planted in advance: the store is refused, with a warning that says
    // why, and the run goes on.
    let out = cat_msg(&victim, img, &blocks);
    assert_success(&out, "a run with a planted store parent");
    assert_eq!(stdout_of(&out), GENUINE.repeat(512));
    let err = stderr_of(&out);
    assert!(
        err.contains(&format!("refusing {p}")) && err.contains(&format!("uid {}", evil.uid)),
        "the warning names the planted directory and its owner:\n{err}"
    );

    // Swapped in a loop meanwhile.
    let work = scratch("sec-swap");
    let stop = work.join("stop");
    let swapper = command_as(&Who::User(evil.clone()), "python3")
        .args([
            "-c",
            "import ctypes, os, sys\n\
             libc = ctypes.CDLL(None, use_errno=True)\n\
             a, b, stop = (x.encode() for x in sys.argv[1:4])\n\
             n = 0\n\
             while not os.path.exists(stop):\n\
             \x20   libc.renameat2(-100, a, -100, b, 2)\n\
             \x20   n += 1\n\
             print(n)\n",
        ])
        .arg(&blocks)
        .arg(parent.join("evil"))
        .arg(&stop)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the swapper");
    let mut seen = Vec::new();
    for run in 0..200 {
        let out = cat_msg(&victim, img, &blocks);
        assert_success(&out, &format!("run {run} while the neighbour swaps"));
        let text = stdout_of(&out);
        if text != GENUINE.repeat(512) {
            seen.push((run, text.chars().take(40).collect::<String>()));
        }
    }
    fs::write(&stop, b"").expect("stop the swapper");
    let swaps = swapper.wait_with_output().expect("swapper");
    let swaps: u64 = stdout_of(&swaps).trim().parse().unwrap_or(0);
    assert!(swaps > 1000, "the swapper ran ({swaps} swaps)");
    assert!(
        seen.is_empty(),
        "the neighbour's bytes reached the job: {seen:?}"
    );
}

/// Kept facts (what a run's `prepare` learned of an image, see run::facts)
/// that the victim's runs did not write, placed in the victim's own store
/// directory with the victim as owner, are never believed: facts MACed
/// under the neighbour's key that say the image's `/etc/passwd` holds an
/// ATTACKER line leave the job's passwd the image's. The control, the same
/// facts under the victim's own key, shows through: they are really read.
#[test]
fn kept_facts_written_by_another_user_are_never_believed() {
    let Some((victim, evil)) = users() else {
        return;
    };
    let img = image();
    let parent = PathBuf::from(format!("/var/tmp/cairn-sec4-{}", std::process::id()));
    let _cleanup = Planted(parent.clone());
    let blocks = parent.join("blocks");
    let passwd = |who: &TestUser| {
        output_within(
            cairn_as(&Who::User(who.clone()))
                .args(["run", "--mount", "fuse"])
                .arg(img)
                .args(["--", "cat", "/etc/passwd"])
                .env("CAIRN_BLOCK_CACHE", &blocks),
            30,
        )
    };
    let out = passwd(&victim);
    assert_success(&out, "the victim's first run");
    assert!(!stdout_of(&out).contains(FORGED));
    let _evil_store = neighbour_run(&evil, img, "sec5");
    let archive = Archive::open(img).expect("open image");
    let id = identity(&fs::metadata(img).expect("stat image"), archive.head());
    let mut forged = Facts::default();
    forged.set_file(
        b"/etc/passwd",
        Some(format!("{FORGED}:x:0:0::/:/bin/sh\n").into_bytes()),
    );
    let plant = |secret: &UserSecret| {
        let (name, bytes) = sealed(&forged, secret, &id).expect("seal");
        let target = blocks.join(name);
        assert!(target.exists(), "the victim's run kept facts");
        plant_own(&target, &bytes, &victim);
    };
    plant(&secret_of(&evil));
    let out = passwd(&victim);
    assert_success(&out, "a run over the neighbour's facts");
    assert!(
        !stdout_of(&out).contains(FORGED),
        "the neighbour's facts were believed:\n{}",
        stdout_of(&out)
    );
    // Control: under the victim's own key the forged answer is used.
    plant(&secret_of(&victim));
    let out = passwd(&victim);
    assert_success(&out, "the control run");
    assert!(
        stdout_of(&out).contains(FORGED),
        "the control: facts that verify are used:\n{}",
        stdout_of(&out)
    );
}

/// A store file the victim's server did not write (MACed under another
/// key: the neighbour's), placed in the victim's own private store with
/// the victim as owner, never verifies. The control, the same file MACed
/// under the victim's own key, shows through: the store is really read.
#[test]
fn a_store_file_written_by_another_user_never_verifies() {
    let Some((victim, evil)) = users() else {
        return;
    };
    let img = image();
    let parent = PathBuf::from(format!("/var/tmp/cairn-sec2-{}", std::process::id()));
    let _cleanup = Planted(parent.clone());
    let blocks = parent.join("blocks");
    let out = cat_msg(&victim, img, &blocks);
    assert_success(&out, "the victim's first run");
    assert_eq!(stdout_of(&out), GENUINE.repeat(512));
    let _evil_store = neighbour_run(&evil, img, "sec3");
    let plant = |secret: &UserSecret| {
        // The last run's FUSE server saves the store after the job ends:
        // plant only once it is done, or its save replaces the plant.
        assert!(
            wait_until(20, || holders_of(&blocks).is_empty()),
            "a server still holds {}: {:?}",
            blocks.display(),
            holders_of(&blocks)
        );
        let (bytes, name) = forged_store(img, secret);
        plant_own(&blocks.join(name), &bytes, &victim);
    };
    plant(&secret_of(&evil));
    let out = cat_msg(&victim, img, &blocks);
    assert_success(&out, "a run over the neighbour's store file");
    assert_eq!(stdout_of(&out), GENUINE.repeat(512));
    // Control: under the victim's own key the forged block is used.
    plant(&secret_of(&victim));
    let out = cat_msg(&victim, img, &blocks);
    assert_success(&out, "the control run");
    assert_eq!(
        stdout_of(&out),
        FORGED.repeat(512),
        "the control: a block that verifies is read from the store"
    );
}

/// The neighbour takes the node-local private directory's name first
/// (`/var/tmp/cairn-$USER`, 0777): the victim's run warns, keeps its
/// secret in its home instead, and runs.
#[test]
fn a_squatted_private_directory_moves_the_secret_home() {
    let Some((victim, evil)) = users() else {
        return;
    };
    let img = image();
    let user = format!("sq{}", std::process::id());
    let squatted = PathBuf::from(format!("/var/tmp/cairn-{user}"));
    let _cleanup = Planted(squatted.clone());
    assert_success(
        &as_user(&evil, &format!("mkdir -m 0777 {}", squatted.display())),
        "squat",
    );
    let home_secret = victim.home.join(".cache/cairn/private/secret");
    let out = output_within(
        cairn_as(&Who::User(victim.clone()))
            .args(["run", "--mount", "fuse"])
            .arg(img)
            .args(["--", "cat", "/msg"])
            .env("USER", &user),
        30,
    );
    assert_success(&out, "a run with its private directory squatted");
    assert_eq!(stdout_of(&out), GENUINE.repeat(512));
    assert!(
        stderr_of(&out).contains(&format!("refusing {}", squatted.display())),
        "{}",
        stderr_of(&out)
    );
    let meta = fs::metadata(&home_secret).expect("the secret went home");
    assert_eq!(meta.uid(), victim.uid);
    assert_eq!(meta.mode() & 0o777, 0o600);
}

/// The neighbour binds the victim's `--join` name (learnt here from the
/// victim's secret, as if seen in /proc/net/unix during an earlier step)
/// without listening, and the next name of the walk while listening: the
/// ranks still meet, in one namespace, and exit 0.
#[test]
fn a_squatted_join_name_does_not_stop_the_ranks() {
    let Some((victim, evil)) = users() else {
        return;
    };
    let img = image();
    let who = Who::User(victim.clone());
    // A first run makes the victim's secret.
    assert_success(
        &output_within(
            cairn_as(&who)
                .args(["run", "--join=warm-up"])
                .arg(img)
                .args(["--", "true"]),
            30,
        ),
        "first run",
    );
    let tag = format!("squat-{}", std::process::id());
    let meta = fs::metadata(img).expect("stat");
    let name = cairn::ns::join::socket_name(
        victim.uid,
        meta.dev(),
        meta.ino(),
        &tag,
        Some(&secret_of(&victim)),
    );
    let squatter = Squatter::join(&evil, &name);
    let ranks: Vec<_> = (0..3)
        .map(|_| {
            cairn_as(&who)
                .args(["run", "--mount", "fuse", &format!("--join={tag}")])
                .arg(img)
                .args(["--", "sh", "-c", "readlink /proc/self/ns/mnt; sleep 1"])
                .env("CAIRN_JOIN_LINGER_MS", "500")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn rank")
        })
        .collect();
    let mut namespaces = Vec::new();
    let mut walked = 0;
    for rank in ranks {
        let out = rank.wait_with_output().expect("rank");
        assert_success(&out, "a rank with its join name squatted");
        namespaces.push(stdout_of(&out).trim().to_owned());
        let err = stderr_of(&out);
        if err.contains("is bound but nobody listens") && err.contains(&format!("uid {}", evil.uid))
        {
            walked += 1;
        }
    }
    assert!(walked > 0, "the ranks walked past both squatted names");
    drop(squatter);
    namespaces.dedup();
    assert_eq!(
        namespaces.len(),
        1,
        "one namespace for all ranks: {namespaces:?}"
    );
}

/// `cairn unsquash IMAGE DIR` where the neighbour owns DIR's parent (a
/// directory everyone may write, e.g. a project directory left 0777): they
/// replace the temporary directory cairn extracts into by a link to a
/// directory of the victim's, over and over. Nothing is ever written
/// through the link: cairn extracts through its handle on the directory it
/// made.
#[test]
fn unsquash_into_a_neighbours_directory_never_writes_elsewhere() {
    let Some((victim, evil)) = users() else {
        return;
    };
    let img = image();
    let work = scratch("sec-unsquash");
    let theirs = work.join("project");
    assert_success(
        &as_user(&evil, &format!("mkdir -m 0777 {}", theirs.display())),
        "the neighbour's directory",
    );
    let target = work.join("victim-files");
    fs::create_dir(&target).expect("mkdir");
    std::os::unix::fs::chown(&target, Some(victim.uid), Some(victim.gid)).expect("chown");
    let stop = work.join("stop");
    let swapper = command_as(&Who::User(evil.clone()), "python3")
        .args([
            "-c",
            "import os, sys, time\n\
             d, target, stop = sys.argv[1:4]\n\
             n = 0\n\
             while not os.path.exists(stop):\n\
             \x20   for e in os.listdir(d):\n\
             \x20       p = os.path.join(d, e)\n\
             \x20       if e.startswith('.out') and not os.path.islink(p):\n\
             \x20           try:\n\
             \x20               os.rename(p, os.path.join(d, 'moved-%d' % n))\n\
             \x20               os.symlink(target, p)\n\
             \x20               n += 1\n\
             \x20           except OSError:\n\
             \x20               pass\n\
             print(n)\n",
        ])
        .arg(&theirs)
        .arg(&target)
        .arg(&stop)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the swapper");
    for i in 0..10 {
        let out = output_within(
            cairn_as(&Who::User(victim.clone()))
                .arg("unsquash")
                .arg(img)
                .arg(theirs.join(format!("out{i}"))),
            60,
        );
        // Success or a clear failure: either way nothing outside.
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(125),
            "{:?}: {}",
            out.status,
            stderr_of(&out)
        );
        let inside: Vec<_> = fs::read_dir(&target).expect("list").flatten().collect();
        assert!(
            inside.is_empty(),
            "run {i} wrote through the link: {inside:?}"
        );
    }
    fs::write(&stop, b"").expect("stop");
    let swaps = swapper.wait_with_output().expect("swapper");
    let swaps: u64 = stdout_of(&swaps).trim().parse().unwrap_or(0);
    assert!(swaps > 0, "the neighbour swapped at least once");
}
