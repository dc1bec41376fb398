//! The cell's side of provider-region health: it counts what each attempt
//! did, reports the counts to etcd every second under a short lease, and
//! orders its providers by what the control-plane leader publishes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use control_plane::model::{Keys, ProviderReport, ProviderState, now_ms};
use control_plane::store::{Store, encode};
use control_plane::watch::ClusterView;
use etcd_client::PutOptions;

use super::{AnyProvider, ProviderError};

/// How often a cell reports.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);
/// A report outlives its cell by at most this long.
const REPORT_TTL_SECS: i64 = 3;

/// What one attempt did.
#[derive(Debug, Clone, Copy)]
pub enum AttemptOutcome {
    Success(Duration),
    Throttled,
    Failed,
}

impl AttemptOutcome {
    pub fn of<T>(result: &Result<T, ProviderError>, elapsed: Duration) -> Self {
        match result {
            Ok(_) => AttemptOutcome::Success(elapsed),
            Err(ProviderError::Status { status: 429, .. }) => AttemptOutcome::Throttled,
            // A request the provider refused as malformed says nothing about its health.
            Err(e) if !e.is_retryable() => AttemptOutcome::Success(elapsed),
            Err(_) => AttemptOutcome::Failed,
        }
    }
}

/// A region published as degraded or down gets one real request from this
/// cell this often, tried first: its answer is the evidence the leader needs
/// to put the region back (or keep it out).
pub const PROBE_EVERY: Duration = Duration::from_secs(5);

/// Counts since the last report, per provider-region, and when each down
/// region was last probed.
#[derive(Debug, Default)]
pub struct ProviderStats {
    counts: Mutex<HashMap<String, ProviderReport>>,
    probes: Mutex<HashMap<String, std::time::Instant>>,
    /// Latencies of recent successful attempts, per provider-region.
    latencies: Mutex<HashMap<String, std::collections::VecDeque<Duration>>>,
}

/// Successful attempts remembered per provider-region for its p95.
const LATENCY_WINDOW: usize = 200;
/// Fewer successes than this give no p95.
const MIN_LATENCY_SAMPLES: usize = 20;

impl ProviderStats {
    pub fn record(&self, provider: &str, outcome: AttemptOutcome) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let r = counts.entry(provider.to_owned()).or_default();
        match outcome {
            AttemptOutcome::Success(elapsed) => {
                let mut latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
                let window = latencies.entry(provider.to_owned()).or_default();
                if window.len() == LATENCY_WINDOW {
                    window.pop_front();
                }
                window.push_back(elapsed);
                let ms = elapsed.as_secs_f64() * 1000.0;
                r.latency_ms = (r.latency_ms * r.successes as f64 + ms) / (r.successes + 1) as f64;
                r.successes += 1;
            }
            AttemptOutcome::Throttled => r.throttled += 1,
            AttemptOutcome::Failed => r.failures += 1,
        }
    }

    /// The order for one request: [`order`], except that a degraded or down
    /// region not probed for [`PROBE_EVERY`] goes first, once.
    pub fn order_with_probe(&self, providers: &[AnyProvider], view: &ClusterView) -> Vec<usize> {
        let mut order = order(providers, view);
        let now = std::time::Instant::now();
        let mut probes = self.probes.lock().unwrap_or_else(|p| p.into_inner());
        let down = order.iter().position(|&i| {
            let name = providers[i].name();
            matches!(
                view.providers.get(name).map(|v| v.state()),
                Some(ProviderState::Down | ProviderState::Degraded)
            ) && probes
                .get(name)
                .is_none_or(|last| now.duration_since(*last) >= PROBE_EVERY)
        });
        if let Some(at) = down {
            let i = order.remove(at);
            probes.insert(providers[i].name().to_owned(), now);
            order.insert(0, i);
        }
        order
    }

    /// The 95th percentile of the provider's recent successful attempts.
    pub fn p95(&self, provider: &str) -> Option<Duration> {
        let latencies = self.latencies.lock().unwrap_or_else(|p| p.into_inner());
        let window = latencies.get(provider)?;
        if window.len() < MIN_LATENCY_SAMPLES {
            return None;
        }
        let mut sorted: Vec<Duration> = window.iter().copied().collect();
        sorted.sort_unstable();
        sorted.get(sorted.len() * 95 / 100).copied()
    }

    /// The counts so far, and a fresh start.
    pub fn take(&self) -> HashMap<String, ProviderReport> {
        std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Reports every second, until the process stops. Regions with nothing to
/// report are skipped; etcd being away only loses those seconds.
pub async fn report(store: Store, keys: Keys, cell: String, stats: std::sync::Arc<ProviderStats>) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let counts = stats.take();
        if counts.is_empty() {
            continue;
        }
        let mut client = store.client();
        let lease =
            match tokio::time::timeout(REPORT_EVERY, client.lease_grant(REPORT_TTL_SECS, None))
                .await
            {
                Ok(Ok(l)) => l.id(),
                _ => continue,
            };
        for (provider, mut report) in counts {
            report.at_ms = now_ms();
            let put = client.put(
                keys.provider_report(&provider, &cell),
                encode(&report),
                Some(PutOptions::new().with_lease(lease)),
            );
            if tokio::time::timeout(REPORT_EVERY, put).await.is_err() {
                break;
            }
        }
    }
}

/// The order to try providers in: healthy ones (and those nobody judged)
/// in configured order, then degraded, then down; drained ones only when
/// nothing else is configured. A degraded region keeps its configured place
/// for the share of requests its published weight gives it.
pub fn order(providers: &[AnyProvider], view: &ClusterView) -> Vec<usize> {
    order_with(providers, view, rand::random::<f64>)
}

/// [`order`] with the random draws supplied.
pub fn order_with(
    providers: &[AnyProvider],
    view: &ClusterView,
    mut roll: impl FnMut() -> f64,
) -> Vec<usize> {
    let states: Vec<ProviderState> = providers
        .iter()
        .map(|p| {
            let Some(v) = view.providers.get(p.name()) else {
                return ProviderState::Healthy;
            };
            match (v.state(), &v.health) {
                (ProviderState::Degraded, Some(h)) if roll() < h.weight => ProviderState::Healthy,
                (state, _) => state,
            }
        })
        .collect();
    let mut order = Vec::with_capacity(providers.len());
    for wanted in [
        ProviderState::Healthy,
        ProviderState::Degraded,
        ProviderState::Down,
    ] {
        order.extend((0..providers.len()).filter(|&i| states[i] == wanted));
    }
    if order.is_empty() {
        order.extend(0..providers.len());
    }
    order
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use control_plane::model::ProviderHealth;
    use control_plane::watch::ProviderView;

    use super::*;
    use crate::llm::openai_compatible::OpenAiCompatible;

    fn provider(name: &str) -> AnyProvider {
        AnyProvider::OpenAiCompatible(Arc::new(OpenAiCompatible {
            name: name.into(),
            region: "r".into(),
            base_url: "http://127.0.0.1:9/v1".into(),
            model: "m".into(),
            api_key: None,
            timeout: Duration::from_secs(1),
            http: crate::llm::http::ProviderHttp::new().unwrap(),
        }))
    }

    fn view(states: &[(&str, ProviderState)]) -> ClusterView {
        let mut view = ClusterView::default();
        for (name, state) in states {
            let drained = *state == ProviderState::Drained;
            view.providers.insert(
                (*name).to_owned(),
                ProviderView {
                    health: (!drained).then(|| ProviderHealth {
                        state: *state,
                        weight: 0.0,
                        error_rate: 0.0,
                        throttle_rate: 0.0,
                        samples: 0,
                        latency_ms: 0.0,
                        leader: "l".into(),
                        since_ms: 0,
                        updated_at_ms: 0,
                    }),
                    drained,
                    configured_cells: Default::default(),
                },
            );
        }
        view
    }

    #[test]
    fn healthy_first_then_degraded_then_down_and_drained_left_out() {
        let providers = [provider("a"), provider("b"), provider("c"), provider("d")];
        let v = view(&[
            ("a", ProviderState::Down),
            ("b", ProviderState::Degraded),
            ("c", ProviderState::Drained),
        ]);
        assert_eq!(order(&providers, &v), [3, 1, 0]);
        // Nothing left but drained regions: they are tried after all.
        let v = view(&[("a", ProviderState::Drained), ("b", ProviderState::Drained)]);
        assert_eq!(order(&providers[..2], &v), [0, 1]);
    }

    #[test]
    fn a_degraded_region_keeps_its_place_for_its_weight_share() {
        let providers = [provider("a"), provider("b")];
        let mut v = view(&[("a", ProviderState::Degraded)]);
        if let Some(h) = v.providers.get_mut("a").and_then(|p| p.health.as_mut()) {
            h.weight = 0.5;
        }
        assert_eq!(order_with(&providers, &v, || 0.2), [0, 1]);
        assert_eq!(order_with(&providers, &v, || 0.7), [1, 0]);
    }

    #[test]
    fn a_down_region_gets_one_probe_per_interval() {
        let providers = [provider("a"), provider("b")];
        let v = view(&[("a", ProviderState::Down)]);
        let stats = ProviderStats::default();
        assert_eq!(stats.order_with_probe(&providers, &v), [0, 1]);
        assert_eq!(stats.order_with_probe(&providers, &v), [1, 0]);
        assert_eq!(stats.order_with_probe(&providers, &v), [1, 0]);
    }

    #[test]
    fn attempts_are_counted_by_outcome() {
        let stats = ProviderStats::default();
        stats.record("a", AttemptOutcome::Success(Duration::from_millis(10)));
        stats.record("a", AttemptOutcome::Success(Duration::from_millis(30)));
        stats.record("a", AttemptOutcome::Throttled);
        stats.record("a", AttemptOutcome::Failed);
        let counts = stats.take();
        let a = counts["a"];
        assert_eq!((a.successes, a.throttled, a.failures), (2, 1, 1));
        assert!((a.latency_ms - 20.0).abs() < 1e-9);
        assert!(stats.take().is_empty());
    }

    #[test]
    fn p95_needs_enough_successes() {
        let stats = ProviderStats::default();
        for ms in 1..=19 {
            stats.record("a", AttemptOutcome::Success(Duration::from_millis(ms)));
        }
        assert_eq!(stats.p95("a"), None);
        for ms in 20..=100 {
            stats.record("a", AttemptOutcome::Success(Duration::from_millis(ms)));
        }
        assert_eq!(stats.p95("a"), Some(Duration::from_millis(96)));
        stats.record("a", AttemptOutcome::Failed);
        assert_eq!(stats.p95("a"), Some(Duration::from_millis(96)));
    }
}
