//! `provider-sim`: serves the Azure OpenAI wire format for named regions.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "LLM provider simulator speaking the Azure OpenAI wire format")]
struct Args {
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init_logs();
    let args = Args::parse();
    let config = common::config::or_exit(chaos::sim::Config::load(&args.config));
    let listen: std::net::SocketAddr = config.listen.parse()?;
    let sim = chaos::sim::Simulator::new(config)?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "provider simulator listening");
    common::process::announce_ready("provider-sim", addr);
    axum::serve(listener, chaos::sim::routes(sim))
        .with_graceful_shutdown(common::process::shutdown_signal())
        .await?;
    Ok(())
}
