//! `cellctl`: the operator CLI, a client of the control plane's admin API.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use control_plane::admin::{CellSummary, CreatedTenant, TenantSummary};
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
    /// Cells: list.
    #[command(subcommand)]
    Cells(CellsCommand),
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

#[derive(Subcommand)]
enum CellsCommand {
    /// Lists cells with their spec and liveness.
    List,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorMessage,
}

#[derive(Deserialize)]
struct ErrorMessage {
    message: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::process::install_crypto_provider();
    let args = Args::parse();
    if let Command::Cache(CacheCommand::Eval { pairs, threshold }) = &args.command {
        return cache_eval(pairs, *threshold);
    }
    if let Command::Ingest {
        paths,
        router_url,
        api_key,
        batch,
    } = &args.command
    {
        return ingest(paths, router_url, api_key, *batch).await;
    }
    if args.admin_token.is_empty() {
        bail!("set ADMIN_TOKEN or pass --admin-token");
    }
    let http = reqwest::Client::new();
    let base = args.admin_url.trim_end_matches('/').to_owned();
    let auth = format!("Bearer {}", args.admin_token);
    match args.command {
        // Handled above: it needs no admin API.
        Command::Cache(CacheCommand::Eval { .. }) => {}
        Command::Tenants(TenantsCommand::Create { id, plan, quiet }) => {
            let resp = http
                .post(format!("{base}/admin/tenants"))
                .header("authorization", &auth)
                .json(&serde_json::json!({ "id": id, "plan": plan }))
                .send()
                .await
                .with_context(|| format!("cannot reach the control plane at {base}"))?;
            let created: CreatedTenant = read(resp).await?;
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
        Command::Tenants(TenantsCommand::List) => {
            #[derive(Deserialize)]
            struct List {
                tenants: Vec<TenantSummary>,
            }
            let resp = http
                .get(format!("{base}/admin/tenants"))
                .header("authorization", &auth)
                .send()
                .await
                .with_context(|| format!("cannot reach the control plane at {base}"))?;
            let list: List = read(resp).await?;
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
            let resp = http
                .patch(format!("{base}/admin/tenants/{id}"))
                .header("authorization", &auth)
                .json(&update)
                .send()
                .await
                .with_context(|| format!("cannot reach the control plane at {base}"))?;
            let t: TenantSummary = read(resp).await?;
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
            let resp = http
                .get(format!("{base}/admin/providers"))
                .header("authorization", &auth)
                .send()
                .await
                .with_context(|| format!("cannot reach the control plane at {base}"))?;
            let list: List = read(resp).await?;
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
                    None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
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
                    p.reporting_cells.join(",")
                );
            }
        }
        Command::SigningKey(SigningKeyCommand::Rotate) => {
            #[derive(Deserialize)]
            struct Rotated {
                fingerprint: String,
            }
            let resp = http
                .post(format!("{base}/admin/signing-key/rotate"))
                .header("authorization", &auth)
                .send()
                .await
                .with_context(|| format!("cannot reach the control plane at {base}"))?;
            let rotated: Rotated = read(resp).await?;
            println!("signing key rotated; new key {}", rotated.fingerprint);
        }
        Command::Providers(ProvidersCommand::Drain { id }) => {
            let resp = http
                .post(format!("{base}/admin/providers/{id}/drain"))
                .header("authorization", &auth)
                .send()
                .await
                .with_context(|| format!("cannot reach the control plane at {base}"))?;
            let _: serde_json::Value = read(resp).await?;
            println!("provider {id} drained: cells stop sending to it within about a second");
        }
        Command::Providers(ProvidersCommand::Undrain { id }) => {
            let resp = http
                .delete(format!("{base}/admin/providers/{id}/drain"))
                .header("authorization", &auth)
                .send()
                .await
                .with_context(|| format!("cannot reach the control plane at {base}"))?;
            let _: serde_json::Value = read(resp).await?;
            println!("provider {id} back in rotation");
        }
        Command::Ingest { .. } => {}
        Command::Cells(CellsCommand::List) => {
            #[derive(Deserialize)]
            struct List {
                cells: Vec<CellSummary>,
            }
            let resp = http
                .get(format!("{base}/admin/cells"))
                .header("authorization", &auth)
                .send()
                .await
                .with_context(|| format!("cannot reach the control plane at {base}"))?;
            let list: List = read(resp).await?;
            println!(
                "{:<16} {:<16} {:<10} {:<6} ENDPOINT",
                "CELL", "REGION", "DESIRED", "ALIVE"
            );
            for c in list.cells {
                let (region, desired, endpoint) = match &c.spec {
                    Some(s) => (
                        s.region.clone(),
                        format!("{:?}", s.desired).to_lowercase(),
                        s.endpoint.clone(),
                    ),
                    None => ("-".into(), "-".into(), "-".into()),
                };
                let alive = if c.alive.is_some() { "yes" } else { "no" };
                println!(
                    "{:<16} {:<16} {:<10} {:<6} {}",
                    c.id, region, desired, alive, endpoint
                );
            }
        }
    }
    Ok(())
}

/// The cache's lookup logic lives in the cell; run the cell binary's evaluator.
fn cache_eval(pairs: &std::path::Path, threshold: Option<f32>) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let cell = me.with_file_name("cell");
    if !cell.exists() {
        bail!(
            "{} not found: cellctl cache eval runs the cell binary installed next to it",
            cell.display()
        );
    }
    let mut command = std::process::Command::new(&cell);
    command.arg("eval-cache").arg(pairs);
    if let Some(t) = threshold {
        command.arg("--threshold").arg(t.to_string());
    }
    let status = command
        .status()
        .with_context(|| format!("cannot run {}", cell.display()))?;
    if !status.success() {
        bail!("cache evaluation failed ({status})");
    }
    Ok(())
}

async fn read<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> anyhow::Result<T> {
    let status = resp.status();
    let body = resp.bytes().await?;
    if !status.is_success() {
        let message = serde_json::from_slice::<ErrorBody>(&body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
        bail!("{status}: {message}");
    }
    serde_json::from_slice(&body).context("unexpected response from the control plane")
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

/// Files `ingest` reads.
const INGESTED_EXTENSIONS: &[&str] = &["txt", "md", "json", "jsonl"];

/// Every ingestible file under `paths`, in a stable order.
fn files_under(paths: &[std::path::PathBuf]) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = paths.to_vec();
    while let Some(path) = stack.pop() {
        let meta =
            std::fs::metadata(&path).with_context(|| format!("cannot read {}", path.display()))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                stack.push(entry?.path());
            }
        } else if path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| INGESTED_EXTENSIONS.contains(&e))
        {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The documents in one file: a text file is one document named by its path;
/// JSON is a document object or an array of them; JSON lines, one a line.
fn documents_in(path: &std::path::Path) -> Result<Vec<serde_json::Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let name = path.display().to_string();
    let check = |v: serde_json::Value, at: &str| -> Result<serde_json::Value, String> {
        if v.get("id").and_then(|i| i.as_str()).is_some()
            && v.get("text").and_then(|t| t.as_str()).is_some()
        {
            Ok(v)
        } else {
            Err(format!(
                "{at}: a document needs string fields \"id\" and \"text\""
            ))
        }
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => match serde_json::from_str::<serde_json::Value>(&text)
            .map_err(|e| e.to_string())?
        {
            serde_json::Value::Array(items) => items.into_iter().map(|v| check(v, &name)).collect(),
            v => Ok(vec![check(v, &name)?]),
        },
        Some("jsonl") => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                let v = serde_json::from_str(l).map_err(|e| format!("line {}: {e}", i + 1))?;
                check(v, &format!("line {}", i + 1))
            })
            .collect(),
        _ if text.trim().is_empty() => Ok(Vec::new()),
        _ => Ok(vec![
            serde_json::json!({"id": name, "text": text, "metadata": {"path": name}}),
        ]),
    }
}

async fn ingest(
    paths: &[std::path::PathBuf],
    router_url: &str,
    api_key: &str,
    batch: usize,
) -> anyhow::Result<()> {
    let files = files_under(paths)?;
    let mut documents = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for file in &files {
        match documents_in(file) {
            Ok(docs) => documents.extend(docs),
            Err(e) => failures.push(format!("{}: {e}", file.display())),
        }
    }
    let bar = indicatif::ProgressBar::new(documents.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} documents {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let http = reqwest::Client::new();
    let url = format!("{}/v1/documents", router_url.trim_end_matches('/'));
    let (mut ingested, mut chunks) = (0usize, 0usize);
    for group in documents.chunks(batch.max(1)) {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let resp = http
                .post(&url)
                .bearer_auth(api_key)
                .json(&serde_json::json!({ "documents": group }))
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => {
                    let body: serde_json::Value = r.json().await.unwrap_or_default();
                    ingested += group.len();
                    chunks += body["chunks"].as_u64().unwrap_or(0) as usize;
                    break;
                }
                Ok(r) if (r.status() == 429 || r.status().is_server_error()) && attempts < 5 => {
                    let wait = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(1);
                    bar.set_message(format!("waiting {wait} s ({})", r.status()));
                    tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
                }
                Ok(r) => {
                    let status = r.status();
                    let message = r
                        .json::<ErrorBody>()
                        .await
                        .map(|b| b.error.message)
                        .unwrap_or_default();
                    let ids: Vec<&str> = group.iter().filter_map(|d| d["id"].as_str()).collect();
                    failures.push(format!("{} ({status}): {message}", ids.join(", ")));
                    break;
                }
                Err(e) if attempts < 5 => {
                    bar.set_message(format!("retrying: {e}"));
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                Err(e) => {
                    failures.push(format!("cannot reach the router at {router_url}: {e}"));
                    break;
                }
            }
        }
        bar.inc(group.len() as u64);
    }
    bar.finish_and_clear();
    println!(
        "ingested {ingested} documents ({chunks} chunks) from {} files; {} failed",
        files.len(),
        failures.len()
    );
    for f in &failures {
        println!("  failed: {f}");
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("{} failures", failures.len())
    }
}
