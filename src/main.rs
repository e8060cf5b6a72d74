//! The `shoal` binary: parses the command line, loads the configuration, sets up
//! logging and hands over to the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal::app::{App, Stopped};
use shoal::config::Config;

// glibc's allocator showed up at ~17% of CPU on the `GET /api/me` profile
// (malloc_consolidate, unlink_chunk under multi-threaded churn); mimalloc keeps
// per-thread free lists and is the usual remedy for Rust servers. The
// `system-allocator` feature turns it off for heap profilers (heaptrack, valgrind)
// that hook malloc.
#[cfg(not(feature = "system-allocator"))]
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
    Serve {
        /// Serve the API only: run no job workers here.
        #[arg(long)]
        no_workers: bool,
        /// Run N processes of this server on the port under a supervisor that
        /// restarts one that dies (SO_REUSEPORT); overrides `CLUSTER_WORKERS`.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        workers: Option<u32>,
    },
    /// Run job workers only (HTTP serves health and metrics, no API).
    Worker,
    /// Job queue tools.
    Jobs {
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the OpenAPI document of the HTTP API (JSON; docs/openapi.json is a copy).
    Openapi,
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
}

#[derive(Subcommand)]
enum JobsAction {
    /// List jobs in one status, newest first.
    List {
        /// queued, running, succeeded, failed or dead.
        #[arg(long, default_value = "dead")]
        state: String,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
    /// Queue a dead job again with fresh attempts.
    Retry {
        /// The job id.
        id: uuid::Uuid,
    },
    /// Enqueue jobs by hand (operations, tests).
    Enqueue {
        /// Job type.
        #[arg(long = "type")]
        kind: String,
        /// JSON payload.
        #[arg(long, default_value = "{}")]
        payload: String,
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate the configuration and print it, secrets masked.
    Check,
    /// Print every configuration key with its default and meaning (Markdown).
    Keys,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Openapi) = cli.command {
        return match shoal::http::openapi_json() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("shoal: cannot render the OpenAPI document: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::Config {
        action: ConfigAction::Keys,
    }) = cli.command
    {
        print!("{}", shoal::config::keys_table());
        return ExitCode::SUCCESS;
    }
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
        println!("# connection budget");
        for line in config.connection_budget() {
            println!("# {line}");
        }
        return ExitCode::SUCCESS;
    }
    // One id for the logs and the app alike.
    let instance = shoal::instance::Instance::new(config.server.instance_id.as_deref());
    config.server.instance_id = Some(instance.id.clone());
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
    match &cli.command {
        Some(Command::Serve {
            no_workers: true, ..
        }) => config.queue.workers = false,
        Some(Command::Worker) => {
            config.server.serve_api = false;
            config.queue.workers = true;
        }
        _ => {}
    }
    // `serve --workers N` / CLUSTER_WORKERS=N: this process supervises N workers; a
    // worker (started by the supervisor with SHOAL_WORKER) shares the port.
    if let Some(Command::Serve {
        workers: Some(n), ..
    }) = &cli.command
    {
        config.cluster.workers = *n;
    }
    let is_worker = std::env::var_os(shoal::supervisor::WORKER_ENV).is_some();
    config.server.reuse_port = is_worker;
    let supervise = !is_worker
        && config.cluster.workers > 1
        && matches!(cli.command, None | Some(Command::Serve { .. }));
    let result = runtime.block_on(async move {
        match cli.command {
            _ if supervise => shoal::supervisor::run(&config).await,
            Some(Command::Migrate) => migrate(config).await.map(|()| ExitCode::SUCCESS),
            Some(Command::Jobs { action }) => {
                jobs(config, action).await.map(|()| ExitCode::SUCCESS)
            }
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
    let db = shoal::db::Db::connect(&config).await?;
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
        instance_id = config.server.instance_id.as_deref().unwrap_or_default()
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

async fn jobs(config: Config, action: JobsAction) -> anyhow::Result<()> {
    use shoal::jobs::admin;
    let db = shoal::db::Db::connect(&config).await?;
    db.migrate().await?;
    let outcome = match action {
        JobsAction::List { state, limit } => admin::list(&db, &state, limit).await.map(|lines| {
            for line in lines {
                println!("{line}");
            }
        }),
        JobsAction::Retry { id } => admin::retry(&db, id)
            .await
            .map(|()| println!("{id} queued")),
        JobsAction::Enqueue {
            kind,
            payload,
            count,
        } => admin::enqueue(&db, &config, &kind, &payload, count, 100)
            .await
            .map(|ids| {
                for id in ids {
                    println!("{id}");
                }
            }),
    };
    db.close().await;
    outcome
}
