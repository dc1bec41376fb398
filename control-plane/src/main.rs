//! `control-plane`: the operator API over the etcd model.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "The cellnet control plane: admin API over the etcd model")]
struct Args {
    /// YAML config file.
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::process::install_crypto_provider();
    let args = Args::parse();
    let config = common::config::or_exit(control_plane::service::Config::load(&args.config));
    let telemetry =
        common::telemetry::init_or_exit("cellnet-control-plane", &config.telemetry, &[]);
    let served = control_plane::service::run(config, &telemetry).await;
    telemetry.shutdown();
    served
}
