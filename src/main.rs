//! The `waymark` binary.
#![forbid(unsafe_code)]

use clap::Parser;
use waymark::cli::{self, Cli, Command};
use waymark::telemetry;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds => {
            print!("{}", waymark::crd::crds_yaml());
            Ok(())
        }
        Command::Serve(args) => {
            telemetry::init_logging(&cli.log, cli.log_format)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(cli::serve(args))?;
            Ok(())
        }
    }
}
