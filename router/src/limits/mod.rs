//! Per-tenant rate limits and daily token quotas, shared by every router.
//!
//! The global state is a token bucket per tenant in Redis, refilled at the
//! tenant's rate and capped at its burst. A router does not ask Redis for
//! every request: it *leases* a few tokens at a time (about
//! [`LEASE_WINDOW`] worth of the tenant's rate) and spends them locally, so
//! the hot path touches Redis about once per lease. Leased tokens come out of
//! the shared bucket, so all routers together never exceed the tenant's rate;
//! unused leases lapse after [`LEASE_TTL`]. Once less than half a lease is
//! left, the next lease is taken in the background, so that a request waits
//! on Redis only when a tenant's traffic jumps. Not taken ahead: a lease of
//! a single token (a tenant so slow that it could lapse unused and cost the
//! tenant part of its rate), and any lease while the shared bucket holds
//! less than two more (it could sit in one router while another refuses).
//! When Redis refuses a lease the router remembers until when, and answers
//! 429 locally until then.
//!
//! Token quotas: cells report each answer's LLM tokens in
//! `x-cellnet-usage-tokens`; the router adds them to the tenant's counter for
//! the UTC day in Redis. Every lease also reads that counter, so each router
//! knows the tenant's use to within one lease; at or over the quota the
//! tenant gets 429 until the next UTC midnight.
//!
//! Redis unreachable: each router falls back to a bucket of its own at the
//! tenant's full rate (protective, if per router) and tries Redis again
//! after [`STORE_RETRY`]. Nothing stops answering because Redis is away.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_plane::model::TenantLimits;
use redis::aio::ConnectionManager;

use crate::redis_conn::LazyRedis;
use tokio::time::Instant;

/// How much of a tenant's rate one lease covers.
pub const LEASE_WINDOW: Duration = Duration::from_millis(50);
/// Leased tokens not spent by then are dropped.
pub const LEASE_TTL: Duration = Duration::from_secs(1);
/// After a Redis failure, how long to use local buckets before trying again.
pub const STORE_RETRY: Duration = Duration::from_secs(1);
/// Response header in which a cell reports an answer's LLM tokens.
pub const USAGE_HEADER: &str = common::headers::USAGE_TOKENS;
const SECONDS_PER_DAY: u64 = 86_400;

/// Takes up to ARGV[3] tokens from the bucket KEYS[1] (rate ARGV[1]/s, burst
/// ARGV[2]) on Redis's own clock, and returns {granted, ms until a token is
/// due, tokens used today (KEYS[2]), tokens left in the bucket}.
const LEASE_SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate / 1000)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
local wait = 0
if granted == 0 then
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
local used = tonumber(redis.call('GET', KEYS[2]) or '0')
return {granted, wait, used, math.floor(tokens)}
"#;

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    RateLimited { retry_after: Duration },
    QuotaExceeded { retry_after: Duration },
}

/// The state one router keeps for one tenant.
#[derive(Debug)]
struct TenantBudget {
    leased: u32,
    /// A lease is being taken in the background.
    refilling: bool,
    /// Tokens left in the shared bucket at the last lease.
    bucket_left: u64,
    lease_expires: Instant,
    denied_until: Option<Instant>,
    /// (UTC day, tokens used that day as last seen).
    used: (u64, u64),
    /// Local bucket used while Redis is unreachable: (tokens, last refill).
    fallback: (f64, Instant),
}

impl TenantBudget {
    fn new(now: Instant, limits: &TenantLimits) -> Self {
        Self {
            leased: 0,
            refilling: false,
            bucket_left: 0,
            lease_expires: now,
            denied_until: None,
            used: (0, 0),
            fallback: (f64::from(limits.burst), now),
        }
    }

    fn take_fallback(&mut self, now: Instant, limits: &TenantLimits) -> Result<(), Refusal> {
        let (tokens, last) = self.fallback;
        let refilled = (tokens
            + now.duration_since(last).as_secs_f64() * limits.requests_per_second)
            .min(f64::from(limits.burst));
        if refilled >= 1.0 {
            self.fallback = (refilled - 1.0, now);
            Ok(())
        } else {
            self.fallback = (refilled, now);
            Err(Refusal::RateLimited {
                retry_after: Duration::from_secs_f64((1.0 - refilled) / limits.requests_per_second),
            })
        }
    }
}

/// Redis's answer to a lease.
struct Lease {
    granted: u32,
    /// Until a token is due, when none was granted.
    wait: Duration,
    used_today: u64,
    /// Tokens left in the shared bucket.
    left: u64,
}

/// What the limiter needs from the shared store.
#[derive(Clone)]
struct Store {
    redis: LazyRedis,
    script: redis::Script,
    timeout: Duration,
}

impl Store {
    async fn conn(&self) -> Result<ConnectionManager, String> {
        self.redis
            .get(self.timeout)
            .await
            .map_err(|e| e.to_string())
    }

    async fn lease(
        &self,
        tenant: &str,
        day: u64,
        limits: &TenantLimits,
        want: u32,
    ) -> Result<Lease, String> {
        let mut conn = self.conn().await?;
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(bucket_key(tenant))
            .key(usage_key(tenant, day))
            .arg(limits.requests_per_second)
            .arg(limits.burst)
            .arg(want);
        let reply: (u32, u64, u64, u64) =
            tokio::time::timeout(self.timeout, invocation.invoke_async(&mut conn))
                .await
                .map_err(|_| "timed out".to_owned())?
                .map_err(|e| e.to_string())?;
        Ok(Lease {
            granted: reply.0,
            wait: Duration::from_millis(reply.1),
            used_today: reply.2,
            left: reply.3,
        })
    }

    async fn add_usage(&self, tenant: &str, day: u64, tokens: u64) -> Result<u64, String> {
        let mut conn = self.conn().await?;
        let key = usage_key(tenant, day);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .incr(&key, tokens)
            .expire(&key, (2 * SECONDS_PER_DAY) as i64)
            .ignore();
        let (total,): (u64,) = tokio::time::timeout(self.timeout, pipe.query_async(&mut conn))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        Ok(total)
    }
}

// One hash tag per tenant: in a Redis Cluster both keys of a lease share a slot.
fn bucket_key(tenant: &str) -> String {
    format!("cn:rl:{{{tenant}}}")
}

fn usage_key(tenant: &str, day: u64) -> String {
    format!("cn:usage:{{{tenant}}}:{day}")
}

/// Today's UTC day number and the time left until it ends.
fn utc_day() -> (u64, Duration) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (
        secs / SECONDS_PER_DAY,
        Duration::from_secs(SECONDS_PER_DAY - secs % SECONDS_PER_DAY),
    )
}

/// Counts of the limiter's decisions, for metrics.
#[derive(Debug, Default)]
pub struct LimiterStats {
    /// Leases asked of Redis, in the background or not.
    pub store_round_trips: std::sync::atomic::AtomicU64,
    /// Requests that waited for a lease from Redis.
    pub waited_for_store: std::sync::atomic::AtomicU64,
    pub store_errors: std::sync::atomic::AtomicU64,
}

/// Tokens one lease asks for: [`LEASE_WINDOW`] of the tenant's rate.
fn lease_size(limits: &TenantLimits) -> u32 {
    ((limits.requests_per_second * LEASE_WINDOW.as_secs_f64()).ceil() as u32)
        .clamp(1, limits.burst.max(1))
}

pub struct Limiter {
    store: Option<Store>,
    budgets: Mutex<HashMap<String, Arc<tokio::sync::Mutex<TenantBudget>>>>,
    /// Until when Redis is not asked again after a failure.
    store_down_until: Mutex<Option<Instant>>,
    /// Background leases under way.
    refills: tokio::sync::watch::Sender<usize>,
    pub stats: LimiterStats,
}

impl Limiter {
    /// A limiter sharing its buckets through Redis at `url`, or keeping them
    /// per router without one.
    pub fn new(url: Option<&str>, timeout: Duration) -> Result<Self, redis::RedisError> {
        Ok(Self::with_redis(
            url.map(LazyRedis::open).transpose()?,
            timeout,
        ))
    }

    /// The same, on a connection shared with the rest of the router.
    pub fn with_redis(redis: Option<LazyRedis>, timeout: Duration) -> Self {
        Self {
            store: redis.map(|redis| Store {
                redis,
                script: redis::Script::new(LEASE_SCRIPT),
                timeout,
            }),
            budgets: Mutex::default(),
            store_down_until: Mutex::default(),
            refills: tokio::sync::watch::Sender::new(0),
            stats: LimiterStats::default(),
        }
    }

    fn budget(&self, tenant: &str, limits: &TenantLimits) -> Arc<tokio::sync::Mutex<TenantBudget>> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = budgets.get(tenant) {
            return b.clone();
        }
        budgets
            .entry(tenant.to_owned())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Mutex::new(TenantBudget::new(
                    Instant::now(),
                    limits,
                )))
            })
            .clone()
    }

    fn store_usable(&self, now: Instant) -> Option<&Store> {
        let down = self
            .store_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *down {
            Some(until) if now < until => None,
            _ => self.store.as_ref(),
        }
    }

    fn store_failed(&self, error: &str) {
        self.stats
            .store_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(%error, "rate-limit store unavailable; limiting per router for now");
        *self
            .store_down_until
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + STORE_RETRY);
    }

    /// Admits one request of `tenant` and returns the tokens it has used
    /// today as far as this router knows; or says why not and for how long.
    pub async fn admit(
        self: &Arc<Self>,
        tenant: &str,
        limits: &TenantLimits,
    ) -> Result<u64, Refusal> {
        let budget = self.budget(tenant, limits);
        let mut b = budget.lock().await;
        let now = Instant::now();
        let (day, until_midnight) = utc_day();
        if let Some(quota) = limits.tokens_per_day
            && b.used.0 == day
            && b.used.1 >= quota
        {
            return Err(Refusal::QuotaExceeded {
                retry_after: until_midnight,
            });
        }
        let used_today = if b.used.0 == day { b.used.1 } else { 0 };
        let want = lease_size(limits);
        // Leased tokens are this router's to spend, even if a lease asked
        // for later was refused.
        if b.leased > 0 && now < b.lease_expires {
            b.leased -= 1;
            self.refill_ahead(&mut b, &budget, tenant, limits, want, now);
            return Ok(used_today);
        }
        if let Some(until) = b.denied_until {
            if now < until {
                return Err(Refusal::RateLimited {
                    retry_after: until - now,
                });
            }
            b.denied_until = None;
        }
        let Some(store) = self.store_usable(now) else {
            return b.take_fallback(now, limits).map(|()| used_today);
        };
        self.stats
            .store_round_trips
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.stats
            .waited_for_store
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match store.lease(tenant, day, limits, want).await {
            Ok(lease) => {
                b.used = (day, lease.used_today);
                b.bucket_left = lease.left;
                if let Some(quota) = limits.tokens_per_day
                    && lease.used_today >= quota
                {
                    return Err(Refusal::QuotaExceeded {
                        retry_after: until_midnight,
                    });
                }
                if lease.granted == 0 {
                    let wait = lease.wait.max(Duration::from_millis(1));
                    b.denied_until = Some(now + wait);
                    return Err(Refusal::RateLimited { retry_after: wait });
                }
                b.leased = lease.granted - 1;
                b.lease_expires = now + LEASE_TTL;
                self.refill_ahead(&mut b, &budget, tenant, limits, want, now);
                Ok(lease.used_today)
            }
            Err(e) => {
                self.store_failed(&e);
                b.take_fallback(now, limits).map(|()| used_today)
            }
        }
    }

    /// Takes the tenant's next lease in the background once less than half
    /// of one is left, so that the requests after this one need not wait.
    fn refill_ahead(
        self: &Arc<Self>,
        b: &mut TenantBudget,
        budget: &Arc<tokio::sync::Mutex<TenantBudget>>,
        tenant: &str,
        limits: &TenantLimits,
        want: u32,
        now: Instant,
    ) {
        // Not while the shared bucket runs low: a lease taken ahead there
        // could sit unspent in this router while another one refuses.
        if want < 2 || b.refilling || b.leased >= want / 2 || b.bucket_left < 2 * u64::from(want) {
            return;
        }
        let Some(store) = self.store_usable(now).cloned() else {
            return;
        };
        b.refilling = true;
        self.refills.send_modify(|n| *n += 1);
        let limiter = self.clone();
        let budget = budget.clone();
        let tenant = tenant.to_owned();
        let limits = *limits;
        tokio::spawn(async move {
            let (day, _) = utc_day();
            limiter
                .stats
                .store_round_trips
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let leased = store.lease(&tenant, day, &limits, want).await;
            let mut b = budget.lock().await;
            b.refilling = false;
            match leased {
                Ok(lease) => {
                    b.used = (day, lease.used_today);
                    b.bucket_left = lease.left;
                    if lease.granted > 0 {
                        b.leased += lease.granted;
                        b.lease_expires = Instant::now() + LEASE_TTL;
                    }
                }
                Err(e) => limiter.store_failed(&e),
            }
            drop(b);
            limiter.refills.send_modify(|n| *n -= 1);
        });
    }

    /// Waits until no lease is being taken in the background.
    pub async fn refills_settled(&self) {
        let mut refills = self.refills.subscribe();
        let _ = refills.wait_for(|n| *n == 0).await;
    }

    /// Adds an answer's LLM tokens to the tenant's count for today.
    pub async fn record_usage(&self, tenant: &str, limits: &TenantLimits, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let (day, _) = utc_day();
        let budget = self.budget(tenant, limits);
        let total = match self.store_usable(Instant::now()) {
            Some(store) => match store.add_usage(tenant, day, tokens).await {
                Ok(total) => Some(total),
                Err(e) => {
                    self.store_failed(&e);
                    None
                }
            },
            None => None,
        };
        let mut b = budget.lock().await;
        b.used = match (b.used, total) {
            (_, Some(total)) => (day, total),
            ((d, used), None) if d == day => (day, used + tokens),
            (_, None) => (day, tokens),
        };
    }
}

/// Finds the cell's usage comment in a streamed answer as it passes, across
/// chunk boundaries, keeping only a few bytes between chunks.
#[derive(Debug, Default)]
pub struct StreamUsage {
    carry: Vec<u8>,
    found: bool,
}

impl StreamUsage {
    /// Feeds the next chunk; the token count, once, when it is complete.
    pub fn feed(&mut self, chunk: &[u8]) -> Option<u64> {
        if self.found {
            return None;
        }
        let marker = common::headers::USAGE_TOKENS_SSE_COMMENT.as_bytes();
        self.carry.extend_from_slice(chunk);
        if let Some(at) = self.carry.windows(marker.len()).position(|w| w == marker) {
            let rest = &self.carry[at + marker.len()..];
            if let Some(end) = rest.iter().position(|b| *b == b'\n') {
                self.found = true;
                let tokens = std::str::from_utf8(&rest[..end]).ok()?.trim().parse().ok();
                self.carry.clear();
                return tokens;
            }
            // The count has not fully arrived: keep from the marker on.
            self.carry.drain(..at);
            return None;
        }
        // Keep just enough to find a marker split across chunks.
        let keep = marker.len().saturating_sub(1);
        if self.carry.len() > keep {
            self.carry.drain(..self.carry.len() - keep);
        }
        None
    }
}

#[cfg(test)]
mod tests;
