//! The `shoal` binary: parses the command line, loads the configuration, sets up
//! logging and hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal::app::{App, Stopped};
use shoal::config::Config;

// glibc's allocator showed up at ~17% of CPU on the `GET /api/me` profile
// (malloc_consolidate, unlink_chunk under multi-threaded churn); mimalloc keeps
// per-thread free lists and is the usual remedy for Rust servers.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "shoal", version, about = "Real-time team workspace backend")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration and print it, secrets masked.
    Check,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Config {
        action: ConfigAction::Check,
    }) = cli.command
    {
        println!("# effective configuration (secrets masked)");
        for (key, value) in config.describe() {
            println!("{key} = {value}");
        }
        return ExitCode::SUCCESS;
    }
    // One id for the logs and the app alike.
    let instance = shoal::instance::Instance::new(config.instance_id.as_deref());
    config.instance_id = Some(instance.id.clone());
    shoal::telemetry::init(&config);

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Some(Command::Migrate) => migrate(config).await.map(|()| ExitCode::SUCCESS),
            _ => serve(config).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "shoal stopped with an error");
            eprintln!("shoal: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let db = shoal::store::Db::connect(&config).await?;
    db.migrate().await?;
    db.close().await;
    tracing::info!("migrations applied");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    use tracing::Instrument;
    // Start-up and signal lines carry the instance id like every other line.
    let span = tracing::info_span!(
        "shoal",
        instance_id = config.instance_id.as_deref().unwrap_or_default()
    );
    let app = App::build(config).instrument(span.clone()).await?;
    let token = app.shutdown_token();
    let signals = async move {
        shoal::shutdown::wait_for_signal().await;
        tracing::info!("signal received: shutting down (send another to force)");
        token.cancel();
        shoal::shutdown::wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    };
    tokio::spawn(signals.instrument(span));
    Ok(match app.run_until_stopped().await? {
        Stopped::Drained => ExitCode::SUCCESS,
        Stopped::TimedOut => ExitCode::FAILURE,
    })
}
