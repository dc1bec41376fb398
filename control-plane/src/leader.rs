//! Leadership among control-plane replicas and what the leader does with it.
//!
//! Every replica campaigns in an etcd election (`election/control-plane`)
//! with a lease it keeps alive; the campaign blocks until the replica leads
//! (so it runs on a client without a request timeout). The leader judges
//! provider-region health every second from the cells' leased reports and
//! publishes `providers/<id>/health` when a region's state changes, and
//! runs placement (`crate::placement::reconcile`) while it leads. If the
//! leader dies its lease expires within [`LEASE_TTL_SECS`] and the next
//! replica's campaign returns.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::GetOptions;

use crate::model::{KeyKind, Keys, ProviderHealth, ProviderReport, ProviderState, now_ms};
use crate::store::{Store, StoreError, decode, encode};

/// The leader's lease; a dead leader is replaced after at most this long.
pub const LEASE_TTL_SECS: i64 = 3;

#[derive(Debug, Clone, Copy)]
pub struct JudgeSettings {
    /// How often health is judged.
    pub every: Duration,
    /// Reports older than this are ignored.
    pub window: Duration,
    /// Fewer attempts than this in the window change nothing, except for a
    /// region that is degraded or down: cells send it only probes (one
    /// request every few seconds each), and the probes' outcome decides.
    pub min_samples: u64,
}

impl Default for JudgeSettings {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(1),
            window: Duration::from_secs(5),
            min_samples: 3,
        }
    }
}

/// Campaigns, leads while elected, campaigns again after losing the lease;
/// never returns.
pub async fn lead(
    store: Store,
    keys: Keys,
    instance: String,
    settings: JudgeSettings,
    placement: crate::placement::MoveContext,
) {
    loop {
        if let Err(e) = campaign_and_lead(&store, &keys, &instance, settings, &placement).await {
            tracing::warn!(%instance, error = %e, "not leading; campaigning again");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn campaign_and_lead(
    store: &Store,
    keys: &Keys,
    instance: &str,
    settings: JudgeSettings,
    placement: &crate::placement::MoveContext,
) -> Result<(), StoreError> {
    let mut client = store.client();
    let lease = client.lease_grant(LEASE_TTL_SECS, None).await?.id();
    let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
    let mut keep_alive = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if keeper.keep_alive().await.is_err() {
                return;
            }
            match tokio::time::timeout(Duration::from_secs(2), responses.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => {}
                _ => return,
            }
        }
    });
    tracing::info!(%instance, "campaigning for control-plane leadership");
    let campaign = client.campaign(keys.election(), instance, lease);
    tokio::select! {
        elected = campaign => { elected?; }
        _ = &mut keep_alive => {
            return Err(StoreError::Unavailable("lease lost while campaigning".into()));
        }
    }
    tracing::info!(%instance, "leading the control plane");
    // Stopped (with every move it runs) when this function returns.
    let _placement =
        crate::placement::AbortOnDrop(tokio::spawn(crate::placement::reconcile(placement.clone())));
    let mut tick = tokio::time::interval(settings.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut keep_alive => {
                return Err(StoreError::Unavailable("leader lease lost".into()));
            }
            _ = tick.tick() => {
                if let Err(e) = judge_once(store, keys, instance, settings).await {
                    tracing::warn!(error = %e, "judging provider health failed");
                }
            }
        }
    }
}

/// Sums of the fresh reports on one provider-region.
#[derive(Debug, Default, Clone, Copy)]
struct Evidence {
    successes: u64,
    failures: u64,
    throttled: u64,
    latency_weighted: f64,
}

impl Evidence {
    fn attempts(&self) -> u64 {
        self.successes + self.failures + self.throttled
    }
}

/// The state a region is in given its evidence and what was published before.
pub fn judge(
    attempts: u64,
    failures: u64,
    throttled: u64,
    drained: bool,
    previous: Option<&ProviderHealth>,
    settings: &JudgeSettings,
) -> ProviderState {
    if drained {
        return ProviderState::Drained;
    }
    let previous_state = previous
        .map(|h| h.state)
        .filter(|s| *s != ProviderState::Drained);
    if attempts < settings.min_samples {
        // A degraded or down region gets only probes while healthy ones
        // exist: one is enough to keep it out or to bring it back.
        if matches!(
            previous_state,
            Some(ProviderState::Down | ProviderState::Degraded)
        ) && attempts > 0
        {
            return if failures + throttled == attempts {
                ProviderState::Down
            } else {
                ProviderState::Healthy
            };
        }
        // Without evidence nothing changes; a down region waits for a probe.
        return previous_state.unwrap_or(ProviderState::Healthy);
    }
    let error_rate = failures as f64 / attempts as f64;
    let throttle_rate = throttled as f64 / attempts as f64;
    if error_rate >= 0.5 {
        ProviderState::Down
    } else if error_rate >= 0.1 || throttle_rate >= 0.2 {
        ProviderState::Degraded
    } else {
        ProviderState::Healthy
    }
}

fn weight(state: ProviderState) -> f64 {
    match state {
        ProviderState::Healthy => 1.0,
        ProviderState::Degraded => 0.5,
        ProviderState::Down | ProviderState::Drained => 0.0,
    }
}

/// One judgement of every provider-region; publishes the ones whose state
/// changed (or that another leader published).
pub async fn judge_once(
    store: &Store,
    keys: &Keys,
    instance: &str,
    settings: JudgeSettings,
) -> Result<(), StoreError> {
    let prefix = keys.providers();
    let resp = store
        .retrying("read providers", |mut c| {
            let prefix = prefix.clone();
            async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let now = now_ms();
    let window = settings.window.as_millis() as u64;
    let mut evidence: BTreeMap<String, Evidence> = BTreeMap::new();
    let mut drained: BTreeMap<String, bool> = BTreeMap::new();
    let mut published: BTreeMap<String, ProviderHealth> = BTreeMap::new();
    for kv in resp.kvs() {
        let Ok(key) = kv.key_str() else { continue };
        match keys.parse(key) {
            KeyKind::ProviderReport { provider, .. } => {
                let Ok(r) = decode::<ProviderReport>(key, kv.value()) else {
                    continue;
                };
                let e = evidence.entry(provider.to_owned()).or_default();
                if now.saturating_sub(r.at_ms) <= window {
                    e.successes += r.successes;
                    e.failures += r.failures;
                    e.throttled += r.throttled;
                    e.latency_weighted += r.latency_ms * r.successes as f64;
                }
            }
            KeyKind::ProviderDrain(id) => {
                drained.insert(id.to_owned(), true);
            }
            KeyKind::ProviderHealth(id) => {
                if let Ok(h) = decode::<ProviderHealth>(key, kv.value()) {
                    published.insert(id.to_owned(), h);
                }
            }
            _ => {}
        }
    }
    let ids: std::collections::BTreeSet<String> = evidence
        .keys()
        .chain(drained.keys())
        .chain(published.keys())
        .cloned()
        .collect();
    for id in ids {
        let e = evidence.get(&id).copied().unwrap_or_default();
        let previous = published.get(&id);
        let is_drained = drained.contains_key(&id);
        let state = judge(
            e.attempts(),
            e.failures,
            e.throttled,
            is_drained,
            previous,
            &settings,
        );
        let unchanged = previous.is_some_and(|p| p.state == state && p.leader == instance);
        if unchanged {
            continue;
        }
        let attempts = e.attempts().max(1) as f64;
        let health = ProviderHealth {
            state,
            weight: weight(state),
            error_rate: e.failures as f64 / attempts,
            throttle_rate: e.throttled as f64 / attempts,
            samples: e.attempts(),
            latency_ms: if e.successes > 0 {
                e.latency_weighted / e.successes as f64
            } else {
                0.0
            },
            leader: instance.to_owned(),
            since_ms: match previous {
                Some(p) if p.state == state => p.since_ms,
                _ => now,
            },
            updated_at_ms: now,
        };
        let key = keys.provider_health(&id);
        let value = encode(&health);
        store
            .retrying("publish provider health", |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move { c.put(key, value, None).await }
            })
            .await?;
        tracing::info!(provider = %id, ?state, samples = e.attempts(), "provider health published");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(state: ProviderState, since_ms: u64) -> ProviderHealth {
        ProviderHealth {
            state,
            weight: weight(state),
            error_rate: 0.0,
            throttle_rate: 0.0,
            samples: 10,
            latency_ms: 1.0,
            leader: "a".into(),
            since_ms,
            updated_at_ms: since_ms,
        }
    }

    #[test]
    fn states_follow_error_and_throttle_rates() {
        let s = JudgeSettings::default();
        assert_eq!(judge(10, 0, 0, false, None, &s), ProviderState::Healthy);
        assert_eq!(judge(10, 1, 0, false, None, &s), ProviderState::Degraded);
        assert_eq!(judge(10, 0, 2, false, None, &s), ProviderState::Degraded);
        assert_eq!(judge(10, 5, 0, false, None, &s), ProviderState::Down);
        assert_eq!(judge(10, 5, 0, true, None, &s), ProviderState::Drained);
    }

    #[test]
    fn a_down_region_waits_for_a_probe() {
        let s = JudgeSettings::default();
        let down = health(ProviderState::Down, 1_000);
        // No evidence: still down, however long.
        assert_eq!(judge(0, 0, 0, false, Some(&down), &s), ProviderState::Down);
        // Probes decide at once.
        assert_eq!(judge(1, 1, 0, false, Some(&down), &s), ProviderState::Down);
        assert_eq!(judge(2, 0, 2, false, Some(&down), &s), ProviderState::Down);
        assert_eq!(
            judge(1, 0, 0, false, Some(&down), &s),
            ProviderState::Healthy
        );
        let degraded = health(ProviderState::Degraded, 1_000);
        assert_eq!(
            judge(1, 1, 0, false, Some(&degraded), &s),
            ProviderState::Down
        );
        assert_eq!(
            judge(1, 0, 0, false, Some(&degraded), &s),
            ProviderState::Healthy
        );
        assert_eq!(
            judge(0, 0, 0, false, Some(&degraded), &s),
            ProviderState::Degraded
        );
        // An undrained region starts over as healthy.
        let drained = health(ProviderState::Drained, 1_000);
        assert_eq!(
            judge(0, 0, 0, false, Some(&drained), &s),
            ProviderState::Healthy
        );
    }
}
