//! `cairn run`: not implemented yet.

#[derive(Debug, clap::Args)]
pub struct RunArgs {}

pub fn execute(_args: RunArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn run is not implemented yet")
}
