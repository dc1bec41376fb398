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
}

/// The validated section, before the environment is consulted.
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<Protocol>,
    pub service_name: Option<String>,
    pub resource_attributes: BTreeMap<String, String>,
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
        TelemetrySettings {
            otlp_endpoint: self.otlp_endpoint,
            otlp_protocol,
            service_name: self.service_name,
            resource_attributes: self.resource_attributes,
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

/// What the exporter is finally built from: settings with the environment
/// applied.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Resolved {
    /// The full URL spans are sent to (for HTTP, ending in `/v1/traces`).
    pub traces_endpoint: String,
    pub protocol: Protocol,
    pub service_name: String,
    pub resource_attributes: Vec<(String, String)>,
    pub batch: BatchSettings,
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

/// Applies the environment (read through `var`) to `settings`. `Ok(None)`
/// when no endpoint is configured or the SDK is disabled.
pub(crate) fn resolve(
    settings: &TelemetrySettings,
    default_service: &str,
    var: impl Fn(&str) -> Option<String>,
) -> Result<Option<Resolved>, String> {
    let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    if var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v == "none")
    {
        return Ok(None);
    }
    let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
    {
        Some(p) => Protocol::parse(&p).ok_or_else(|| {
            format!("OTEL_EXPORTER_OTLP_PROTOCOL must be grpc or http/protobuf, got {p:?}")
        })?,
        None => settings.otlp_protocol.unwrap_or(Protocol::Grpc),
    };
    // A signal-specific endpoint is used as given; a base endpoint gets the
    // signal's path under HTTP (gRPC routes by service name instead).
    let traces_endpoint = if let Some(full) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        check_endpoint(&full).map_err(|p| format!("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT {p}"))?;
        full
    } else {
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
        match protocol {
            Protocol::Grpc => base,
            Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        }
    };
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
    let millis = |name: &str, default: Duration| -> Result<Duration, String> {
        match var(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u64>()
                .map(Duration::from_millis)
                .map_err(|_| format!("{name} must be a whole number of milliseconds, got {v:?}")),
        }
    };
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
    let batch = BatchSettings {
        schedule_delay: millis("OTEL_BSP_SCHEDULE_DELAY", d.schedule_delay)?,
        max_queue_size,
        max_export_batch_size: count("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", d.max_export_batch_size)?
            .min(max_queue_size),
        export_timeout: millis("OTEL_BSP_EXPORT_TIMEOUT", d.export_timeout)?,
    };
    Ok(Some(Resolved {
        traces_endpoint,
        protocol,
        service_name,
        resource_attributes: attributes.into_iter().collect(),
        batch,
    }))
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
        assert_eq!(r.traces_endpoint, "http://env:4318/v1/traces");
        assert_eq!(r.protocol, Protocol::HttpProtobuf);
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
        assert_eq!(
            r.ok().flatten().map(|r| r.traces_endpoint).as_deref(),
            Some("http://t:9/custom")
        );
        let r = resolve(&settings(Some("http://c:4317")), "svc", env(&[]));
        assert_eq!(
            r.ok().flatten().map(|r| r.traces_endpoint).as_deref(),
            Some("http://c:4317")
        );
    }

    #[test]
    fn disabled_sdk_exports_nothing() {
        for pairs in [
            [("OTEL_SDK_DISABLED", "true")],
            [("OTEL_TRACES_EXPORTER", "none")],
        ] {
            assert_eq!(
                resolve(&settings(Some("http://c:4317")), "svc", env(&pairs)),
                Ok(None)
            );
        }
    }

    #[test]
    fn bad_environment_values_are_named() {
        for (name, value) in [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317"),
            ("OTEL_BSP_SCHEDULE_DELAY", "1s"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
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
        }
        .validate("telemetry", &mut e);
        let problems = e.problems().join("\n");
        for field in [
            "telemetry.otlp_endpoint",
            "telemetry.otlp_protocol",
            "telemetry.service_name",
        ] {
            assert!(problems.contains(field), "{problems}");
        }
    }
}
