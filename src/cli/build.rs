//! `cairn build [-f Dockerfile] -t NAME [-o OUT.sqfs] CONTEXT`: a
//! Dockerfile to one squashfs image, as an ordinary user (see
//! [`crate::build`]); and `cairn build-cache` to list and prune what the
//! builds keep.
//!
//! A step per line on stderr (`[stage] STEP n/m: ...`, then `CACHED` or
//! its time), a RUN's output (its stdout too) streamed as it runs, a
//! summary at the end; the image's digest alone on stdout. A failed RUN ends the build with status 1 and
//! stores nothing for that step or the image; other failures are 125.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};

use super::ExitCodeError;
use super::settings::HostEnv;
use super::squash::CompressionArgs;
use crate::build::engine::{self, BuildError, BuildOptions, Progress, StepReport};
use crate::build::store::Store;
use crate::image::cache::store_import;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The Dockerfile (default: CONTEXT/Dockerfile).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Store the image in the cache under NAME (run it with `cairn run NAME`).
    #[arg(short = 't', long = "tag", value_name = "NAME")]
    pub tag: Option<String>,
    /// Write the image to this squashfs file (as well as under -t NAME).
    #[arg(short = 'o', long = "output", value_name = "OUT.sqfs")]
    pub output: Option<PathBuf>,
    /// A build argument: K=V, or K to take V from the environment.
    #[arg(long = "build-arg", value_name = "K=V")]
    pub build_arg: Vec<String>,
    /// Build this stage (by its `AS` name) instead of the last.
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,
    /// Run every instruction again (the results still refresh the cache).
    #[arg(long)]
    pub no_cache: bool,
    /// No step lines or summary (a RUN's own output still shows).
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub compression: CompressionArgs,
    /// The build context: the directory COPY and ADD read from.
    pub context: PathBuf,
}

/// Step lines on stderr.
struct Lines {
    quiet: bool,
}

impl Progress for Lines {
    fn step(&self, stage: usize, number: usize, total: usize, text: &str) {
        if !self.quiet {
            eprintln!("[stage {stage}] STEP {number}/{total}: {text}");
        }
    }
    fn done(&self, report: &StepReport) {
        if self.quiet {
            return;
        }
        // Stages without each other's results are built side by side: a
        // step's end names its step, as its start does.
        let step = format!("[stage {}] STEP {}", report.stage, report.number);
        if report.ran {
            eprintln!("{step}: done in {:.2}s", report.seconds);
        } else if report.cached && !is_config_only(&report.text) {
            eprintln!("{step}: CACHED");
        }
    }
    fn note(&self, text: &str) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}

/// Instructions that only change the config: never run, never "cached".
fn is_config_only(text: &str) -> bool {
    let word = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase();
    !matches!(word.as_str(), "RUN" | "COPY" | "ADD" | "WORKDIR")
}

fn build_args(args: &[String], env: &HostEnv) -> anyhow::Result<Vec<(String, String)>> {
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            None if !a.is_empty() => Ok((
                a.clone(),
                env.get(a)
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )),
            _ => bail!("--build-arg {a:?}: expected K=V or K"),
        })
        .collect()
}

pub fn execute(args: BuildArgs, env: &HostEnv) -> anyhow::Result<i32> {
    if args.tag.is_none() && args.output.is_none() {
        bail!("cairn build needs -t NAME (into the cache) or -o OUT.sqfs");
    }
    let context = args
        .context
        .canonicalize()
        .with_context(|| format!("build context {}", args.context.display()))?;
    if !context.is_dir() {
        bail!("build context {}: not a directory", args.context.display());
    }
    let dockerfile = args
        .file
        .clone()
        .unwrap_or_else(|| context.join("Dockerfile"));
    let cache = super::config::cache(env)?;
    cache.create()?;
    let mtime = env.source_date_epoch();
    let opts = BuildOptions {
        dockerfile: dockerfile.clone(),
        context,
        build_args: build_args(&args.build_arg, env)?,
        target: args.target.clone(),
        no_cache: args.no_cache,
        exe: std::env::current_exe().context("cannot find the cairn binary")?,
        writer: args.compression.writer_options(mtime)?,
        mtime: mtime.unwrap_or(0),
    };
    let started = Instant::now();
    let progress = Lines { quiet: args.quiet };
    let work = cache.staging("build")?;
    let built = match engine::build(&cache, &opts, &work.dir, &progress) {
        Ok(built) => built,
        Err(e @ BuildError::RunFailed { .. }) => {
            return Err(ExitCodeError {
                code: 1,
                error: anyhow::Error::new(e).context("cannot build"),
            }
            .into());
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot build")),
    };
    let source = format!("build:{}", dockerfile.display());
    let cached = cache.image_path(&built.digest);
    if let Some(tag) = &args.tag {
        match &built.image {
            Some(file) => {
                let slot = cache.import_slot()?;
                std::fs::rename(file, &slot.path).with_context(|| {
                    format!("cannot move the image into {}", slot.path.display())
                })?;
                store_import(&cache, slot, tag, Some(built.digest.clone()), &source)
                    .with_context(|| format!("cannot store the image as {tag}"))?;
            }
            None => cache
                .set_ref(tag, &built.digest)
                .with_context(|| format!("cannot name the image {tag}"))?,
        }
    }
    if let Some(out) = &args.output {
        let from: &Path = match (&args.tag, &built.image) {
            (None, Some(file)) => file,
            _ => &cached,
        };
        write_output(from, out)?;
    }
    if !args.quiet {
        let ran = built.steps.iter().filter(|s| s.ran).count();
        let hits = built
            .steps
            .iter()
            .filter(|s| s.cached && !is_config_only(&s.text))
            .count();
        eprintln!(
            "{} steps: {ran} ran, {hits} from the cache; {} layers; {:.2}s{}",
            built.steps.len(),
            built.meta.layers.len(),
            started.elapsed().as_secs_f64(),
            if built.image.is_none() {
                " (the image was already built)"
            } else {
                ""
            }
        );
        if let Some(tag) = &args.tag {
            eprintln!("stored as {tag}");
        }
    }
    println!("{}", built.digest);
    Ok(0)
}

/// Copies the image to `out` through a temporary file beside it, so `out`
/// is never half-written.
fn write_output(from: &Path, out: &Path) -> anyhow::Result<()> {
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = std::fs::copy(from, &temp).and_then(|_| std::fs::rename(&temp, out));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e).with_context(|| format!("cannot write {}", out.display()));
    }
    Ok(())
}

#[derive(Debug, clap::Args)]
pub struct BuildCacheArgs {
    #[command(subcommand)]
    pub command: Option<BuildCacheCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum BuildCacheCommand {
    /// List the cached build steps (the default).
    Ls,
    /// Remove cached steps (all, or those older than --older-than) and the
    /// layers no remaining step uses.
    Prune {
        /// e.g. 7d, 12h, 30m; without it everything goes.
        #[arg(long, value_name = "DUR", value_parser = crate::config::duration::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

pub fn build_cache(args: BuildCacheArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let cache = super::config::cache(env)?;
    let store = Store::of(&cache);
    match args.command.unwrap_or(BuildCacheCommand::Ls) {
        BuildCacheCommand::Ls => {
            let steps = store.steps();
            println!(
                "{:<14} {:>12} {:>8}  INSTRUCTION",
                "KEY", "LAYER", "SECONDS"
            );
            for (key, record) in &steps {
                let size = record
                    .layer
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |l| l.size.to_string());
                let text: String = record.instruction.chars().take(60).collect();
                println!(
                    "{:<14} {size:>12} {:>8.2}  {text}",
                    key.get(..12).unwrap_or(key),
                    record.seconds
                );
            }
            println!(
                "{} steps, {} bytes of layers in {}",
                steps.len(),
                store.layer_bytes(),
                store.root().display()
            );
        }
        BuildCacheCommand::Prune { older_than } => {
            let before = match older_than {
                Some(age) => crate::image::cache::now().saturating_sub(age.as_secs()),
                None => u64::MAX,
            };
            let (steps, bytes) = store.prune(before)?;
            println!("removed {steps} steps and {bytes} bytes of layers");
        }
    }
    Ok(0)
}
