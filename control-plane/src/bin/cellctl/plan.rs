//! `cellctl plan`: cells, memory, tokens and cost for a demand, offline.

use anyhow::{Context, bail};
use clap::Args;
use common::template::CellTemplate;
use control_plane::sizing::{Demand, plan};

#[derive(Args)]
pub struct PlanArgs {
    /// Daily active users.
    #[arg(long)]
    users: u64,
    /// Documents across all tenants.
    #[arg(long)]
    docs: u64,
    #[arg(long, default_value_t = 10)]
    chunks_per_doc: u64,
    /// Dimensions of the embedding (all-MiniLM-L6-v2: 384).
    #[arg(long, default_value_t = 384)]
    dims: u64,
    #[arg(long)]
    queries_per_user_per_day: f64,
    /// A cell template (small, standard, large) or a template file.
    #[arg(long, default_value = common::template::DEFAULT)]
    template: String,
    /// Copies of each tenant's data.
    #[arg(long, default_value_t = 2)]
    replicas: u64,
    /// The busiest hour's query rate over the day's average.
    #[arg(long, default_value_t = 3.0)]
    peak_factor: f64,
    /// Share of queries the semantic cache answers.
    #[arg(long, default_value_t = 0.2)]
    cache_hit_ratio: f64,
    /// Prompt tokens of an LLM call (system message, passages, question).
    #[arg(long, default_value_t = 1500.0)]
    prompt_tokens: f64,
    /// Tokens of an answer.
    #[arg(long, default_value_t = 250.0)]
    completion_tokens: f64,
    /// USD per million prompt tokens.
    #[arg(long, requires = "output_price", conflicts_with = "prices_from")]
    input_price: Option<f64>,
    /// USD per million answer tokens.
    #[arg(long, requires = "input_price")]
    output_price: Option<f64>,
    /// A cell config whose `prices` to use (with --model when it prices several).
    #[arg(long)]
    prices_from: Option<std::path::PathBuf>,
    #[arg(long, requires = "prices_from")]
    model: Option<String>,
}

pub fn run(args: PlanArgs) -> anyhow::Result<()> {
    let template = CellTemplate::load(&args.template)?;
    let prices = match (&args.prices_from, args.input_price, args.output_price) {
        (Some(file), _, _) => Some(prices_from(file, args.model.as_deref())?),
        (None, Some(input), Some(output)) => Some((input, output)),
        _ => None,
    };
    let demand = Demand {
        users: args.users,
        docs: args.docs,
        chunks_per_doc: args.chunks_per_doc,
        dims: args.dims,
        queries_per_user_per_day: args.queries_per_user_per_day,
        replicas: args.replicas,
        peak_factor: args.peak_factor,
        cache_hit_ratio: args.cache_hit_ratio,
        prompt_tokens: args.prompt_tokens,
        completion_tokens: args.completion_tokens,
        prices,
    };
    print!("{}", plan(&args.template, &template, &demand)?);
    println!(
        "(one {} cell: {} CPU, {} memory, {} disk; {})",
        args.template,
        template.resources.cpu,
        template.resources.memory,
        template.resources.disk,
        template.description
    );
    Ok(())
}

/// The (input, output) price of one model in a cell config's `prices`.
fn prices_from(file: &std::path::Path, model: Option<&str>) -> anyhow::Result<(f64, f64)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let config: serde_yaml::Value =
        serde_yaml::from_str(&text).with_context(|| format!("{} is not YAML", file.display()))?;
    let Some(prices) = config.get("prices").and_then(|p| p.as_mapping()) else {
        bail!("{} has no prices section", file.display());
    };
    let entry = match (model, prices.values().next()) {
        (Some(m), _) => prices
            .get(m)
            .with_context(|| format!("{}: prices has no model {m:?}", file.display()))?,
        (None, Some(only)) if prices.len() == 1 => only,
        (None, _) => bail!(
            "{} prices {} models: name one with --model",
            file.display(),
            prices.len()
        ),
    };
    let field = |name: &str| {
        entry
            .get(name)
            .and_then(serde_yaml::Value::as_f64)
            .with_context(|| format!("{}: prices.*.{name} is missing", file.display()))
    };
    Ok((field("input_per_million")?, field("output_per_million")?))
}
