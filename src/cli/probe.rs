use super::GlobalArgs;

/// Arguments of `repro probe`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {}

pub fn run(_global: &GlobalArgs, _args: &ProbeArgs) -> anyhow::Result<()> {
    anyhow::bail!("repro probe is being written")
}
