//! `cairn pull`: not implemented yet.

#[derive(Debug, clap::Args)]
pub struct PullArgs {}

pub fn execute(_args: PullArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn pull is not implemented yet")
}
