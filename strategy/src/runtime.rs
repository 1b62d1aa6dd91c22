//! runtime
/// Flags of `strategy run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {}
/// Entry point.
pub fn main(_a: &RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
