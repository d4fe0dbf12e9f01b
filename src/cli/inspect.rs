//! `cairn inspect`: not implemented yet.

#[derive(Debug, clap::Args)]
pub struct InspectArgs {}

pub fn execute(_args: InspectArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn inspect is not implemented yet")
}
