//! `cairn inspect IMAGE [--json]`: what an image is: its runtime config,
//! the source layers it was flattened from (digests, sizes), and the size
//! and sha256 digest of the image file itself.

use std::fs::File;
use std::io;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::Serialize;

use super::settings::HostEnv;
use crate::image::digest::{Digest, HashingReader};
use crate::image::meta::ImageMeta;
use crate::squashfs::reader::Archive;

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// A squashfs image file or a rootfs directory.
    pub image: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    image: String,
    /// Size of the image file in bytes (absent for a directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// sha256 of the image file (absent for a directory).
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    /// What `cairn import` stored; null for images made otherwise.
    meta: Option<ImageMeta>,
}

pub fn execute(args: InspectArgs, env: &HostEnv) -> anyhow::Result<i32> {
    let path = &super::pull::locate_image_arg(&args.image, false, env)?;
    let report = if path.is_dir() {
        Report {
            image: path.display().to_string(),
            size: None,
            digest: None,
            meta: ImageMeta::from_dir(path)?,
        }
    } else if path.exists() {
        let archive = Archive::open(path)
            .with_context(|| format!("{} is not a readable squashfs image", path.display()))?;
        let meta = ImageMeta::from_archive(&archive)
            .with_context(|| format!("cannot read the metadata of {}", path.display()))?;
        let mut hashing = HashingReader::new(
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        );
        io::copy(&mut hashing, &mut io::sink())
            .with_context(|| format!("cannot read {}", path.display()))?;
        let (digest, size): (Digest, u64) = hashing.finish();
        Report {
            image: path.display().to_string(),
            size: Some(size),
            digest: Some(digest.to_string()),
            meta,
        }
    } else {
        bail!("image {} not found", path.display());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(0)
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "image:       {}", r.image);
    if let Some(size) = r.size {
        let _ = writeln!(s, "size:        {size} bytes");
    }
    if let Some(d) = &r.digest {
        let _ = writeln!(s, "digest:      {d}");
    }
    let Some(m) = &r.meta else {
        let _ = writeln!(s, "metadata:    none (not made by cairn import)");
        return s;
    };
    let _ = writeln!(s, "source:      {}", m.source);
    if let Some(d) = &m.manifest_digest {
        let _ = writeln!(s, "manifest:    {d}");
    }
    if let Some(d) = &m.config_digest {
        let _ = writeln!(s, "config:      {d}");
    }
    if let (Some(os), Some(arch)) = (&m.os, &m.architecture) {
        let v = m
            .variant
            .as_deref()
            .map(|v| format!("/{v}"))
            .unwrap_or_default();
        let _ = writeln!(s, "platform:    {os}/{arch}{v}");
    }
    if let Some(c) = &m.created {
        let _ = writeln!(s, "created:     {c}");
    }
    let c = &m.config;
    if let Some(e) = &c.entrypoint {
        let _ = writeln!(
            s,
            "entrypoint:  {}",
            serde_json::to_string(e).unwrap_or_default()
        );
    }
    if let Some(cmd) = &c.cmd {
        let _ = writeln!(
            s,
            "cmd:         {}",
            serde_json::to_string(cmd).unwrap_or_default()
        );
    }
    if let Some(w) = &c.working_dir {
        let _ = writeln!(s, "workdir:     {w}");
    }
    if let Some(u) = &c.user {
        let _ = writeln!(s, "user:        {u}");
    }
    if !c.env.is_empty() {
        let _ = writeln!(s, "env:");
        for e in &c.env {
            let _ = writeln!(s, "  {e}");
        }
    }
    if !c.labels.is_empty() {
        let _ = writeln!(s, "labels:");
        for (k, v) in &c.labels {
            let _ = writeln!(s, "  {k}={v}");
        }
    }
    let _ = writeln!(s, "layers:      {}", m.layers.len());
    for l in &m.layers {
        let digest = l.digest.as_deref().unwrap_or("-");
        match l.size {
            Some(size) => {
                let _ = writeln!(s, "  {digest} {size} bytes");
            }
            None => {
                let _ = writeln!(s, "  {digest}");
            }
        }
    }
    s
}
