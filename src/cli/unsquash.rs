//! `cairn unsquash IMAGE DIR`: extract a squashfs image into a new directory,
//! like `unsquashfs -d DIR IMAGE`. The extraction (hostile images included)
//! is [`crate::squashfs::extract`]'s.

use std::path::PathBuf;

use anyhow::Context;

use crate::squashfs::extract::extract;

#[derive(Debug, clap::Args)]
pub struct UnsquashArgs {
    /// The squashfs image to extract.
    pub image: PathBuf,
    /// Where to extract it: must not exist yet (or be an empty directory).
    pub dir: PathBuf,
}

pub fn execute(args: UnsquashArgs) -> anyhow::Result<i32> {
    extract(&args.image, &args.dir).with_context(|| {
        format!(
            "cannot unsquash {} into {}",
            args.image.display(),
            args.dir.display()
        )
    })?;
    Ok(0)
}
