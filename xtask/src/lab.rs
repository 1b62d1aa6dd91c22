//! `cargo xtask lab`: the network-namespace lab.
/// Flags.
#[derive(clap::Args)]
pub struct LabArgs {}
/// Runs it.
pub fn run(_a: &LabArgs) -> anyhow::Result<()> {
    anyhow::bail!("not implemented yet")
}
