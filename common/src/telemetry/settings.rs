//! Where a service sends its traces: the `telemetry` section of its config,
//! overridden by the standard `OTEL_*` variables, as every OpenTelemetry SDK
//! is configured.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigErrors;

/// The OTLP transports the specification names; `http/json` is not offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "grpc" => Some(Self::Grpc),
            "http/protobuf" => Some(Self::HttpProtobuf),
            _ => None,
        }
    }
}

/// The `telemetry` section as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Base URL of the OTLP receiver, e.g. `http://127.0.0.1:4317`; traces are
    /// exported only when this or `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    #[serde(default)]
    pub otlp_protocol: Option<String>,
    /// `service.name`; each service has its own default.
    #[serde(default)]
    pub service_name: Option<String>,
    /// Extra resource attributes, e.g. `deployment.environment.name: prod`.
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    /// How often metrics are pushed (`OTEL_METRIC_EXPORT_INTERVAL` wins),
    /// e.g. `15s`.
    #[serde(default, with = "humantime_serde")]
    pub metric_interval: Option<Duration>,
}

/// The validated section, before the environment is consulted.
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<Protocol>,
    pub service_name: Option<String>,
    pub resource_attributes: BTreeMap<String, String>,
    pub metric_interval: Option<Duration>,
}

impl RawTelemetry {
    /// Checks the section, recording problems under `path` (e.g. `telemetry`).
    pub fn validate(self, path: &str, e: &mut ConfigErrors) -> TelemetrySettings {
        if let Some(endpoint) = &self.otlp_endpoint
            && let Err(problem) = check_endpoint(endpoint)
        {
            e.push(format!("{path}.otlp_endpoint"), problem);
        }
        let otlp_protocol = self.otlp_protocol.as_deref().and_then(|p| {
            let parsed = Protocol::parse(p);
            e.check(
                parsed.is_some(),
                format!("{path}.otlp_protocol"),
                format!("must be grpc or http/protobuf, got {p:?}"),
            );
            parsed
        });
        if let Some(name) = &self.service_name {
            e.check(
                !name.trim().is_empty(),
                format!("{path}.service_name"),
                "must not be empty",
            );
        }
        if let Some(interval) = self.metric_interval {
            e.check(
                !interval.is_zero(),
                format!("{path}.metric_interval"),
                "must be above zero",
            );
        }
        TelemetrySettings {
            otlp_endpoint: self.otlp_endpoint,
            otlp_protocol,
            service_name: self.service_name,
            resource_attributes: self.resource_attributes,
            metric_interval: self.metric_interval,
        }
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), String> {
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|_| format!("must be a URL like http://127.0.0.1:4317, got {endpoint:?}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(()),
        _ => Err(format!(
            "must be an http:// or https:// URL with a host, got {endpoint:?}"
        )),
    }
}

/// What the exporters are finally built from: settings with the environment
/// applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    /// `None` when `OTEL_TRACES_EXPORTER=none`.
    pub traces: Option<Traces>,
    /// `None` when `OTEL_METRICS_EXPORTER` is `none` or `prometheus` (the
    /// `/metrics` endpoint is always served).
    pub metrics: Option<Metrics>,
}

/// Where one signal goes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Endpoint {
    /// The full URL (for HTTP, ending in the signal's path, `/v1/traces`).
    pub url: String,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Traces {
    pub endpoint: Endpoint,
    pub batch: BatchSettings,
}

/// The periodic metric reader's knobs, from `OTEL_METRIC_EXPORT_*`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Metrics {
    pub endpoint: Endpoint,
    pub interval: Duration,
    pub timeout: Duration,
}

/// The batch span processor's knobs, from the standard `OTEL_BSP_*`
/// variables.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BatchSettings {
    pub schedule_delay: Duration,
    pub max_queue_size: usize,
    pub max_export_batch_size: usize,
    pub export_timeout: Duration,
}

impl Default for BatchSettings {
    /// The specification's defaults, but one second between exports rather
    /// than five, so a trace shows up in a viewer while one still looks.
    fn default() -> Self {
        Self {
            schedule_delay: Duration::from_secs(1),
            max_queue_size: 2048,
            max_export_batch_size: 512,
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// The specification's default export interval is a minute; a quarter of
/// that keeps a viewer's charts close to the `/metrics` endpoint.
const DEFAULT_METRIC_INTERVAL: Duration = Duration::from_secs(15);
const DEFAULT_METRIC_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies the environment (read through `var`) to `settings`. `Ok(None)`
/// when no endpoint is configured or the SDK is disabled.
pub(crate) fn resolve(
    settings: &TelemetrySettings,
    default_service: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Resolved>, String> {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Ok(None);
    }
    let traces = if var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none") {
        None
    } else {
        match endpoint(settings, &var, "TRACES", "traces")? {
            None => None,
            Some(endpoint) => Some(Traces {
                endpoint,
                batch: batch_settings(&var)?,
            }),
        }
    };
    let metrics = if var("OTEL_METRICS_EXPORTER").is_some_and(|v| v == "none" || v == "prometheus")
    {
        None
    } else {
        match endpoint(settings, &var, "METRICS", "metrics")? {
            None => None,
            Some(endpoint) => {
                let interval = millis(
                    &var,
                    "OTEL_METRIC_EXPORT_INTERVAL",
                    settings.metric_interval.unwrap_or(DEFAULT_METRIC_INTERVAL),
                )?;
                if interval.is_zero() {
                    return Err("OTEL_METRIC_EXPORT_INTERVAL must be above zero".into());
                }
                Some(Metrics {
                    endpoint,
                    interval,
                    timeout: millis(&var, "OTEL_METRIC_EXPORT_TIMEOUT", DEFAULT_METRIC_TIMEOUT)?,
                })
            }
        }
    };
    if traces.is_none() && metrics.is_none() {
        return Ok(None);
    }
    let env_attributes = var("OTEL_RESOURCE_ATTRIBUTES")
        .map(|v| parse_resource_attributes(&v))
        .unwrap_or_default();
    let service_name = var("OTEL_SERVICE_NAME")
        .or_else(|| {
            env_attributes
                .iter()
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v.clone())
        })
        .or_else(|| settings.service_name.clone())
        .unwrap_or_else(|| default_service.to_owned());
    // The environment's attributes win over the config's.
    let mut attributes: BTreeMap<String, String> = settings.resource_attributes.clone();
    attributes.extend(env_attributes);
    attributes.remove("service.name");
    Ok(Some(Resolved {
        service_name,
        resource_attributes: attributes.into_iter().collect(),
        traces,
        metrics,
    }))
}

/// One signal's endpoint: `OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT` as given,
/// else the base endpoint (environment, then config) with the signal's path
/// under HTTP (gRPC routes by service name instead). `None` when no endpoint
/// is set at all.
fn endpoint(
    settings: &TelemetrySettings,
    var: &impl Fn(&str) -> Option<String>,
    signal: &str,
    path: &str,
) -> Result<Option<Endpoint>, String> {
    let protocol_var = format!("OTEL_EXPORTER_OTLP_{signal}_PROTOCOL");
    let protocol = match var(&protocol_var).or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL")) {
        Some(p) => Protocol::parse(&p).ok_or_else(|| {
            format!("OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, got {p:?}")
        })?,
        None => settings.otlp_protocol.unwrap_or(Protocol::Grpc),
    };
    let endpoint_var = format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT");
    if let Some(full) = var(&endpoint_var) {
        check_endpoint(&full).map_err(|p| format!("{endpoint_var} {p}"))?;
        return Ok(Some(Endpoint {
            url: full,
            protocol,
        }));
    }
    let base = match var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Some(base) => {
            check_endpoint(&base).map_err(|p| format!("OTEL_EXPORTER_OTLP_ENDPOINT {p}"))?;
            base
        }
        None => match &settings.otlp_endpoint {
            Some(base) => base.clone(),
            None => return Ok(None),
        },
    };
    let url = match protocol {
        Protocol::Grpc => base,
        Protocol::HttpProtobuf => format!("{}/v1/{path}", base.trim_end_matches('/')),
    };
    Ok(Some(Endpoint { url, protocol }))
}

fn millis(
    var: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: Duration,
) -> Result<Duration, String> {
    match var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| format!("{name} must be a whole number of milliseconds, got {v:?}")),
    }
}

fn batch_settings(var: &impl Fn(&str) -> Option<String>) -> Result<BatchSettings, String> {
    let count = |name: &str, default: usize| -> Result<usize, String> {
        match var(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} must be a positive whole number, got {v:?}")),
            },
        }
    };
    let d = BatchSettings::default();
    let max_queue_size = count("OTEL_BSP_MAX_QUEUE_SIZE", d.max_queue_size)?;
    Ok(BatchSettings {
        schedule_delay: millis(var, "OTEL_BSP_SCHEDULE_DELAY", d.schedule_delay)?,
        max_queue_size,
        max_export_batch_size: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", d.max_export_batch_size)?
            .min(max_queue_size),
        export_timeout: millis(var, "OTEL_BSP_EXPORT_TIMEOUT", d.export_timeout)?,
    })
}

/// `key1=value1,key2=value2`, values percent-decoded, as the specification
/// writes `OTEL_RESOURCE_ATTRIBUTES`.
fn parse_resource_attributes(s: &str) -> Vec<(String, String)> {
    s.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let (h, l) = (hex(h).unwrap_or(0), hex(l).unwrap_or(0));
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    fn settings(endpoint: Option<&str>) -> TelemetrySettings {
        TelemetrySettings {
            otlp_endpoint: endpoint.map(str::to_owned),
            ..TelemetrySettings::default()
        }
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(resolve(&settings(None), "svc", env(&[])), Ok(None));
    }

    #[test]
    fn the_environment_overrides_the_config() {
        let r = resolve(
            &TelemetrySettings {
                otlp_endpoint: Some("http://config:4317".into()),
                otlp_protocol: Some(Protocol::Grpc),
                service_name: Some("from-config".into()),
                resource_attributes: [("team".to_owned(), "a".to_owned())].into(),
                metric_interval: None,
            },
            "svc",
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318/"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_RESOURCE_ATTRIBUTES", "team=b,region=us%20east"),
            ]),
        )
        .ok()
        .flatten();
        let r = r.expect("resolved");
        let traces = r.traces.expect("traces").endpoint;
        assert_eq!(traces.url, "http://env:4318/v1/traces");
        assert_eq!(traces.protocol, Protocol::HttpProtobuf);
        let metrics = r.metrics.expect("metrics").endpoint;
        assert_eq!(metrics.url, "http://env:4318/v1/metrics");
        assert_eq!(r.service_name, "from-config");
        assert_eq!(
            r.resource_attributes,
            vec![
                ("region".to_owned(), "us east".to_owned()),
                ("team".to_owned(), "b".to_owned())
            ]
        );
    }

    #[test]
    fn service_name_precedence() {
        let name = |pairs: &[(&str, &str)]| {
            resolve(&settings(Some("http://c:4317")), "default", env(pairs))
                .ok()
                .flatten()
                .map(|r| r.service_name)
        };
        assert_eq!(name(&[]).as_deref(), Some("default"));
        assert_eq!(
            name(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=attr")]).as_deref(),
            Some("attr")
        );
        assert_eq!(
            name(&[
                ("OTEL_RESOURCE_ATTRIBUTES", "service.name=attr"),
                ("OTEL_SERVICE_NAME", "env")
            ])
            .as_deref(),
            Some("env")
        );
    }

    #[test]
    fn signal_endpoint_is_used_as_given_and_grpc_gets_no_path() {
        let r = resolve(
            &settings(Some("http://c:4317")),
            "svc",
            env(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/custom")]),
        );
        let traces = |r: Result<Option<Resolved>, String>| {
            r.ok()
                .flatten()
                .and_then(|r| r.traces)
                .map(|t| t.endpoint.url)
        };
        assert_eq!(traces(r).as_deref(), Some("http://t:9/custom"));
        let r = resolve(&settings(Some("http://c:4317")), "svc", env(&[]));
        assert_eq!(traces(r).as_deref(), Some("http://c:4317"));
    }

    #[test]
    fn each_signal_has_its_own_endpoint_protocol_and_switch() {
        let r = resolve(
            &settings(Some("http://c:4317")),
            "svc",
            env(&[
                ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                    "http://m:4318/v1/metrics",
                ),
                ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
            ]),
        )
        .ok()
        .flatten()
        .expect("resolved");
        assert_eq!(
            r.traces.map(|t| t.endpoint),
            Some(Endpoint {
                url: "http://c:4317".into(),
                protocol: Protocol::Grpc
            })
        );
        let metrics = r.metrics.expect("metrics");
        assert_eq!(metrics.endpoint.url, "http://m:4318/v1/metrics");
        assert_eq!(metrics.endpoint.protocol, Protocol::HttpProtobuf);
        assert_eq!(metrics.interval, Duration::from_millis(250));

        let only = |pairs: &[(&str, &str)]| {
            resolve(&settings(Some("http://c:4317")), "svc", env(pairs))
                .ok()
                .flatten()
                .map(|r| (r.traces.is_some(), r.metrics.is_some()))
        };
        assert_eq!(only(&[]), Some((true, true)));
        assert_eq!(
            only(&[("OTEL_TRACES_EXPORTER", "none")]),
            Some((false, true))
        );
        assert_eq!(
            only(&[("OTEL_METRICS_EXPORTER", "none")]),
            Some((true, false))
        );
        assert_eq!(
            only(&[("OTEL_METRICS_EXPORTER", "prometheus")]),
            Some((true, false))
        );
        assert_eq!(
            only(&[
                ("OTEL_TRACES_EXPORTER", "none"),
                ("OTEL_METRICS_EXPORTER", "none")
            ]),
            None
        );
    }

    #[test]
    fn the_metric_interval_comes_from_the_environment_then_the_config() {
        let interval = |config: Option<Duration>, pairs: &[(&str, &str)]| {
            resolve(
                &TelemetrySettings {
                    metric_interval: config,
                    ..settings(Some("http://c:4317"))
                },
                "svc",
                env(pairs),
            )
            .ok()
            .flatten()
            .and_then(|r| r.metrics)
            .map(|m| m.interval)
        };
        assert_eq!(interval(None, &[]), Some(DEFAULT_METRIC_INTERVAL));
        assert_eq!(
            interval(Some(Duration::from_secs(2)), &[]),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            interval(
                Some(Duration::from_secs(2)),
                &[("OTEL_METRIC_EXPORT_INTERVAL", "500")]
            ),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn disabled_sdk_exports_nothing() {
        assert_eq!(
            resolve(
                &settings(Some("http://c:4317")),
                "svc",
                env(&[("OTEL_SDK_DISABLED", "true")])
            ),
            Ok(None)
        );
    }

    #[test]
    fn bad_environment_values_are_named() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1s"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
            ("OTEL_METRIC_EXPORT_TIMEOUT", "soon"),
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "m:4318"),
        ] {
            let err = resolve(
                &settings(Some("http://c:4317")),
                "svc",
                env(&[(name, value)]),
            )
            .expect_err(name);
            assert!(err.starts_with(name), "{err}");
        }
    }

    #[test]
    fn config_errors_name_their_field() {
        let mut e = ConfigErrors::new();
        RawTelemetry {
            otlp_endpoint: Some("not a url".into()),
            otlp_protocol: Some("udp".into()),
            service_name: Some(" ".into()),
            resource_attributes: BTreeMap::new(),
            metric_interval: Some(Duration::ZERO),
        }
        .validate("telemetry", &mut e);
        let problems = e.problems().join("\n");
        for field in [
            "telemetry.otlp_endpoint",
            "telemetry.otlp_protocol",
            "telemetry.service_name",
            "telemetry.metric_interval",
        ] {
            assert!(problems.contains(field), "{problems}");
        }
    }
}
