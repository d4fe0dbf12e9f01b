//! `cairn push NAME docker://REGISTRY/REPO:TAG`: send an image of the cache
//! (or a squashfs file) to a registry as a one-layer OCI image, with the
//! same credentials, CA and insecure-registry rules as `cairn pull`. The
//! manifest digest goes to stdout; one line per step to stderr (none with
//! `-q`).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::pull::{RegistryArgs, locate_image_arg};
use super::settings::HostEnv;
use crate::image::digest::Digest;
use crate::image::export::ExportedLayer;
use crate::image::push::{PushOptions, PushProgress, QuietPush, push};
use crate::image::registry::reference::RegistryRef;

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// The image: a name in the cache (as `cairn run NAME` takes it) or a
    /// squashfs file.
    pub image: PathBuf,
    /// docker://[HOST[:PORT]/]REPO[:TAG] (`docker://` optional).
    pub reference: String,
    /// No progress output (the manifest digest is still printed).
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// One line per step on stderr.
struct Lines;

impl PushProgress for Lines {
    fn exporting(&self, image: &Path) {
        eprintln!("writing the layer of {}", image.display());
    }
    fn exported(&self, layer: &ExportedLayer) {
        eprintln!(
            "layer {}: {} entries, {} bytes ({} uncompressed)",
            layer.digest, layer.entries, layer.size, layer.tar_size
        );
        if !layer.skipped_sockets.is_empty() {
            eprintln!(
                "left out {} socket(s), which tar cannot hold: /{}",
                layer.skipped_sockets.len(),
                layer.skipped_sockets.join(", /")
            );
        }
    }
    fn remembered(&self, layer: &ExportedLayer) {
        eprintln!(
            "layer {}: as an earlier push of this image wrote it (not written again)",
            layer.digest
        );
    }
    fn uploading(&self, what: &str, digest: &Digest, size: u64) {
        eprintln!("{what} {digest}: uploading {size} bytes");
    }
    fn skipped(&self, what: &str, digest: &Digest) {
        eprintln!("{what} {digest}: already in the registry, skipped");
    }
    fn mounted(&self, what: &str, digest: &Digest, from: &str) {
        eprintln!("{what} {digest}: mounted from {from} of the same registry, not sent");
    }
}

pub fn execute(args: PushArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let shown = args.image.display().to_string();
    let failed = || format!("cannot push {shown} to {}", args.reference);
    let reference = RegistryRef::parse(&args.reference).with_context(failed)?;
    let site = super::config::effective(env, &Default::default()).with_context(failed)?;
    let cache = super::config::cache_of(&site).with_context(failed)?;
    let image = locate_image_arg(&args.image, false, env).with_context(failed)?;
    if image.is_dir() {
        // `cairn run` takes a rootfs directory; a push needs the flattened
        // image (`cairn import dir:DIR --name NAME` makes one).
        bail!(
            "{}: {} is a directory, not a squashfs image (import it first: cairn import dir:DIR --name NAME)",
            failed(),
            image.display()
        );
    }
    let options = PushOptions {
        client: args
            .registry
            .client_options(&reference, env, &site)
            .with_context(failed)?,
    };
    let progress: &dyn PushProgress = if args.quiet { &QuietPush } else { &Lines };
    // A built image has its layers in the build cache: pushed as they are
    // (the base, then one per instruction), not written again as one.
    let built = built_layers(&cache, &image).with_context(failed)?;
    let outcome = push(&cache, &image, built, &reference, &options, progress)
        .with_context(|| format!("cannot push {shown} to docker://{reference}"))?;
    if !args.quiet {
        eprintln!(
            "pushed docker://{reference}: {} blob(s) uploaded, {} mounted from another repository, {} already there",
            outcome.uploaded.len(),
            outcome.mounted.len(),
            outcome.skipped.len()
        );
    }
    println!("{}", outcome.manifest_digest);
    Ok(0)
}

/// The layers of `image` in the build cache, if it is a built image whose
/// layers are all there.
fn built_layers(
    cache: &crate::image::cache::Cache,
    image: &Path,
) -> anyhow::Result<Option<Vec<crate::image::push::BlobLayer>>> {
    let Ok(archive) = crate::squashfs::reader::Archive::open(image) else {
        // push() reports an image it cannot open.
        return Ok(None);
    };
    let Ok(Some(meta)) = crate::image::meta::ImageMeta::from_archive(&archive) else {
        return Ok(None);
    };
    let store = crate::build::store::Store::of(cache);
    store
        .blob_layers(&meta)
        .transpose()
        .context("reading the build cache's layers of the image")
}
