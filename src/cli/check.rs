//! `cairn check`: not implemented yet.

#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

pub fn execute(_args: CheckArgs) -> anyhow::Result<i32> {
    anyhow::bail!("cairn check is not implemented yet")
}
