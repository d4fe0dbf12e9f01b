//! `cairn import`: not implemented yet.

#[derive(Debug, clap::Args)]
pub struct ImportArgs {}

pub fn execute(_args: ImportArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn import is not implemented yet")
}
