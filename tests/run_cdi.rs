//! `cairn run --device vendor.com/class=name` end to end with a stand-in CDI
//! spec (pointed at with `CAIRN_CDI_DIRS`): a stand-in device node (a
//! character device 1:3 made with mknod as root, removed at the end), a host
//! "driver library" directory bound at a path the image lacks (a mount point
//! from the read-only skeleton overlay) and environment, as root and as the
//! ordinary user, over the FUSE mount, the kernel squashfs mount (root), a
//! directory image and `--writable-tmpfs`. Unknown devices, malformed specs
//! and missing device nodes fail with 125 naming them; an
//! `nvidia-ctk cdi generate`-style YAML spec parses; a site hook binds the
//! host's MPI into a missing directory.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A stand-in GPU: a character device 1:3 (what /dev/null is) that everyone
/// may write, removed when dropped.
struct StandInDevice {
    path: PathBuf,
}

impl StandInDevice {
    fn create(name: &str) -> Self {
        let path = PathBuf::from(format!("/dev/cairn-test-{name}-{}", std::process::id()));
        let _ = fs::remove_file(&path);
        let out = output(Command::new("mknod").arg(&path).args(["c", "1", "3"]));
        assert_success(&out, "mknod");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod device");
        StandInDevice { path }
    }
}

impl Drop for StandInDevice {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A host "driver library" directory with one library file.
fn driver_dir() -> PathBuf {
    let dir = scratch("cdi-driver");
    fs::write(dir.join("libstandin.so.1"), "stand-in driver library\n").expect("write");
    fs::set_permissions(
        dir.join("libstandin.so.1"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

/// A spec directory holding `file` with `text`.
fn spec_dir(file: &str, text: &str) -> PathBuf {
    let dir = scratch("cdi-specs");
    fs::write(dir.join(file), text).expect("write spec");
    fs::set_permissions(dir.join(file), fs::Permissions::from_mode(0o644)).expect("chmod");
    dir
}

/// The stand-in spec: `cairn.test/gpu=0` is the device node; the spec-wide
/// edits bind the driver directory at /usr/local/nvidia/lib (missing in the
/// image), set an env var and have an update-ldcache hook (honoured) and a
/// create-symlinks hook (skipped with a warning).
fn stand_in_spec(device: &Path, driver: &Path) -> String {
    format!(
        r#"{{
  "cdiVersion": "0.6.0",
  "kind": "cairn.test/gpu",
  "devices": [
    {{"name": "0", "containerEdits": {{"deviceNodes": [{{"path": "{dev}", "type": "c", "major": 1, "minor": 3}}],
                                       "env": ["CAIRN_GPU_INDEX=0"]}}}}
  ],
  "containerEdits": {{
    "env": ["CAIRN_GPU=stand-in"],
    "mounts": [{{"hostPath": "{lib}", "containerPath": "/usr/local/nvidia/lib", "options": ["ro", "nosuid", "nodev", "bind"]}}],
    "hooks": [
      {{"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", "/usr/local/nvidia/lib"]}},
      {{"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook", "args": ["nvidia-cdi-hook", "create-symlinks", "--link", "libstandin.so.1::/usr/local/nvidia/lib/libstandin.so"]}}
    ]
  }}
}}"#,
        dev = device.display(),
        lib = driver.display()
    )
}

fn run_with(who: &Who, dirs: &Path, opts: &[&str], image: &Path, script: &str) -> Output {
    let mut cmd = cairn_as(who);
    // cargo sets LD_LIBRARY_PATH for the test process: not the job's.
    cmd.env_remove("LD_LIBRARY_PATH")
        .env("CAIRN_CDI_DIRS", dirs)
        .arg("run")
        .args(opts)
        .arg(image)
        .args(["--", "/bin/sh", "-c", script]);
    output_within(&mut cmd, 60)
}

fn fuse_and_namespaces() -> Vec<Who> {
    if !require(Path::new("/dev/fuse").exists(), "/dev/fuse") {
        return Vec::new();
    }
    runners("-Urm")
}

#[test]
fn device_library_and_env_reach_the_job_in_every_mount_mode() {
    if !require(is_root(), "root (to mknod a stand-in device)")
        || !require(have_tool("mksquashfs"), "mksquashfs")
    {
        return;
    }
    let device = StandInDevice::create("gpu0");
    let driver = driver_dir();
    let specs = spec_dir("cairn-test.json", &stand_in_spec(&device.path, &driver));
    let script = format!(
        "echo > {dev} && cat /usr/local/nvidia/lib/libstandin.so.1 && \
         echo \"$LD_LIBRARY_PATH|$CAIRN_GPU|$CAIRN_GPU_INDEX\" && \
         ls /usr/local/bin >/dev/null && \
         if echo x > /usr/local/nvidia/lib/new 2>/dev/null; then echo writable; fi",
        dev = device.path.display()
    );
    let expected_lines = [
        "stand-in driver library",
        "/usr/local/nvidia/lib|stand-in|0",
    ];
    for who in fuse_and_namespaces() {
        let mut cases: Vec<(PathBuf, Vec<&str>)> = vec![
            (busybox_sqfs().to_path_buf(), vec!["--mount", "fuse"]),
            (
                busybox_sqfs().to_path_buf(),
                vec!["--mount", "fuse", "--writable-tmpfs"],
            ),
            (busybox_rootfs().to_path_buf(), vec![]),
        ];
        if matches!(who, Who::Me) {
            cases.push((busybox_sqfs().to_path_buf(), vec!["--mount", "kernel"]));
        }
        for (image, mode) in cases {
            let mut opts = mode.clone();
            opts.extend(["--device", "cairn.test/gpu=0"]);
            let out = run_with(&who, &specs, &opts, &image, &script);
            let what = format!("{} {mode:?} {}", who.label(), image.display());
            assert_success(&out, &what);
            assert_eq!(
                stdout_of(&out).lines().collect::<Vec<_>>(),
                expected_lines,
                "{what}"
            );
            let stderr = stderr_of(&out);
            assert!(
                stderr.contains("create-symlinks") && stderr.contains("warning"),
                "{what}: the skipped hook is named: {stderr}"
            );
            assert!(
                !stderr.contains("update-ldcache"),
                "{what}: update-ldcache is honoured, not warned about: {stderr}"
            );
        }
        // The user's own options win over the device's environment.
        let out = run_with(
            &who,
            &specs,
            &[
                "--device",
                "cairn.test/gpu=all",
                "-e",
                "CAIRN_GPU=mine",
                "--unset-env",
                "LD_LIBRARY_PATH",
            ],
            busybox_sqfs(),
            "echo \"${LD_LIBRARY_PATH:-unset}|$CAIRN_GPU\"",
        );
        assert_success(&out, "user env wins");
        assert_eq!(stdout_of(&out), "unset|mine\n");
    }
    // The host's /dev and the image are untouched.
    assert!(!Path::new("/usr/local/nvidia/lib/new").exists());
    assert!(!busybox_rootfs().join("usr/local/nvidia").exists());
}

#[test]
fn unknown_device_is_125_naming_it_and_what_exists() {
    let specs = spec_dir(
        "cairn-test.json",
        &stand_in_spec(Path::new("/dev/null"), Path::new("/usr/lib")),
    );
    for who in callers() {
        let out = run_with(
            &who,
            &specs,
            &["--device", "cairn.test/gpu=7"],
            busybox_rootfs(),
            "true",
        );
        assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
        let stderr = stderr_of(&out);
        assert!(
            stderr.contains("cairn.test/gpu=7")
                && stderr.contains("they provide: cairn.test/gpu=0"),
            "{stderr}"
        );
        let out = run_with(
            &who,
            &specs,
            &["--device", "gpu0"],
            busybox_rootfs(),
            "true",
        );
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr_of(&out).contains("expected vendor.com/class=name"),
            "{}",
            stderr_of(&out)
        );
    }
}

#[test]
fn malformed_specs_and_missing_nodes_are_125_naming_them() {
    let broken = spec_dir("broken.yaml", "cdiVersion: 0.6.0\nkind: [\n");
    let future = spec_dir(
        "future.json",
        r#"{"cdiVersion": "7.0.0", "kind": "cairn.test/gpu", "devices": [{"name": "0"}]}"#,
    );
    let missing = spec_dir(
        "missing.json",
        r#"{"cdiVersion": "0.6.0", "kind": "cairn.test/gpu",
            "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/cairn-test-absent"}]}}]}"#,
    );
    let elsewhere = spec_dir(
        "elsewhere.json",
        r#"{"cdiVersion": "0.6.0", "kind": "cairn.test/gpu",
            "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/dev/cairn-test-renamed", "hostPath": "/dev/null"}]}}]}"#,
    );
    for who in callers() {
        let cases: [(&Path, &[&str]); 4] = [
            (&broken, &["broken.yaml"]),
            (
                &future,
                &["future.json", "unsupported cdiVersion \"7.0.0\""],
            ),
            (
                &missing,
                &[
                    "device cairn.test/gpu=0",
                    "/dev/cairn-test-absent does not exist on the host",
                ],
            ),
            (
                &elsewhere,
                &["device cairn.test/gpu=0", "/dev/cairn-test-renamed"],
            ),
        ];
        for (dir, needles) in cases {
            let out = run_with(
                &who,
                dir,
                &["--device", "cairn.test/gpu=0"],
                busybox_rootfs(),
                "true",
            );
            assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
            let stderr = stderr_of(&out);
            for needle in needles {
                assert!(stderr.contains(needle), "{needle:?} not in {stderr}");
            }
        }
    }
}

#[test]
fn a_device_outside_dev_gets_a_mount_point_in_the_skeleton() {
    // /dev/null bound at /opt/gpu/null (missing in the image): a file mount
    // point, usable like the host's node.
    let specs = spec_dir(
        "outside.json",
        r#"{"cdiVersion": "0.6.0", "kind": "cairn.test/gpu",
            "devices": [{"name": "0", "containerEdits": {"deviceNodes": [{"path": "/opt/gpu/null", "hostPath": "/dev/null"}]}}]}"#,
    );
    for who in fuse_and_namespaces() {
        let out = run_with(
            &who,
            &specs,
            &["--mount", "fuse", "--device", "cairn.test/gpu=0"],
            busybox_sqfs(),
            "echo hi > /opt/gpu/null && test -c /opt/gpu/null && echo ok",
        );
        assert_success(&out, "device outside /dev");
        assert_eq!(stdout_of(&out), "ok\n");
    }
}

#[test]
fn an_nvidia_ctk_yaml_spec_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cdi/nvidia-ctk.yaml");
    let bytes = fs::read(&path).expect("fixture");
    let spec = cairn::run::cdi::parse_spec(&path, &bytes).expect("parse");
    assert_eq!(spec.kind, "nvidia.com/gpu");
    let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        ["0", "GPU-6f8b4f6e-2c1b-9a3e-4d5f-0a1b2c3d4e5f", "all"]
    );
    assert_eq!(spec.edits.edits.devices.len(), 4);
    assert_eq!(spec.edits.edits.binds.len(), 7);
    assert!(spec.edits.edits.binds.iter().all(|b| b.read_only));
    let spec_set = cairn::run::cdi::SpecSet {
        dirs: vec![PathBuf::from("/etc/cdi")],
        specs: vec![(0, spec)],
    };
    let resolved = cairn::run::cdi::resolve_devices(&spec_set, &["nvidia.com/gpu=all".into()])
        .expect("resolve");
    // The spec-wide edits and the spec's own `all` device, not every device.
    assert_eq!(resolved.edits.len(), 2, "{:#?}", resolved.edits);
    assert_eq!(resolved.edits[1].origin, "device nvidia.com/gpu=all");
    assert!(
        resolved.edits[0]
            .edits
            .env
            .contains(&cairn::run::edits::EnvEdit::Prepend(
                "LD_LIBRARY_PATH".into(),
                "/usr/lib/x86_64-linux-gnu".into()
            ))
    );
    for hook in ["create-symlinks", "enable-cuda-compat", "chmod"] {
        assert!(
            resolved.warnings.iter().any(|w| w.contains(hook)),
            "{hook}: {:?}",
            resolved.warnings
        );
    }
}

/// `[hooks.mpi]` from a site file binds a host "MPI" directory into the
/// missing /opt/host-mpi/lib and prepends it to LD_LIBRARY_PATH.
#[test]
fn a_site_hook_binds_host_mpi_into_a_missing_directory() {
    if !require(have_tool("mksquashfs"), "mksquashfs") {
        return;
    }
    let mpi = scratch("cdi-host-mpi");
    fs::write(mpi.join("libmpi.so.40"), "host mpi\n").expect("write");
    fs::set_permissions(mpi.join("libmpi.so.40"), fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let site = scratch("cdi-site").join("cairn.toml");
    fs::write(
        &site,
        format!(
            "[hooks.mpi]\ndescription = \"the host's MPI\"\nbinds = [\"{}:/opt/host-mpi/lib:ro\"]\n\n\
             [hooks.mpi.env.prepend]\nLD_LIBRARY_PATH = \"/opt/host-mpi/lib\"\n",
            mpi.display()
        ),
    )
    .expect("site file");
    fs::set_permissions(&site, fs::Permissions::from_mode(0o644)).expect("chmod");
    for who in fuse_and_namespaces() {
        let mut cmd = cairn_as(&who);
        // cargo gives the test its own LD_LIBRARY_PATH: start from none.
        cmd.env("CAIRN_CONFIG", &site)
            .env_remove("LD_LIBRARY_PATH")
            .args(["run", "--mount", "fuse", "--hook", "mpi"])
            .arg(busybox_sqfs())
            .args([
                "--",
                "/bin/sh",
                "-c",
                "cat /opt/host-mpi/lib/libmpi.so.40 && echo \"$LD_LIBRARY_PATH\"",
            ]);
        let out = output_within(&mut cmd, 60);
        assert_success(&out, "site hook");
        assert_eq!(stdout_of(&out), "host mpi\n/opt/host-mpi/lib\n");
    }
}

/// `-w -b SRC:/missing/dir` on a root-owned squashfs image: the mount point
/// comes from the skeleton layer under the upper layer, so the ordinary user
/// (who may not mkdir in the image's root-owned directories) gets it too.
#[test]
fn writable_binds_onto_missing_paths_of_a_root_owned_image() {
    if !require(have_tool("mksquashfs"), "mksquashfs") {
        return;
    }
    let driver = driver_dir();
    let dir_spec = format!("{}:/new/dir", driver.display());
    let file_spec = format!("{}:/etc/new-file", driver.join("libstandin.so.1").display());
    for who in fuse_and_namespaces() {
        let out = run_with(
            &who,
            Path::new("/nonexistent"),
            &["--mount", "fuse", "-w", "-b", &dir_spec, "-b", &file_spec],
            busybox_sqfs(),
            "cat /new/dir/libstandin.so.1 /etc/new-file && echo more > /new/x && cat /new/x",
        );
        assert_success(&out, &format!("-w -b as {}", who.label()));
        assert_eq!(
            stdout_of(&out),
            "stand-in driver library\nstand-in driver library\nmore\n"
        );
    }
}
