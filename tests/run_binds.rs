//! `-b/--bind`, `--home`: each bind form works, each malformed form fails
//! with exit 125 and its own clear message, as root and as the ordinary user.

mod common;

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

/// A private copy of the busybox image (cp -a keeps the applet symlinks)
/// with extra paths for the bind tests.
fn own_image(name: &str) -> PathBuf {
    let dir = scratch(name);
    let image = dir.join("rootfs");
    copy_busybox_rootfs(&image);
    fs::create_dir_all(image.join("data/sub")).expect("mkdir");
    fs::write(image.join("data/file"), "image's file\n").expect("write");
    symlink("/", image.join("mnt/escape")).expect("symlink");
    symlink("../../..", image.join("mnt/up")).expect("symlink");
    symlink("../data", image.join("mnt/inner")).expect("symlink");
    symlink("/data/sub", image.join("mnt/absolute")).expect("symlink");
    image
}

/// A host directory with one file, readable and writable by everyone.
fn host_dir(name: &str) -> PathBuf {
    let dir = scratch(name);
    fs::write(dir.join("hello"), "from the host\n").expect("write");
    fs::set_permissions(dir.join("hello"), fs::Permissions::from_mode(0o666)).expect("chmod");
    dir
}

fn run(who: &Who, image: &Path, opts: &[&str], script: &str) -> Output {
    output(
        cairn_as(who)
            .arg("run")
            .args(opts)
            .arg(image)
            .args(["/bin/sh", "-c", script]),
    )
}

#[test]
fn source_and_destination_read_write() {
    let image = own_image("bind-rw");
    for who in runners("-Urm") {
        let src = host_dir("bind-rw-src");
        let spec = format!("{}:/data", src.display());
        let out = run(
            &who,
            &image,
            &["-b", &spec],
            "cat /data/hello && echo inside > /data/new",
        );
        assert_success(&out, "rw bind");
        assert_eq!(stdout_of(&out), "from the host\n");
        assert_eq!(
            fs::read_to_string(src.join("new")).expect("new"),
            "inside\n"
        );
        assert_eq!(
            fs::read_to_string(image.join("data/file")).expect("image"),
            "image's file\n"
        );
    }
}

#[test]
fn read_only_bind_refuses_writes() {
    let image = own_image("bind-ro");
    for who in runners("-Urm") {
        let src = host_dir("bind-ro-src");
        let spec = format!("{}:/data:ro", src.display());
        let out = run(
            &who,
            &image,
            &["--bind", &spec],
            "cat /data/hello; echo x > /data/hello",
        );
        assert!(!out.status.success());
        assert_eq!(stdout_of(&out), "from the host\n");
        assert!(stderr_of(&out).contains("Read-only"), "{}", stderr_of(&out));
        assert_eq!(
            fs::read_to_string(src.join("hello")).expect("hello"),
            "from the host\n"
        );
    }
}

#[test]
fn source_only_binds_at_the_same_path() {
    for who in runners("-Urm") {
        let image = own_image("bind-same");
        let src = host_dir("bind-same-src");
        fs::create_dir_all(image.join(src.strip_prefix("/").expect("absolute"))).expect("mkdir");
        let spec = src.to_string_lossy().into_owned();
        let out = run(&who, &image, &["-b", &spec], &format!("cat {}/hello", spec));
        assert_success(&out, "same-path bind");
        assert_eq!(stdout_of(&out), "from the host\n");
    }
}

#[test]
fn destination_through_an_in_image_symlink_lands_inside() {
    let image = own_image("bind-inner");
    for who in runners("-Urm") {
        let src = host_dir("bind-inner-src");
        let spec = format!("{}:/mnt/inner", src.display());
        let out = run(&who, &image, &["-b", &spec], "cat /data/hello");
        assert_success(&out, "bind through in-image symlink");
        assert_eq!(stdout_of(&out), "from the host\n");
    }
}

#[test]
fn an_absolute_in_image_symlink_resolves_inside_the_image() {
    let image = own_image("bind-abs");
    for who in runners("-Urm") {
        let src = host_dir("bind-abs-src");
        let spec = format!("{}:/mnt/absolute", src.display());
        let out = run(&who, &image, &["-b", &spec], "cat /data/sub/hello");
        assert_success(&out, "bind through an absolute in-image symlink");
        assert_eq!(stdout_of(&out), "from the host\n");
    }
}

#[test]
fn a_relative_source_is_taken_from_the_current_directory() {
    let image = own_image("bind-rel");
    for who in runners("-Urm") {
        let src = host_dir("bind-rel-src");
        let name = src
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let out = output(
            cairn_as(&who)
                .current_dir(src.parent().expect("parent"))
                .arg("run")
                .args(["-b", &format!("{name}:/data")])
                .arg(&image)
                .args(["cat", "/data/hello"]),
        );
        assert_success(&out, "relative source");
        assert_eq!(stdout_of(&out), "from the host\n");
    }
}

#[test]
fn each_malformed_bind_has_its_own_error() {
    let image = own_image("bind-errors");
    let src = host_dir("bind-errors-src");
    let s = src.display();
    let cases: Vec<(String, &str)> = vec![
        (String::new(), "empty bind spec"),
        (":/data".into(), "empty source"),
        (format!("{s}:"), "empty destination"),
        (format!("{s}:data"), "must be an absolute path"),
        (format!("{s}:/../data"), "escapes the image root"),
        (format!("{s}:/data:rx"), "unknown option"),
        (format!("{s}:/data:ro:x"), "too many"),
        (
            format!("{s}/nonexistent:/data"),
            "does not exist or cannot be reached",
        ),
        (format!("{s}:/no/such/dir"), "does not exist in the image"),
        (format!("{s}:/mnt/escape"), "is the image root itself"),
        (format!("{s}:/mnt/up"), "leads out of the image"),
    ];
    for who in callers() {
        for (spec, message) in &cases {
            let out = run(&who, &image, &["-b", spec], "true");
            assert_eq!(
                out.status.code(),
                Some(125),
                "-b {spec:?}: {}",
                stderr_of(&out)
            );
            assert!(
                stderr_of(&out).contains(message),
                "-b {spec:?}: expected {message:?} in {}",
                stderr_of(&out)
            );
        }
    }
}

#[test]
fn home_binds_the_callers_home() {
    for who in runners("-Urm") {
        let home = match &who {
            Who::Me => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into())),
            Who::User(u) => u.home.clone(),
        };
        if !home.is_dir() {
            continue;
        }
        let out = output(
            cairn_as(&who)
                .arg("run")
                .arg("--home")
                .arg(busybox_rootfs())
                .args([
                    "/bin/sh",
                    "-c",
                    "pwd; echo $HOME; ls -d \"$HOME\" && test -w \"$HOME\" && echo writable",
                ])
                .current_dir(shared_dir()),
        );
        assert_success(&out, "--home");
        let expected = format!("/\n{0}\n{0}\nwritable\n", home.display());
        assert_eq!(stdout_of(&out), expected, "as {}", who.label());
        // With --uid 0 too, HOME is the bound home.
        let out = output(
            cairn_as(&who)
                .args(["run", "--home", "--uid", "0"])
                .arg(busybox_rootfs())
                .args(["/bin/sh", "-c", "echo $HOME"]),
        );
        assert_eq!(stdout_of(&out), format!("{}\n", home.display()));
        // Without --home the home is not there (the image has no such dir),
        // unless it is an image directory such as /root.
        if let Who::User(u) = &who {
            let out = output(cairn_as(&who).arg("run").arg(busybox_rootfs()).args([
                "ls",
                "-d",
                &u.home.to_string_lossy(),
            ]));
            assert!(!out.status.success(), "home must not exist without --home");
        }
    }
}

#[test]
fn a_failing_mount_step_is_125_and_names_the_step_and_paths() {
    for who in runners("-Urm") {
        let src = host_dir("bind-type-mismatch");
        // A file bound onto a directory: the kernel says ENOTDIR.
        let spec = format!("{}:/bin", src.join("hello").display());
        let out = run(&who, busybox_rootfs(), &["-b", &spec], "true");
        assert_eq!(out.status.code(), Some(125), "{}", stderr_of(&out));
        let expected = format!(
            "bind host {} on container /bin failed",
            src.join("hello").display()
        );
        assert!(stderr_of(&out).contains(&expected), "{}", stderr_of(&out));
    }
}
