//! `cairn check`: can this host run cairn, for this user? Each probe says
//! ok, missing (with what an admin does about it), or not applicable. Exit 0
//! only when `cairn run` can work (user namespaces usable, cairn not setuid).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::ns::probe;

#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Status {
    Ok(String),
    Missing { why: String, fix: String },
    NotApplicable(String),
}

#[derive(Debug)]
struct Check {
    name: &'static str,
    /// `cairn run` cannot work without it.
    essential: bool,
    status: Status,
}

fn read_sysctl(path: &str) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// What an admin changes when user namespaces fail, from the usual knobs.
fn userns_fix() -> String {
    let mut fixes = Vec::new();
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        fixes.push("sysctl -w user.max_user_namespaces=15000");
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        fixes.push("sysctl -w kernel.unprivileged_userns_clone=1");
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        fixes.push(
            "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0 (or an AppArmor profile allowing userns for cairn)",
        );
    }
    if fixes.is_empty() {
        "enable unprivileged user namespaces (kernel CONFIG_USER_NS; no seccomp/LSM policy denying unshare(CLONE_NEWUSER))".into()
    } else {
        fixes.join("; ")
    }
}

fn check_userns() -> Status {
    match probe::user_namespace() {
        Ok(()) => Status::Ok("unprivileged user + mount namespaces work".into()),
        Err(e) => Status::Missing {
            why: crate::error::error_chain(&e),
            fix: userns_fix(),
        },
    }
}

/// Whether the running cairn binary carries a setuid or setgid bit. cairn
/// must not: its namespaces are meant for an ordinary user, and a
/// privileged cairn would mount on their behalf. `cairn run` refuses to
/// run then, and `cairn check` says so.
pub fn binary_is_setuid() -> std::io::Result<bool> {
    Ok(fs::metadata("/proc/self/exe")?.permissions().mode() & 0o6000 != 0)
}

fn check_setuid() -> Status {
    match binary_is_setuid() {
        Ok(true) => Status::Missing {
            why: "the cairn binary is setuid or setgid; cairn refuses to run".into(),
            fix: "chmod ug-s on the cairn binary (cairn needs no privilege)".into(),
        },
        Ok(false) => Status::Ok("cairn is an ordinary (not setuid) binary".into()),
        Err(e) => Status::Missing {
            why: format!("stat /proc/self/exe: {e}"),
            fix: "mount /proc".into(),
        },
    }
}

fn check_fuse() -> Status {
    match fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(_) => Status::Ok("/dev/fuse opens read-write".into()),
        Err(e) => Status::Missing {
            why: format!("open /dev/fuse: {e}"),
            fix: "modprobe fuse and make /dev/fuse mode 0666 (Debian: apt install fuse3); squashfs images need it when not root".into(),
        },
    }
}

fn check_loop(root: bool) -> Status {
    if !root {
        return Status::NotApplicable(
            "only root mounts squashfs with the kernel (loop devices)".into(),
        );
    }
    if Path::new("/dev/loop-control").exists() {
        Status::Ok("/dev/loop-control present".into())
    } else {
        Status::Missing {
            why: "no /dev/loop-control".into(),
            fix: "modprobe loop".into(),
        }
    }
}

fn check_squashfs(root: bool) -> Status {
    if !root {
        return Status::NotApplicable("only root mounts squashfs with the kernel".into());
    }
    let listed = fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some("squashfs"))
    });
    let release = read_sysctl("/proc/sys/kernel/osrelease").unwrap_or_default();
    let module = ["squashfs.ko", "squashfs.ko.xz", "squashfs.ko.zst"]
        .iter()
        .any(|m| Path::new(&format!("/lib/modules/{release}/kernel/fs/squashfs/{m}")).exists());
    if listed {
        Status::Ok("squashfs in /proc/filesystems".into())
    } else if module {
        Status::Ok("squashfs module available (loaded on first mount)".into())
    } else {
        Status::Missing {
            why: "the kernel has no squashfs filesystem".into(),
            fix: "modprobe squashfs (CONFIG_SQUASHFS); cairn falls back to FUSE".into(),
        }
    }
}

fn check_overlay() -> Status {
    match probe::overlay_in_user_namespace() {
        Ok(()) => Status::Ok("overlayfs mounts in a user namespace (--writable-tmpfs)".into()),
        Err(e) => Status::Missing {
            why: crate::error::error_chain(&e),
            fix: "Linux >= 5.11 with overlayfs (modprobe overlay); only --writable-tmpfs needs it"
                .into(),
        },
    }
}

fn check_subuid(uid: u32) -> Status {
    let name = crate::sys::process::getpwuid(uid)
        .map(|p| p.0)
        .unwrap_or_default();
    let newuidmap = [
        "/usr/bin/newuidmap",
        "/bin/newuidmap",
        "/usr/sbin/newuidmap",
    ]
    .iter()
    .any(|p| Path::new(p).exists());
    let has_range = fs::read_to_string("/etc/subuid").is_ok_and(|t| {
        t.lines().any(|l| {
            let owner = l.split(':').next().unwrap_or_default();
            owner == name || owner == uid.to_string()
        })
    });
    let text = format!(
        "newuidmap {}, /etc/subuid range {}; cairn does not need them (it maps only your own ids)",
        if newuidmap { "installed" } else { "absent" },
        if has_range { "present" } else { "absent" }
    );
    Status::NotApplicable(text)
}

pub fn execute(_args: CheckArgs) -> anyhow::Result<i32> {
    let uid = crate::sys::process::geteuid();
    let root = uid == 0;
    let checks = [
        Check {
            name: "user namespaces",
            essential: true,
            status: check_userns(),
        },
        Check {
            name: "not setuid",
            essential: true,
            status: check_setuid(),
        },
        Check {
            name: "/dev/fuse",
            essential: false,
            status: check_fuse(),
        },
        Check {
            name: "loop devices",
            essential: false,
            status: check_loop(root),
        },
        Check {
            name: "kernel squashfs",
            essential: false,
            status: check_squashfs(root),
        },
        Check {
            name: "overlayfs in a user namespace",
            essential: false,
            status: check_overlay(),
        },
        Check {
            name: "newuidmap/subuid",
            essential: false,
            status: check_subuid(uid),
        },
    ];
    let mut can_run = true;
    for check in &checks {
        match &check.status {
            Status::Ok(text) => println!("ok       {:<30} {text}", check.name),
            Status::NotApplicable(text) => println!("n/a      {:<30} {text}", check.name),
            Status::Missing { why, fix } => {
                if check.essential {
                    can_run = false;
                }
                println!("MISSING  {:<30} {why}", check.name);
                println!("         {:<30} admin: {fix}", "");
            }
        }
    }
    if can_run {
        println!("cairn run can work on this host for uid {uid}");
        Ok(0)
    } else {
        println!("cairn run cannot work on this host for uid {uid}");
        Ok(crate::cli::EXIT_CAIRN_FAILED)
    }
}
