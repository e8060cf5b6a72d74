//! Termination signals. SIGTERM (Kubernetes, systemd, `docker stop`) and SIGINT
//! (Ctrl-C) both start the graceful shutdown; a second one forces the exit.

/// Resolves on the next SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers we can only wait for Ctrl-C the portable way.
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
