//! `cell-operator`: reconciles Cell resources into serving cells.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(
    about = "The cellnet operator: turns Cell resources into cells and drains them before they go"
)]
struct Args {
    /// YAML config file.
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init_logs();
    common::process::install_crypto_provider();
    let args = Args::parse();
    let config = common::config::or_exit(operator::config::Config::load(&args.config));
    operator::run::run(config).await
}
