//! Typed fault injection for a simulated region: set in the simulator's YAML
//! at start and replaced at run time with `PUT /sim/regions/{region}/faults`.
//! Faults are configuration, never magic model names or prompts.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultProfile {
    /// Every request fails with 503: the region is down.
    #[serde(default)]
    pub outage: bool,
    /// Fraction of requests (0–1) answered with a 500.
    #[serde(default)]
    pub error_rate: f64,
    /// Fraction of requests (0–1) answered with a 429 and Retry-After.
    #[serde(default)]
    pub throttle_rate: f64,
    /// Retry-After sent with 429s.
    #[serde(default = "default_retry_after", with = "humantime_serde")]
    pub retry_after: Duration,
    /// Added before every answer.
    #[serde(default, with = "humantime_serde")]
    pub latency: Duration,
    /// Uniform random extra latency in [0, jitter).
    #[serde(default, with = "humantime_serde")]
    pub jitter: Duration,
    /// Requests are accepted and never answered.
    #[serde(default)]
    pub hang: bool,
    /// Streamed answers break off (the connection is cut) after this many
    /// chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_after_chunks: Option<u32>,
    /// Answers ignore the passages and state something they never say, as a
    /// model that makes things up would; a judge's prompt gets the same.
    #[serde(default)]
    pub confabulate: bool,
}

fn default_retry_after() -> Duration {
    Duration::from_secs(1)
}

impl FaultProfile {
    /// Problems with the profile, each naming its field under `path`.
    pub fn problems(&self, path: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (name, v) in [
            ("error_rate", self.error_rate),
            ("throttle_rate", self.throttle_rate),
        ] {
            if !(0.0..=1.0).contains(&v) {
                out.push(format!("{path}.{name} must be between 0 and 1, got {v}"));
            }
        }
        out
    }
}

/// What the region does with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    Serve,
    Outage,
    Error,
    Throttle(Duration),
    Hang,
}

impl FaultProfile {
    /// Draws the fate of one request, and the delay before it.
    pub fn draw(&self) -> (Verdict, Duration) {
        let delay = self.latency
            + if self.jitter.is_zero() {
                Duration::ZERO
            } else {
                self.jitter.mul_f64(rand::random::<f64>())
            };
        let verdict = if self.hang {
            Verdict::Hang
        } else if self.outage {
            Verdict::Outage
        } else {
            let roll: f64 = rand::random();
            if roll < self.throttle_rate {
                Verdict::Throttle(self.retry_after)
            } else if roll < self.throttle_rate + self.error_rate {
                Verdict::Error
            } else {
                Verdict::Serve
            }
        };
        (verdict, delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve() {
        let p = FaultProfile::default();
        assert_eq!(p.draw(), (Verdict::Serve, Duration::ZERO));
    }

    #[test]
    fn outage_and_rates() {
        let p = FaultProfile {
            outage: true,
            ..FaultProfile::default()
        };
        assert_eq!(p.draw().0, Verdict::Outage);
        let p = FaultProfile {
            error_rate: 1.0,
            ..FaultProfile::default()
        };
        assert_eq!(p.draw().0, Verdict::Error);
        let p = FaultProfile {
            throttle_rate: 1.0,
            ..FaultProfile::default()
        };
        assert!(matches!(p.draw().0, Verdict::Throttle(_)));
    }

    #[test]
    fn bad_rates_are_named() {
        let p = FaultProfile {
            error_rate: 1.5,
            ..FaultProfile::default()
        };
        assert_eq!(
            p.problems("regions[0].faults"),
            vec!["regions[0].faults.error_rate must be between 0 and 1, got 1.5"]
        );
    }
}
