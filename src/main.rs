//! The `shoal` binary: parses the command line, loads the configuration, sets up
//! logging and hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal::app::{App, Stopped};
use shoal::config::Config;

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
    if let Some(Command::Config { action: ConfigAction::Check }) = cli.command {
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

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
    let app = App::build(config).await?;
    let token = app.shutdown_token();
    tokio::spawn(async move {
        shoal::shutdown::wait_for_signal().await;
        tracing::info!("signal received: shutting down (send another to force)");
        token.cancel();
        shoal::shutdown::wait_for_signal().await;
        tracing::warn!("second signal: exiting now");
        std::process::exit(130);
    });
    Ok(match app.run_until_stopped().await? {
        Stopped::Drained => ExitCode::SUCCESS,
        Stopped::TimedOut => ExitCode::FAILURE,
    })
}
