//! The `waymark` binary.
#![forbid(unsafe_code)]

use clap::Parser;
use waymark::cli::{self, Cli, Command, StoreCommand};
use waymark::telemetry;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Kubernetes connections use rustls; pick its crypto provider once, here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Crds => {
            print!("{}", waymark::crd::crds_yaml());
            Ok(())
        }
        Command::Store {
            command: StoreCommand::Copy(args),
        } => {
            telemetry::init_logging(&cli.log, cli.log_format)?;
            cli::copy(args)?;
            Ok(())
        }
        Command::Inspect(args) => {
            // Errors are printed by anyhow; nothing else is logged.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(cli::inspect(args))?;
            Ok(())
        }
        Command::Serve(args) => {
            telemetry::init_logging(&cli.log, cli.log_format)?;
            runtime()?.block_on(cli::serve(args))?;
            Ok(())
        }
        Command::Run(args) => {
            telemetry::init_logging(&cli.log, cli.log_format)?;
            runtime()?.block_on(cli::run(args))?;
            Ok(())
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}
