//! `cairn ps [--json]` and `cairn stop [--force] IMAGE|--all`: the caller's
//! warm mounts on this node (see [`crate::ns::warm`]), listed and ended. A
//! warm mount is an image a run left mounted for its linger
//! (`warm_linger`), so that the next run of it starts warm; its helper (the
//! FUSE server, or the kernel mount's holder) answers both commands.
//!
//! Neither command reads the configuration unless `stop` is given a name
//! that is no file (a cached image's name): a Slurm epilog's
//! `cairn stop --all --force` must work whatever the user's config says.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::{Value, json};

use super::EXIT_CAIRN_FAILED;
use super::settings::HostEnv;
use crate::config::duration::format_duration;
use crate::config::resolve::CommandLine;
use crate::image::cache::Cache;
use crate::ns::warm::{self, StopOutcome, WarmError, WarmStatus};

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Machine-readable output: a JSON array, one object per warm mount.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StopArgs {
    /// End the warm mount even while jobs run in it (they keep their view
    /// of the image; the mount goes when they exit).
    #[arg(long)]
    pub force: bool,
    /// Every warm mount of yours on this node.
    #[arg(long, conflicts_with = "image")]
    pub all: bool,
    /// The squashfs image file (or a cached image's name) whose warm mount
    /// to end.
    #[arg(required_unless_present = "all")]
    pub image: Option<PathBuf>,
}

pub fn ps(args: PsArgs) -> anyhow::Result<i32> {
    let mut warm = warm::list();
    sort_for_display(&mut warm);
    let text = if args.json {
        let mut text = serde_json::to_string_pretty(&ps_json(&warm)).context("json output")?;
        text.push('\n');
        text
    } else {
        ps_text(&warm)
    };
    super::print_stdout(&text)?;
    Ok(0)
}

pub fn stop(args: StopArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let warm = warm::list();
    let (label, targets) = match &args.image {
        // --all, nothing warm: nothing to say (an epilog runs it blindly).
        None => (None, warm.iter().collect::<Vec<_>>()),
        Some(arg) => {
            let image = wanted_image(arg, env);
            let targets = matching(&warm, &image);
            if targets.is_empty() {
                eprintln!(
                    "cairn: stop {}: no warm mount of this image on this node",
                    arg.display()
                );
                return Ok(0);
            }
            (Some(arg.display().to_string()), targets)
        }
    };
    let mut failed = false;
    for status in targets {
        let label = label
            .clone()
            .unwrap_or_else(|| status.image.display().to_string());
        let outcome = warm::stop(&status.name, args.force);
        if let Some(message) = stop_report(&label, &outcome) {
            eprintln!("{message}");
            failed = true;
        }
    }
    Ok(if failed { EXIT_CAIRN_FAILED } else { 0 })
}

/// The warm mounts in a stable order: by image, then by helper pid (the
/// sockets' names, which `list` goes by, are keyed hashes).
fn sort_for_display(warm: &mut [WarmStatus]) {
    warm.sort_by(|a, b| a.image.cmp(&b.image).then(a.pid.cmp(&b.pid)));
}

const HEADER: [&str; 6] = ["PID", "JOBS", "IDLE", "LINGER", "MOUNT", "IMAGE"];
/// The columns right-aligned (numbers); the others are left-aligned.
const RIGHT_ALIGNED: [bool; 6] = [true, true, true, true, false, false];

/// `kernel` or `fuse`, as `ps` shows it.
fn mount_kind(status: &WarmStatus) -> &'static str {
    if status.kernel { "kernel" } else { "fuse" }
}

/// `4.2s` (tenths, truncated); `-` while jobs run.
fn idle_text(idle_ms: Option<u64>) -> String {
    match idle_ms {
        Some(ms) => format!("{}.{}s", ms / 1000, ms % 1000 / 100),
        None => "-".to_owned(),
    }
}

/// The text table (pure): the header, then one line per warm mount, the
/// columns padded to their widest cell, two spaces apart.
fn ps_text(warm: &[WarmStatus]) -> String {
    let rows: Vec<[String; 6]> = warm
        .iter()
        .map(|s| {
            [
                s.pid.to_string(),
                s.jobs.to_string(),
                idle_text(s.idle_ms),
                format_duration(std::time::Duration::from_millis(s.linger_ms)),
                mount_kind(s).to_owned(),
                s.image.display().to_string(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 6]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let width = widths[i];
            match (RIGHT_ALIGNED[i], i == cells.len() - 1) {
                // The last column unpadded: no trailing spaces.
                (_, true) => out.push_str(cell),
                (true, false) => out.push_str(&format!("{cell:>width$}")),
                (false, false) => out.push_str(&format!("{cell:<width$}")),
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(HEADER);
    for row in &rows {
        out.push_str(&line(row.each_ref().map(String::as_str)));
    }
    out
}

/// The JSON array (pure): pid, jobs, idle_ms (null while jobs run),
/// linger_ms, mount (`fuse` or `kernel`), image.
fn ps_json(warm: &[WarmStatus]) -> Value {
    Value::Array(
        warm.iter()
            .map(|s| {
                json!({
                    "pid": s.pid,
                    "jobs": s.jobs,
                    "idle_ms": s.idle_ms,
                    "linger_ms": s.linger_ms,
                    "mount": mount_kind(s),
                    "image": s.image.to_string_lossy(),
                })
            })
            .collect(),
    )
}

/// The path IMAGE names, spelt as the helpers report their images
/// (canonical): an existing file's canonical path; else the cached image
/// of that name; else the path made absolute with its directory canonical,
/// so that the warm mount of an image file since removed can still be
/// ended by its old path.
fn wanted_image(arg: &Path, env: &HostEnv) -> PathBuf {
    if let Ok(canonical) = arg.canonicalize() {
        return canonical;
    }
    if let Some(cached) = cached_image(arg, env) {
        return cached.canonicalize().unwrap_or(cached);
    }
    let absolute = match std::env::current_dir() {
        Ok(cwd) => cwd.join(arg),
        Err(_) => arg.to_path_buf(),
    };
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .map_or_else(|_| absolute.clone(), |dir| dir.join(name)),
        _ => absolute,
    }
}

/// The cached image `arg` names, if the configuration names a cache that
/// has it. A config or cache that cannot be read only means "no such
/// name": `stop` then matches the argument as a path. The cache is not
/// [`Cache::verify`]d, which would create it: a name found in it is only
/// compared with the images of the caller's own warm mounts.
fn cached_image(arg: &Path, env: &HostEnv) -> Option<PathBuf> {
    let effective = match super::config::effective(env, &CommandLine::default()) {
        Ok(effective) => effective,
        Err(e) => {
            tracing::debug!("stop: no configuration to find a cache in: {e:#}");
            return None;
        }
    };
    let cache = Cache::at(effective.cache_dir.value?);
    crate::image::locate::locate_image(arg, false, Some(&cache)).ok()
}

/// The warm mounts of `image` (pure). More than one when the file was
/// replaced or rewritten while an older warm mount of it still lingers,
/// or with different `--uid`/`--gid` maps or mount kinds.
fn matching<'a>(warm: &'a [WarmStatus], image: &Path) -> Vec<&'a WarmStatus> {
    warm.iter().filter(|s| s.image == image).collect()
}

/// What to tell the user about one stop (pure); `None`: it went as asked.
fn stop_report(label: &str, outcome: &Result<StopOutcome, WarmError>) -> Option<String> {
    match outcome {
        Ok(StopOutcome::Stopped) => None,
        Ok(StopOutcome::Busy { jobs }) => Some(format!(
            "cairn: stop {label}: {jobs} job(s) still run in it; --force ends the warm mount anyway (running jobs keep their view)"
        )),
        Err(e) if already_gone(e) => None,
        Err(e) => Some(format!(
            "cairn: stop {label}: {}",
            crate::error::error_chain(e)
        )),
    }
}

/// Whether a failed stop found the warm mount already ended, which is
/// what was asked: nobody listens on its name any more (its linger passed
/// between `list` and `stop`), or its helper closed the connection without
/// an answer (it was ending as the request came).
fn already_gone(err: &WarmError) -> bool {
    match err {
        WarmError::Sys { source, .. } => *source == nix::Error::ECONNREFUSED,
        WarmError::Answer { answer, .. } => answer.trim().is_empty(),
        WarmError::Io { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn status(pid: i32, jobs: u32, idle_ms: Option<u64>, kernel: bool, image: &str) -> WarmStatus {
        WarmStatus {
            name: format!("cairn-warm/1000/{pid:x}"),
            pid,
            jobs,
            idle_ms,
            linger_ms: 30_000,
            kernel,
            image: image.into(),
        }
    }

    #[test]
    fn nothing_warm_is_just_the_header_or_an_empty_array() {
        assert_eq!(ps_text(&[]), "PID  JOBS  IDLE  LINGER  MOUNT  IMAGE\n");
        assert_eq!(ps_json(&[]), json!([]));
        assert_eq!(
            serde_json::to_string_pretty(&ps_json(&[])).expect("json"),
            "[]"
        );
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let mut fast = status(12345, 0, Some(4299), false, "/data/app image.sqfs");
        fast.linger_ms = 500;
        let warm = [fast, status(7, 12, None, true, "/scratch/b.sqfs")];
        assert_eq!(
            ps_text(&warm),
            "  PID  JOBS  IDLE  LINGER  MOUNT   IMAGE\n\
             12345     0  4.2s   500ms  fuse    /data/app image.sqfs\n    \
             7    12     -     30s  kernel  /scratch/b.sqfs\n"
        );
    }

    #[test]
    fn idle_is_tenths_of_seconds() {
        assert_eq!(idle_text(None), "-");
        assert_eq!(idle_text(Some(0)), "0.0s");
        assert_eq!(idle_text(Some(99)), "0.0s");
        assert_eq!(idle_text(Some(4200)), "4.2s");
        assert_eq!(idle_text(Some(61_950)), "61.9s");
    }

    #[test]
    fn json_has_the_documented_keys() {
        let warm = [
            status(42, 0, Some(1500), false, "/a.sqfs"),
            status(43, 2, None, true, "/b.sqfs"),
        ];
        assert_eq!(
            ps_json(&warm),
            json!([
                {"pid": 42, "jobs": 0, "idle_ms": 1500, "linger_ms": 30000,
                 "mount": "fuse", "image": "/a.sqfs"},
                {"pid": 43, "jobs": 2, "idle_ms": null, "linger_ms": 30000,
                 "mount": "kernel", "image": "/b.sqfs"},
            ])
        );
    }

    #[test]
    fn display_order_is_image_then_pid() {
        let mut warm = vec![
            status(9, 0, None, false, "/b.sqfs"),
            status(8, 0, None, false, "/b.sqfs"),
            status(10, 0, None, false, "/a.sqfs"),
        ];
        sort_for_display(&mut warm);
        let order: Vec<i32> = warm.iter().map(|s| s.pid).collect();
        assert_eq!(order, vec![10, 8, 9]);
    }

    #[test]
    fn an_image_matches_every_warm_mount_of_its_path_only() {
        let warm = [
            status(1, 0, None, false, "/data/a.sqfs"),
            status(2, 0, None, true, "/data/a.sqfs"),
            status(3, 0, None, false, "/data/a.sqfs.old"),
            status(4, 0, None, false, "/data/b.sqfs"),
        ];
        let pids = |image: &str| -> Vec<i32> {
            matching(&warm, Path::new(image))
                .iter()
                .map(|s| s.pid)
                .collect()
        };
        assert_eq!(pids("/data/a.sqfs"), vec![1, 2]);
        assert_eq!(pids("/data/b.sqfs"), vec![4]);
        assert!(pids("/data/c.sqfs").is_empty());
        assert!(pids("/data").is_empty());
    }

    #[test]
    fn the_image_argument_is_canonical_even_when_the_file_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().canonicalize().expect("canonical");
        std::fs::write(real.join("a.sqfs"), b"x").expect("write");
        std::os::unix::fs::symlink(real.join("a.sqfs"), real.join("link.sqfs")).expect("link");
        let env = HostEnv::from_vars(Vec::new());
        let via = real.join("sub/../link.sqfs");
        std::fs::create_dir(real.join("sub")).expect("mkdir");
        assert_eq!(wanted_image(&via, &env), real.join("a.sqfs"));
        // Removed: its directory canonical, its name as given.
        assert_eq!(
            wanted_image(&real.join("sub/../gone.sqfs"), &env),
            real.join("gone.sqfs")
        );
    }

    #[test]
    fn busy_and_failed_stops_are_reported_gone_ones_are_not() {
        assert_eq!(stop_report("a.sqfs", &Ok(StopOutcome::Stopped)), None);
        assert_eq!(
            stop_report("a.sqfs", &Ok(StopOutcome::Busy { jobs: 2 })).as_deref(),
            Some(
                "cairn: stop a.sqfs: 2 job(s) still run in it; --force ends the warm mount anyway (running jobs keep their view)"
            )
        );
        let refused = WarmError::Sys {
            name: "n".into(),
            step: "connect",
            source: nix::Error::ECONNREFUSED,
        };
        assert_eq!(stop_report("a.sqfs", &Err(refused)), None);
        let unanswered = WarmError::Answer {
            name: "n".into(),
            answer: String::new(),
        };
        assert_eq!(stop_report("a.sqfs", &Err(unanswered)), None);
        let timeout = WarmError::Sys {
            name: "n".into(),
            step: "wait for the answer",
            source: nix::Error::ETIMEDOUT,
        };
        let msg = stop_report("a.sqfs", &Err(timeout)).expect("reported");
        assert!(
            msg.starts_with("cairn: stop a.sqfs: warm mount \"n\": wait for the answer failed: "),
            "{msg}"
        );
        let garbled = WarmError::Answer {
            name: "n".into(),
            answer: "what".into(),
        };
        assert!(stop_report("a.sqfs", &Err(garbled)).is_some());
    }

    fn parse(argv: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from_ordered(argv.iter().copied()).map(|cli| cli.command)
    }

    #[test]
    fn stop_takes_an_image_or_all_but_not_both_nor_neither() {
        match parse(&["cairn", "stop", "--force", "a.sqfs"]) {
            Ok(Command::Stop(s)) => {
                assert!(s.force && !s.all);
                assert_eq!(s.image, Some(PathBuf::from("a.sqfs")));
            }
            other => panic!("{other:?}"),
        }
        match parse(&["cairn", "stop", "--all"]) {
            Ok(Command::Stop(s)) => assert!(s.all && !s.force && s.image.is_none()),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["cairn", "stop"]).is_err());
        assert!(parse(&["cairn", "stop", "--all", "a.sqfs"]).is_err());
        match parse(&["cairn", "ps", "--json"]) {
            Ok(Command::Ps(p)) => assert!(p.json),
            other => panic!("{other:?}"),
        }
    }
}
