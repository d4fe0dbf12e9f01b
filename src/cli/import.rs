//! `cairn import SRC -o OUT.sqfs`: flatten an OCI image (layout, archive,
//! rootfs tarball or directory) into one squashfs file in one pass. The
//! output appears only when everything was verified and written (the writer
//! works on a temporary file beside it and removes it on failure).

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, bail};

use super::settings::HostEnv;
use crate::image::cache::store_import;
use crate::image::digest::Digest;
use crate::image::import::{Progress, flatten_into};
use crate::image::source::resolve_source;
use crate::image::spec::{ImageSource, PlatformSpec};
use crate::squashfs::writer::Writer;

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// oci:DIR[:TAG|@DIGEST], oci-archive:FILE[:TAG], docker-archive:FILE,
    /// tar:FILE (plain, gzip or zstd) or dir:DIR.
    pub source: String,
    /// The squashfs file to write (replaced atomically).
    #[arg(short, long, required_unless_present = "name", conflicts_with = "name")]
    pub output: Option<PathBuf>,
    /// Store the image in the local cache under NAME (`cairn run NAME`).
    #[arg(long)]
    pub name: Option<String>,
    /// The platform to pick from a multi-platform index: os/arch[/variant].
    #[arg(long)]
    pub platform: Option<String>,
    #[command(flatten)]
    pub compression: super::squash::CompressionArgs,
}

/// A progress bar on a terminal: layers and uncompressed bytes.
struct Bar(indicatif::ProgressBar);

impl Progress for Bar {
    fn layer(&self, number: usize, total: usize, label: &str) {
        let short = label
            .strip_prefix("sha256:")
            .map_or(label, |h| &h[..h.len().min(12)]);
        self.0
            .set_message(format!("layer {number}/{total} {short}"));
    }

    fn bytes(&self, total: u64) {
        self.0.set_position(total);
    }
}

pub fn execute(args: ImportArgs, env: &HostEnv) -> anyhow::Result<i32> {
    // --name: write into a locked staging slot of the cache, then publish
    // it under the name (the image is stored by its manifest digest).
    let cache_slot = match &args.name {
        Some(_) => {
            let cache = super::config::cache(env)?;
            let slot = cache.import_slot()?;
            Some((cache, slot))
        }
        None => None,
    };
    let output = match (&args.output, &cache_slot) {
        (Some(o), _) => o.clone(),
        (None, Some((_, slot))) => slot.path.clone(),
        (None, None) => bail!("cairn import needs -o OUT.sqfs or --name NAME"),
    };
    let source = ImageSource::parse(&args.source)?;
    let platform = args
        .platform
        .as_deref()
        .map(PlatformSpec::parse)
        .transpose()?;
    let source_date_epoch = env.source_date_epoch();
    let options = args.compression.writer_options(source_date_epoch)?;
    let image = resolve_source(&source, platform.as_ref())
        .with_context(|| format!("cannot import {source}"))?;
    let mut writer = Writer::create(&output, options)
        .with_context(|| format!("cannot write {}", output.display()))?;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {msg} {bytes} ({bytes_per_sec}) {elapsed}",
        ) {
            bar.set_style(style);
        }
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Bar(bar)
    });
    let progress: &dyn Progress = match &bar {
        Some(b) => b,
        None => &crate::image::import::NoProgress,
    };
    // cairn's own entries (mount points, /.cairn) get a fixed mtime, so the
    // same image always gives the same bytes.
    let mtime = source_date_epoch.unwrap_or(0);
    let flattened = flatten_into(&image, &mut writer, progress, mtime);
    if let Some(b) = &bar {
        b.0.finish_and_clear();
    }
    // On error the writer is dropped here, which removes its temporary file.
    let summary = flattened.with_context(|| format!("cannot import {source}"))?;
    let written = writer
        .finish()
        .with_context(|| format!("cannot write {}", output.display()))?;
    tracing::info!(
        layers = summary.layers,
        added = ?summary.added_paths,
        "imported {source}"
    );
    let output = match (cache_slot, &args.name) {
        (Some((cache, slot)), Some(name)) => {
            let digest = image
                .meta()
                .manifest_digest
                .as_deref()
                .and_then(|d| Digest::parse(d).ok());
            store_import(&cache, slot, name, digest, &source.to_string())
                .with_context(|| format!("cannot store {source} in the cache as {name}"))?
        }
        _ => output,
    };
    println!(
        "{}: {} layers, {} inodes, {} bytes",
        output.display(),
        summary.layers,
        written.inodes,
        written.bytes
    );
    Ok(0)
}
