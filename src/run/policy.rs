//! Site policy checks on a run (pure): where the image lives, how it is
//! mounted, which host paths may be bound where. Paths are compared by
//! whole components (`/scratch` allows `/scratch/a.sqfs`, not
//! `/scratch2/a.sqfs`) after the caller canonicalised them. A refusal
//! names the policy key, the refused value and the site file.
//!
//! A forbidden bind source is refused as a source and below it; a bind
//! whose source lies ABOVE one (`-b /:/host` over a forbidden `/etc`)
//! would show it too. A user's `-b` like that is refused (they can bind
//! something narrower); the binds cairn makes by default (the host's
//! `/tmp`, `$HOME` with `--home`, `/dev`, `/proc`, `/sys`, the site's binds
//! and hooks) instead get each forbidden path inside masked
//! ([`masked_paths`]): refusing those would fail every run.

use std::path::{Path, PathBuf};

use crate::config::{MountMode, Policy};
use crate::mount::plan::BindMount;
use crate::run::binds::parse_bind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error(
        "image {image} is refused by the site policy image_paths = {allowed} ({site}): it is not under any of them"
    )]
    ImagePath {
        image: PathBuf,
        allowed: String,
        site: String,
    },
    #[error("--mount {asked} is refused by the site policy mount_modes = {allowed} ({site})")]
    MountMode {
        asked: &'static str,
        allowed: String,
        site: String,
    },
    #[error(
        "bind source {src} is refused by the site policy forbidden_bind_sources = {forbidden:?} ({site})"
    )]
    BindSource {
        src: PathBuf,
        forbidden: String,
        site: String,
    },
    #[error(
        "bind source {src} contains {forbidden}, which the site policy forbidden_bind_sources refuses to bind ({site}): bind a directory that does not contain it"
    )]
    BindSourceContains {
        src: PathBuf,
        forbidden: String,
        site: String,
    },
    #[error(
        "bind destination {dst} is refused by the site policy forbidden_bind_destinations = {forbidden:?} ({site})"
    )]
    BindDestination {
        dst: PathBuf,
        forbidden: String,
        site: String,
    },
}

/// `["/a", "/b"]`, for messages.
fn list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The first entry of `roots` that `path` lies under (or is), by whole
/// components.
fn under<'a>(path: &Path, roots: &'a [String]) -> Option<&'a String> {
    roots
        .iter()
        .find(|r| path.starts_with(Path::new(r.as_str())))
}

/// The canonical image path must lie under one of `image_paths` (when any).
pub fn check_image(policy: &Policy, image: &Path) -> Result<(), PolicyError> {
    if policy.image_paths.is_empty() || under(image, &policy.image_paths).is_some() {
        return Ok(());
    }
    Err(PolicyError::ImagePath {
        image: image.to_path_buf(),
        allowed: list(&policy.image_paths),
        site: policy.source(),
    })
}

/// The mount mode to use: an explicit mode the policy refuses is an error;
/// `auto` picks among the allowed ones (only one allowed: that one).
pub fn mount_via(policy: &Policy, asked: MountMode) -> Result<MountMode, PolicyError> {
    let allowed = &policy.mount_modes;
    if allowed.is_empty() {
        return Ok(asked);
    }
    if asked == MountMode::Auto {
        let kernel = allowed.contains(&MountMode::Kernel);
        let fuse = allowed.contains(&MountMode::Fuse);
        return Ok(match (kernel, fuse) {
            (true, false) => MountMode::Kernel,
            (false, true) => MountMode::Fuse,
            _ => MountMode::Auto,
        });
    }
    if allowed.contains(&asked) {
        Ok(asked)
    } else {
        let names: Vec<String> = allowed.iter().map(|m| m.as_str().to_owned()).collect();
        Err(PolicyError::MountMode {
            asked: asked.as_str(),
            allowed: list(&names),
            site: policy.source(),
        })
    }
}

/// The forbidden sources strictly below `src`, by whole components: what
/// a bind of `src` would show.
pub fn forbidden_below<'a>(policy: &'a Policy, src: &Path) -> Vec<&'a str> {
    policy
        .forbidden_bind_sources
        .iter()
        .map(String::as_str)
        .filter(|f| {
            let f = Path::new(f);
            f.starts_with(src) && f != src
        })
        .collect()
}

/// The forbidden source that `src` lies at or under, if any.
pub fn forbidden_source<'a>(policy: &'a Policy, src: &Path) -> Option<&'a str> {
    under(src, &policy.forbidden_bind_sources).map(String::as_str)
}

/// A default bind of the canonical `src` at `dst` inside: each forbidden
/// source below `src` as (host path, where the bind shows it inside), to be
/// masked.
pub fn masked_paths(policy: &Policy, src: &Path, dst: &Path) -> Vec<(PathBuf, PathBuf)> {
    forbidden_below(policy, src)
        .into_iter()
        .filter_map(|f| {
            let host = Path::new(f);
            let rel = host.strip_prefix(src).ok()?;
            Some((host.to_path_buf(), dst.join(rel)))
        })
        .collect()
}

/// A user's bind: its canonical source and its destination inside (both
/// the destination as written and as resolved through the image's
/// symlinks are checked by the caller passing each). A source that
/// contains a forbidden one is refused too.
pub fn check_bind(policy: &Policy, src: &Path, dst: &Path) -> Result<(), PolicyError> {
    check_default_bind(policy, src, dst)?;
    if let Some(inside) = forbidden_below(policy, src).first() {
        return Err(PolicyError::BindSourceContains {
            src: src.to_path_buf(),
            forbidden: (*inside).to_owned(),
            site: policy.source(),
        });
    }
    Ok(())
}

/// A bind cairn makes by default (`--home`): its source may not be (or lie
/// under) a forbidden one, nor its destination; a forbidden source below it
/// is masked instead (see [`masked_paths`]).
pub fn check_default_bind(policy: &Policy, src: &Path, dst: &Path) -> Result<(), PolicyError> {
    if let Some(root) = under(src, &policy.forbidden_bind_sources) {
        return Err(PolicyError::BindSource {
            src: src.to_path_buf(),
            forbidden: root.clone(),
            site: policy.source(),
        });
    }
    if let Some(root) = under(dst, &policy.forbidden_bind_destinations) {
        return Err(PolicyError::BindDestination {
            dst: dst.to_path_buf(),
            forbidden: root.clone(),
            site: policy.source(),
        });
    }
    Ok(())
}

/// Everything `request::prepare` asks of the policy, in one call: the
/// canonical image path, the user's binds (the specs as written, and as
/// checked: canonical source, destination resolved through the image's
/// symlinks), the mount mode. Returns the mount mode to use.
pub fn check_run(
    policy: &Policy,
    image: &Path,
    mount: MountMode,
    specs: &[String],
    checked: &[BindMount],
) -> Result<MountMode, PolicyError> {
    check_image(policy, image)?;
    for (spec, bind) in specs.iter().zip(checked) {
        if let Ok(written) = parse_bind(spec) {
            check_bind(policy, &bind.src, &written.dst)?;
        }
        check_bind(policy, &bind.src, &bind.dst)?;
    }
    mount_via(policy, mount)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            image_paths: vec!["/scratch".into(), "/home/a/.cache/cairn".into()],
            mount_modes: vec![MountMode::Fuse],
            forbidden_bind_sources: vec!["/etc".into(), "/var/run/munge".into()],
            forbidden_bind_destinations: vec!["/opt/site".into()],
            site_file: Some("/etc/cairn/cairn.toml".into()),
            ..Policy::default()
        }
    }

    #[test]
    fn image_paths_match_whole_components() {
        let p = policy();
        assert!(check_image(&p, Path::new("/scratch/a.sqfs")).is_ok());
        assert!(check_image(&p, Path::new("/scratch/deep/er/a.sqfs")).is_ok());
        assert!(check_image(&p, Path::new("/scratch")).is_ok());
        assert!(check_image(&p, Path::new("/home/a/.cache/cairn/images/x.sqfs")).is_ok());
        let err = check_image(&p, Path::new("/scratch2/a.sqfs")).expect_err("scratch2");
        let msg = err.to_string();
        assert!(msg.contains("image_paths"), "{msg}");
        assert!(msg.contains("/scratch2/a.sqfs"), "{msg}");
        assert!(msg.contains("/etc/cairn/cairn.toml"), "{msg}");
        assert!(check_image(&p, Path::new("/")).is_err());
        assert!(check_image(&p, Path::new("/home/a/.cache/cairnx/a")).is_err());
        // No list: anywhere.
        assert!(check_image(&Policy::default(), Path::new("/anything")).is_ok());
    }

    #[test]
    fn mount_modes_refuse_explicit_and_steer_auto() {
        let p = policy();
        assert_eq!(mount_via(&p, MountMode::Auto), Ok(MountMode::Fuse));
        assert_eq!(mount_via(&p, MountMode::Fuse), Ok(MountMode::Fuse));
        let err = mount_via(&p, MountMode::Kernel).expect_err("kernel");
        let msg = err.to_string();
        assert!(
            msg.contains("--mount kernel")
                && msg.contains("mount_modes")
                && msg.contains("cairn.toml"),
            "{msg}"
        );
        let kernel_only = Policy {
            mount_modes: vec![MountMode::Kernel],
            ..Policy::default()
        };
        assert_eq!(
            mount_via(&kernel_only, MountMode::Auto),
            Ok(MountMode::Kernel)
        );
        assert!(mount_via(&kernel_only, MountMode::Fuse).is_err());
        let both = Policy {
            mount_modes: vec![MountMode::Kernel, MountMode::Fuse],
            ..Policy::default()
        };
        for via in [MountMode::Auto, MountMode::Kernel, MountMode::Fuse] {
            assert_eq!(mount_via(&both, via), Ok(via));
            assert_eq!(mount_via(&Policy::default(), via), Ok(via));
        }
    }

    #[test]
    fn bind_sources_and_destinations_by_component() {
        let p = policy();
        assert!(check_bind(&p, Path::new("/etcetera"), Path::new("/x")).is_ok());
        assert!(check_bind(&p, Path::new("/var/run/munged"), Path::new("/x")).is_ok());
        let err = check_bind(&p, Path::new("/etc/shadow"), Path::new("/x")).expect_err("etc");
        assert!(
            matches!(&err, PolicyError::BindSource { forbidden, .. } if forbidden == "/etc"),
            "{err:?}"
        );
        assert!(err.to_string().contains("forbidden_bind_sources"), "{err}");
        assert!(check_bind(&p, Path::new("/etc"), Path::new("/x")).is_err());
        let err = check_bind(&p, Path::new("/data"), Path::new("/opt/site/lib")).expect_err("dst");
        assert!(
            err.to_string().contains("forbidden_bind_destinations"),
            "{err}"
        );
        assert!(check_bind(&p, Path::new("/data"), Path::new("/opt/sites")).is_ok());
    }

    #[test]
    fn a_user_bind_above_a_forbidden_source_is_refused() {
        let p = policy();
        for src in ["/", "/var", "/var/run"] {
            let err = check_bind(&p, Path::new(src), Path::new("/host")).expect_err(src);
            assert!(
                matches!(&err, PolicyError::BindSourceContains { forbidden, .. }
                    if forbidden == if src == "/" { "/etc" } else { "/var/run/munge" }),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(
                msg.contains("forbidden_bind_sources") && msg.contains("cairn.toml"),
                "{msg}"
            );
        }
        // Not above by whole components: /var/run/mun is no ancestor.
        assert!(check_bind(&p, Path::new("/var/run/mun"), Path::new("/x")).is_ok());
        // A default bind is not refused for it, only for being forbidden.
        assert!(check_default_bind(&p, Path::new("/"), Path::new("/host")).is_ok());
        assert!(check_default_bind(&p, Path::new("/etc/x"), Path::new("/x")).is_err());
        let err = check_run(
            &p,
            Path::new("/scratch/a.sqfs"),
            MountMode::Auto,
            &["/:/host".into()],
            &[BindMount {
                src: "/".into(),
                dst: "/host".into(),
                ..BindMount::default()
            }],
        )
        .expect_err("-b /:/host");
        assert!(matches!(err, PolicyError::BindSourceContains { .. }));
    }

    #[test]
    fn masks_map_forbidden_sources_below_a_default_bind_inside() {
        let p = policy();
        assert_eq!(
            masked_paths(&p, Path::new("/"), Path::new("/host")),
            vec![
                (PathBuf::from("/etc"), PathBuf::from("/host/etc")),
                (
                    PathBuf::from("/var/run/munge"),
                    PathBuf::from("/host/var/run/munge")
                ),
            ]
        );
        assert_eq!(
            masked_paths(&p, Path::new("/var/run"), Path::new("/run")),
            vec![(PathBuf::from("/var/run/munge"), PathBuf::from("/run/munge"))]
        );
        // The source itself or a sibling: nothing to mask.
        assert!(masked_paths(&p, Path::new("/etc"), Path::new("/etc")).is_empty());
        assert!(masked_paths(&p, Path::new("/var/run/mun"), Path::new("/m")).is_empty());
        assert!(masked_paths(&Policy::default(), Path::new("/"), Path::new("/h")).is_empty());
        assert_eq!(forbidden_source(&p, Path::new("/etc/ssh")), Some("/etc"));
        assert_eq!(forbidden_source(&p, Path::new("/")), None);
    }

    #[test]
    fn check_run_checks_the_resolved_destination_too() {
        let p = policy();
        let bind = BindMount {
            src: "/data".into(),
            dst: "/opt/site/x".into(),
            ..BindMount::default()
        };
        // Written as /mnt/link, resolved (image symlink) to /opt/site/x.
        let err = check_run(
            &p,
            Path::new("/scratch/a.sqfs"),
            MountMode::Auto,
            &["/data:/mnt/link".into()],
            &[bind],
        )
        .expect_err("resolved");
        assert!(matches!(err, PolicyError::BindDestination { .. }));
        assert_eq!(
            check_run(&p, Path::new("/scratch/a.sqfs"), MountMode::Auto, &[], &[]),
            Ok(MountMode::Fuse)
        );
        assert!(check_run(&p, Path::new("/scratch2/a.sqfs"), MountMode::Auto, &[], &[]).is_err());
    }
}
