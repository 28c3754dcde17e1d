use super::GlobalArgs;

/// `repro data ...` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DataCommand {
    /// Download a dataset (or copy it from the mirror) into the data directory.
    Fetch { name: String },
}

pub fn run(_global: &GlobalArgs, _command: &DataCommand) -> anyhow::Result<()> {
    anyhow::bail!("repro data is being written")
}
