//! Identical questions that miss the cache together are answered once.
//!
//! A document written to a tenant moves its knowledge version, and every
//! cached answer of that tenant goes stale at once. Under load, hundreds of
//! requests for the same popular question then miss together, and each would
//! embed, retrieve and call a provider. Instead the first to miss leads: it
//! runs the pipeline and stores the answer, while the others wait for it to
//! finish and then look the cache up again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

/// The longest a follower waits for its leader before going on alone. A
/// leader's own time is bounded by the provider timeouts; this only keeps a
/// follower from waiting on a leader stuck for longer than that.
const MAX_FOLLOW: Duration = Duration::from_secs(30);

/// One question of one tenant at one knowledge version: what a cache entry
/// answers. A new version starts a new flight.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    tenant: String,
    question: String,
    version: u64,
}

type InFlight = Arc<Mutex<HashMap<Key, Arc<RwLock<()>>>>>;

/// The questions being answered right now, by the requests that lead them.
#[derive(Debug, Default)]
pub struct MissCoalescer {
    in_flight: InFlight,
}

/// What a request that missed the cache does.
pub enum Role {
    /// Answer it; followers wait until the guard is dropped.
    Leader(LeaderGuard),
    /// Wait for the leader ([`Follower::wait`]), then look the cache up again.
    Follower(Follower),
}

impl MissCoalescer {
    /// Leads `question` for `tenant` at `version` if no request does yet,
    /// follows the one that does otherwise.
    pub fn join(&self, tenant: &str, question: &str, version: u64) -> Role {
        let key = Key {
            tenant: tenant.to_owned(),
            question: question.to_owned(),
            version,
        };
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = in_flight.get(&key) {
            return Role::Follower(Follower { done: done.clone() });
        }
        let done = Arc::new(RwLock::new(()));
        // Uncontended: nobody else has seen this lock yet.
        let Ok(write) = done.clone().try_write_owned() else {
            unreachable!("a new lock is free")
        };
        in_flight.insert(key.clone(), done);
        Role::Leader(LeaderGuard {
            in_flight: self.in_flight.clone(),
            key,
            _write: write,
        })
    }

    /// No question is being led right now.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.in_flight.lock().map(|m| m.is_empty()).unwrap_or(true)
    }
}

/// Held by the leading request until its answer is stored (or it gave up).
pub struct LeaderGuard {
    in_flight: InFlight,
    key: Key,
    _write: OwnedRwLockWriteGuard<()>,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        // Out of the map first, so that a request arriving after this finds
        // the stored answer or leads a flight of its own, never a finished one.
        if let Ok(mut in_flight) = self.in_flight.lock() {
            in_flight.remove(&self.key);
        }
        // The write lock is released after this, waking every follower at once.
    }
}

pub struct Follower {
    done: Arc<RwLock<()>>,
}

impl Follower {
    /// Resolves once the leader has finished (or `MAX_FOLLOW` passed).
    pub async fn wait(self) {
        let _ = tokio::time::timeout(MAX_FOLLOW, self.done.read()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_wait_for_the_leader_and_a_new_version_leads_again() {
        let c = MissCoalescer::default();
        let Role::Leader(leader) = c.join("t", "q", 1) else {
            panic!("the first request leads")
        };
        let Role::Follower(follower) = c.join("t", "q", 1) else {
            panic!("the second follows")
        };
        // Another tenant, question or version is a flight of its own.
        for (tenant, question, version) in [("u", "q", 1), ("t", "r", 1), ("t", "q", 2)] {
            assert!(matches!(c.join(tenant, question, version), Role::Leader(_)));
        }
        let waiting = tokio::spawn(follower.wait());
        // Not done while the leader runs (on this one-threaded runtime the
        // follower has run up to its wait after a yield).
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "a follower went on before its leader finished"
        );
        drop(leader);
        waiting.await.unwrap();
        assert!(c.is_empty());
        // The flight is over: the next miss leads.
        assert!(matches!(c.join("t", "q", 1), Role::Leader(_)));
    }
}
