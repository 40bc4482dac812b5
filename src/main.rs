//! The `conflux` binary: parse the command line, start logging, run a node or a client command.

use clap::Parser;
use conflux::cli::{self, Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    conflux::telemetry::init(cli.log_format);
    let outcome = match cli.command {
        Command::Serve(config) => serve(*config).await,
        command => cli::run_client(command).await,
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: conflux::config::NodeConfig) -> anyhow::Result<()> {
    let node = conflux::node::start_node(config).await?;
    wait_for_signal().await?;
    node.shutdown().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received, shutting down"),
    }
    Ok(())
}
