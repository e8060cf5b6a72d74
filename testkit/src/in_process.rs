//! The application in this process: built from a [`Config`] and run on its own tokio
//! runtime on its own thread, so that it is isolated from the test's runtime (as a
//! real server is from its clients) and the harness does not depend on
//! `run_until_stopped()` being `Send` (its own test checks that).

use shoal::app::{App, Stopped};
use shoal::config::Config;
use shoal::state::AppState;
use tokio_util::sync::CancellationToken;

use crate::wait::PATIENCE;

/// A running application.
pub struct InProcessApp {
    /// `http://127.0.0.1:{port}`.
    pub address: String,
    /// Its state: the database, the capabilities, the configuration.
    pub state: AppState,
    /// Cancelling it starts the graceful shutdown.
    pub shutdown: CancellationToken,
    server: Option<std::thread::JoinHandle<anyhow::Result<Stopped>>>,
}

impl InProcessApp {
    /// Builds and starts the application; `Err` says why it did not build.
    pub async fn start(config: Config) -> Result<InProcessApp, String> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let server = std::thread::Builder::new()
            .name("shoal-test-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("build the server runtime");
                runtime.block_on(async move {
                    let app = match App::build(config).await {
                        Ok(app) => app,
                        Err(e) => {
                            let _ = ready_tx.send(Err(format!("{e:#}")));
                            return Err(e);
                        }
                    };
                    let started = (app.local_addr(), app.state(), app.shutdown_token());
                    let _ = ready_tx.send(Ok(started));
                    app.run_until_stopped().await
                })
            })
            .expect("spawn the server thread");
        let (addr, state, shutdown) = ready_rx.await.expect("the server thread reports")?;
        Ok(InProcessApp {
            address: format!("http://{addr}"),
            state,
            shutdown,
            server: Some(server),
        })
    }

    /// `{address}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// Stops the application gracefully and waits (bounded) for it.
    pub async fn stop(mut self) -> Stopped {
        self.shutdown.cancel();
        let server = self.server.take().expect("the server is running");
        let joined = tokio::task::spawn_blocking(move || server.join());
        tokio::time::timeout(PATIENCE, joined)
            .await
            .expect("the server stops in time")
            .expect("the join task did not panic")
            .expect("the server thread did not panic")
            .expect("the server stopped without error")
    }
}

impl Drop for InProcessApp {
    fn drop(&mut self) {
        // A graceful stop in the background; the thread ends with its runtime.
        self.shutdown.cancel();
    }
}
