//! `router`: the global entry point for tenants.

use std::path::PathBuf;

use clap::Parser;

/// glibc's malloc and free were about a tenth of the CPU a request costs in
/// the router and in the cell; with mimalloc both cost less per request
/// (docs/benchmarks.md, host E).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "The cellnet router: authenticates tenants and routes them to their cells")]
struct Args {
    #[arg(long, short)]
    config: PathBuf,
}

/// The control runtime: the cluster watch, placement, hint replay and the
/// listener. Requests are served on the router's own worker threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    common::process::install_crypto_provider();
    let args = Args::parse();
    let config = common::config::or_exit(router::config::Config::load(&args.config));
    let telemetry = common::telemetry::init_or_exit("cellnet-router", &config.telemetry, &[]);
    let served = router::server::run(config, &telemetry).await;
    telemetry.shutdown();
    served
}
