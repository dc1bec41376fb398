//! `terraform-provider-cellnet`: Terraform starts it, it answers go-plugin's
//! handshake on stdout, and serves the plugin protocol (version 6) over
//! gRPC on a loopback port, with mutual TLS unless Terraform turned it off.

mod admin;
mod diag;
mod plugin;
mod resources;
mod schema;
mod server;
mod tls;
mod value;

/// The generated protocol messages and services.
mod proto {
    // Generated: every message is there, whether or not the provider builds it.
    #![allow(
        dead_code,
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        clippy::expect_used
    )]
    tonic::include_proto!("tfplugin6");

    pub mod go_plugin {
        #![allow(clippy::all, clippy::pedantic)]
        tonic::include_proto!("plugin");
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    common::process::install_crypto_provider();
    // Terraform reads the plugin's stderr as its log.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CELLNET_PROVIDER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match plugin::serve().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
