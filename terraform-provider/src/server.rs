//! The provider's gRPC service: Terraform's calls decoded, sent to the
//! resource or data source they name, and answered with values and
//! diagnostics.

use std::sync::RwLock;
use std::time::Duration;

use tonic::{Request, Response, Status};

use crate::admin::Admin;
use crate::diag::{Diagnostic, Severity, Step};
use crate::proto::{self, provider_server::Provider};
use crate::resources::{Ctx, Planned, cell, data_sources, provider_region, tenant};
use crate::schema::{Attribute, Mode, Schema, Shape, Type};
use crate::value::{self, Value};

/// How long destroying or draining a cell waits when the configuration
/// does not say.
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How often a wait asks the control plane again.
const POLL: Duration = Duration::from_millis(500);

/// The resource types.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Tenant,
    Cell,
    ProviderRegion,
}

impl Kind {
    const ALL: [Kind; 3] = [Kind::Tenant, Kind::Cell, Kind::ProviderRegion];

    fn name(self) -> &'static str {
        match self {
            Kind::Tenant => tenant::NAME,
            Kind::Cell => cell::NAME,
            Kind::ProviderRegion => provider_region::NAME,
        }
    }

    fn of(type_name: &str) -> Result<Self, Status> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == type_name)
            .ok_or_else(|| Status::invalid_argument(format!("no resource type {type_name:?}")))
    }

    fn schema(self) -> Schema {
        match self {
            Kind::Tenant => tenant::schema(),
            Kind::Cell => cell::schema(),
            Kind::ProviderRegion => provider_region::schema(),
        }
    }
}

pub fn provider_schema() -> Schema {
    Schema {
        version: 0,
        description: "cellnet's control plane, through its admin API.",
        attributes: vec![
            Attribute::new(
                "endpoint",
                Type::String,
                Mode::Optional,
                "Base URL of the control plane's admin API; ADMIN_URL when left out, else http://127.0.0.1:18090.",
            ),
            Attribute::new(
                "token",
                Type::String,
                Mode::Optional,
                "The operator token; ADMIN_TOKEN when left out.",
            )
            .sensitive(),
            Attribute::new(
                "drain_timeout",
                Type::String,
                Mode::Optional,
                "How long draining or destroying a cell waits for its tenants to be moved off (for example 30m, the default).",
            ),
        ],
    }
}

pub struct CellnetProvider {
    ctx: RwLock<Option<Ctx>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Default for CellnetProvider {
    fn default() -> Self {
        Self {
            ctx: RwLock::new(None),
            stop: tokio::sync::watch::Sender::new(false),
        }
    }
}

impl CellnetProvider {
    fn ctx(&self) -> Result<Ctx, Vec<proto::Diagnostic>> {
        let ctx = self.ctx.read().map(|c| c.clone()).unwrap_or_default();
        ctx.ok_or_else(|| {
            diagnostics(&[Diagnostic::error(
                "The cellnet provider is not configured",
                "Terraform called the provider before configuring it.",
            )])
        })
    }
}

fn proto_schema(s: &Schema) -> proto::Schema {
    proto::Schema {
        version: s.version,
        block: Some(proto::schema::Block {
            version: s.version,
            attributes: s.attributes.iter().map(proto_attribute).collect(),
            description: s.description.to_owned(),
            ..Default::default()
        }),
    }
}

fn proto_attribute(a: &Attribute) -> proto::schema::Attribute {
    let (ty, nested_type) = match &a.shape {
        Shape::Primitive(t) => (t.json().to_string().into_bytes(), None),
        Shape::Nested(attrs) => (
            Vec::new(),
            Some(proto::schema::Object {
                attributes: attrs.iter().map(proto_attribute).collect(),
                nesting: proto::schema::object::NestingMode::Single as i32,
            }),
        ),
    };
    proto::schema::Attribute {
        name: a.name.to_owned(),
        r#type: ty,
        nested_type,
        description: a.description.to_owned(),
        required: a.mode == Mode::Required,
        optional: matches!(a.mode, Mode::Optional | Mode::OptionalComputed),
        computed: matches!(a.mode, Mode::Computed | Mode::OptionalComputed),
        sensitive: a.sensitive,
        ..Default::default()
    }
}

fn diagnostics(ds: &[Diagnostic]) -> Vec<proto::Diagnostic> {
    ds.iter()
        .map(|d| proto::Diagnostic {
            severity: match d.severity {
                Severity::Error => proto::diagnostic::Severity::Error,
                Severity::Warning => proto::diagnostic::Severity::Warning,
            } as i32,
            summary: d.summary.clone(),
            detail: d.detail.clone(),
            attribute: (!d.attribute.is_empty()).then(|| proto::AttributePath {
                steps: d.attribute.iter().map(step).collect(),
            }),
        })
        .collect()
}

fn step(s: &Step) -> proto::attribute_path::Step {
    use proto::attribute_path::step::Selector;
    proto::attribute_path::Step {
        selector: Some(match s {
            Step::Attribute(name) => Selector::AttributeName(name.clone()),
        }),
    }
}

fn decode(v: Option<&proto::DynamicValue>) -> Result<Value, Status> {
    match v {
        Some(dv) if !dv.msgpack.is_empty() => {
            value::decode(&dv.msgpack).map_err(|e| Status::invalid_argument(e.to_string()))
        }
        Some(dv) if !dv.json.is_empty() => {
            let json: serde_json::Value = serde_json::from_slice(&dv.json)
                .map_err(|e| Status::invalid_argument(format!("a value that is not JSON: {e}")))?;
            Ok(from_json(&json))
        }
        _ => Ok(Value::Null),
    }
}

fn encode(v: &Value) -> Option<proto::DynamicValue> {
    Some(proto::DynamicValue {
        msgpack: value::encode(v),
        json: Vec::new(),
    })
}

/// A JSON value without a schema (numbers as their text).
fn from_json(json: &serde_json::Value) -> Value {
    match json {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => value::number_from_json(n),
        serde_json::Value::String(s) => Value::string(s),
        serde_json::Value::Array(items) => Value::List(items.iter().map(from_json).collect()),
        serde_json::Value::Object(attrs) => Value::Object(
            attrs
                .iter()
                .map(|(k, v)| (k.clone(), from_json(v)))
                .collect(),
        ),
    }
}

/// A stored state (JSON) as an object of the schema: every attribute of the
/// schema present, null where the state has none.
fn from_state_json(attributes: &[Attribute], json: &serde_json::Value) -> Value {
    Value::Object(
        attributes
            .iter()
            .map(|a| {
                let v = &json[a.name];
                let value = match (&a.shape, v) {
                    (_, serde_json::Value::Null) => Value::Null,
                    (Shape::Nested(attrs), v) => from_state_json(attrs, v),
                    (Shape::Primitive(_), v) => from_json(v),
                };
                (a.name.to_owned(), value)
            })
            .collect(),
    )
}

fn requires_replace(planned: &Planned) -> Vec<proto::AttributePath> {
    planned
        .requires_replace
        .iter()
        .map(|a| proto::AttributePath {
            steps: vec![step(&Step::Attribute((*a).to_owned()))],
        })
        .collect()
}

#[tonic::async_trait]
impl Provider for CellnetProvider {
    async fn get_metadata(
        &self,
        _: Request<proto::get_metadata::Request>,
    ) -> Result<Response<proto::get_metadata::Response>, Status> {
        use proto::get_metadata::{DataSourceMetadata, ResourceMetadata};
        Ok(Response::new(proto::get_metadata::Response {
            server_capabilities: Some(capabilities()),
            diagnostics: Vec::new(),
            data_sources: [data_sources::CELLS, data_sources::PLACEMENT]
                .map(|n| DataSourceMetadata {
                    type_name: n.to_owned(),
                })
                .into(),
            resources: Kind::ALL
                .map(|k| ResourceMetadata {
                    type_name: k.name().to_owned(),
                })
                .into(),
        }))
    }

    async fn get_provider_schema(
        &self,
        _: Request<proto::get_provider_schema::Request>,
    ) -> Result<Response<proto::get_provider_schema::Response>, Status> {
        Ok(Response::new(proto::get_provider_schema::Response {
            provider: Some(proto_schema(&provider_schema())),
            resource_schemas: Kind::ALL
                .map(|k| (k.name().to_owned(), proto_schema(&k.schema())))
                .into(),
            data_source_schemas: [
                (
                    data_sources::CELLS.to_owned(),
                    proto_schema(&data_sources::cells_schema()),
                ),
                (
                    data_sources::PLACEMENT.to_owned(),
                    proto_schema(&data_sources::placement_schema()),
                ),
            ]
            .into(),
            diagnostics: Vec::new(),
            provider_meta: None,
            server_capabilities: Some(capabilities()),
        }))
    }

    async fn validate_provider_config(
        &self,
        request: Request<proto::validate_provider_config::Request>,
    ) -> Result<Response<proto::validate_provider_config::Response>, Status> {
        let config = decode(request.get_ref().config.as_ref())?;
        let mut ds = Vec::new();
        if let Some(endpoint) = config.get("endpoint").as_str()
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            ds.push(
                Diagnostic::error(
                    "endpoint is not a URL",
                    format!("endpoint must be an http(s) URL, got {endpoint:?}"),
                )
                .at(&["endpoint"]),
            );
        }
        if let Some(t) = config.get("drain_timeout").as_str()
            && let Err(e) = humantime::parse_duration(t)
        {
            ds.push(
                Diagnostic::error(
                    "drain_timeout is not a duration",
                    format!("drain_timeout must be a duration such as 30m or 2h: {e}"),
                )
                .at(&["drain_timeout"]),
            );
        }
        Ok(Response::new(proto::validate_provider_config::Response {
            diagnostics: diagnostics(&ds),
        }))
    }

    async fn validate_resource_config(
        &self,
        request: Request<proto::validate_resource_config::Request>,
    ) -> Result<Response<proto::validate_resource_config::Response>, Status> {
        let r = request.get_ref();
        let config = decode(r.config.as_ref())?;
        let ds = match Kind::of(&r.type_name)? {
            Kind::Tenant => tenant::validate(&config),
            Kind::Cell => cell::validate(&config),
            Kind::ProviderRegion => Vec::new(),
        };
        Ok(Response::new(proto::validate_resource_config::Response {
            diagnostics: diagnostics(&ds),
        }))
    }

    async fn validate_data_resource_config(
        &self,
        request: Request<proto::validate_data_resource_config::Request>,
    ) -> Result<Response<proto::validate_data_resource_config::Response>, Status> {
        let r = request.get_ref();
        let config = decode(r.config.as_ref())?;
        let mut ds = Vec::new();
        if r.type_name == data_sources::PLACEMENT
            && let Some(t) = config.get("tenant").as_str()
            && control_plane::model::validate_tenant_id(t).is_err()
        {
            ds.push(
                Diagnostic::error(
                    "Not a tenant id",
                    format!("tenant must be 1-63 characters of a-z, 0-9 and '-', got {t:?}"),
                )
                .at(&["tenant"]),
            );
        }
        Ok(Response::new(
            proto::validate_data_resource_config::Response {
                diagnostics: diagnostics(&ds),
            },
        ))
    }

    async fn upgrade_resource_state(
        &self,
        request: Request<proto::upgrade_resource_state::Request>,
    ) -> Result<Response<proto::upgrade_resource_state::Response>, Status> {
        let r = request.get_ref();
        let schema = Kind::of(&r.type_name)?.schema();
        let raw = r
            .raw_state
            .as_ref()
            .map(|s| s.json.as_slice())
            .unwrap_or_default();
        let json: serde_json::Value = if raw.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(raw).map_err(|e| {
                Status::invalid_argument(format!("a stored state that is not JSON: {e}"))
            })?
        };
        let upgraded = if json.is_null() {
            Value::Null
        } else {
            from_state_json(&schema.attributes, &json)
        };
        Ok(Response::new(proto::upgrade_resource_state::Response {
            upgraded_state: encode(&upgraded),
            diagnostics: Vec::new(),
        }))
    }

    async fn configure_provider(
        &self,
        request: Request<proto::configure_provider::Request>,
    ) -> Result<Response<proto::configure_provider::Response>, Status> {
        let config = decode(request.get_ref().config.as_ref())?;
        let setting = |attr: &str, env: &str| -> Option<String> {
            config
                .get(attr)
                .as_str()
                .map(str::to_owned)
                .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
        };
        let endpoint =
            setting("endpoint", "ADMIN_URL").unwrap_or_else(|| "http://127.0.0.1:18090".to_owned());
        let mut ds = Vec::new();
        let token = setting("token", "ADMIN_TOKEN");
        if token.is_none() {
            ds.push(
                Diagnostic::error(
                    "No operator token",
                    "Set token in the provider block, or ADMIN_TOKEN in the environment.",
                )
                .at(&["token"]),
            );
        }
        let drain_timeout = match config.get("drain_timeout").as_str() {
            Some(t) => humantime::parse_duration(t).unwrap_or(DEFAULT_DRAIN_TIMEOUT),
            None => DEFAULT_DRAIN_TIMEOUT,
        };
        if let (Some(token), Ok(mut slot)) = (token, self.ctx.write()) {
            *slot = Some(Ctx {
                admin: Admin::new(&endpoint, &token),
                drain_timeout,
                poll: POLL,
                stop: self.stop.subscribe(),
            });
        }
        Ok(Response::new(proto::configure_provider::Response {
            diagnostics: diagnostics(&ds),
        }))
    }

    async fn read_resource(
        &self,
        request: Request<proto::read_resource::Request>,
    ) -> Result<Response<proto::read_resource::Response>, Status> {
        let r = request.get_ref();
        let kind = Kind::of(&r.type_name)?;
        let current = decode(r.current_state.as_ref())?;
        let ctx = match self.ctx() {
            Ok(ctx) => ctx,
            Err(diagnostics) => {
                return Ok(Response::new(proto::read_resource::Response {
                    new_state: encode(&current),
                    diagnostics,
                    private: r.private.clone(),
                }));
            }
        };
        let read = match kind {
            Kind::Tenant => tenant::read(&ctx, &current).await,
            Kind::Cell => cell::read(&ctx, &current).await,
            Kind::ProviderRegion => provider_region::read(&ctx, &current).await,
        };
        let (state, ds) = match read {
            Ok(state) => (state, Vec::new()),
            Err(d) => (current, vec![d]),
        };
        Ok(Response::new(proto::read_resource::Response {
            new_state: encode(&state),
            diagnostics: diagnostics(&ds),
            private: r.private.clone(),
        }))
    }

    async fn plan_resource_change(
        &self,
        request: Request<proto::plan_resource_change::Request>,
    ) -> Result<Response<proto::plan_resource_change::Response>, Status> {
        let r = request.get_ref();
        let prior = decode(r.prior_state.as_ref())?;
        let proposed = decode(r.proposed_new_state.as_ref())?;
        let planned = match Kind::of(&r.type_name)? {
            Kind::Tenant => tenant::plan(&prior, &proposed),
            Kind::Cell => cell::plan(&prior, &proposed),
            Kind::ProviderRegion => provider_region::plan(&prior, &proposed),
        };
        Ok(Response::new(proto::plan_resource_change::Response {
            planned_state: encode(&planned.state),
            requires_replace: requires_replace(&planned),
            planned_private: r.prior_private.clone(),
            diagnostics: Vec::new(),
        }))
    }

    async fn apply_resource_change(
        &self,
        request: Request<proto::apply_resource_change::Request>,
    ) -> Result<Response<proto::apply_resource_change::Response>, Status> {
        let r = request.get_ref();
        let kind = Kind::of(&r.type_name)?;
        let prior = decode(r.prior_state.as_ref())?;
        let planned = decode(r.planned_state.as_ref())?;
        let ctx = match self.ctx() {
            Ok(ctx) => ctx,
            Err(diagnostics) => {
                return Ok(Response::new(proto::apply_resource_change::Response {
                    new_state: encode(&prior),
                    private: Vec::new(),
                    diagnostics,
                }));
            }
        };
        let (state, ds) = match kind {
            Kind::Tenant => tenant::apply(&ctx, &prior, &planned).await,
            Kind::Cell => cell::apply(&ctx, &prior, &planned).await,
            Kind::ProviderRegion => provider_region::apply(&ctx, &prior, &planned).await,
        };
        Ok(Response::new(proto::apply_resource_change::Response {
            new_state: encode(&state),
            private: Vec::new(),
            diagnostics: diagnostics(&ds),
        }))
    }

    async fn import_resource_state(
        &self,
        request: Request<proto::import_resource_state::Request>,
    ) -> Result<Response<proto::import_resource_state::Response>, Status> {
        let r = request.get_ref();
        let state = match Kind::of(&r.type_name)? {
            Kind::Tenant => tenant::import(&r.id),
            Kind::Cell => cell::import(&r.id),
            Kind::ProviderRegion => provider_region::import(&r.id),
        };
        Ok(Response::new(proto::import_resource_state::Response {
            imported_resources: vec![proto::import_resource_state::ImportedResource {
                type_name: r.type_name.clone(),
                state: encode(&state),
                private: Vec::new(),
            }],
            diagnostics: Vec::new(),
        }))
    }

    async fn read_data_source(
        &self,
        request: Request<proto::read_data_source::Request>,
    ) -> Result<Response<proto::read_data_source::Response>, Status> {
        let r = request.get_ref();
        let config = decode(r.config.as_ref())?;
        let ctx = match self.ctx() {
            Ok(ctx) => ctx,
            Err(diagnostics) => {
                return Ok(Response::new(proto::read_data_source::Response {
                    state: encode(&config),
                    diagnostics,
                }));
            }
        };
        let read = match r.type_name.as_str() {
            data_sources::CELLS => data_sources::read_cells(&ctx).await,
            data_sources::PLACEMENT => data_sources::read_placement(&ctx, &config).await,
            other => {
                return Err(Status::invalid_argument(format!(
                    "no data source {other:?}"
                )));
            }
        };
        let (state, ds) = match read {
            Ok(state) => (state, Vec::new()),
            Err(d) => (config, vec![d]),
        };
        Ok(Response::new(proto::read_data_source::Response {
            state: encode(&state),
            diagnostics: diagnostics(&ds),
        }))
    }

    async fn stop_provider(
        &self,
        _: Request<proto::stop_provider::Request>,
    ) -> Result<Response<proto::stop_provider::Response>, Status> {
        self.stop.send_replace(true);
        Ok(Response::new(proto::stop_provider::Response {
            error: String::new(),
        }))
    }
}

fn capabilities() -> proto::ServerCapabilities {
    proto::ServerCapabilities {
        // Destroying is planned too (a null proposed state), so that a
        // destroy's plan is the provider's.
        plan_destroy: true,
        get_provider_schema_optional: false,
        move_resource_state: false,
    }
}

/// The resource schemas, by type name.
#[cfg(test)]
fn resource_schemas() -> Vec<(&'static str, Schema)> {
    Kind::ALL.map(|k| (k.name(), k.schema())).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_state_is_read_with_every_attribute_of_the_schema() {
        let json = serde_json::json!({
            "id": "acme", "name": "acme", "plan": "standard", "cache_threshold": 0.85,
            "limits": {"requests_per_second": 5, "burst": 10},
            "old_attribute": true,
        });
        let v = from_state_json(&tenant::schema().attributes, &json);
        assert_eq!(v.get("cache_threshold"), &Value::number("0.85"));
        assert_eq!(v.get("pin"), &Value::Null);
        assert_eq!(v.get("limits").get("tokens_per_day"), &Value::Null);
        assert_eq!(v.get("limits").get("burst"), &Value::number(10));
        assert!(v.get("old_attribute").is_null());
        let Value::Object(attrs) = &v else {
            panic!("not an object")
        };
        assert_eq!(attrs.len(), tenant::schema().attributes.len());
    }

    #[test]
    fn schemas_follow_terraforms_rules() {
        for (name, schema) in resource_schemas() {
            for a in &schema.attributes {
                let p = proto_attribute(a);
                assert!(p.required || p.optional || p.computed, "{name}.{}", a.name);
                assert!(
                    !(p.required && (p.optional || p.computed)),
                    "{name}.{}",
                    a.name
                );
                assert!(
                    p.r#type.is_empty() != p.nested_type.is_none(),
                    "{name}.{}",
                    a.name
                );
            }
            assert!(
                schema.attributes.iter().any(|a| a.name == "id"),
                "{name} has no id"
            );
        }
    }
}
