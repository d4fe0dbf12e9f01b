//! Command-line front end: one file per subcommand, each with a clap `Args`
//! struct (the raw arguments) and an `execute` function that validates them
//! and calls the library. This is the binary's edge, so it is the one place
//! that uses `anyhow`; library modules return their own `thiserror` enums.

use clap::{Parser, Subcommand};

pub mod build;
pub mod cache;
pub mod check;
pub mod config;
pub mod import;
pub mod inspect;
pub mod pull;
pub mod push;
pub mod run;
pub mod settings;
pub mod squash;
pub mod unsquash;
pub mod warm;

/// cairn itself failed: bad option, bad image, setup error.
pub const EXIT_CAIRN_FAILED: i32 = 125;
/// The job's command exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;
/// The job's command was not found.
pub const EXIT_NOT_FOUND: i32 = 127;

/// An error that must end cairn with a specific exit code instead of 125,
/// e.g. the job's command could not be found (127) or executed (126).
#[derive(Debug, thiserror::Error)]
#[error("{error:#}")]
pub struct ExitCodeError {
    pub code: i32,
    pub error: anyhow::Error,
}

/// The exit code for an error that reached `main`: the code carried by an
/// [`ExitCodeError`] anywhere in the chain, else 125.
pub fn exit_code_of(err: &anyhow::Error) -> i32 {
    err.chain()
        .find_map(|e| e.downcast_ref::<ExitCodeError>().map(|c| c.code))
        .unwrap_or(EXIT_CAIRN_FAILED)
}

#[derive(Debug, Parser)]
#[command(
    name = "cairn",
    version,
    about = "Run HPC jobs in flattened squashfs container images, unprivileged",
    propagate_version = true
)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); CAIRN_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

// `defer`: a subcommand's arguments are built only when it is the one
// parsed. Building all sixteen argument sets was about a tenth of a warm
// `cairn run`'s own time (allocations and first-touch page faults before
// the run even starts); help and errors build what they show.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// Run a command in an image (squashfs file, directory or cached name).
    Run(run::RunArgs),
    /// Flatten an OCI image (layout, archive, tarball, directory) into one squashfs file.
    Import(import::ImportArgs),
    /// Pull an image from a registry into the cache (or a file) and flatten it.
    Pull(pull::PullArgs),
    /// Push an image of the cache to a registry, as a one-layer OCI image.
    Push(push::PushArgs),
    /// Build an image from a Dockerfile, unprivileged, into the cache or a file.
    Build(build::BuildArgs),
    /// List or prune what `cairn build` keeps between builds.
    BuildCache(build::BuildCacheArgs),
    /// Make a squashfs image from a directory.
    Squash(squash::SquashArgs),
    /// Extract a squashfs image into a directory.
    Unsquash(unsquash::UnsquashArgs),
    /// Show an image's config, source layers, size and digest.
    Inspect(inspect::InspectArgs),
    /// List the images in the local cache.
    Images(cache::ImagesArgs),
    /// Remove a name from the local cache.
    Rm(cache::RmArgs),
    /// Remove cached images that no name points at.
    Gc(cache::GcArgs),
    /// Can this host run cairn? Says what is missing and what to do about it.
    Check(check::CheckArgs),
    /// The site and user configuration: `config show [--json]`.
    Config(config::ConfigArgs),
    /// List your warm mounts on this node (images kept mounted for the next run).
    Ps(warm::PsArgs),
    /// End warm mounts: of IMAGE, or --all of yours on this node.
    Stop(warm::StopArgs),
}

impl Cli {
    /// Parses `args` (argv, program name first) once: the values, and for
    /// `run` where its environment options were given
    /// ([`run::EnvIndices`]), which clap's derived struct does not keep.
    pub fn try_parse_from_ordered<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().try_get_matches_from(args)?;
        // As clap's own `try_parse_from` does: render the error against
        // the command, so it reads like any other usage error.
        let mut cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut Cli::command()))?;
        if let Command::Run(run) = &mut cli.command
            && let Some(run_matches) = matches.subcommand_matches("run")
        {
            run.env_indices = run::EnvIndices::of(run_matches);
        }
        Ok(cli)
    }
}

/// Run the parsed command; `Ok` carries the exit status to return.
/// The environment is read here, once, and handed down (see [`settings`]).
pub fn execute(cli: Cli) -> anyhow::Result<i32> {
    let env = settings::HostEnv::read();
    match cli.command {
        Command::Run(args) => run::execute(args, &env),
        Command::Import(args) => import::execute(args, &env),
        Command::Pull(args) => pull::execute(args, &env),
        Command::Push(args) => push::execute(args, &env),
        Command::Build(args) => build::execute(args, &env),
        Command::BuildCache(args) => build::build_cache(args, &env),
        Command::Squash(args) => squash::execute(args, &env),
        Command::Unsquash(args) => unsquash::execute(args),
        Command::Inspect(args) => inspect::execute(args, &env),
        Command::Images(args) => cache::images(args, &env),
        Command::Rm(args) => cache::rm(args, &env),
        Command::Gc(args) => cache::gc(args, &env),
        Command::Check(args) => check::execute(args),
        Command::Config(args) => config::execute(args, &env),
        Command::Ps(args) => warm::ps(args),
        Command::Stop(args) => warm::stop(args, &env),
    }
}

/// Logs go to stderr; `CAIRN_LOG` (an env-filter directive) wins over `-v`.
/// Colours only on a terminal (a batch job's log file or a pipe would get
/// raw escape sequences) and never under `NO_COLOR`.
/// This must not start any thread: namespaces are entered later.
pub fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let (level, directive) = match verbose {
        0 => (LevelFilter::WARN, "warn"),
        1 => (LevelFilter::INFO, "info"),
        2 => (LevelFilter::DEBUG, "debug"),
        _ => (LevelFilter::TRACE, "trace"),
    };
    let ansi = log_colours(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .without_time();
    // An env filter only when CAIRN_LOG asks for one: building it (parsing
    // the directives, its per-callsite state) was ~30 us of every warm run,
    // and a level alone filters the same.
    let _ = match std::env::var_os("CAIRN_LOG") {
        Some(asked) => builder
            .with_env_filter(
                asked
                    .to_str()
                    .and_then(|a| EnvFilter::try_new(a).ok())
                    .unwrap_or_else(|| EnvFilter::new(directive)),
            )
            .try_init(),
        None => builder.with_max_level(level).try_init(),
    };
}

/// Colour the log lines? Only on a terminal, and not when `NO_COLOR` is
/// set to anything but the empty string (no-color.org).
pub fn log_colours(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Write `text` to stdout (`cairn config show`, `cairn ps`); a closed pipe
/// (`| head`) is not an error.
fn print_stdout(text: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(log_colours(true, None));
        assert!(log_colours(true, Some(OsStr::new(""))));
        assert!(!log_colours(true, Some(OsStr::new("1"))));
        assert!(!log_colours(false, None));
        assert!(!log_colours(false, Some(OsStr::new(""))));
    }

    /// clap's own consistency checks, on every (deferred) subcommand.
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// A deferred subcommand parses as before, and `--help` of one still
    /// lists its options.
    #[test]
    fn deferred_subcommands_parse_and_show_their_options() {
        let cli =
            Cli::try_parse_from_ordered(["cairn", "run", "-e", "A=1", "img.sqfs", "--", "true"])
                .expect("parse");
        let Command::Run(run) = cli.command else {
            panic!("not a run: {:?}", cli.command)
        };
        assert_eq!(run.command, ["true"]);
        let help = Cli::try_parse_from_ordered(["cairn", "run", "--help"]).expect_err("help");
        assert!(help.to_string().contains("--bind"), "{help}");
        let bad = Cli::try_parse_from_ordered(["cairn", "pull", "--no-such"]).expect_err("bad");
        assert!(bad.use_stderr());
    }
}
