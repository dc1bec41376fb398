//! What the dashboard shows, gathered from the control plane's snapshot of
//! etcd (cells, placement, provider-regions) and the metrics history
//! (traffic, answers, cost). Served as JSON and rendered as HTML.

use serde::Serialize;

use super::history::Traffic;
use crate::watch::ClusterView;

#[derive(Debug, Clone, Serialize)]
pub struct Overview {
    pub at_ms: u64,
    pub cells: Vec<CellRow>,
    /// Tenants with a committed placement.
    pub placed_tenants: usize,
    pub moves: Vec<MoveRow>,
    pub providers: Vec<ProviderRow>,
    pub traffic: Traffic,
}

#[derive(Debug, Clone, Serialize)]
pub struct CellRow {
    pub id: String,
    pub region: Option<String>,
    pub template: Option<String>,
    pub lifecycle: Option<&'static str>,
    /// Its lease is held: the cell is running and registered.
    pub alive: bool,
    /// Whether its metrics could be read at the last attempt.
    pub metrics: &'static str,
    pub metrics_error: Option<String>,
    /// Tenants whose committed replica set holds the cell.
    pub tenants: usize,
    /// Requests per second over the last minute.
    pub requests_per_second: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MoveRow {
    pub tenant: String,
    pub from: Vec<String>,
    pub to: Vec<String>,
    pub step: &'static str,
    pub copied_points: u64,
    pub total_points: u64,
    pub started_at_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderRow {
    pub id: String,
    /// `healthy`, `degraded`, `down`, `drained`, or `no reports` before
    /// any cell has called it.
    pub state: &'static str,
    /// Cells configured with it.
    pub configured_cells: usize,
    pub drained: bool,
    pub error_rate: Option<f64>,
    pub throttle_rate: Option<f64>,
    pub latency_ms: Option<f64>,
    pub samples: Option<u64>,
}

impl Overview {
    pub fn gather(view: &ClusterView, traffic: Traffic, at_ms: u64) -> Self {
        let cells = view
            .cells
            .iter()
            .filter(|(_, c)| c.spec.is_some() || c.alive.is_some())
            .map(|(id, c)| {
                let scrape = traffic.scrapes.get(id);
                let metrics = match (&c.alive, scrape) {
                    (None, _) => "not running",
                    (Some(_), Some(s)) if s.error.is_some() => "unreachable",
                    (Some(_), Some(_)) => "ok",
                    (Some(_), None) => "not read yet",
                };
                CellRow {
                    id: id.clone(),
                    region: c.spec.as_ref().map(|s| s.region.clone()),
                    template: c.spec.as_ref().map(|s| s.template.clone()),
                    lifecycle: c.lifecycle().map(|l| l.as_str()),
                    alive: c.alive.is_some(),
                    metrics,
                    metrics_error: scrape.and_then(|s| s.error.clone()),
                    tenants: view
                        .placements
                        .values()
                        .filter(|p| p.members.contains(id))
                        .count(),
                    requests_per_second: traffic
                        .requests_per_second_by_cell
                        .get(id)
                        .copied()
                        .unwrap_or(0.0),
                }
            })
            .collect();
        let mut moves: Vec<MoveRow> = view
            .placements
            .iter()
            .filter_map(|(tenant, p)| {
                let m = p.moving.as_ref()?;
                Some(MoveRow {
                    tenant: tenant.clone(),
                    from: p.members.clone(),
                    to: m.to.clone(),
                    step: m.step.as_str(),
                    copied_points: m.copied_points,
                    total_points: m.total_points,
                    started_at_ms: m.started_at_ms,
                })
            })
            .collect();
        moves.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        let providers = view
            .providers
            .iter()
            .map(|(id, p)| ProviderRow {
                id: id.clone(),
                state: if p.health.is_none() && !p.drained {
                    "no reports"
                } else {
                    p.state().as_str()
                },
                configured_cells: p.configured_cells.len(),
                drained: p.drained,
                error_rate: p.health.as_ref().map(|h| h.error_rate),
                throttle_rate: p.health.as_ref().map(|h| h.throttle_rate),
                latency_ms: p.health.as_ref().map(|h| h.latency_ms),
                samples: p.health.as_ref().map(|h| h.samples),
            })
            .collect();
        Overview {
            at_ms,
            cells,
            placed_tenants: view.placements.len(),
            moves,
            providers,
            traffic,
        }
    }
}
