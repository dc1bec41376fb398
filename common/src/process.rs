//! Process start-up shared by every binary: the TLS crypto provider,
//! and the readiness line that harnesses and `make up` wait for.

use std::net::SocketAddr;

/// Both `ring` and `aws-lc-rs` can end up in a dependency tree; rustls panics
/// on first use unless one provider is installed explicitly. We use `ring`.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Prints `READY <service> http://<addr>` on stdout once the service accepts
/// connections. Harnesses read stdout for this line instead of sleeping, and it
/// is how a service bound to port 0 tells the world its port.
pub fn announce_ready(service: &str, addr: SocketAddr) {
    println!("READY {service} http://{addr}");
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received, draining");
}
