//! `cairn unsquash`: not implemented yet.

#[derive(Debug, clap::Args)]
pub struct UnsquashArgs {}

pub fn execute(_args: UnsquashArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn unsquash is not implemented yet")
}
