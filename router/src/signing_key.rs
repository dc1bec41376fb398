//! Which key the router signs tenant context with.
//!
//! A rotation (`cellctl signing-key rotate`) makes a new current key and keeps
//! the one it replaced as the previous key, which cells accept as well. Routers
//! and cells each learn of the rotation through their own etcd watch, so for a
//! moment a cell may not know the new key yet. The router therefore goes on
//! signing with the previous key for `SWITCH_AFTER` after it first sees a new
//! current key: longer than a cell's lease, so a cell whose watch is further
//! behind than that has lost its lease and is no longer routed to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long after first seeing a new key the router starts signing with it.
pub const SWITCH_AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
pub struct SigningKeys {
    seen: Mutex<Option<Seen>>,
}

#[derive(Debug)]
struct Seen {
    key: Arc<[u8]>,
    since: Instant,
    /// Signing with `key` already: no clock read needed any more.
    switched: bool,
}

impl SigningKeys {
    /// The key to sign with, given the current and previous keys of the
    /// cluster view. `now` is called only while a switch is pending.
    pub fn choose(
        &self,
        current: &Arc<[u8]>,
        previous: Option<&Arc<[u8]>>,
        now: impl Fn() -> Instant,
    ) -> Arc<[u8]> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let seen = match &mut *seen {
            Some(s) if s.key == *current => s,
            other => other.insert(Seen {
                key: current.clone(),
                since: now(),
                switched: previous.is_none(),
            }),
        };
        if !seen.switched {
            match previous {
                Some(previous) if now().saturating_duration_since(seen.since) < SWITCH_AFTER => {
                    return previous.clone();
                }
                _ => seen.switched = true,
            }
        }
        current.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Arc<[u8]> {
        Arc::from(vec![b; 32])
    }

    #[test]
    fn a_new_key_is_used_only_after_the_switch_delay() {
        let keys = SigningKeys::default();
        let t0 = Instant::now();
        let (k1, k2, k3) = (key(1), key(2), key(3));
        // No previous key: the current one straight away.
        assert_eq!(keys.choose(&k1, None, || t0), k1);
        // Rotated: the previous key until the delay has passed.
        assert_eq!(
            keys.choose(&k2, Some(&k1), || t0 + Duration::from_secs(60)),
            k1
        );
        let seen = t0 + Duration::from_secs(60);
        assert_eq!(keys.choose(&k2, Some(&k1), || seen + SWITCH_AFTER / 2), k1);
        assert_eq!(keys.choose(&k2, Some(&k1), || seen + SWITCH_AFTER), k2);
        // Switched for good: the clock is not read again.
        assert_eq!(keys.choose(&k2, Some(&k1), || unreachable!()), k2);
        // A router starting after a rotation also waits before switching.
        let fresh = SigningKeys::default();
        assert_eq!(fresh.choose(&k3, Some(&k2), || t0), k2);
        assert_eq!(fresh.choose(&k3, Some(&k2), || t0 + SWITCH_AFTER), k3);
    }
}
