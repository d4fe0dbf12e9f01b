//! `cairn import` and `cairn pull` over a corpus of images written by real
//! tools (tests/fixtures/corpus.sh: umoci, buildah, skopeo, Charliecloud,
//! GNU tar, Python's tarfile; built once per machine), each checked against
//! `umoci unpack` of the same image, entry by entry.
//!
//! For every case, as root and as the test user, every source the tools
//! wrote (`oci:`, `oci-archive:`, `docker-archive:`, `docker://` from a local
//! docker-registry) is imported, extracted with `unsquashfs -d` and compared
//! with the oracle: type, permission bits, owner, size, content hash, symlink
//! target, device numbers, hard-link groups, xattrs and mtime. Where umoci
//! refuses an image, cairn must refuse it too: exit 125, a message naming a
//! layer of the image, no output file. All cases run; the failure lists every
//! failing case with its differences.
//!
//! The rules where the two sides cannot agree exactly:
//! - Owners and every xattr namespace are compared because both the oracle
//!   (`umoci unpack` as root) and the extraction (`unsquashfs` as root) can
//!   set them; the test needs root for that (a skip otherwise, a failure
//!   under `CAIRN_MUST_WORK=1`). A rootless umoci could not chown, so a
//!   rootless run would have nothing honest to compare owners with.
//! - squashfs stores an mtime as a u32: umoci's mtime is expected clamped
//!   to 0..=u32::MAX (before 1970 reads as 0, after 2106 as u32::MAX).
//! - An mtime umoci stamped from its own clock (within the seconds it was
//!   unpacking) is not the image's: directories no layer declares, and
//!   directories whose children umoci changed after restoring their time.
//!   Those are not compared; cairn gives such directories the image's time.
//! - umoci leaves the root directory's mtime at 0 unless a layer has a
//!   `./` entry; a root mtime of 0 is not compared (cairn dates a root no
//!   layer declares with the image's newest mtime).
//! - `/.cairn` (cairn's own metadata) is not part of the image, and neither
//!   are the runtime mount points cairn adds when the image lacks them
//!   (`RUNTIME_DIRS`, `RUNTIME_FILES` and their parents).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn::image::import::{RUNTIME_DIRS, RUNTIME_FILES};
use common::{
    Who, assert_success, cairn_as, callers, have_tool, is_root, output, output_within, require,
    scratch, stderr_of, stdout_of,
};

/// Cases that fail for a known reason nobody has fixed yet: they run and
/// their differences are printed, but they do not fail this test. One that
/// passes does fail it, so the list gets trimmed. (Empty: every case of the
/// corpus imports as its oracle says.)
const KNOWN_FAILING: &[&str] = &[];

/// Test cases run side by side, each mostly waiting on child processes.
const WORKERS: usize = 2;

/// The corpus, built (as root) or found in the fixture cache.
fn corpus() -> Option<&'static Path> {
    static DIR: OnceLock<Option<PathBuf>> = OnceLock::new();
    DIR.get_or_init(|| {
        let cache = std::env::var_os("CAIRN_FIXTURES")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp/cairn-fixtures"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus.sh");
        let out = output_within(Command::new(script).arg(&cache), 900);
        if !out.status.success() {
            eprintln!("corpus.sh: {}", stderr_of(&out));
            return None;
        }
        let dir = PathBuf::from(stdout_of(&out).trim());
        dir.join("complete").is_file().then_some(dir)
    })
    .as_deref()
}

/// The tools the test itself runs; the ones that write the corpus are
/// checked by corpus.sh when it builds it.
fn tools_ready() -> bool {
    require(is_root(), "root (umoci unpack and unsquashfs keep owners)")
        && ["umoci", "unsquashfs", "docker-registry"]
            .iter()
            .all(|t| require(have_tool(t), t))
}

// ---------------------------------------------------------------- the corpus

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// umoci unpacks it; cairn's tree must match.
    Same,
    /// umoci refuses it; so must cairn.
    Refuse,
}

#[derive(Debug)]
struct Case {
    name: String,
    dir: PathBuf,
    tool: String,
    note: String,
    expect: Expect,
    /// The OCI layout umoci unpacks (tag `t`).
    oracle: PathBuf,
    /// (writer, source as the fixture wrote it).
    sources: Vec<(String, String)>,
}

fn read_line(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim_end()
        .to_owned()
}

fn load_cases(corpus: &Path) -> Vec<Case> {
    let mut cases: Vec<Case> = fs::read_dir(corpus.join("cases"))
        .expect("corpus cases")
        .map(|e| e.expect("case entry").path())
        .map(|dir| {
            let sources = read_line(&dir.join("sources"))
                .lines()
                .map(|l| {
                    let (writer, source) = l.split_once('\t').expect("WRITER<TAB>SOURCE");
                    (writer.to_owned(), source.to_owned())
                })
                .collect();
            Case {
                name: dir
                    .file_name()
                    .expect("case name")
                    .to_string_lossy()
                    .into_owned(),
                tool: read_line(&dir.join("tool")),
                note: read_line(&dir.join("note")),
                expect: match read_line(&dir.join("expect")).as_str() {
                    "same" => Expect::Same,
                    "refuse" => Expect::Refuse,
                    other => panic!("{}: expect {other:?}", dir.display()),
                },
                oracle: dir.join(read_line(&dir.join("oracle"))),
                sources,
                dir,
            }
        })
        .collect();
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// The source as cairn takes it: paths made absolute, the registry named.
fn resolve_source(case: &Case, source: &str, registry: &str) -> String {
    if let Some(rest) = source.strip_prefix("docker://REGISTRY/") {
        return format!("docker://{registry}/{rest}");
    }
    let (transport, rest) = source.split_once(':').expect("TRANSPORT:PATH");
    format!("{transport}:{}/{rest}", case.dir.display())
}

/// The layer digests (hex) of the oracle layout's image, which a refusal
/// must name one of.
fn layer_hexes(layout: &Path) -> Vec<String> {
    let json = |p: &Path| -> serde_json::Value {
        serde_json::from_slice(&fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
            .expect("json")
    };
    let blob = |d: &serde_json::Value| {
        layout
            .join("blobs/sha256")
            .join(d.as_str().expect("digest").trim_start_matches("sha256:"))
    };
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(&index["manifests"][0]["digest"]));
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .expect("digest")
                .trim_start_matches("sha256:")
                .to_owned()
        })
        .collect()
}

// ---------------------------------------------------------------- the registry

/// docker-registry serving a copy of the corpus's registry storage on a
/// free 127.0.0.1 port (plain HTTP, which cairn uses for loopback); killed
/// on drop.
struct Registry {
    child: Child,
    host: String,
}

impl Registry {
    fn start(corpus: &Path) -> Registry {
        let dir = scratch("corpus-registry");
        let out = output(
            Command::new("cp")
                .arg("-a")
                .arg(corpus.join("registry"))
                .arg(dir.join("storage")),
        );
        assert_success(&out, "copy the registry storage");
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.display()
            ),
        )
        .expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("registry.log")).expect("log"))
            .spawn()
            .expect("start docker-registry");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        Registry {
            child,
            host: format!("127.0.0.1:{port}"),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------- trees

/// What the comparison looks at for one entry (the mtime is apart: it has
/// its own rule).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Info {
    kind: &'static str,
    mode: u32,
    owner: (u32, u32),
    size: u64,
    sha256: String,
    target: String,
    /// (major, minor) of a device node.
    device: (u64, u64),
    xattrs: BTreeMap<String, String>,
}

struct Entry {
    info: Info,
    mtime: i64,
}

struct Tree {
    /// Paths with non-UTF-8 bytes escaped as \xNN.
    entries: BTreeMap<String, Entry>,
    /// Hard-link groups (paths sharing an inode), each sorted.
    links: BTreeSet<Vec<String>>,
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\n' => out.push_str("\\n"),
                '\\' => out.push_str("\\\\"),
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every xattr of `path` (not following a symlink): name -> hex value.
fn xattrs_of(path: &Path) -> BTreeMap<String, String> {
    let mut names = vec![0u8; 1 << 16];
    let n = rustix::fs::llistxattr(path, &mut names[..])
        .unwrap_or_else(|e| panic!("llistxattr {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 1 << 16];
        let len = rustix::fs::lgetxattr(path, name, &mut value[..])
            .unwrap_or_else(|e| panic!("lgetxattr {}: {e}", path.display()));
        out.insert(escape(name), hex(&value[..len]));
    }
    out
}

fn entry_of(path: &Path, md: &fs::Metadata) -> Entry {
    let ft = md.file_type();
    let kind = common::file_kind(&ft);
    let device = if ft.is_char_device() || ft.is_block_device() {
        (
            nix::sys::stat::major(md.rdev()),
            nix::sys::stat::minor(md.rdev()),
        )
    } else {
        (0, 0)
    };
    let target = if ft.is_symlink() {
        escape(
            fs::read_link(path)
                .expect("readlink")
                .as_os_str()
                .as_bytes(),
        )
    } else {
        String::new()
    };
    Entry {
        info: Info {
            kind,
            mode: md.mode() & 0o7777,
            owner: (md.uid(), md.gid()),
            size: if ft.is_file() { md.len() } else { 0 },
            sha256: if ft.is_file() {
                common::sha256_file(path)
            } else {
                String::new()
            },
            target,
            device,
            xattrs: xattrs_of(path),
        },
        mtime: md.mtime(),
    }
}

fn walk(root: &Path) -> Tree {
    let mut entries = BTreeMap::new();
    let mut inodes: HashMap<u64, Vec<String>> = HashMap::new();
    let root_md = fs::symlink_metadata(root).expect("lstat root");
    entries.insert(".".to_owned(), entry_of(root, &root_md));
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = e.expect("dir entry").path();
            let rel = escape(
                path.strip_prefix(root)
                    .expect("below root")
                    .as_os_str()
                    .as_bytes(),
            );
            let md = fs::symlink_metadata(&path).expect("lstat");
            if md.is_dir() {
                stack.push(path.clone());
            } else if md.nlink() > 1 {
                inodes.entry(md.ino()).or_default().push(rel.clone());
            }
            entries.insert(rel, entry_of(&path, &md));
        }
    }
    let links = inodes
        .into_values()
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    Tree { entries, links }
}

// ---------------------------------------------------------------- the oracle

struct Oracle {
    tree: Tree,
    /// The seconds umoci was unpacking: mtimes in there are its own clock.
    clock: (i64, i64),
}

impl Oracle {
    /// Is this mtime umoci's rather than the image's (see the module doc)?
    fn own_clock(&self, path: &str, entry: &Entry) -> bool {
        let (from, to) = self.clock;
        (path == "." && entry.mtime == 0) || (from..=to).contains(&entry.mtime)
    }

    /// (entries, of which mtimes not compared), for the summary line.
    fn counts(&self) -> (usize, usize) {
        let e = &self.tree.entries;
        let own = e
            .iter()
            .filter(|(p, entry)| self.own_clock(p, entry))
            .count();
        (e.len(), own)
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        .try_into()
        .expect("seconds fit an i64")
}

/// `umoci unpack` as root of the case's oracle layout: the tree, or why
/// umoci refused.
fn unpack_oracle(case: &Case) -> Result<Oracle, String> {
    let dir = scratch(&format!("oracle-{}", case.name));
    let bundle = dir.join("bundle");
    let start = now_secs();
    let out = output(
        Command::new("umoci")
            .arg("unpack")
            .arg("--image")
            .arg(format!("{}:t", case.oracle.display()))
            .arg(&bundle),
    );
    let end = now_secs();
    if !out.status.success() {
        return Err(stderr_of(&out));
    }
    let tree = walk(&bundle.join("rootfs"));
    // The walk is all the comparison needs; the corpus's trees add up.
    let _ = fs::remove_dir_all(&dir);
    Ok(Oracle {
        tree,
        clock: (start - 1, end + 1),
    })
}

// ---------------------------------------------------------------- comparing

/// cairn's own additions, not part of the image: its metadata, and the
/// mount points `cairn run` needs, added when the image has none.
fn cairn_addition(path: &str) -> bool {
    let runtime = RUNTIME_DIRS.iter().chain(RUNTIME_FILES).any(|p| {
        *p == path
            || p.strip_prefix(path)
                .is_some_and(|below| below.starts_with('/'))
    });
    runtime || path == ".cairn" || path.starts_with(".cairn/")
}

/// The differences between cairn's tree and the oracle's, one line each.
fn differences(cairn: &Tree, oracle: &Oracle) -> Vec<String> {
    let mut out = Vec::new();
    for (path, o) in &oracle.tree.entries {
        let Some(c) = cairn.entries.get(path) else {
            out.push(format!("missing in cairn: {path} ({})", o.info.kind));
            continue;
        };
        if c.info != o.info {
            out.push(format!(
                "differs: {path}\n      cairn: {:?}\n      umoci: {:?}",
                c.info, o.info
            ));
        }
        let expected = o.mtime.clamp(0, i64::from(u32::MAX));
        if !oracle.own_clock(path, o) && c.mtime != expected {
            out.push(format!(
                "mtime differs: {path}: cairn {} umoci {} (expected {expected})",
                c.mtime, o.mtime
            ));
        }
    }
    for (path, c) in &cairn.entries {
        if !oracle.tree.entries.contains_key(path) && !cairn_addition(path) {
            out.push(format!("extra in cairn: {path} ({})", c.info.kind));
        }
    }
    if cairn.links != oracle.tree.links {
        let only_cairn: Vec<_> = cairn.links.difference(&oracle.tree.links).collect();
        let only_umoci: Vec<_> = oracle.tree.links.difference(&cairn.links).collect();
        out.push(format!(
            "hard-link groups differ: only in cairn {only_cairn:?}, only in umoci {only_umoci:?}"
        ));
    }
    out
}

// ---------------------------------------------------------------- one case

/// The outcome of one case over all its sources and callers.
struct Report {
    name: String,
    tool: String,
    note: String,
    /// "(writer) source as caller" of every import that was checked.
    checked: Vec<String>,
    problems: Vec<String>,
    /// "N entries (M mtimes umoci's own)" or "umoci refuses it".
    oracle: String,
}

/// Lines of one difference list shown per import before "... and N more".
const SHOWN: usize = 30;

fn run_case(case: &Case, registry: &str) -> Report {
    let mut report = Report {
        name: case.name.clone(),
        tool: case.tool.clone(),
        note: case.note.clone(),
        checked: Vec::new(),
        problems: Vec::new(),
        oracle: String::new(),
    };
    let oracle = unpack_oracle(case);
    report.oracle = match &oracle {
        Ok(o) => {
            let (entries, own) = o.counts();
            format!("{entries} entries, {own} mtimes umoci's own")
        }
        Err(_) => "umoci refuses it".into(),
    };
    match (&oracle, case.expect) {
        (Ok(_), Expect::Refuse) => report
            .problems
            .push("umoci unpacked an image the corpus says it refuses".into()),
        (Err(e), Expect::Same) => report.problems.push(format!(
            "umoci refused an image the corpus says it reads: {e}"
        )),
        _ => {}
    }
    let layers = layer_hexes(&case.oracle);
    // Identical images (root and the user import the same bytes) are
    // extracted and compared once.
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    for (writer, source) in &case.sources {
        let src = resolve_source(case, source, registry);
        for who in callers() {
            let caller = match who {
                Who::Me if is_root() => "root",
                _ => who.label(),
            };
            let what = format!("({writer}) {source} as {caller}");
            report.checked.push(what.clone());
            let lines = match &oracle {
                Ok(oracle) => import_and_compare(&who, &src, oracle, &mut seen),
                Err(_) => refusal_problems(&who, &src, &layers),
            };
            if !lines.is_empty() {
                let mut text = format!("  {what}:");
                for l in lines.iter().take(SHOWN) {
                    let _ = write!(text, "\n    {l}");
                }
                if lines.len() > SHOWN {
                    let _ = write!(text, "\n    ... and {} more", lines.len() - SHOWN);
                }
                report.problems.push(text);
            }
        }
    }
    report
}

/// `cairn import SRC -o OUT` (or `cairn pull` for docker://) as `who`.
fn cairn_import(who: &Who, src: &str, out: &Path) -> std::process::Output {
    let mut cmd = cairn_as(who);
    if src.starts_with("docker://") {
        cmd.env("CAIRN_CACHE", out.with_extension("cache"))
            .args(["pull", "-q", src, "-o"]);
    } else {
        cmd.args(["import", src, "-o"]);
    }
    output(cmd.arg(out))
}

fn import_and_compare(
    who: &Who,
    src: &str,
    oracle: &Oracle,
    seen: &mut HashMap<String, Vec<String>>,
) -> Vec<String> {
    let dir = scratch("corpus-import");
    let image = dir.join("image.sqfs");
    let out = cairn_import(who, src, &image);
    if !out.status.success() {
        return vec![format!(
            "cairn failed ({:?}) where umoci did not: {}",
            out.status.code(),
            stderr_of(&out).trim()
        )];
    }
    let digest = common::sha256_file(&image);
    if let Some(known) = seen.get(&digest) {
        return known.clone();
    }
    let x = dir.join("x");
    let un = output(Command::new("unsquashfs").arg("-d").arg(&x).arg(&image));
    let lines = if un.status.success() {
        differences(&walk(&x), oracle)
    } else {
        vec![format!("unsquashfs failed: {}", stderr_of(&un).trim())]
    };
    // Extracted trees of big images add up over the corpus.
    let _ = fs::remove_dir_all(&dir);
    seen.insert(digest, lines.clone());
    lines
}

/// umoci refused the image: cairn must exit 125, name one of the image's
/// layers and leave no output file.
fn refusal_problems(who: &Who, src: &str, layers: &[String]) -> Vec<String> {
    let dir = scratch("corpus-refuse");
    let image = dir.join("image.sqfs");
    let out = cairn_import(who, src, &image);
    let stderr = stderr_of(&out);
    let mut lines = Vec::new();
    if out.status.code() != Some(125) {
        lines.push(format!(
            "cairn exited {:?} where umoci refused (want 125): {}",
            out.status.code(),
            stderr.trim()
        ));
    }
    if !layers.iter().any(|l| stderr.contains(&l[..12])) {
        lines.push(format!(
            "the error names none of the layers {layers:?}: {}",
            stderr.trim()
        ));
    }
    // The pull cache next to the image is cairn's to keep.
    let left: Vec<_> = fs::read_dir(&dir)
        .expect("scratch")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "image.cache")
        .collect();
    if !left.is_empty() {
        lines.push(format!("cairn left files behind: {left:?}"));
    }
    lines
}

// ---------------------------------------------------------------- the test

#[test]
fn every_corpus_image_matches_umoci_unpack() {
    if !tools_ready() {
        return;
    }
    let Some(corpus) = corpus() else {
        require(
            false,
            "the import corpus (tests/fixtures/corpus.sh, built as root)",
        );
        return;
    };
    let cases = load_cases(corpus);
    let registry = Registry::start(corpus);
    let queue = Mutex::new(cases.iter());
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some(case) = next else { break };
                    let report = run_case(case, &registry.host);
                    reports.lock().expect("reports").push(report);
                }
            });
        }
    });
    let mut reports = reports.into_inner().expect("reports");
    reports.sort_by(|a, b| a.name.cmp(&b.name));
    judge(&reports);
}

/// Prints one line per case and fails with the differences of every case
/// that is not excused, and with every excused case that now passes.
fn judge(reports: &[Report]) {
    let excused = |name: &str| KNOWN_FAILING.contains(&name);
    let mut failures = String::new();
    let mut excused_text = String::new();
    for r in reports {
        let status = match (r.problems.is_empty(), excused(&r.name)) {
            (true, false) => "pass",
            (false, false) => "FAIL",
            (false, true) => "known failure",
            (true, true) => "UNEXPECTED PASS",
        };
        eprintln!(
            "corpus: {:<28} {:<16} {:>2} imports  [{}; oracle: {}]",
            r.name,
            status,
            r.checked.len(),
            r.tool,
            r.oracle
        );
        let detail = format!(
            "\n{} ({}; {}):\n{}\n",
            r.name,
            r.tool,
            r.note,
            r.problems.join("\n")
        );
        match status {
            "FAIL" => failures.push_str(&detail),
            "known failure" => excused_text.push_str(&detail),
            "UNEXPECTED PASS" => {
                let _ = writeln!(
                    failures,
                    "\n{}: passes now; remove it from its known-failing list",
                    r.name
                );
            }
            _ => {}
        }
    }
    if !excused_text.is_empty() {
        eprintln!("\nknown failures (not failing this test):{excused_text}");
    }
    assert!(
        failures.is_empty(),
        "cairn differs from umoci unpack:{failures}"
    );
}
