//! `cairn pull docker://REF [-o OUT.sqfs]`: fetch an image from a registry
//! and flatten it into the node-local cache (or a file). Progress bars on a
//! terminal, one line per finished step otherwise, nothing with `-q`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;

use super::settings::HostEnv;
use crate::image::digest::Digest;
use crate::image::import::Progress;
use crate::image::locate::locate_image;
use crate::image::pull::{PullOptions, PullProgress, Quiet, pull};
use crate::image::registry::ClientOptions;
use crate::image::registry::auth::{from_files, parse_creds};
use crate::image::registry::reference::RegistryRef;
use crate::image::spec::PlatformSpec;

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// docker://[HOST[:PORT]/]REPO[:TAG|@sha256:DIGEST] (`docker://` optional).
    pub reference: String,
    /// Write the squashfs here instead of into the cache.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// No progress output.
    #[arg(short, long)]
    pub quiet: bool,
    /// The platform to pick from a multi-platform index: os/arch[/variant].
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
    /// Parallel layer downloads.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
    #[command(flatten)]
    pub compression: super::squash::CompressionArgs,
}

/// How to reach a registry: what `cairn pull` and `cairn push` share.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Registry credentials USER:PASS (else $REGISTRY_AUTH_FILE, ~/.docker/config.json).
    #[arg(long, env = "CAIRN_REGISTRY_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
    /// An extra PEM CA certificate to trust for the registry's TLS.
    #[arg(long, env = "CAIRN_REGISTRY_CA")]
    pub ca: Option<PathBuf>,
    /// Attempts per request on transient network errors.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

impl RegistryArgs {
    /// The client options for `reference`'s registry: `--creds`, else the
    /// auth files' entry for it; `--ca` (or $CAIRN_REGISTRY_CA), else the
    /// site's extra CA; the site's insecure registries; the retries.
    pub fn client_options(
        self,
        reference: &RegistryRef,
        env: &HostEnv,
        site: &crate::config::resolve::Effective,
    ) -> anyhow::Result<ClientOptions> {
        let creds = match &self.creds {
            Some(c) => Some(parse_creds(c)?),
            None => from_files(&env.registry_auth_files(), &reference.registry)?,
        };
        Ok(ClientOptions {
            creds,
            // --ca is the user's choice for this command; otherwise the
            // site's extra CA.
            ca: self
                .ca
                .or_else(|| site.policy.ca_file.as_ref().map(PathBuf::from)),
            insecure_registries: site.policy.insecure_registries.clone(),
            attempts: self.retries.max(1),
            backoff: Duration::from_millis(500),
        })
    }
}

/// What `cairn run IMAGE` and `cairn inspect IMAGE` were given, as a path
/// (see [`locate_image`]); the cache is looked up only for an argument that
/// is not a path.
pub fn locate_image_arg(arg: &Path, pull_missing: bool, env: &HostEnv) -> anyhow::Result<PathBuf> {
    if arg.exists() {
        return Ok(arg.to_path_buf());
    }
    let cache = super::config::cache(env)?;
    Ok(locate_image(arg, pull_missing, Some(&cache))?)
}

fn short(d: &Digest) -> &str {
    &d.hex()[..12]
}

/// One line per finished step (not a terminal).
struct Lines;

impl Progress for Lines {}

impl PullProgress for Lines {
    fn downloading(&self, reference: &str, digest: &Digest, blobs: &[(Digest, u64)]) {
        let total: u64 = blobs.iter().map(|(_, s)| s).sum();
        eprintln!(
            "{reference}: manifest {digest}, {} blobs to fetch ({total} bytes)",
            blobs.len()
        );
    }
    fn blob_done(&self, _index: usize, digest: &Digest, size: u64) {
        eprintln!("blob {digest}: {size} bytes verified");
    }
    fn waiting(&self, reference: &str) {
        eprintln!("{reference}: another cairn is pulling it, waiting");
    }
    fn flattening(&self, layers: usize) {
        eprintln!("flattening {layers} layers");
    }
}

/// Per-blob bars and a total on a terminal.
struct Bars {
    multi: indicatif::MultiProgress,
    bars: Mutex<Vec<indicatif::ProgressBar>>,
    flatten: Mutex<Option<indicatif::ProgressBar>>,
}

impl Progress for Bars {
    fn layer(&self, number: usize, total: usize, label: &str) {
        if let Ok(f) = self.flatten.lock()
            && let Some(bar) = f.as_ref()
        {
            let short = label
                .strip_prefix("sha256:")
                .map_or(label, |h| &h[..h.len().min(12)]);
            bar.set_message(format!("flattening layer {number}/{total} {short}"));
        }
    }
    fn bytes(&self, total: u64) {
        if let Ok(f) = self.flatten.lock()
            && let Some(bar) = f.as_ref()
        {
            bar.set_position(total);
        }
    }
}

impl PullProgress for Bars {
    fn downloading(&self, _reference: &str, _digest: &Digest, blobs: &[(Digest, u64)]) {
        let style = indicatif::ProgressStyle::with_template(
            "{msg:20} {bar:30} {bytes:>10}/{total_bytes:10} {bytes_per_sec}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        let total: u64 = blobs.iter().map(|(_, s)| s).sum();
        let mut bars = Vec::new();
        for (d, size) in blobs {
            let bar = self.multi.add(indicatif::ProgressBar::new(*size));
            bar.set_style(style.clone());
            bar.set_message(short(d).to_owned());
            bars.push(bar);
        }
        let all = self.multi.add(indicatif::ProgressBar::new(total));
        all.set_style(style);
        all.set_message("total");
        bars.push(all);
        if let Ok(mut b) = self.bars.lock() {
            *b = bars;
        }
    }
    fn received(&self, index: usize, bytes: u64) {
        if let Ok(bars) = self.bars.lock() {
            if let Some(bar) = bars.get(index) {
                bar.set_position(bytes);
            }
            if let Some(total) = bars.last() {
                let sum: u64 = bars[..bars.len() - 1].iter().map(|b| b.position()).sum();
                total.set_position(sum);
            }
        }
    }
    fn blob_done(&self, index: usize, _digest: &Digest, _size: u64) {
        if let Ok(bars) = self.bars.lock()
            && let Some(bar) = bars.get(index)
        {
            bar.finish();
        }
    }
    fn waiting(&self, reference: &str) {
        let _ = self
            .multi
            .println(format!("{reference}: another cairn is pulling it, waiting"));
    }
    fn flattening(&self, _layers: usize) {
        // Downloads go on while the flatten runs: the bars stay live.
        let bar = self.multi.add(indicatif::ProgressBar::new_spinner());
        if let Ok(style) =
            indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
        {
            bar.set_style(style);
        }
        bar.enable_steady_tick(Duration::from_millis(200));
        if let Ok(mut f) = self.flatten.lock() {
            *f = Some(bar);
        }
    }
}

impl Bars {
    fn clear(&self) {
        if let Ok(f) = self.flatten.lock()
            && let Some(bar) = f.as_ref()
        {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

pub fn execute(args: PullArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let reference = RegistryRef::parse(&args.reference)?;
    let platform = args
        .platform
        .as_deref()
        .map(PlatformSpec::parse)
        .transpose()?;
    let source_date_epoch = env.source_date_epoch();
    let writer = args.compression.writer_options(source_date_epoch)?;
    let site = super::config::effective(env, &Default::default())?;
    let cache = super::config::cache_of(&site)?;
    let options = PullOptions {
        platform,
        client: args.registry.client_options(&reference, env, &site)?,
        jobs: args.jobs,
        output: args.output,
        writer,
        mtime: source_date_epoch.unwrap_or(0),
    };
    let bars = (!args.quiet && std::io::stderr().is_terminal()).then(|| Bars {
        multi: indicatif::MultiProgress::new(),
        bars: Mutex::new(Vec::new()),
        flatten: Mutex::new(None),
    });
    let progress: &dyn PullProgress = match (&bars, args.quiet) {
        (Some(b), _) => b,
        (None, true) => &Quiet,
        (None, false) => &Lines,
    };
    let result = pull(&cache, &reference, &options, progress);
    if let Some(b) = &bars {
        b.clear();
    }
    let outcome = result.with_context(|| format!("cannot pull docker://{reference}"))?;
    if !args.quiet {
        let how = if outcome.fetched {
            format!(
                "{} bytes downloaded in {:.2}s, flattened in {:.2}s",
                outcome.downloaded_bytes,
                outcome.download_time.as_secs_f64(),
                outcome.flatten_time.as_secs_f64()
            )
        } else {
            "already cached".to_owned()
        };
        println!(
            "{} {} {} ({} layers, {how}, {} bytes)",
            outcome.name,
            outcome.digest,
            outcome.path.display(),
            outcome.layers,
            outcome.image_bytes
        );
    }
    Ok(0)
}
