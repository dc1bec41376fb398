//! `cell`: one isolated cell of the system. `cell --config FILE` serves
//! (`--check` only checks the config);
//! `cell eval-cache PAIRS.jsonl` runs the semantic cache's lookup logic over
//! labeled question pairs (what `cellctl cache eval` calls).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// glibc's malloc and free were about a tenth of the CPU a request costs in
/// the router and in the cell; with mimalloc both cost less per request
/// (docs/benchmarks.md, host E).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "A cellnet cell: RAG orchestrator with its own cache and vector shards")]
struct Args {
    /// YAML config file (to serve).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Check the config (as a cell would start with it) and exit.
    #[arg(long, requires = "config")]
    check: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate the semantic cache's lookup (embedder, threshold, guard) on
    /// labeled pairs: one JSON object a line, {"a", "b", "same_answer", "category"}.
    EvalCache {
        pairs: PathBuf,
        #[arg(long, default_value_t = cell::config::DEFAULT_CACHE_THRESHOLD)]
        threshold: f32,
        /// Folder with model.safetensors, config.json, tokenizer.json.
        #[arg(long)]
        model_dir: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::process::install_crypto_provider();
    let args = Args::parse();
    match (args.command, args.config) {
        (
            Some(Command::EvalCache {
                pairs,
                threshold,
                model_dir,
            }),
            _,
        ) => {
            common::telemetry::init_logs();
            if !(threshold > 0.0 && threshold <= 1.0) {
                anyhow::bail!("--threshold must be in (0, 1], got {threshold}");
            }
            let dir = model_dir.unwrap_or_else(cell::config::default_model_dir);
            let embedder = cell::embed::MiniLm::load(&dir)?;
            let pairs = cell::cache::eval::read_pairs(&pairs)?;
            let report = cell::cache::eval::evaluate(&embedder, &pairs, threshold)?;
            print!("{}", report.render());
            Ok(())
        }
        (None, Some(config)) => {
            let config = common::config::or_exit(cell::config::Config::load(&config));
            if args.check {
                println!("config ok: cell {} in {}", config.id, config.region);
                return Ok(());
            }
            let telemetry = common::telemetry::init_or_exit(
                "cellnet-cell",
                &config.telemetry,
                &[
                    ("cellnet.cell", config.id.clone()),
                    ("cloud.region", config.region.clone()),
                ],
            );
            let served = cell::server::run(config, &telemetry).await;
            telemetry.shutdown();
            served
        }
        (None, None) => {
            eprintln!("cell: give --config FILE to serve, or a subcommand (see --help)");
            std::process::exit(common::config::EXIT_CONFIG);
        }
    }
}
