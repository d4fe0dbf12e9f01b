//! `cairn images`, `cairn rm NAME`, `cairn gc`: list, unname and sweep the
//! local image cache (`$CAIRN_CACHE`, else the config's `cache_dir`, else
//! `~/.cache/cairn`).

use super::settings::HostEnv;
use crate::image::cache::format_time;

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {
    /// Print only the cached image paths' names and digests, no header.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Name of the cached image to remove.
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {}

pub fn images(args: ImagesArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let cache = super::config::cache(env)?;
    let listed = cache.list()?;
    if !args.quiet {
        println!("{:<50} {:<19} {:>12}  PULLED", "NAME", "DIGEST", "SIZE");
    }
    for l in listed {
        let name = l.name.as_deref().unwrap_or("<none>");
        if args.quiet {
            println!("{name} {}", l.digest);
        } else {
            let short = l.digest.get(..19).unwrap_or(&l.digest);
            println!(
                "{name:<50} {short:<19} {:>12}  {}",
                l.size,
                format_time(l.pulled)
            );
        }
    }
    Ok(0)
}

pub fn rm(args: RmArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let cache = super::config::cache(env)?;
    let record = cache.remove_ref(&args.name)?;
    println!("removed {} ({})", record.name, record.digest);
    Ok(0)
}

pub fn gc(_args: GcArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let cache = super::config::cache(env)?;
    let summary = cache.gc()?;
    let build_bytes = crate::build::store::Store::of(&cache).gc()?;
    for image in &summary.images {
        println!("removed image {image}");
    }
    for temp in &summary.temp {
        println!("removed stale {}", temp.display());
    }
    println!(
        "{} images, {} stale files, {} bytes freed ({} of them unused build layers)",
        summary.images.len(),
        summary.temp.len(),
        summary.bytes + build_bytes,
        build_bytes
    );
    Ok(0)
}
