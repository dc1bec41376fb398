//! go-plugin's side of starting a plugin: check that Terraform started us,
//! listen on loopback, print the handshake line, serve until Terraform asks
//! the plugin to shut down.

use std::io::Write;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::proto::go_plugin::Empty;
use crate::proto::go_plugin::grpc_controller_server::{GrpcController, GrpcControllerServer};
use crate::proto::provider_server::ProviderServer;
use crate::server::CellnetProvider;
use crate::tls::ServerTls;

/// The cookie Terraform sets for its plugins, so that a plugin run by hand
/// can tell it was not started by Terraform.
const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
const MAGIC_COOKIE_VALUE: &str = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";
/// go-plugin's own protocol version, and the plugin protocol served.
const CORE_PROTOCOL: u32 = 1;
const PLUGIN_PROTOCOL: u32 = 6;

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(
        "This is the cellnet Terraform provider: Terraform runs it, it is not meant to be run by hand. \
         Install it as README.md in terraform/ says, and run terraform."
    )]
    NotStartedByTerraform,
    #[error("Terraform offers plugin protocol versions {0:?}; this provider speaks only version 6")]
    Protocol(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot listen on loopback: {0}")]
    Listen(std::io::Error),
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

/// Asks the server to stop when go-plugin's client shuts the plugin down.
struct Controller(tokio::sync::mpsc::Sender<()>);

#[tonic::async_trait]
impl GrpcController for Controller {
    async fn shutdown(&self, _: Request<Empty>) -> Result<Response<Empty>, Status> {
        let _ = self.0.try_send(());
        Ok(Response::new(Empty {}))
    }
}

pub async fn serve() -> Result<(), PluginError> {
    if std::env::var(MAGIC_COOKIE_KEY).as_deref() != Ok(MAGIC_COOKIE_VALUE) {
        return Err(PluginError::NotStartedByTerraform);
    }
    let versions = std::env::var("PLUGIN_PROTOCOL_VERSIONS").unwrap_or_default();
    if !versions
        .split(',')
        .any(|v| v.trim() == PLUGIN_PROTOCOL.to_string())
    {
        return Err(PluginError::Protocol(versions));
    }
    // Ctrl-C reaches Terraform's whole process group; Terraform then asks
    // the provider to stop (StopProvider) and shuts it down itself.
    let mut interrupts = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(PluginError::Listen)?;
    tokio::spawn(async move { while interrupts.recv().await.is_some() {} });

    let tls = match std::env::var("PLUGIN_CLIENT_CERT") {
        Ok(pem) if !pem.is_empty() => Some(ServerTls::new(&pem)?),
        _ => None,
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .map_err(PluginError::Listen)?;
    let addr = listener.local_addr().map_err(PluginError::Listen)?;
    let cert = tls
        .as_ref()
        .map(|t| t.handshake_cert.as_str())
        .unwrap_or("");
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{CORE_PROTOCOL}|{PLUGIN_PROTOCOL}|tcp|{addr}|grpc|{cert}"
        );
        let _ = out.flush();
    }
    tracing::info!(%addr, tls = tls.is_some(), "cellnet provider serving");

    let (shutdown_tx, mut shutdown_rx) = tokio::sync::mpsc::channel(1);
    let router = tonic::transport::Server::builder()
        .add_service(ProviderServer::new(CellnetProvider::default()))
        .add_service(GrpcControllerServer::new(Controller(shutdown_tx)));
    let shutdown = async move {
        shutdown_rx.recv().await;
    };
    match tls {
        Some(tls) => {
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
            let incoming =
                futures::stream::unfold((listener, acceptor), |(listener, acceptor)| async move {
                    loop {
                        let (tcp, peer) = match listener.accept().await {
                            Ok(accepted) => accepted,
                            Err(e) => return Some((Err(e), (listener, acceptor))),
                        };
                        match acceptor.accept(tcp).await {
                            Ok(stream) => {
                                return Some((
                                    Ok::<_, std::io::Error>(stream),
                                    (listener, acceptor),
                                ));
                            }
                            Err(e) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                        }
                    }
                });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
        None => {
            let incoming = futures::stream::unfold(listener, |listener| async move {
                let accepted = listener.accept().await.map(|(tcp, _)| tcp);
                Some((accepted, listener))
            });
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await?;
        }
    }
    Ok(())
}
