//! The `sparklet` command: parses the command line, sets up logging and runs
//! the job until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use sparklet::cli::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rdkafka=warn,tokio_postgres=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config = sparklet::Config::try_from(*args)?;
            let summary = sparklet::run(config, shutdown_signal()).await?;
            tracing::info!(batches = summary.batches, output_rows = summary.output_rows, "stopped");
        }
        Command::Demo(args) => sparklet::demo::run(args).await.context("demo failed")?,
    }
    Ok(())
}

/// A future that resolves on the first Ctrl-C or SIGTERM, so the current
/// batch finishes and commits. The signals are watched by their own task from
/// the start, so a second signal aborts at once, even mid-batch (the next start
/// recovers the batch).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let (first, first_received) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: finishing the current batch (signal again to abort)");
        let _ = first.send(());
        wait_for_signal().await;
        eprintln!("sparklet: second signal, aborting; the next start recovers the batch");
        std::process::exit(130);
    });
    async move {
        let _ = first_received.await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
