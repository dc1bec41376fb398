//! `cell`: one isolated cell of the system.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "A cellnet cell: RAG orchestrator with its own cache and vector shards")]
struct Args {
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::process::init_tracing();
    common::process::install_crypto_provider();
    let args = Args::parse();
    let config = match cell::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(common::config::EXIT_CONFIG);
        }
    };
    cell::server::run(config).await
}
