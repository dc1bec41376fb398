//! The provider's resources and data sources over the admin API. Each is a
//! module of plain functions on `Value`s: its schema, how a change is
//! planned, applied and read back, and how an id is imported.

pub mod cell;
pub mod data_sources;
pub mod provider_region;
pub mod tenant;

use std::collections::BTreeMap;
use std::time::Duration;

use crate::admin::Admin;
use crate::diag::Diagnostic;
use crate::value::Value;

/// What every call of a configured provider has: the admin API, how long
/// to wait for a drain, and a signal that Terraform asked to stop.
#[derive(Clone)]
pub struct Ctx {
    pub admin: Admin,
    pub drain_timeout: Duration,
    pub poll: Duration,
    pub stop: tokio::sync::watch::Receiver<bool>,
}

impl Ctx {
    /// A wait for `what` bounded by the drain timeout.
    pub fn drain_wait(&self, what: &str) -> Wait {
        self.wait(what, self.drain_timeout)
    }

    /// A wait for `what` of at most `timeout`.
    pub fn wait(&self, what: &str, timeout: Duration) -> Wait {
        Wait {
            what: what.to_owned(),
            timeout,
            deadline: tokio::time::Instant::now() + timeout,
            poll: self.poll,
            stop: self.stop.clone(),
        }
    }
}

/// Polling the control plane until something is done: each `next` waits
/// one interval, or fails once the time is up or Terraform asked to stop.
pub struct Wait {
    what: String,
    timeout: Duration,
    deadline: tokio::time::Instant,
    poll: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Wait {
    pub async fn next(&mut self) -> Result<(), Diagnostic> {
        if *self.stop.borrow() {
            return Err(Diagnostic::error(
                format!("Stopped while waiting for {}", self.what),
                "Terraform asked the provider to stop; the control plane carries on with what was asked of it.",
            ));
        }
        if tokio::time::Instant::now() >= self.deadline {
            return Err(Diagnostic::error(
                format!("Timed out waiting for {}", self.what),
                format!(
                    "Still not done after {}s; the control plane carries on, and the next apply waits again (drain_timeout in the provider block sets how long a drain may take).",
                    self.timeout.as_secs()
                ),
            ));
        }
        tokio::select! {
            () = tokio::time::sleep(self.poll) => {}
            _ = self.stop.changed() => {}
        }
        Ok(())
    }
}

/// A planned change: the new state, and the attributes whose change needs
/// the object replaced.
#[derive(Debug)]
pub struct Planned {
    pub state: Value,
    pub requires_replace: Vec<&'static str>,
}

/// An object value from `(name, value)` pairs.
pub fn object<const N: usize>(attrs: [(&str, Value); N]) -> Value {
    Value::Object(
        attrs
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

/// Sets attribute `name` of an object value.
pub fn set(value: &mut Value, name: &str, v: Value) {
    if let Value::Object(attrs) = value {
        attrs.insert(name.to_owned(), v);
    }
}

/// A list of strings as a value, `Null` for `None`.
pub fn strings(items: Option<&[String]>) -> Value {
    match items {
        Some(items) => Value::List(items.iter().map(Value::string).collect()),
        None => Value::Null,
    }
}

/// A string value's text, or an error naming the attribute when it is not
/// known or missing (Terraform validates required attributes before).
pub fn required_str<'a>(value: &'a Value, name: &'static str) -> Result<&'a str, Diagnostic> {
    value.get(name).as_str().ok_or_else(|| {
        Diagnostic::error(
            format!("{name} is not set"),
            format!("{name} must be a known string here."),
        )
        .at(&[name])
    })
}

/// A number as JSON for the admin API: Terraform sends numbers that are
/// not exact in float64 as decimal text, so text is read as a number too.
pub fn number_json(value: &Value) -> serde_json::Value {
    let text = match value {
        Value::Number(t) | Value::String(t) => t,
        _ => return serde_json::Value::Null,
    };
    text.parse::<u64>()
        .map(serde_json::Value::from)
        .or_else(|_| text.parse::<f64>().map(serde_json::Value::from))
        .unwrap_or(serde_json::Value::Null)
}

/// A value as JSON for the admin API.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null | Value::Unknown => serde_json::Value::Null,
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::Number(text) => text
            .parse::<u64>()
            .map(serde_json::Value::from)
            .or_else(|_| text.parse::<i64>().map(serde_json::Value::from))
            .or_else(|_| text.parse::<f64>().map(serde_json::Value::from))
            .unwrap_or(serde_json::Value::Null),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::List(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Object(attrs) => serde_json::Value::Object(
            attrs
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), to_json(v)))
                .collect(),
        ),
    }
}
