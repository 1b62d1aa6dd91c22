//! `cargo xtask bench-exchange`: the publisher's maximum rate and pacing error.
/// Flags.
#[derive(clap::Args)]
pub struct BenchArgs {}
/// Runs it.
pub fn run(_a: &BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
