//! What this router has seen of each cell, alongside etcd's liveness:
//!
//! - Passive outlier detection: after [`OutlierSettings::consecutive_failures`]
//!   failed attempts in a row (cannot connect, 5xx, timeout) a cell is
//!   ejected for a period that doubles with each ejection in a row, up to a
//!   cap. An ejected cell goes to the back of a request's candidate list: it
//!   is still tried when every other candidate failed, and a success there
//!   reinstates it at once.
//! - Concurrency limit: at most `max_in_flight` requests per cell from this
//!   router. A cell at its limit is skipped like a failed one; when every
//!   candidate is full the request is shed with 503 and Retry-After.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::placement::Target;

#[derive(Debug, Clone, Copy)]
pub struct OutlierSettings {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
}

impl Default for OutlierSettings {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(2),
            max_ejection: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    /// Ejections in a row without a success in between.
    ejections: u32,
    ejected_until: Option<Instant>,
}

#[derive(Debug, Default)]
struct Upstream {
    in_flight: AtomicUsize,
    health: Mutex<Health>,
}

/// Held while a request to a cell is in flight (until its response body is done).
pub struct InFlight(Arc<Upstream>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Upstreams {
    cells: Mutex<HashMap<Arc<str>, Arc<Upstream>>>,
    settings: OutlierSettings,
    max_in_flight: usize,
}

impl Upstreams {
    pub fn new(settings: OutlierSettings, max_in_flight: usize) -> Self {
        Self {
            cells: Mutex::default(),
            settings,
            max_in_flight,
        }
    }

    fn get(&self, cell: &Arc<str>) -> Arc<Upstream> {
        let mut cells = self.cells.lock().unwrap_or_else(|p| p.into_inner());
        cells.entry(cell.clone()).or_default().clone()
    }

    /// Whether `cell` is ejected now.
    pub fn is_ejected(&self, cell: &Arc<str>, now: Instant) -> bool {
        let upstream = self.get(cell);
        let health = upstream.health.lock().unwrap_or_else(|p| p.into_inner());
        health.ejected_until.is_some_and(|until| now < until)
    }

    /// `targets` with ejected cells moved to the back, order otherwise kept.
    pub fn order(&self, targets: Vec<Target>, now: Instant) -> Vec<Target> {
        let (mut healthy, ejected): (Vec<Target>, Vec<Target>) = targets
            .into_iter()
            .partition(|t| !self.is_ejected(&t.cell, now));
        healthy.extend(ejected);
        healthy
    }

    /// A slot for one request to `cell`, unless it is at its limit.
    pub fn try_acquire(&self, cell: &Arc<str>) -> Option<InFlight> {
        let upstream = self.get(cell);
        let previous = upstream.in_flight.fetch_add(1, Ordering::AcqRel);
        if previous >= self.max_in_flight {
            upstream.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlight(upstream))
    }

    pub fn record_success(&self, cell: &Arc<str>) {
        let upstream = self.get(cell);
        let mut health = upstream.health.lock().unwrap_or_else(|p| p.into_inner());
        *health = Health::default();
    }

    /// Counts a failed attempt; returns true when it ejects the cell.
    pub fn record_failure(&self, cell: &Arc<str>, now: Instant) -> bool {
        let upstream = self.get(cell);
        let mut health = upstream.health.lock().unwrap_or_else(|p| p.into_inner());
        if health.ejected_until.is_some_and(|until| now < until) {
            return false;
        }
        health.consecutive_failures += 1;
        if health.consecutive_failures < self.settings.consecutive_failures {
            return false;
        }
        let factor = 1u32 << health.ejections.min(16);
        let period = self
            .settings
            .base_ejection
            .saturating_mul(factor)
            .min(self.settings.max_ejection);
        health.ejections += 1;
        health.consecutive_failures = 0;
        health.ejected_until = Some(now + period);
        tracing::warn!(%cell, ?period, "cell ejected after consecutive failures");
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(cell: &str) -> Target {
        Target {
            cell: Arc::from(cell),
            region: Arc::from("r1"),
            endpoint: Arc::from(format!("http://{cell}")),
            alive: true,
        }
    }

    fn settings() -> OutlierSettings {
        OutlierSettings {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(2),
            max_ejection: Duration::from_secs(5),
        }
    }

    fn cells(targets: &[Target]) -> Vec<&str> {
        targets.iter().map(|t| &*t.cell).collect()
    }

    #[test]
    fn consecutive_failures_eject_for_a_growing_period() {
        let u = Upstreams::new(settings(), 10);
        let a: Arc<str> = Arc::from("a");
        let t0 = Instant::now();
        assert!(!u.record_failure(&a, t0));
        assert!(!u.record_failure(&a, t0));
        assert!(u.record_failure(&a, t0));
        let order = u.order(vec![target("a"), target("b")], t0);
        assert_eq!(cells(&order), ["b", "a"]);
        // Back after the first period; the next ejection lasts twice as long.
        let t1 = t0 + Duration::from_secs(2);
        assert!(!u.is_ejected(&a, t1));
        for _ in 0..3 {
            u.record_failure(&a, t1);
        }
        assert!(u.is_ejected(&a, t1 + Duration::from_millis(3900)));
        assert!(!u.is_ejected(&a, t1 + Duration::from_secs(4)));
        // Capped.
        let t2 = t1 + Duration::from_secs(4);
        for _ in 0..3 {
            u.record_failure(&a, t2);
        }
        assert!(!u.is_ejected(&a, t2 + Duration::from_secs(5)));
    }

    #[test]
    fn a_success_resets_the_count_and_the_backoff() {
        let u = Upstreams::new(settings(), 10);
        let a: Arc<str> = Arc::from("a");
        let t0 = Instant::now();
        u.record_failure(&a, t0);
        u.record_failure(&a, t0);
        u.record_success(&a);
        assert!(!u.record_failure(&a, t0));
        assert!(!u.record_failure(&a, t0));
        assert!(u.record_failure(&a, t0));
        u.record_success(&a);
        assert!(!u.is_ejected(&a, t0));
    }

    #[test]
    fn in_flight_is_bounded_per_cell_and_released_on_drop() {
        let u = Upstreams::new(settings(), 2);
        let a: Arc<str> = Arc::from("a");
        let b: Arc<str> = Arc::from("b");
        let first = u.try_acquire(&a).unwrap();
        let _second = u.try_acquire(&a).unwrap();
        assert!(u.try_acquire(&a).is_none());
        assert!(u.try_acquire(&b).is_some());
        drop(first);
        assert!(u.try_acquire(&a).is_some());
    }
}
