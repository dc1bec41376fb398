//! Cells and placement: add, drain, remove, list cells; show placement;
//! rebalance; move a tenant. The control-plane leader does the moving:
//! these commands say what the operator wants and, with `--wait`, follow
//! the leader's progress with a bar.

use std::time::Duration;

use anyhow::bail;
use clap::Subcommand;
use control_plane::admin::{CellSummary, PlacementSummary};
use control_plane::model::Lifecycle;
use control_plane::placement::plan::Pending;
use serde::Deserialize;
use serde_json::json;

use crate::client::Admin;

/// How often `--wait` asks for progress.
const POLL: Duration = Duration::from_millis(500);

#[derive(Subcommand)]
pub enum CellsCommand {
    /// Registers a cell before its process starts; it joins, and becomes
    /// active once its share of tenants has been moved onto it.
    Add {
        id: String,
        #[arg(long)]
        region: String,
        /// Base URL routers reach the cell at.
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value = "standard")]
        template: String,
        /// Wait until the cell is active.
        #[arg(long)]
        wait: bool,
    },
    /// Moves every tenant off the cell; it is then drained.
    Drain {
        id: String,
        #[arg(long)]
        wait: bool,
    },
    /// Puts a draining or drained cell back in service: it takes tenants
    /// again.
    Activate { id: String },
    /// Removes a cell that holds no tenant. With --force, a cell lost for
    /// good: its tenants are copied again from their surviving members.
    Remove {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// Lists cells with their lifecycle, liveness and tenants.
    List,
}

#[derive(Deserialize)]
struct CellList {
    cells: Vec<CellSummary>,
}

#[derive(Deserialize)]
struct Moves {
    moves: Vec<Pending>,
}

async fn cell(admin: &Admin, id: &str) -> anyhow::Result<CellSummary> {
    admin.get(&format!("/admin/cells/{id}")).await
}

fn lifecycle(c: &CellSummary) -> Option<Lifecycle> {
    c.spec.as_ref().map(|s| s.lifecycle)
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let template = format!("{{bar:40}} {{pos}}/{{len}} {what} {{msg}}");
    bar.set_style(
        indicatif::ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Follows moves until `done` says so, the bar counting the moves finished
/// among those pending at the start.
async fn follow(
    admin: &Admin,
    what: &str,
    mut done: impl AsyncFnMut(&[Pending]) -> anyhow::Result<bool>,
) -> anyhow::Result<()> {
    let first: Moves = admin.get("/admin/rebalance").await?;
    let bar = bar(first.moves.len() as u64, what);
    loop {
        let now: Moves = admin.get("/admin/rebalance").await?;
        bar.set_position(first.moves.len().saturating_sub(now.moves.len()) as u64);
        let copying = now.moves.iter().filter(|m| m.step.is_some()).count();
        bar.set_message(format!("({copying} under way)"));
        if done(&now.moves).await? {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
}

pub async fn cells(admin: &Admin, command: CellsCommand) -> anyhow::Result<()> {
    match command {
        CellsCommand::Add {
            id,
            region,
            endpoint,
            template,
            wait,
        } => {
            let _: serde_json::Value = admin
                .post(
                    "/admin/cells",
                    Some(&json!({"id": id, "region": region, "endpoint": endpoint, "template": template})),
                )
                .await?;
            println!("cell {id} added (joining); start its process with the same id");
            if wait {
                follow(admin, "moves onto the cell", async |_| {
                    Ok(cell(admin, &id)
                        .await
                        .is_ok_and(|c| lifecycle(&c) == Some(Lifecycle::Active)))
                })
                .await?;
                println!("cell {id} is active");
            }
        }
        CellsCommand::Drain { id, wait } => {
            let _: serde_json::Value = admin
                .post(&format!("/admin/cells/{id}/drain"), None)
                .await?;
            println!("cell {id} draining: its tenants are being moved off");
            if wait {
                follow(admin, "moves off the cell", async |_| {
                    Ok(lifecycle(&cell(admin, &id).await?) == Some(Lifecycle::Drained))
                })
                .await?;
                println!("cell {id} is drained; `cellctl cells remove {id}` removes it");
            }
        }
        CellsCommand::Activate { id } => {
            let _: serde_json::Value = admin
                .post(&format!("/admin/cells/{id}/activate"), None)
                .await?;
            println!("cell {id} active: it takes tenants again");
        }
        CellsCommand::Remove { id, force } => {
            let path = if force {
                format!("/admin/cells/{id}?force=true")
            } else {
                format!("/admin/cells/{id}")
            };
            let _: serde_json::Value = admin.call(reqwest::Method::DELETE, &path, None).await?;
            if force {
                println!("cell {id} removed; its tenants are copied again onto other cells");
            } else {
                println!("cell {id} removed");
            }
        }
        CellsCommand::List => {
            let list: CellList = admin.get("/admin/cells").await?;
            println!(
                "{:<16} {:<12} {:<10} {:<10} {:<6} {:>7} {:>5} ENDPOINT",
                "CELL", "REGION", "TEMPLATE", "LIFECYCLE", "ALIVE", "TENANTS", "MOVES"
            );
            for c in list.cells {
                let (region, template, state, endpoint) = match &c.spec {
                    Some(s) => (
                        s.region.as_str(),
                        s.template.as_str(),
                        s.lifecycle.as_str(),
                        s.endpoint.as_str(),
                    ),
                    None => ("-", "-", "-", "-"),
                };
                println!(
                    "{:<16} {:<12} {:<10} {:<10} {:<6} {:>7} {:>5} {}",
                    c.id,
                    region,
                    template,
                    state,
                    if c.alive.is_some() { "yes" } else { "no" },
                    c.tenants,
                    c.moves,
                    endpoint
                );
            }
        }
    }
    Ok(())
}

pub async fn placement(admin: &Admin, tenant: Option<&str>) -> anyhow::Result<()> {
    let path = match tenant {
        Some(t) => format!("/admin/placement?tenant={t}"),
        None => "/admin/placement".to_owned(),
    };
    let summary: PlacementSummary = admin.get(&path).await?;
    println!(
        "{:<24} {:<22} {:>5} {:<22} MOVE",
        "TENANT", "COMMITTED", "EPOCH", "TARGET"
    );
    for t in &summary.tenants {
        let state = match &t.moving {
            Some(m) => format!(
                "{} → {} ({}/{} points)",
                m.step.as_str(),
                m.to.join(","),
                m.copied_points,
                m.total_points
            ),
            None if t.members.is_empty() => "not placed yet".to_owned(),
            None if t.members != t.target => "waiting".to_owned(),
            None => "-".to_owned(),
        };
        println!(
            "{:<24} {:<22} {:>5} {:<22} {}",
            t.tenant,
            t.members.join(","),
            t.epoch,
            t.target.join(","),
            state
        );
    }
    println!("{} tenants away from their target", summary.pending.len());
    Ok(())
}

pub async fn rebalance(admin: &Admin, dry_run: bool, wait: bool) -> anyhow::Result<()> {
    let planned: Moves = admin.get("/admin/rebalance").await?;
    if planned.moves.is_empty() {
        println!("placement is at its target: nothing to move");
        return Ok(());
    }
    for m in &planned.moves {
        println!(
            "{:<24} {} → {}{}",
            m.tenant,
            m.members.join(","),
            m.target.join(","),
            m.step
                .as_deref()
                .map(|s| format!(" ({s})"))
                .unwrap_or_default()
        );
    }
    if dry_run {
        println!("{} moves planned (dry run)", planned.moves.len());
    } else if wait {
        follow(admin, "moves", async |pending| Ok(pending.is_empty())).await?;
        println!("placement is at its target");
    } else {
        println!(
            "{} moves planned; the control-plane leader is carrying them out (--wait follows them)",
            planned.moves.len()
        );
    }
    Ok(())
}

pub async fn move_tenant(admin: &Admin, id: &str, to: &[String], wait: bool) -> anyhow::Result<()> {
    let _: serde_json::Value = admin
        .post(
            &format!("/admin/tenants/{id}/move"),
            Some(&json!({ "to": to })),
        )
        .await?;
    println!("tenant {id} moving to {} (pinned there)", to.join(","));
    if wait {
        let path = format!("/admin/placement?tenant={id}");
        let bar = bar(0, "points copied");
        loop {
            let summary: PlacementSummary = admin.get(&path).await?;
            let Some(t) = summary.tenants.first() else {
                bail!("no tenant {id:?}");
            };
            if let Some(m) = &t.moving {
                bar.set_length(m.total_points.max(1));
                bar.set_position(m.copied_points);
                bar.set_message(m.step.as_str().to_owned());
            } else if t.members == to {
                bar.finish_and_clear();
                println!("tenant {id} is on {} (epoch {})", to.join(","), t.epoch);
                return Ok(());
            }
            tokio::time::sleep(POLL).await;
        }
    }
    Ok(())
}
