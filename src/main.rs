//! The `sparklet` command: parses the command line, sets up logging and runs
//! the job until Ctrl-C or SIGTERM.
//!
//! An error ends the process with exit code 1 and one `sparklet: ...` line on
//! stderr: the error and each cause once, no backtrace (a panic, which is a
//! bug, still prints one with `RUST_BACKTRACE=1`).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

mod allocator;
mod demo;
mod tools;

use anyhow::Context;
use clap::Parser;
use sparklet::cli::{Cli, Command, LogFormat};

/// How long blocking Kafka calls may keep the process alive after the run
/// ended (e.g. a start-up check interrupted by Ctrl-C).
const EXIT_GRACE: Duration = Duration::from_millis(500);

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    let format = cli.log_format;
    init_logging(format);
    raise_open_files_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return report(anyhow::Error::new(e).context("starting the async runtime"), format),
    };
    let result = runtime.block_on(run(cli));
    runtime.shutdown_timeout(EXIT_GRACE);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(e, format),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let config = sparklet::Config::try_from(*args)?;
            let summary = sparklet::run(config, shutdown_signal()).await?;
            tracing::info!(batches = summary.batches, output_rows = summary.output_rows, "stopped");
        }
        Command::Demo(args) => demo::run(args, shutdown_signal()).await.context("demo failed")?,
        Command::Setup(args) => print!("{}", sparklet::admin::setup(args).await?),
        Command::Check(args) => {
            let (text, ok) = sparklet::admin::check(args).await;
            print!("{text}");
            anyhow::ensure!(ok, "the job has problems (listed above)");
        }
        Command::Checkpoint(command) => {
            let (text, ok) = sparklet::admin::run(command).await?;
            print!("{text}");
            anyhow::ensure!(ok, "the checkpoint has problems (listed above)");
        }
    }
    Ok(())
}

/// Logs to stderr, filtered by `RUST_LOG`: text with colours only on a
/// terminal and never with `NO_COLOR` set, or one JSON object per line.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn,tokio_postgres=warn".into());
    // Through the progress bar's writer, which keeps a bar (a catch-up run
    // on a terminal) below the log lines.
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(sparklet::ops::progress_bar::Stderr);
    match format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            logs.with_ansi(colour).init()
        }
    }
}

/// Raises the soft limit on open files to the hard one: the usual soft
/// 1,024 is little for Kafka's and Postgres's connections, the checkpoint's
/// files and the HTTP endpoint's clients together (the endpoint takes at
/// most an eighth of the limit; see `http::connections`).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read or write the struct given, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 || limit.rlim_cur >= limit.rlim_max {
        return;
    }
    let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
    // SAFETY: as above.
    match unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } {
        0 => tracing::debug!(from = limit.rlim_cur, to = limit.rlim_max, "raised the open-files limit"),
        _ => tracing::debug!(
            soft = limit.rlim_cur,
            hard = limit.rlim_max,
            cause = %std::io::Error::last_os_error(),
            "could not raise the open-files limit"
        ),
    }
}

/// Prints `sparklet: <error>: <cause>: ...` (a JSON log line with `--log-format
/// json`), each cause once: a cause whose text the message already holds is
/// not repeated.
fn report(error: anyhow::Error, format: LogFormat) -> ExitCode {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    match format {
        LogFormat::Json => tracing::error!(error = %message, "sparklet stopped"),
        LogFormat::Text => eprintln!("sparklet: {message}"),
    }
    ExitCode::FAILURE
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
        // Exiting runs no destructors: the demo's throwaway Postgres, if any, first.
        demo::postgres::stop();
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
