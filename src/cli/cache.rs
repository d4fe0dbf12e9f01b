//! `cairn images`, `cairn rm`, `cairn gc`: the local image cache (not implemented yet).

#[derive(Debug, clap::Args)]
pub struct ImagesArgs {}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Name of the cached image to remove.
    pub name: String,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {}

pub fn images(_args: ImagesArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn images is not implemented yet")
}

pub fn rm(_args: RmArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn rm is not implemented yet")
}

pub fn gc(_args: GcArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn gc is not implemented yet")
}
