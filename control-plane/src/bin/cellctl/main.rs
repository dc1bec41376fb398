//! `cellctl`: the operator CLI, a client of the control plane's admin API.

mod cells;
mod client;
mod data;
mod plan;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use control_plane::admin::{CreatedTenant, TenantSummary};
use serde::Deserialize;

#[derive(Parser)]
#[command(about = "Operate a cellnet deployment through the control plane's admin API")]
struct Args {
    /// Base URL of the control plane's admin API.
    #[arg(long, env = "ADMIN_URL", default_value = "http://127.0.0.1:18090")]
    admin_url: String,
    /// Operator token (required by every command that calls the admin API).
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, default_value = "")]
    admin_token: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Tenants: create, list.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Cells: add, drain, remove, list.
    #[command(subcommand)]
    Cells(cells::CellsCommand),
    /// Placement: each tenant's committed replica set, its target, and the
    /// moves in progress.
    Placement {
        #[command(subcommand)]
        show: Option<PlacementCommand>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The moves that bring placement to its target, as the control-plane
    /// leader carries them out (it rebalances by itself whenever cells join,
    /// drain or go); waits for them with --wait.
    Rebalance {
        /// Only list the planned moves.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, conflicts_with = "dry_run")]
        wait: bool,
    },
    /// Capacity planning, offline: the cells of a template a demand needs,
    /// vector and cache memory, LLM tokens and cost a day.
    Plan(plan::PlanArgs),
    /// Semantic cache: evaluate the lookup on labeled pairs.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// LLM provider-regions: health as the leader judges it; drain, undrain.
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// The key routers sign tenant context with: rotate.
    #[command(subcommand)]
    SigningKey(SigningKeyCommand),
    /// Uploads files and folders (.txt, .md, .json, .jsonl) as a tenant's
    /// documents through the router, with a progress bar and a summary.
    Ingest {
        /// Files or folders (walked recursively).
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
        #[arg(long, env = "ROUTER_URL", default_value = "http://127.0.0.1:18080")]
        router_url: String,
        /// The tenant's API key.
        #[arg(long, env = "API_KEY", hide_env_values = true)]
        api_key: String,
        /// Documents per request.
        #[arg(long, default_value_t = 16)]
        batch: usize,
    },
}

#[derive(Subcommand)]
enum PlacementCommand {
    /// The same as `cellctl placement`.
    Show {
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum ProvidersCommand {
    /// Lists provider-regions with their published health and drains.
    List,
    /// Takes a provider-region out of rotation on every cell.
    Drain { id: String },
    /// Puts a drained provider-region back.
    Undrain { id: String },
}

#[derive(Subcommand)]
enum SigningKeyCommand {
    /// Makes a new key for routers to sign with; cells go on accepting the
    /// one it replaces until the next rotation, so nothing in flight is
    /// refused. Prints the new key's fingerprint.
    Rotate,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Runs the cell's real lookup logic (embedder, threshold, guard) over
    /// PAIRS.jsonl and prints precision, recall, wrong hits per category and a
    /// threshold sweep. Runs the `cell` binary installed next to cellctl.
    Eval {
        pairs: std::path::PathBuf,
        #[arg(long)]
        threshold: Option<f32>,
    },
}

#[derive(Subcommand)]
enum TenantsCommand {
    /// Creates a tenant and prints its API key (shown only this once).
    Create {
        id: String,
        #[arg(long)]
        plan: Option<String>,
        /// Print only the key, for scripts.
        #[arg(long)]
        quiet: bool,
    },
    /// Lists tenants.
    List,
    /// Deletes a tenant: its keys stop working at once, and its documents
    /// are deleted from every cell that held them.
    Delete { id: String },
    /// Moves a tenant to the given cells (pinning it there): dual-write,
    /// copy, verify, flip.
    Move {
        id: String,
        /// Cells, comma-separated, home first.
        #[arg(long, value_delimiter = ',', required = true)]
        to: Vec<String>,
        /// Wait until the move has flipped, with a progress bar.
        #[arg(long)]
        wait: bool,
    },
    /// Changes a tenant: its plan, its pin to cells, its cache threshold.
    Set {
        id: String,
        #[arg(long)]
        plan: Option<String>,
        /// Cells to pin the tenant to, comma-separated; "none" clears the pin.
        #[arg(long)]
        pin: Option<String>,
        /// Semantic-cache similarity threshold for this tenant; "default" clears it.
        #[arg(long)]
        cache_threshold: Option<String>,
        /// The tenant's own sustained request rate (requests/s), replacing its plan's limits.
        #[arg(long, requires = "burst")]
        rps: Option<f64>,
        /// Requests allowed at once above the rate; with --rps.
        #[arg(long, requires = "rps")]
        burst: Option<u32>,
        /// LLM tokens per UTC day; with --rps; leave out for no quota.
        #[arg(long, requires = "rps")]
        tokens_per_day: Option<u64>,
        /// Drop the tenant's own limits and use its plan's again.
        #[arg(long, conflicts_with = "rps")]
        plan_limits: bool,
        /// Retrieve by BM25 words as well as vectors (on), or by vectors only (off).
        #[arg(long, value_parser = ["on", "off"])]
        hybrid: Option<String>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::process::install_crypto_provider();
    let args = Args::parse();
    if let Command::Cache(CacheCommand::Eval { pairs, threshold }) = &args.command {
        return data::cache_eval(pairs, *threshold);
    }
    if let Command::Plan(args) = args.command {
        return plan::run(args);
    }
    if let Command::Ingest {
        paths,
        router_url,
        api_key,
        batch,
    } = &args.command
    {
        return data::ingest(paths, router_url, api_key, *batch).await;
    }
    if args.admin_token.is_empty() {
        bail!("set ADMIN_TOKEN or pass --admin-token");
    }
    let admin = client::Admin::new(&args.admin_url, &args.admin_token);
    match args.command {
        // Handled above: it needs no admin API.
        Command::Cache(CacheCommand::Eval { .. }) => {}
        Command::Tenants(TenantsCommand::Create { id, plan, quiet }) => {
            let created: CreatedTenant = admin
                .call(
                    reqwest::Method::POST,
                    "/admin/tenants",
                    Some(&serde_json::json!({ "id": id, "plan": plan })),
                )
                .await?;
            if quiet {
                println!("{}", created.api_key);
            } else {
                println!(
                    "tenant {} created (plan {})",
                    created.tenant.id, created.tenant.plan
                );
                println!("API key (shown once, store it now): {}", created.api_key);
            }
        }
        Command::Tenants(TenantsCommand::Delete { id }) => {
            let _: serde_json::Value = admin
                .call(
                    reqwest::Method::DELETE,
                    &format!("/admin/tenants/{id}"),
                    None,
                )
                .await?;
            println!("tenant {id} deleted; its documents are being removed from its cells");
        }
        Command::Tenants(TenantsCommand::List) => {
            #[derive(Deserialize)]
            struct List {
                tenants: Vec<TenantSummary>,
            }
            let list: List = admin
                .call(reqwest::Method::GET, "/admin/tenants", None)
                .await?;
            println!(
                "{:<24} {:<12} {:<24} {:<12} LIMITS",
                "TENANT", "PLAN", "PIN", "KEYS"
            );
            for t in list.tenants {
                let pin = t.pin.map(|p| p.join(",")).unwrap_or_else(|| "-".into());
                println!(
                    "{:<24} {:<12} {:<24} {:<12} {}",
                    t.id,
                    t.plan,
                    pin,
                    t.key_hints.join(","),
                    describe_limits(&t.limits)
                );
            }
        }
        Command::Tenants(TenantsCommand::Set {
            id,
            plan,
            pin,
            cache_threshold,
            rps,
            burst,
            tokens_per_day,
            plan_limits,
            hybrid,
        }) => {
            let mut update = control_plane::admin::UpdateTenant {
                plan,
                hybrid_retrieval: hybrid.map(|h| h == "on"),
                ..Default::default()
            };
            if let Some(pin) = pin {
                update.pin = Some(if pin == "none" {
                    None
                } else {
                    Some(
                        pin.split(',')
                            .map(|c| c.trim().to_owned())
                            .filter(|c| !c.is_empty())
                            .collect(),
                    )
                });
            }
            if let Some(t) = cache_threshold {
                update.cache_threshold = Some(if t == "default" {
                    None
                } else {
                    Some(
                        t.parse::<f32>()
                            .with_context(|| format!("--cache-threshold {t:?} is not a number"))?,
                    )
                });
            }
            if plan_limits {
                update.limits = Some(None);
            } else if let (Some(rps), Some(burst)) = (rps, burst) {
                update.limits = Some(Some(control_plane::model::TenantLimits {
                    requests_per_second: rps,
                    burst,
                    tokens_per_day,
                }));
            }
            let t: TenantSummary = admin
                .call(
                    reqwest::Method::PATCH,
                    &format!("/admin/tenants/{id}"),
                    Some(&serde_json::to_value(&update)?),
                )
                .await?;
            println!(
                "tenant {}: plan {}, limits {}{}, pin {}, cache threshold {}, retrieval {}",
                t.id,
                t.plan,
                describe_limits(&t.limits),
                if t.custom_limits { " (own)" } else { "" },
                t.pin.map(|p| p.join(",")).unwrap_or_else(|| "-".into()),
                t.cache_threshold
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "default".into()),
                if t.hybrid_retrieval {
                    "hybrid"
                } else {
                    "vector"
                }
            );
        }
        Command::Providers(ProvidersCommand::List) => {
            #[derive(Deserialize)]
            struct List {
                providers: Vec<control_plane::admin::ProviderSummary>,
            }
            let list: List = admin
                .call(reqwest::Method::GET, "/admin/providers", None)
                .await?;
            println!(
                "{:<24} {:<10} {:>7} {:>8} {:>9} {:>8} {:<8} CELLS",
                "PROVIDER", "STATE", "WEIGHT", "ERRORS", "THROTTLED", "SAMPLES", "DRAINED"
            );
            for p in list.providers {
                let (state, weight, errors, throttled, samples) = match &p.health {
                    Some(h) => (
                        format!("{:?}", h.state).to_lowercase(),
                        format!("{:.2}", h.weight),
                        format!("{:.0}%", h.error_rate * 100.0),
                        format!("{:.0}%", h.throttle_rate * 100.0),
                        h.samples.to_string(),
                    ),
                    // Configured, but no traffic judged yet.
                    None => (
                        "unjudged".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                        "-".into(),
                    ),
                };
                println!(
                    "{:<24} {:<10} {:>7} {:>8} {:>9} {:>8} {:<8} {}",
                    p.id,
                    if p.drained {
                        "drained".to_owned()
                    } else {
                        state
                    },
                    weight,
                    errors,
                    throttled,
                    samples,
                    if p.drained { "yes" } else { "no" },
                    p.configured_cells.join(",")
                );
            }
        }
        Command::SigningKey(SigningKeyCommand::Rotate) => {
            #[derive(Deserialize)]
            struct Rotated {
                fingerprint: String,
            }
            let rotated: Rotated = admin
                .call(reqwest::Method::POST, "/admin/signing-key/rotate", None)
                .await?;
            println!("signing key rotated; new key {}", rotated.fingerprint);
        }
        Command::Providers(ProvidersCommand::Drain { id }) => {
            let _: serde_json::Value = admin
                .call(
                    reqwest::Method::POST,
                    &format!("/admin/providers/{id}/drain"),
                    None,
                )
                .await?;
            println!("provider {id} drained: cells stop sending to it within about a second");
        }
        Command::Providers(ProvidersCommand::Undrain { id }) => {
            let _: serde_json::Value = admin
                .call(
                    reqwest::Method::DELETE,
                    &format!("/admin/providers/{id}/drain"),
                    None,
                )
                .await?;
            println!("provider {id} back in rotation");
        }
        Command::Ingest { .. } | Command::Plan(_) => {}
        Command::Cells(command) => cells::cells(&admin, command).await?,
        Command::Placement { show, tenant } => {
            let tenant = match show {
                Some(PlacementCommand::Show { tenant: shown }) => shown.or(tenant),
                None => tenant,
            };
            cells::placement(&admin, tenant.as_deref()).await?
        }
        Command::Rebalance { dry_run, wait } => cells::rebalance(&admin, dry_run, wait).await?,
        Command::Tenants(TenantsCommand::Move { id, to, wait }) => {
            cells::move_tenant(&admin, &id, &to, wait).await?;
        }
    }
    Ok(())
}

fn describe_limits(l: &control_plane::model::TenantLimits) -> String {
    format!(
        "{} req/s burst {}, {} tokens/day",
        l.requests_per_second,
        l.burst,
        l.tokens_per_day
            .map(|t| t.to_string())
            .unwrap_or_else(|| "unlimited".into())
    )
}
