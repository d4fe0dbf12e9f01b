//! The import oracle's test image, built once per test process: an OCI
//! layout made offline with umoci from the busybox rootfs and hand-made
//! layers (whiteouts, an opaque directory, a file re-added after deletion,
//! hard links within and across layers, symlink <-> directory swaps, a
//! fifo, setuid/setgid files, non-root owners, long names, xattrs), its
//! `umoci unpack` (the oracle tree) and, with skopeo, docker-archive and
//! oci-archive copies. Used by tests/import_oracle.rs and
//! tests/push_registry.rs.

use super::{have_tool, run_ok, scratch};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A tar layer built with the tar crate (GNU long names, PAX xattrs).
pub struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl LayerBuilder {
    pub fn new() -> Self {
        LayerBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }

    pub fn header(kind: tar::EntryType, mode: u32, owner: (u64, u64)) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        h
    }

    pub fn dir(mut self, path: &str, mode: u32, owner: (u64, u64)) -> Self {
        let mut h = Self::header(tar::EntryType::Directory, mode, owner);
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("dir");
        self
    }

    pub fn file(mut self, path: &str, data: &str, mode: u32, owner: (u64, u64)) -> Self {
        let mut h = Self::header(tar::EntryType::Regular, mode, owner);
        h.set_size(data.len() as u64);
        self.b
            .append_data(&mut h, path, data.as_bytes())
            .expect("file");
        self
    }

    pub fn xattr_file(mut self, path: &str, data: &str, name: &str, value: &str) -> Self {
        let key = format!("SCHILY.xattr.{name}");
        self.b
            .append_pax_extensions([(key.as_str(), value.as_bytes())])
            .expect("pax");
        self.file(path, data, 0o644, (0, 0))
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, (0, 0));
        self.b.append_link(&mut h, path, target).expect("symlink");
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Link, 0o644, (0, 0));
        self.b.append_link(&mut h, path, target).expect("hardlink");
        self
    }

    pub fn fifo(mut self, path: &str) -> Self {
        let mut h = Self::header(tar::EntryType::Fifo, 0o620, (0, 0));
        self.b
            .append_data(&mut h, path, std::io::empty())
            .expect("fifo");
        self
    }

    pub fn whiteout(self, dir: &str, name: &str) -> Self {
        let path = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&path, "", 0o644, (0, 0))
    }

    pub fn write(self, path: &Path) {
        let bytes = self.b.into_inner().expect("finish tar");
        fs::write(path, bytes).expect("write layer");
    }
}

pub const LONG_DIR: &str = "opt/long-ddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

pub fn long_file() -> String {
    format!("{LONG_DIR}/{}", "f".repeat(200))
}

/// The test image: an OCI layout at `.../oci` tagged `t`, plus archives.
pub struct TestImage {
    pub layout: PathBuf,
    pub docker_archive: Option<PathBuf>,
    pub oci_archive: Option<PathBuf>,
    /// `umoci unpack` of the image: the oracle.
    pub oracle: PathBuf,
}

pub fn test_image() -> &'static TestImage {
    static IMG: OnceLock<TestImage> = OnceLock::new();
    IMG.get_or_init(|| {
        let dir = scratch("import-oracle");
        let layout = dir.join("oci");
        let image = format!("{}:t", layout.display());
        run_ok(
            Command::new("umoci")
                .args(["init", "--layout"])
                .arg(&layout),
            "umoci init",
        );
        run_ok(
            Command::new("umoci").args(["new", "--image", &image]),
            "umoci new",
        );
        // Layer 1: the busybox rootfs, through unpack + repack.
        let bundle = dir.join("bundle");
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image", &image])
                .arg(&bundle),
            "umoci unpack (empty)",
        );
        let rootfs = bundle.join("rootfs");
        run_ok(
            Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", super::busybox_rootfs().display()))
                .arg(&rootfs),
            "copy busybox rootfs",
        );
        run_ok(
            Command::new("umoci")
                .args(["repack", "--image", &image])
                .arg(&bundle),
            "umoci repack (busybox)",
        );
        // Layer 2: hand-made: every entry type and the things later layers change.
        let l2 = dir.join("l2.tar");
        LayerBuilder::new()
            .dir("opt", 0o755, (0, 0))
            .dir("opt/app", 0o755, (0, 0))
            .file("opt/app/data", "data-v1\n", 0o644, (0, 0))
            .hardlink("opt/app/link", "opt/app/data")
            .symlink("opt/app/sl", "data")
            .dir("opt/keep", 0o755, (0, 0))
            .file("opt/keep/data", "keep\n", 0o644, (0, 0))
            .hardlink("opt/keep/link1", "opt/keep/data")
            .hardlink("opt/keep/link2", "opt/keep/data")
            .dir("opt/sticky", 0o1777, (0, 0))
            .dir("srv", 0o755, (0, 0))
            .file("srv/a", "v0\n", 0o644, (0, 0))
            .file("usr/local/bin/su2", "suid\n", 0o4755, (0, 0))
            .file("usr/local/bin/sg2", "sgid\n", 0o2711, (0, 50))
            .dir("home/user", 0o700, (1000, 1000))
            .file("home/user/file", "mine\n", 0o640, (1000, 1000))
            .dir(LONG_DIR, 0o755, (0, 0))
            .file(&long_file(), "long\n", 0o644, (0, 0))
            .xattr_file("opt/app/xattr", "x\n", "user.test", "hello")
            .xattr_file("opt/keep/xattr", "x\n", "user.cairn", "kept")
            .fifo("run/fifo")
            .dir("swap", 0o755, (0, 0))
            .dir("swap/d", 0o755, (0, 0))
            .file("swap/d/child", "c\n", 0o644, (0, 0))
            .symlink("swap/s", "/etc")
            .file("etc/old", "old\n", 0o644, (0, 0))
            .file("etc/gone", "gone\n", 0o644, (0, 0))
            .write(&l2);
        // Layer 3: deletions, an opaque directory, swaps, links to layer 1/2.
        let l3 = dir.join("l3.tar");
        LayerBuilder::new()
            .whiteout("etc", "gone")
            .whiteout("etc", "old")
            .dir("opt/app", 0o750, (0, 0))
            .file("opt/app/.wh..wh..opq", "", 0o644, (0, 0))
            .file("opt/app/fresh", "fresh\n", 0o644, (0, 0))
            .whiteout("swap", "d")
            .symlink("swap/d", "/tmp")
            .whiteout("swap", "s")
            .dir("swap/s", 0o711, (0, 0))
            .file("swap/s/inner", "inner\n", 0o644, (0, 0))
            .hardlink("bin/bb-link", "bin/busybox")
            .hardlink("srv/b", "srv/a")
            .file("home/user/file2", "also mine\n", 0o600, (1000, 1000))
            .write(&l3);
        // Layer 4: a file re-added after its deletion, a linked file replaced.
        let l4 = dir.join("l4.tar");
        LayerBuilder::new()
            .file("etc/old", "re-added\n", 0o600, (0, 0))
            .file("srv/a", "v2\n", 0o644, (0, 0))
            .write(&l4);
        for layer in [&l2, &l3, &l4] {
            run_ok(
                Command::new("umoci")
                    .args(["raw", "add-layer", "--image", &image])
                    .arg(layer),
                "umoci raw add-layer",
            );
        }
        // Layer 5: umoci's own whiteouts, from a repack after deletions.
        let bundle2 = dir.join("bundle2");
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image", &image])
                .arg(&bundle2),
            "umoci unpack (layer 4)",
        );
        let r2 = bundle2.join("rootfs");
        fs::remove_file(r2.join("etc/os-release")).expect("rm os-release");
        fs::remove_dir_all(r2.join("opt/sticky")).expect("rm sticky");
        fs::remove_file(r2.join("bin/vi")).expect("rm vi");
        fs::write(r2.join("etc/added-by-repack"), "repack\n").expect("write");
        run_ok(
            Command::new("umoci")
                .args(["repack", "--image", &image])
                .arg(&bundle2),
            "umoci repack (deletions)",
        );
        run_ok(
            Command::new("umoci").args([
                "config",
                "--image",
                &image,
                "--config.cmd",
                "sh",
                "--config.env",
                "FOO=bar",
                "--config.workingdir",
                "/opt",
                "--config.user",
                "1000:1000",
                "--config.label",
                "org.example=cairn",
            ]),
            "umoci config",
        );
        let oracle = dir.join("oracle");
        run_ok(
            Command::new("umoci")
                .args(["unpack", "--image", &image])
                .arg(&oracle),
            "umoci unpack (oracle)",
        );
        let (mut docker_archive, mut oci_archive) = (None, None);
        if have_tool("skopeo") {
            let da = dir.join("docker.tar");
            run_ok(
                Command::new("skopeo")
                    .args(["copy", "--quiet"])
                    .arg(format!("oci:{image}"))
                    .arg(format!("docker-archive:{}:cairn/test:t", da.display())),
                "skopeo copy docker-archive",
            );
            let oa = dir.join("oci.tar");
            run_ok(
                Command::new("skopeo")
                    .args(["copy", "--quiet"])
                    .arg(format!("oci:{image}"))
                    .arg(format!("oci-archive:{}:t", oa.display())),
                "skopeo copy oci-archive",
            );
            docker_archive = Some(da);
            oci_archive = Some(oa);
        }
        // umoci writes its files 0600: let the ordinary user read them.
        run_ok(
            Command::new("chmod").arg("-R").arg("a+rX").arg(&layout),
            "chmod image",
        );
        TestImage {
            layout,
            docker_archive,
            oci_archive,
            oracle: oracle.join("rootfs"),
        }
    })
}
