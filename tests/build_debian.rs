//! `cairn build` on the Debian base (the MPI fixture: bookworm minbase with
//! OpenMPI, gcc and libc6-dev, a squashfs file named in FROM), as root and
//! as the test user without any /etc/subuid entry: apt installing a package
//! from a file: repository made here (its postinst adds a group and a user
//! and chowns a file) and, when the mirror answers, one from Debian; the
//! seccomp filter with Debian's own tools (chown, groupadd, useradd -m,
//! mknod, mkfifo); a multi-stage build (a static program into a scratch
//! image, an MPI program run by the host's mpirun in joined containers);
//! ENV, WORKDIR, USER and ENTRYPOINT/CMD in the image config as `cairn
//! inspect` and `cairn run` see them.
//!
//! Every cold build unpacks the ~220 MB base and exports it once as a
//! layer: each test keeps one cache per caller and reuses it.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::build::ran_and_cached;
use common::registry::cairn_in;
use common::*;

/// The Debian base: the MPI fixture image, and the callers that can run
/// it (user + mount namespaces and /dev/fuse); `None` is a skip, or a
/// failure under CAIRN_MUST_WORK=1.
fn debian_base(tools: &[(&str, &str)]) -> Option<(&'static Path, Vec<Who>)> {
    for (tool, package) in tools.iter().chain(&[("unsquashfs", "squashfs-tools")]) {
        if !require(
            have_tool(tool),
            &format!("{tool} ({package}, tests/setup-host.sh)"),
        ) {
            return None;
        }
    }
    let img = mpi_image();
    if !require(
        img.is_some(),
        "the MPI image (tests/fixtures/mpi-image.sh, built as root)",
    ) {
        return None;
    }
    Some((img?, fuse_runners()))
}

/// A scratch directory for one caller's build: `ctx/` with a Dockerfile,
/// the cache beside it.
struct Work {
    dir: PathBuf,
    ctx: PathBuf,
    cache: PathBuf,
}

impl Work {
    fn new(label: &str, dockerfile: &str) -> Work {
        let dir = scratch(label);
        let ctx = dir.join("ctx");
        fs::create_dir_all(&ctx).expect("mkdir ctx");
        fs::write(ctx.join("Dockerfile"), dockerfile).expect("Dockerfile");
        let cache = dir.join("cache");
        Work { dir, ctx, cache }
    }

    /// Everything made so far readable and writable by `who` (the scratch
    /// directory is root's).
    fn hand_to(&self, who: &Who) {
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        if let Who::User(user) = who {
            run_ok(
                Command::new("chown")
                    .arg("-R")
                    .arg(format!("{}:{}", user.uid, user.gid))
                    .arg(&self.dir),
                "chown scratch",
            );
        }
    }

    fn dockerfile(&self, text: &str) {
        fs::write(self.ctx.join("Dockerfile"), text).expect("Dockerfile");
    }

    /// Removes the context and the cache (hundreds of MB) once the caller's
    /// checks passed; a failed test leaves them to look at.
    fn done(self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `cairn build --build-arg BASE=<the Debian base> EXTRA... CTX` as `who`:
/// the stderr (step lines and summary), after it succeeded; the time it
/// took is printed.
#[track_caller]
fn build_ok(who: &Who, work: &Work, base: &Path, extra: &[&str]) -> String {
    let started = Instant::now();
    let mut cmd = cairn_in(who, &work.cache);
    cmd.arg("build")
        .args(extra)
        .arg("--build-arg")
        .arg(format!("BASE={}", base.display()))
        .arg(&work.ctx);
    let out = output(&mut cmd);
    assert_success(&out, &format!("cairn build {extra:?} as {}", who.label()));
    let stderr = stderr_of(&out);
    eprintln!(
        "cairn build {extra:?} as {}: {:.1}s ({})",
        who.label(),
        started.elapsed().as_secs_f64(),
        stderr
            .lines()
            .rev()
            .find(|l| l.contains(" ran, "))
            .unwrap_or("?")
    );
    stderr
}

/// `cairn run NAME [-- ARGS]` as `who`: the output, whatever the status.
fn run_in(who: &Who, cache: &Path, name: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = cairn_in(who, cache);
    cmd.args(["run", name]);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    output_within(&mut cmd, 120)
}

/// `cairn run NAME [-- ARGS]` as `who`: stdout, after it succeeded.
#[track_caller]
fn run_out(who: &Who, cache: &Path, name: &str, args: &[&str]) -> String {
    let out = run_in(who, cache, name, args);
    assert_success(
        &out,
        &format!("cairn run {name} -- {args:?} as {}", who.label()),
    );
    stdout_of(&out)
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

/// An image's paths as squashfs-tools lists them (`unsquashfs -lln`, the
/// oracle): one `MODE UID/GID SIZE DATE TIME /PATH` line each.
struct Listing(String);

impl Listing {
    fn of(img: &Path) -> Listing {
        Listing(run_ok(
            Command::new("unsquashfs").args(["-lln", "-d", ""]).arg(img),
            "unsquashfs -lln",
        ))
    }

    /// The line of `path` (absolute), if the image has it.
    fn line(&self, path: &str) -> Option<&str> {
        self.0
            .lines()
            .find(|l| l.strip_suffix(path).is_some_and(|rest| rest.ends_with(' ')))
    }

    #[track_caller]
    fn expect(&self, path: &str) -> &str {
        self.line(path)
            .unwrap_or_else(|| panic!("{path} not in the image:\n{}", self.0))
    }

    /// The paths of the device nodes.
    fn devices(&self) -> Vec<&str> {
        self.0
            .lines()
            .filter(|l| l.starts_with('c') || l.starts_with('b'))
            .filter_map(|l| l.rsplit(' ').next())
            .collect()
    }
}

/// A file of an image (`unsquashfs -cat`).
fn cat_from(img: &Path, path: &str) -> Vec<u8> {
    let out = output(Command::new("unsquashfs").arg("-cat").arg(img).arg(path));
    assert_success(&out, &format!("unsquashfs -cat {path}"));
    out.stdout
}

/// The base's device nodes (the image may keep them; a build adds none).
fn base_devices(base: &Path) -> &'static Vec<String> {
    static DEVICES: OnceLock<Vec<String>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        Listing::of(base)
            .devices()
            .into_iter()
            .map(str::to_owned)
            .collect()
    })
}

// ---------------------------------------------------------------------
// 1. apt from a file: repository, and from the Debian mirror

/// The `cairn-demo` package: a data file and a postinst that adds a system
/// group and user and gives them the file. Written with `dpkg-deb` into
/// `repo/` and indexed there with `dpkg-scanpackages`.
fn demo_repo(work: &Work) {
    let pkg = work.dir.join("pkg");
    fs::create_dir_all(pkg.join("DEBIAN")).expect("mkdir DEBIAN");
    fs::create_dir_all(pkg.join("usr/share/cairn-demo")).expect("mkdir data dir");
    fs::write(
        pkg.join("DEBIAN/control"),
        "Package: cairn-demo\n\
         Version: 1.0\n\
         Architecture: all\n\
         Maintainer: cairn tests <tests@cairn.invalid>\n\
         Depends: passwd\n\
         Description: cairn build test package\n \
         A data file given to a system user by the postinst.\n",
    )
    .expect("control");
    let postinst = pkg.join("DEBIAN/postinst");
    fs::write(
        &postinst,
        "#!/bin/sh\n\
         set -e\n\
         if [ \"$1\" = configure ]; then\n\
         \x20   getent group demo-group >/dev/null || groupadd -r demo-group\n\
         \x20   getent passwd demo-user >/dev/null || useradd -r -g demo-group demo-user\n\
         \x20   chown demo-user:demo-group /usr/share/cairn-demo/data\n\
         fi\n",
    )
    .expect("postinst");
    fs::set_permissions(&postinst, fs::Permissions::from_mode(0o755)).expect("chmod postinst");
    fs::write(pkg.join("usr/share/cairn-demo/data"), "cairn demo data\n").expect("data");
    let repo = work.ctx.join("repo");
    fs::create_dir_all(&repo).expect("mkdir repo");
    run_ok(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&pkg)
            .arg(repo.join("cairn-demo_1.0_all.deb")),
        "dpkg-deb --build",
    );
    let packages = run_ok(
        Command::new("dpkg-scanpackages")
            .args([".", "/dev/null"])
            .current_dir(&repo),
        "dpkg-scanpackages",
    );
    assert!(packages.contains("Package: cairn-demo"), "{packages}");
    fs::write(repo.join("Packages"), packages).expect("Packages");
}

const APT_LOCAL: &str = "ARG BASE\n\
FROM $BASE\n\
COPY repo/ /opt/repo/\n\
RUN echo 'deb [trusted=yes] file:/opt/repo ./' > /etc/apt/sources.list.d/local.list \
&& apt-get update -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/local.list \
-o Dir::Etc::sourceparts=- && apt-get install -y cairn-demo\n";

/// The same, then a package from the Debian mirror with the image's own
/// sources.list.
const APT_MIRROR: &str = "RUN apt-get update && \
apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*\n";

/// Whether the first mirror of the base's sources.list answers for its
/// suite's Release file (plain HTTP, as apt asks it): a RUN that needs it
/// is skipped with a note when it does not.
fn mirror_reachable(base: &Path) -> Result<(), String> {
    let sources = String::from_utf8_lossy(&cat_from(base, "/etc/apt/sources.list")).into_owned();
    let words: Vec<&str> = sources
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("deb "))
        .ok_or_else(|| format!("no deb line in the base's sources.list:\n{sources}"))?
        .split_whitespace()
        .filter(|w| !w.starts_with('['))
        .collect();
    let [_, url, suite, ..] = words[..] else {
        return Err(format!("a deb line without a suite: {words:?}"));
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not plain http"))?;
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (name, port) = match host.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|e| e.to_string())?),
        None => (host, 80),
    };
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = (name, port)
        .to_socket_addrs()
        .map_err(|e| format!("{name}: {e}"))?
        .collect();
    let mut last = format!("{name}: no address");
    for addr in addrs {
        let mut conn = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => {
                last = format!("{addr}: {e}");
                continue;
            }
        };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
        let target = match path.trim_matches('/') {
            "" => format!("/dists/{suite}/Release"),
            prefix => format!("/{prefix}/dists/{suite}/Release"),
        };
        let request =
            format!("HEAD {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        if let Err(e) = conn.write_all(request.as_bytes()) {
            last = format!("{addr}: {e}");
            continue;
        }
        let mut head = [0u8; 64];
        let n = conn.read(&mut head).unwrap_or(0);
        let status = String::from_utf8_lossy(&head[..n]).into_owned();
        if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
            return Ok(());
        }
        last = format!("{addr}: {}", status.lines().next().unwrap_or("no answer"));
    }
    Err(last)
}

#[test]
fn apt_installs_from_a_file_repository_and_the_mirror() {
    let Some((base, runners)) =
        debian_base(&[("dpkg-deb", "dpkg"), ("dpkg-scanpackages", "dpkg-dev")])
    else {
        return;
    };
    // Asked once: the answer holds for both callers.
    let mirror = mirror_reachable(base);
    for who in runners {
        let work = Work::new(&format!("build-apt-{}", who.label()), APT_LOCAL);
        demo_repo(&work);
        work.hand_to(&who);
        let first = build_ok(&who, &work, base, &["-t", "demo"]);
        assert_eq!(ran_and_cached(&first), (2, 0), "{first}");

        // squashfs-tools on the image file as the oracle.
        let img = cached_image(&work.cache, "demo");
        let listing = Listing::of(&img);
        // The postinst's chown went through the filter without effect:
        // only COPY --chown sets an owner, so the file is root's.
        let data = listing.expect("/usr/share/cairn-demo/data");
        assert!(data.starts_with("-rw-r--r-- 0/0 "), "{data}");
        assert!(
            listing.line("/opt/repo/cairn-demo_1.0_all.deb").is_some(),
            "{}",
            listing.0
        );
        assert!(
            !listing.0.contains("00cairn-build-no-sandbox"),
            "the RUN's apt setting stayed in the image:\n{}",
            listing.0
        );
        let dpkg_status =
            String::from_utf8_lossy(&cat_from(&img, "/var/lib/dpkg/status")).into_owned();
        assert!(
            dpkg_status.contains("Package: cairn-demo\nStatus: install ok installed"),
            "as {}",
            who.label()
        );
        assert_eq!(
            cat_from(&img, "/usr/share/cairn-demo/data"),
            b"cairn demo data\n"
        );

        // And as the image runs.
        let status = run_out(&who, &work.cache, "demo", &["dpkg", "-s", "cairn-demo"]);
        assert!(
            status.contains("Status: install ok installed"),
            "as {}: {status}",
            who.label()
        );
        let group = run_out(
            &who,
            &work.cache,
            "demo",
            &["getent", "group", "demo-group"],
        );
        let gid = group
            .trim()
            .strip_prefix("demo-group:x:")
            .and_then(|r| r.split(':').next())
            .and_then(|g| g.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("as {}: getent group: {group:?}", who.label()));
        assert!(gid < 1000, "a system group: {group}");
        let user = run_out(
            &who,
            &work.cache,
            "demo",
            &["getent", "passwd", "demo-user"],
        );
        let fields: Vec<&str> = user.trim().split(':').collect();
        assert_eq!(fields.first(), Some(&"demo-user"), "{user}");
        assert_eq!(fields.get(3), Some(&gid.to_string().as_str()), "{user}");
        assert!(
            fields
                .get(2)
                .and_then(|u| u.parse::<u32>().ok())
                .is_some_and(|u| u < 1000),
            "a system user: {user}"
        );
        let apt_conf = run_out(&who, &work.cache, "demo", &["ls", "/etc/apt/apt.conf.d"]);
        assert!(!apt_conf.contains("cairn"), "{apt_conf}");

        // A package from the Debian mirror, with the image's sources.list:
        // skipped (said so) when the mirror does not answer, never passed
        // without it.
        if let Err(why) = &mirror {
            eprintln!(
                "NOTE: the Debian mirror is not reachable ({why}): \
                 the RUN that installs from it is not tested"
            );
            work.done();
            continue;
        }
        work.dockerfile(&format!("{APT_LOCAL}{APT_MIRROR}"));
        let net = build_ok(&who, &work, base, &["-t", "demo-net"]);
        assert_eq!(ran_and_cached(&net), (1, 2), "{net}");
        let hello = run_out(&who, &work.cache, "demo-net", &["hello"]);
        assert_eq!(hello, "Hello, world!\n", "as {}", who.label());
        let both = run_out(
            &who,
            &work.cache,
            "demo-net",
            &[
                "dpkg-query",
                "-W",
                "-f=${Package} ${Status}\\n",
                "hello",
                "cairn-demo",
            ],
        );
        let mut both: Vec<&str> = both.lines().collect();
        both.sort_unstable();
        assert_eq!(
            both,
            [
                "cairn-demo install ok installed",
                "hello install ok installed"
            ],
            "as {}",
            who.label()
        );
        let net_listing = Listing::of(&cached_image(&work.cache, "demo-net"));
        assert!(!net_listing.0.contains("00cairn-build-no-sandbox"));
        assert!(
            net_listing
                .expect("/usr/bin/hello")
                .starts_with("-rwxr-xr-x 0/0 "),
            "{}",
            net_listing.expect("/usr/bin/hello")
        );
        work.done();
    }
}

// ---------------------------------------------------------------------
// 2. The seccomp filter with Debian's tools

#[test]
fn debian_tools_pass_the_filter() {
    let Some((base, runners)) = debian_base(&[]) else {
        return;
    };
    for who in runners {
        let work = Work::new(
            &format!("build-tools-{}", who.label()),
            "ARG BASE\n\
             FROM $BASE\n\
             RUN echo x > /etc/hostname-x && chown nobody /etc/hostname-x \
                 && groupadd g1 && useradd -m u1 \
                 && mknod /dev-null-copy c 1 3 && mkfifo /fifo && test -p /fifo \
                 && id -u > /ran-as \
                 && touch /usr/local/bin/sgid && dpkg-statoverride --update --add root staff 2755 /usr/local/bin/sgid\n",
        );
        work.hand_to(&who);
        let out = build_ok(&who, &work, base, &["-t", "tools"]);
        assert_eq!(ran_and_cached(&out), (1, 0), "{out}");
        let img = cached_image(&work.cache, "tools");
        let listing = Listing::of(&img);
        assert_eq!(cat_from(&img, "/ran-as"), b"0\n");
        // chown: no effect.
        let x = listing.expect("/etc/hostname-x");
        assert!(x.starts_with("-rw-r--r-- 0/0 "), "{x}");
        // dpkg's statoverride owner is recorded (its chown was swallowed,
        // its chmod was not): setgid staff, not setgid root.
        let sgid = listing.expect("/usr/local/bin/sgid");
        assert!(sgid.starts_with("-rwxr-sr-x 0/50 "), "{sgid}");
        // /etc/shadow, rewritten by useradd through a rename, keeps its
        // group (shadow), as the chown useradd made would have.
        let shadow_line = listing.expect("/etc/shadow");
        assert!(!shadow_line.contains(" 0/0 "), "{shadow_line}");
        // groupadd, useradd -m: the files and the home.
        let passwd = String::from_utf8_lossy(&cat_from(&img, "/etc/passwd")).into_owned();
        let group = String::from_utf8_lossy(&cat_from(&img, "/etc/group")).into_owned();
        let shadow = String::from_utf8_lossy(&cat_from(&img, "/etc/shadow")).into_owned();
        assert!(passwd.lines().any(|l| l.starts_with("u1:x:")), "{passwd}");
        assert!(group.lines().any(|l| l.starts_with("g1:x:")), "{group}");
        assert!(group.lines().any(|l| l.starts_with("u1:x:")), "{group}");
        assert!(shadow.lines().any(|l| l.starts_with("u1:")), "{shadow}");
        let home = listing.expect("/home/u1");
        assert!(home.starts_with('d'), "{home}");
        assert!(listing.line("/home/u1/.bashrc").is_some(), "{}", listing.0);
        // mknod: nothing; the base's device nodes are all the image has.
        assert!(listing.line("/dev-null-copy").is_none(), "{}", listing.0);
        let mut devices = listing.devices();
        devices.sort_unstable();
        let mut expected: Vec<&str> = base_devices(base).iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(devices, expected, "device nodes of the image");
        // mkfifo: a real FIFO.
        let fifo = listing.expect("/fifo");
        assert!(fifo.starts_with('p'), "{fifo}");
        // The image runs with them.
        let id = run_out(&who, &work.cache, "tools", &["id", "u1"]);
        assert!(id.starts_with("uid=1000(u1) gid=1001(u1)"), "{id}");
        let fifo = run_out(
            &who,
            &work.cache,
            "tools",
            &["sh", "-c", "test -p /fifo && echo fifo"],
        );
        assert_eq!(fifo, "fifo\n");
        work.done();
    }
}

// ---------------------------------------------------------------------
// 3. Multi-stage: a static program into scratch, MPI ranks from the base

const HELLO_C: &str = r#"#include <stdio.h>
int main(int argc, char **argv) {
    printf("static hello:");
    for (int i = 1; i < argc; i++)
        printf(" %s", argv[i]);
    printf("\n");
    return 0;
}
"#;

const MULTI: &str = "ARG BASE\n\
FROM $BASE AS build\n\
WORKDIR /src\n\
COPY hello.c ring.c ./\n\
RUN mkdir -p /out && gcc -static -O2 -o /out/hello hello.c \
&& mpicc -O2 -s -o /out/ring ring.c\n\
\n\
FROM scratch AS slim\n\
COPY --from=build /out/hello /hello\n\
ENTRYPOINT [\"/hello\"]\n\
CMD [\"from\", \"the\", \"cmd\"]\n\
\n\
FROM $BASE\n\
COPY --from=build /out/ring /opt/ring\n";

/// Loop devices backed by `img` (a kernel mount as root).
fn loops(img: &Path) -> String {
    let out = output(Command::new("losetup").arg("-j").arg(img));
    stdout_of(&out).trim().to_owned()
}

#[test]
fn a_multi_stage_build_makes_a_static_scratch_image_and_mpi_ranks_run() {
    let Some((base, runners)) = debian_base(&[("mpirun", "openmpi-bin")]) else {
        return;
    };
    let ring_c = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mpi/ring.c");
    for who in runners {
        let work = Work::new(&format!("build-multi-{}", who.label()), MULTI);
        fs::write(work.ctx.join("hello.c"), HELLO_C).expect("hello.c");
        fs::copy(&ring_c, work.ctx.join("ring.c")).expect("ring.c");
        work.hand_to(&who);

        // The scratch stage: only what the build stage compiled, and the
        // empty mount points every imported image gets for `cairn run`.
        let slim = build_ok(&who, &work, base, &["-t", "slim", "--target", "slim"]);
        assert_eq!(ran_and_cached(&slim), (4, 0), "{slim}");
        let img = cached_image(&work.cache, "slim");
        let listing = Listing::of(&img);
        let mut files: Vec<&str> = listing
            .0
            .lines()
            .filter(|l| !l.starts_with('d'))
            .filter(|l| l.split_whitespace().nth(2) != Some("0"))
            .filter_map(|l| l.rsplit(' ').next())
            .filter(|p| !p.starts_with("/.cairn/"))
            .collect();
        files.sort_unstable();
        assert_eq!(files, ["/hello"], "{}", listing.0);
        for mount_point in ["/dev", "/proc", "/sys", "/tmp", "/etc/passwd"] {
            listing.expect(mount_point);
        }
        assert!(
            listing.expect("/hello").starts_with("-rwxr-xr-x 0/0 "),
            "{}",
            listing.0
        );
        // Entrypoint + Cmd with no command; a given command as it is.
        assert_eq!(
            run_out(&who, &work.cache, "slim", &[]),
            "static hello: from the cmd\n",
            "as {}",
            who.label()
        );
        assert_eq!(
            run_out(&who, &work.cache, "slim", &["/hello", "x", "y"]),
            "static hello: x y\n",
            "as {}",
            who.label()
        );
        // cairn's rule (as `apptainer exec`'s, not `docker run`'s): the
        // command given replaces Entrypoint and Cmd, so `-- x y` runs `x`.
        let bare = run_in(&who, &work.cache, "slim", &["x", "y"]);
        assert_eq!(bare.status.code(), Some(127), "{}", stderr_of(&bare));
        assert!(
            stderr_of(&bare).contains("x: command not found"),
            "{}",
            stderr_of(&bare)
        );
        let inspect = run_ok(
            cairn_in(&who, &work.cache).args(["inspect", "--json", "slim"]),
            "cairn inspect slim",
        );
        let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
        assert_eq!(
            v["meta"]["config"]["entrypoint"],
            serde_json::json!(["/hello"])
        );
        assert_eq!(
            v["meta"]["config"]["cmd"],
            serde_json::json!(["from", "the", "cmd"])
        );

        // The last stage: the base with the ring program of the build
        // stage (stripped: not the base's own /opt/ring).
        let out_img = work.dir.join("ring.sqfs");
        let out_arg = out_img.display().to_string();
        let ring = build_ok(&who, &work, base, &["-t", "ring", "-o", &out_arg]);
        assert_eq!(ran_and_cached(&ring), (1, 3), "{ring}");
        let built_ring = cat_from(&out_img, "/opt/ring");
        assert_ne!(
            built_ring,
            cat_from(base, "/opt/ring"),
            "/opt/ring is still the base's"
        );
        assert!(built_ring.starts_with(b"\x7fELF"));
        assert_eq!(
            sha256_file(&out_img),
            sha256_file(&cached_image(&work.cache, "ring")),
            "-o writes the image stored as the name"
        );

        let mut cmd = command_as(&who, "mpirun");
        if is_root() && matches!(who, Who::Me) {
            cmd.arg("--allow-run-as-root");
        }
        cmd.args(["--oversubscribe", "-np", "2"])
            .args(["--mca", "btl", "self,vader"])
            .args(["--mca", "btl_vader_single_copy_mechanism", "cma"])
            .args(["-x", "CAIRN_JOIN_LINGER_MS=300"])
            .args(["-x", &format!("{WARM_LINGER_VAR}={WARM_LINGER_OFF}")])
            .arg(cairn_bin())
            .args(["run", "--join"])
            .arg(&out_img)
            .args(["--", "/opt/ring"]);
        let started = Instant::now();
        let out = output_within(&mut cmd, 120);
        let what = format!("mpirun -np 2 cairn run --join as {}", who.label());
        assert_success(&out, &what);
        eprintln!("{what}: {:.1}s", started.elapsed().as_secs_f64());
        let stdout = stdout_of(&out);
        assert!(
            stdout.contains("ring ok: sum 3 over 2 ranks"),
            "{what}\n{stdout}"
        );
        for rank in 0..2 {
            assert!(
                stdout.contains(&format!("allreduce ok: rank {rank} sum 1")),
                "{what}: allreduce of rank {rank}\n{stdout}"
            );
            assert!(
                stdout.contains(&format!("cma ok: rank {rank} read 65536 bytes")),
                "{what}: cma of rank {rank}\n{stdout}"
            );
        }
        assert!(!stdout.contains("FAILED"), "{what}\n{stdout}");
        assert!(
            wait_until(20, || processes_mapping(&out_img, None).is_empty()
                && loops(&out_img).is_empty()),
            "{what}: left over: processes {:?}, loops {}",
            processes_mapping(&out_img, None),
            loops(&out_img)
        );
        work.done();
    }
}

// ---------------------------------------------------------------------
// 4. ENV, WORKDIR, USER, ENTRYPOINT and CMD in the image config

const CONFIG: &str = "ARG BASE\n\
FROM $BASE AS parent\n\
CMD [\"echo\", \"the parent's cmd\"]\n\
\n\
FROM parent\n\
ENV GREETING=\"hello there\" APP_HOME=/srv/app\n\
ENV PATH=$APP_HOME/bin:$PATH\n\
WORKDIR $APP_HOME\n\
RUN groupadd -g 4321 appgroup && useradd -u 1234 -g appgroup -m appuser \
&& mkdir bin && printf '#!/bin/sh\\necho \"tool: $GREETING in $(pwd) as $(id -un):$(id -g) args: $*\"\\n' \
> bin/tool && chmod 755 bin/tool\n\
COPY --chown=appuser:appgroup note.txt ./\n\
WORKDIR sub\n\
USER appuser\n\
RUN id -u > made-by-user && id -g >> made-by-user && echo \"$HOME\" >> made-by-user\n\
ENTRYPOINT [\"tool\", \"from-entrypoint\"]\n";

#[test]
fn env_workdir_user_and_entrypoint_are_in_the_image_config() {
    let Some((base, runners)) = debian_base(&[]) else {
        return;
    };
    for who in runners {
        let work = Work::new(&format!("build-config-{}", who.label()), CONFIG);
        fs::write(work.ctx.join("note.txt"), "a note\n").expect("note.txt");
        work.hand_to(&who);
        let out = build_ok(&who, &work, base, &["-t", "config"]);
        assert_eq!(ran_and_cached(&out), (5, 0), "{out}");

        let inspect = run_ok(
            cairn_in(&who, &work.cache).args(["inspect", "--json", "config"]),
            "cairn inspect config",
        );
        let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
        let config = &v["meta"]["config"];
        let env: Vec<&str> = config["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter_map(|e| e.as_str())
            .collect();
        for want in [
            "GREETING=hello there",
            "APP_HOME=/srv/app",
            "PATH=/srv/app/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ] {
            assert!(env.contains(&want), "{want} not in {env:?}");
        }
        assert_eq!(config["working_dir"], "/srv/app/sub", "{config}");
        assert_eq!(config["user"], "appuser", "{config}");
        assert_eq!(
            config["entrypoint"],
            serde_json::json!(["tool", "from-entrypoint"])
        );
        // The ENTRYPOINT reset the CMD the parent stage set.
        assert!(config.get("cmd").is_none_or(|c| c.is_null()), "{config}");
        let text = run_ok(
            cairn_in(&who, &work.cache).args(["inspect", "config"]),
            "cairn inspect config (text)",
        );
        assert!(
            text.contains("appuser") && text.contains("/srv/app/sub"),
            "{text}"
        );

        // The RUN after USER ran as the user, in the WORKDIR, with the
        // user's HOME; the file it made is theirs in the image.
        let img = cached_image(&work.cache, "config");
        assert_eq!(
            String::from_utf8_lossy(&cat_from(&img, "/srv/app/sub/made-by-user")),
            "1234\n4321\n/home/appuser\n"
        );
        let listing = Listing::of(&img);
        let made = listing.expect("/srv/app/sub/made-by-user");
        assert!(made.starts_with("-rw-r--r-- 1234/4321 "), "{made}");
        let sub = listing.expect("/srv/app/sub");
        assert!(sub.starts_with("drwxr-xr-x 0/0 "), "{sub}");
        // COPY --chown with names the RUN before it added to the stage.
        let note = listing.expect("/srv/app/note.txt");
        assert!(note.starts_with("-rw-r--r-- 1234/4321 "), "{note}");

        // cairn run applies it all: the entrypoint found on the image's
        // PATH, in the working dir, as the user, with the image's env.
        assert_eq!(
            run_out(&who, &work.cache, "config", &[]),
            "tool: hello there in /srv/app/sub as appuser:4321 args: from-entrypoint\n",
            "as {}",
            who.label()
        );
        // A command given runs as it is, with the same env, dir and user.
        assert_eq!(
            run_out(
                &who,
                &work.cache,
                "config",
                &[
                    "sh",
                    "-c",
                    "echo $GREETING:$(pwd):$(id -u):$(id -g):$(command -v tool)"
                ]
            ),
            "hello there:/srv/app/sub:1234:4321:/srv/app/bin/tool\n",
            "as {}",
            who.label()
        );
        work.done();
    }
}
