//! Commands that work on a tenant's data rather than through the admin
//! API: uploading documents through the router, and evaluating the
//! semantic cache with the cell's own lookup.

use anyhow::{Context, bail};

use crate::client::ErrorBody;

/// The cache's lookup logic lives in the cell; run the cell binary's evaluator.
pub fn cache_eval(pairs: &std::path::Path, threshold: Option<f32>) -> anyhow::Result<()> {
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

pub async fn ingest(
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
