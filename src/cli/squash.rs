//! `cairn squash`: not implemented yet.

#[derive(Debug, clap::Args)]
pub struct SquashArgs {}

pub fn execute(_args: SquashArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn squash is not implemented yet")
}
