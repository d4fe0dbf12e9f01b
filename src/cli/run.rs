//! `cairn run [OPTIONS] IMAGE [--] [CMD [ARG...]]`: the clap arguments, their
//! translation into `run::request::RunOptions` (keeping the environment
//! options in command-line order, filling the defaults, edits and policy
//! from the site and user config), and the exit-code mapping of failures.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::settings::HostEnv;
use crate::cli::ExitCodeError;
use crate::config::duration::parse_duration;
use crate::config::{self, resolve::CommandLine};
use crate::run::launch;
use crate::run::request::{self, Caller, EnvOption, RunOptions};
use crate::run::timings::Timings;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NetMode {
    /// The host's network namespace (default; MPI interconnects need it).
    Host,
    /// A new network namespace with only loopback, up.
    None,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Bind a host path (read-write unless :ro); DST must exist in the image.
    /// In SRC and DST, write \: for a ':' and \\ for a backslash.
    #[arg(short = 'b', long = "bind", value_name = "SRC[:DST[:ro]]")]
    pub bind: Vec<String>,
    /// Bind $HOME at the same path.
    #[arg(long)]
    pub home: bool,
    /// A fresh tmpfs on /tmp instead of the host's $TMPDIR or /tmp.
    #[arg(long)]
    pub private_tmp: bool,
    /// Working directory inside (default /).
    #[arg(short = 'c', long = "cd", value_name = "DIR")]
    pub cd: Option<PathBuf>,
    /// Set a variable (applied in command-line order with the other env options).
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Set the NAME=VALUE lines of a file.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Remove the variables whose names match a glob (`*` and `?` only).
    #[arg(long = "unset-env", value_name = "GLOB")]
    pub unset_env: Vec<String>,
    /// Remove every variable set so far (host's included).
    #[arg(long = "clean-env", action = clap::ArgAction::Count)]
    pub clean_env: u8,
    /// User id inside (default: the caller's own; 0 gives a root-looking user).
    #[arg(long, value_name = "N")]
    pub uid: Option<u32>,
    /// Group id inside (default: the caller's own).
    #[arg(long, value_name = "N")]
    pub gid: Option<u32>,
    /// A new PID namespace with its own /proc and an init that reaps zombies.
    #[arg(long)]
    pub pid: bool,
    /// host (default) or none: a network namespace with only loopback.
    #[arg(long, value_enum, default_value = "host")]
    pub net: NetMode,
    /// A throw-away tmpfs overlay over the image; writes vanish at exit.
    #[arg(short = 'w', long)]
    pub writable_tmpfs: bool,
    /// Make what one mapped uid cannot do succeed without effect: chown,
    /// setuid and the other id changes, capset, mknod of devices (what
    /// package managers need under `--uid 0 -w`); FIFOs stay real.
    #[arg(long)]
    pub seccomp: bool,
    /// `cairn build`'s RUN: IMAGE is a stage directory written in place.
    #[arg(long, hide = true)]
    pub build_stage: bool,
    /// How a squashfs image is mounted (auto: kernel if allowed; default
    /// from the config's `mount`, else auto).
    #[arg(long, value_enum)]
    pub mount: Option<config::MountMode>,
    /// Worker threads of the FUSE server (default from the config's
    /// `fuse_threads`, else the server's own).
    #[arg(long, value_name = "N")]
    pub fuse_threads: Option<usize>,
    /// Share the namespaces and the mount with the other ranks of this job on
    /// this node (TAG default: from SLURM_JOB_ID+SLURM_STEP_ID or PMIx).
    #[arg(long, value_name = "TAG", num_args = 0..=1, require_equals = true, default_missing_value = "")]
    pub join: Option<String>,
    /// Keep a squashfs image mounted this long after the last job using it
    /// ends, for the next run of it (30, 0.5, 500ms, 30s, 2m; 0: off;
    /// default from the config's `warm_linger` or CAIRN_WARM_LINGER, else 30s).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub warm_linger: Option<Duration>,
    /// Switch on a hook the site config defines (binds, environment, devices).
    #[arg(long = "hook", value_name = "NAME")]
    pub hook: Vec<String>,
    /// A CDI device (vendor.com/class=name) from the specs in /etc/cdi and /var/run/cdi.
    #[arg(long = "device", value_name = "VENDOR/CLASS=NAME")]
    pub device: Vec<String>,
    /// Print a JSON breakdown of setup time (microseconds) to stderr.
    #[arg(long)]
    pub timings: bool,
    /// A squashfs image file (recognised by its magic) or a rootfs directory.
    pub image: PathBuf,
    /// The command and its arguments (default /bin/sh).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<OsString>,
    /// Not an option: where the environment options were given.
    #[arg(skip)]
    pub env_indices: EnvIndices,
}

/// Where each environment option sat among the arguments of the one parse
/// ([`crate::cli::Cli::try_parse_from_ordered`]). Clap keeps each option's
/// values apart; their argument indices say how the kinds interleave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvIndices {
    pub env: Vec<usize>,
    pub env_file: Vec<usize>,
    pub unset_env: Vec<usize>,
    pub clean_env: Vec<usize>,
}

impl EnvIndices {
    /// The indices `run`'s matches hold for each environment option.
    pub fn of(run: &clap::ArgMatches) -> EnvIndices {
        let indices = |id: &str| -> Vec<usize> {
            run.indices_of(id)
                .map(Iterator::collect)
                .unwrap_or_default()
        };
        EnvIndices {
            env: indices("env"),
            env_file: indices("env_file"),
            unset_env: indices("unset_env"),
            clean_env: indices("clean_env"),
        }
    }
}

/// The environment options in the order they were given. Without indices
/// (arguments not parsed by [`crate::cli::Cli::try_parse_from_ordered`])
/// they come kind by kind.
fn env_options(args: &RunArgs) -> Vec<EnvOption> {
    let at = &args.env_indices;
    let by_kind: [(&[usize], Vec<EnvOption>); 4] = [
        (
            &at.env,
            args.env.iter().cloned().map(EnvOption::Env).collect(),
        ),
        (
            &at.env_file,
            args.env_file
                .iter()
                .cloned()
                .map(EnvOption::EnvFile)
                .collect(),
        ),
        (
            &at.unset_env,
            args.unset_env
                .iter()
                .cloned()
                .map(EnvOption::Unset)
                .collect(),
        ),
        (
            &at.clean_env,
            (0..args.clean_env).map(|_| EnvOption::Clean).collect(),
        ),
    ];
    let mut ordered: Vec<(usize, EnvOption)> = Vec::new();
    for (indices, values) in by_kind {
        for (n, value) in values.into_iter().enumerate() {
            ordered.push((indices.get(n).copied().unwrap_or(usize::MAX), value));
        }
    }
    // Stable: values without an index keep their kind-by-kind order.
    ordered.sort_by_key(|(i, _)| *i);
    ordered.into_iter().map(|(_, v)| v).collect()
}

/// `--device` values as container edits, from the CDI specs of the
/// directories the config resolved (`cdi_spec_dirs`, `$CAIRN_CDI_DIRS`)
/// (`/etc/cdi`, `/var/run/cdi`); the hooks cairn skips are warned about.
fn device_edits(
    devices: &[String],
    dirs: &[PathBuf],
) -> anyhow::Result<Vec<crate::run::edits::NamedEdits>> {
    use crate::run::cdi;
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let resolved = cdi::device_edits(devices, dirs)?;
    for warning in &resolved.warnings {
        eprintln!("cairn: warning: {warning}");
    }
    Ok(resolved.edits)
}

/// Refuses a setuid/setgid cairn (see [`super::check::binary_is_setuid`]).
fn refuse_setuid_binary() -> anyhow::Result<()> {
    if super::check::binary_is_setuid().context("stat /proc/self/exe")? {
        let exe = PathBuf::from("/proc/self/exe");
        let path = std::fs::read_link(&exe).unwrap_or(exe);
        anyhow::bail!(
            "refusing to run: the cairn binary {} is setuid or setgid (remove the bit: chmod ug-s)",
            path.display()
        );
    }
    Ok(())
}

pub fn execute(args: RunArgs, host: &HostEnv) -> anyhow::Result<i32> {
    let start = Instant::now();
    refuse_setuid_binary()?;
    let env = host.vars();
    let cli = CommandLine {
        mount: args.mount,
        fuse_threads: args.fuse_threads,
        hooks: args.hook.clone(),
        warm_linger: args.warm_linger,
    };
    let (_, site) = super::config::effective_with_files(env, &cli)?;
    // The cache is only needed (and checked) for an image that is not a
    // path: a name or a reference.
    let cache = if args.image.exists() {
        None
    } else {
        match super::config::cache_of(&site) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!("{}", crate::error::error_chain(e.as_ref()));
                None
            }
        }
    };
    // The user's default binds come first, as if given before the `-b`s.
    let mut binds = site.user_binds();
    binds.extend(args.bind.iter().cloned());
    // join.auto: join when a launcher's ids are there and --join was not
    // given (and not with --pid or --net none, which --join refuses).
    let join = match &args.join {
        Some(tag) => Some(tag.clone()),
        None if site.join_auto.value
            && !args.pid
            && args.net == NetMode::Host
            && crate::ns::join::tag(None, env).is_ok() =>
        {
            Some(String::new())
        }
        None => None,
    };
    let opts = RunOptions {
        image: crate::image::locate::locate_image(&args.image, true, cache.as_ref())?,
        command: args.command.clone(),
        binds,
        home: args.home,
        private_tmp: args.private_tmp,
        cd: args.cd.clone(),
        env: env_options(&args),
        uid: args.uid,
        gid: args.gid,
        pid: args.pid,
        net_none: args.net == NetMode::None,
        writable: args.writable_tmpfs,
        build_stage: args.build_stage,
        timings: args.timings,
        seccomp: args.seccomp,
        mount: site.mount.value,
        join,
        // A build stage gets none of the site's binds, hooks or devices: what
        // they add is the cluster's, not the image's.
        edits: if args.build_stage {
            Vec::new()
        } else {
            let mut edits = site.run_edits()?;
            edits.extend(device_edits(&args.device, site.cdi_spec_dirs())?);
            edits
        },
        policy: site.policy.clone(),
        fuse_threads: site.fuse_threads.value,
        join_linger: Duration::from_millis(site.join_linger_ms.value),
        // --warm-linger is in `cli`: the resolved value already has it.
        warm_linger: site.warm_linger.value,
        // A budget of 0 is "off": the server's store refuses it.
        block_cache: site
            .block_cache
            .value
            .clone()
            .map(|dir| (dir, site.block_cache_mib.value.saturating_mul(1 << 20))),
        secret: None,
    };
    let cwd = std::env::current_dir().context("current directory: cannot read it")?;
    let caller = Caller::current(env.to_vec(), cwd);
    // The per-user secret, only when something will use it (the block
    // store, the names of --join and warm mounts; a few syscalls: one
    // checked handle per component of its directory).
    let secret = (opts.block_cache.is_some() || opts.join.is_some() || !opts.warm_linger.is_zero())
        .then(|| user_secret(env, caller.uid))
        .flatten();
    let block_cache = opts
        .block_cache
        .clone()
        .filter(|(dir, _)| secret.is_some() && store_dir_usable(dir, caller.uid));
    let opts = RunOptions {
        secret,
        block_cache,
        ..opts
    };
    let mut timings = Timings::new(args.timings, start);
    // --join: elect first. A rank that finds a leader enters its namespaces
    // and prepares against the mounted image there, so of all the ranks on
    // a node only the leader opens the image file.
    let leader = match request::join_socket(&opts, &caller)? {
        None => None,
        Some(name) => match launch::join_or_lead(&name, &mut timings).map_err(launch_failed)? {
            launch::Joined::Leader(leader) => Some(leader),
            launch::Joined::Follower => {
                let req = request::prepare(&request::follower_options(&opts), &caller)?;
                timings.mark("prepare");
                return Err(launch_failed(launch::exec_follower(&req, &mut timings)));
            }
        },
    };
    let req = request::prepare(&opts, &caller)?;
    timings.mark("prepare");
    launch::launch(&req, leader, &mut timings).map_err(launch_failed)
}

/// The user's secret from its usual places (see [`crate::trust::secret`]).
fn user_secret(env: &[(OsString, OsString)], uid: u32) -> Option<crate::trust::UserSecret> {
    let var = |k: &str| crate::run::env::lookup(env, k).filter(|v| !v.is_empty());
    let user = var("USER").map(|u| u.to_string_lossy().into_owned());
    let home = var("HOME").map(PathBuf::from);
    let dirs = crate::trust::secret::default_dirs(user.as_deref(), home.as_deref());
    crate::trust::UserSecret::find(&dirs, uid)
}

/// Whether the block store's directory passes the checks of
/// [`crate::trust::OwnDir`], said here, where the user sees it: the FUSE
/// server that uses the store has no stderr. (The server opens it again
/// through its own checked handles; this is not what it relies on.)
fn store_dir_usable(dir: &Path, uid: u32) -> bool {
    match crate::trust::OwnDir::open(dir, uid, true) {
        Ok(_) => true,
        Err(e @ crate::trust::TrustError::Refused { .. }) => {
            tracing::warn!("block store off: {e}");
            false
        }
        Err(e) => {
            tracing::debug!("block store off: {e}");
            false
        }
    }
}

/// A launch failure with the exit code it calls for (125, 126, 127).
fn launch_failed(err: launch::LaunchError) -> anyhow::Error {
    let code = err.exit_code();
    ExitCodeError {
        code,
        error: anyhow::Error::new(err),
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};

    fn run_args(argv: &[&str]) -> RunArgs {
        let cli = Cli::try_parse_from_ordered(argv.iter().copied()).expect("parse");
        match cli.command {
            Command::Run(run) => run,
            other => panic!("not run: {other:?}"),
        }
    }

    #[test]
    fn env_options_keep_command_line_order_across_kinds() {
        let args = run_args(&[
            "cairn",
            "run",
            "-e",
            "A=1",
            "--unset-env",
            "A*",
            "--clean-env",
            "--env-file",
            "f.env",
            "-e",
            "B=2",
            "img",
            "--",
            "-e",
            "C=3",
        ]);
        assert_eq!(
            env_options(&args),
            vec![
                EnvOption::Env("A=1".into()),
                EnvOption::Unset("A*".into()),
                EnvOption::Clean,
                EnvOption::EnvFile("f.env".into()),
                EnvOption::Env("B=2".into()),
            ]
        );
        // What follows the image is the command's, not cairn's.
        assert_eq!(args.command, vec![OsString::from("-e"), "C=3".into()]);
    }

    /// Clap's `Count` action keeps only the index of the last occurrence,
    /// so a repeated `--clean-env` is placed there (as it always was).
    #[test]
    fn a_repeated_clean_env_sits_at_its_last_occurrence() {
        let args = run_args(&[
            "cairn",
            "run",
            "--clean-env",
            "-e",
            "A=1",
            "--clean-env",
            "-e",
            "B=2",
            "img",
        ]);
        assert_eq!(
            env_options(&args),
            vec![
                EnvOption::Env("A=1".into()),
                EnvOption::Clean,
                EnvOption::Env("B=2".into()),
                EnvOption::Clean,
            ]
        );
    }

    #[test]
    fn warm_linger_takes_a_duration_and_refuses_anything_else() {
        let args = run_args(&["cairn", "run", "--warm-linger", "500ms", "img"]);
        assert_eq!(args.warm_linger, Some(Duration::from_millis(500)));
        assert_eq!(run_args(&["cairn", "run", "img"]).warm_linger, None);
        let err = Cli::try_parse_from_ordered(["cairn", "run", "--warm-linger", "soon", "img"])
            .expect_err("not a duration");
        // A usage error (exit 125 from main) naming the option and the value.
        assert!(err.use_stderr());
        let msg = err.to_string();
        assert!(
            msg.contains("--warm-linger") && msg.contains("'soon'") && msg.contains("500ms"),
            "{msg}"
        );
    }

    #[test]
    fn without_indices_the_options_come_kind_by_kind() {
        let mut args = run_args(&["cairn", "run", "--unset-env", "X", "-e", "A=1", "img"]);
        args.env_indices = EnvIndices::default();
        assert_eq!(
            env_options(&args),
            vec![EnvOption::Env("A=1".into()), EnvOption::Unset("X".into())]
        );
    }
}
