//! A Kubernetes API server in memory, for the operator's tests: a tower
//! service a `kube::Client` talks to. It keeps objects by their API path,
//! serves GET, POST, DELETE and PATCH the way the API server does for the
//! content types the operator sends (server-side apply, JSON patch, merge
//! patch), refuses what the real one refuses (an apply without a field
//! manager, a body whose kind or name does not match its path, a JSON patch
//! whose `test` fails), honours finalizers on delete, lists and watches
//! collections from a resourceVersion (so kube's `Controller` can run
//! against it), and records
//! every request so a test can check paths, verbs and bodies. Failures can
//! be injected per request.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use serde_json::{Value, json};
use tokio::sync::mpsc;

type Reply = Response<UnsyncBoxBody<Bytes, Infallible>>;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    /// Answer the next request matching (method, path) with this status.
    faults: Vec<(Method, String, u16)>,
    revision: u64,
    watches: Vec<Watch>,
    /// Every change, by revision, so a watch from a list's resourceVersion
    /// misses nothing that happened in between.
    history: Vec<(u64, String, Value, Bytes)>,
}

/// An open watch: the collection, its label selector, where events go.
type Watch = (String, Vec<(String, String)>, mpsc::UnboundedSender<Bytes>);

impl State {
    /// Stores `object` at `path` and tells the watches of its collection.
    fn put(&mut self, path: &str, object: Value) {
        let kind = if self.objects.contains_key(path) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(path.to_owned(), object.clone());
        self.notify(path, kind, &object);
    }

    fn take(&mut self, path: &str) -> Option<Value> {
        let object = self.objects.remove(path)?;
        self.notify(path, "DELETED", &object);
        Some(object)
    }

    fn notify(&mut self, path: &str, kind: &str, object: &Value) {
        let Some((collection, _)) = path.rsplit_once('/') else {
            return;
        };
        let line = Bytes::from(format!("{}\n", json!({"type": kind, "object": object})));
        // A change after a list always has a later revision than the list.
        self.revision += 1;
        self.history.push((
            self.revision,
            collection.to_owned(),
            object.clone(),
            line.clone(),
        ));
        self.watches.retain(|(c, selector, tx)| {
            c != collection || !selects(selector, object) || tx.send(line.clone()).is_ok()
        });
    }
}

/// `labelSelector` as `k=v` pairs (all must match).
fn selector(query: &BTreeMap<String, String>) -> Vec<(String, String)> {
    query
        .get("labelSelector")
        .map(|s| percent_decode(s))
        .unwrap_or_default()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn selects(selector: &[(String, String)], object: &Value) -> bool {
    selector
        .iter()
        .all(|(k, v)| object["metadata"]["labels"][k] == v.as_str())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1..i + 3)) {
            (b'%', Some(hex)) => {
                let decoded = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match decoded {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Clone, Default)]
pub struct FakeKube {
    state: Arc<Mutex<State>>,
}

impl FakeKube {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client whose requests this server answers.
    pub fn client(&self, namespace: &str) -> kube::Client {
        let fake = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(request).await) }
        });
        kube::Client::new(service, namespace)
    }

    /// Stores `object` at `path` as if it had been created (uid, generation,
    /// resourceVersion filled in when missing).
    pub fn insert(&self, path: &str, mut object: Value) {
        let mut state = self.state();
        state.revision += 1;
        let meta = &mut object["metadata"];
        if meta.get("uid").is_none() {
            meta["uid"] = json!(format!("uid-{}", state.revision));
        }
        if meta.get("generation").is_none() {
            meta["generation"] = json!(1);
        }
        meta["resourceVersion"] = json!(state.revision.to_string());
        state.put(path, object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.state().objects.get(path).cloned()
    }

    /// Removes an object behind the operator's back.
    pub fn remove(&self, path: &str) -> Option<Value> {
        self.state().take(path)
    }

    /// Changes a stored object in place (a user's edit, or a controller's
    /// status); a changed `spec` bumps the generation.
    pub fn edit(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.state();
        state.revision += 1;
        let revision = state.revision;
        let Some(mut object) = state.objects.get(path).cloned() else {
            panic!("no object at {path}");
        };
        let spec_before = object.get("spec").cloned();
        change(&mut object);
        if object.get("spec").cloned() != spec_before {
            let generation = object["metadata"]["generation"].as_i64().unwrap_or(1);
            object["metadata"]["generation"] = json!(generation + 1);
        }
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        state.put(path, object);
    }

    /// Makes the next `method` request to `path` fail with `status`.
    pub fn fail_next(&self, method: Method, path: &str, status: u16) {
        self.state().faults.push((method, path.to_owned(), status));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state().requests.clone()
    }

    pub fn clear_requests(&self) {
        self.state().requests.clear();
    }

    async fn handle(&self, request: Request<kube::client::Body>) -> Reply {
        let (parts, body) = request.into_parts();
        let bytes = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return status(400, "BadRequest", &format!("unreadable body: {e}")),
        };
        let path = parts.uri.path().to_owned();
        let query: BTreeMap<String, String> = parts
            .uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|kv| !kv.is_empty())
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None => (kv.to_owned(), String::new()),
            })
            .collect();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body: Option<Value> = if bytes.is_empty() {
            None
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => Some(v),
                Err(e) => return status(400, "BadRequest", &format!("body is not JSON: {e}")),
            }
        };
        let mut state = self.state();
        state.requests.push(Recorded {
            method: parts.method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });
        if let Some(i) = state
            .faults
            .iter()
            .position(|(m, p, _)| *m == parts.method && *p == path)
        {
            let (_, _, code) = state.faults.remove(i);
            return status(code, "InternalError", "injected fault");
        }
        let Some(target) = Target::parse(&path) else {
            return status(404, "NotFound", &format!("no such API path {path}"));
        };
        match (parts.method, target.name.is_some()) {
            (Method::GET, true) => match state.objects.get(&target.object) {
                Some(o) => ok(o),
                None => not_found(&target),
            },
            (Method::GET, false) if query.get("watch").is_some_and(|w| w == "true") => {
                let (tx, rx) = mpsc::unbounded_channel();
                let since: u64 = query
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let wanted = selector(&query);
                for (_, _, _, line) in state.history.iter().filter(|(rev, c, o, _)| {
                    *rev > since && *c == target.object && selects(&wanted, o)
                }) {
                    let _ = tx.send(line.clone());
                }
                state.watches.push((target.object.clone(), wanted, tx));
                let events = futures::stream::unfold(rx, |mut rx| async move {
                    let line = rx.recv().await?;
                    Some((Ok::<_, Infallible>(http_body::Frame::data(line)), rx))
                });
                let mut response = Response::new(BodyExt::boxed_unsync(StreamBody::new(events)));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                response
            }
            (Method::GET, false) => {
                let selector = selector(&query);
                let prefix = format!("{}/", target.object);
                let items: Vec<Value> = state
                    .objects
                    .iter()
                    .filter(|(p, o)| {
                        p.strip_prefix(&prefix).is_some_and(|n| !n.contains('/'))
                            && selects(&selector, o)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                let api_version = target.api_version.clone();
                ok(&json!({
                    "apiVersion": api_version,
                    "kind": "List",
                    "metadata": {"resourceVersion": state.revision.to_string()},
                    "items": items,
                }))
            }
            (Method::POST, false) => {
                let Some(mut object) = body else {
                    return status(400, "BadRequest", "POST without a body");
                };
                let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
                    return status(422, "Invalid", "metadata.name is required");
                };
                let key = format!("{}/{name}", target.object);
                if state.objects.contains_key(&key) {
                    return status(409, "AlreadyExists", &format!("{name} already exists"));
                }
                state.revision += 1;
                object["metadata"]["resourceVersion"] = json!(state.revision.to_string());
                state.put(&key, object.clone());
                respond(201, &object)
            }
            (Method::DELETE, true) => delete(&mut state, &target),
            (Method::PATCH, true) => patch(
                &mut state,
                &target,
                content_type.as_deref(),
                &query,
                body.unwrap_or(Value::Null),
            ),
            (method, _) => status(
                405,
                "MethodNotAllowed",
                &format!("{method} is not served on {path}"),
            ),
        }
    }
}

/// Where a request points: the object's path (without `/status`), its name
/// and kind as the path spells them.
struct Target {
    object: String,
    /// `v1`, or `group/version`.
    api_version: String,
    name: Option<String>,
    plural: String,
    status: bool,
}

impl Target {
    fn parse(path: &str) -> Option<Target> {
        // api/v1[/namespaces/NS]/PLURAL[/NAME[/status]], or the same
        // under apis/GROUP/VERSION.
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let mut i = match parts.as_slice() {
            ["api", "v1", ..] => 2,
            ["apis", _, _, ..] => 3,
            _ => return None,
        };
        if parts.get(i) == Some(&"namespaces") && parts.len() > i + 2 {
            i += 2;
        }
        let plural = (*parts.get(i)?).to_owned();
        let name = parts.get(i + 1).map(|n| (*n).to_owned());
        let status = match parts.get(i + 2) {
            None => false,
            Some(&"status") if parts.len() == i + 3 => true,
            Some(_) => return None,
        };
        let end = if name.is_some() { i + 2 } else { i + 1 };
        let api_version = match parts.as_slice() {
            ["api", v, ..] => (*v).to_owned(),
            [_, group, version, ..] => format!("{group}/{version}"),
            _ => return None,
        };
        Some(Target {
            api_version,
            object: format!("/{}", parts[..end].join("/")),
            name,
            plural,
            status,
        })
    }
}

fn delete(state: &mut State, target: &Target) -> Reply {
    let Some(mut object) = state.objects.get(&target.object).cloned() else {
        return not_found(target);
    };
    let has_finalizers = object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        object["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        state.put(&target.object, object.clone());
        return ok(&object);
    }
    match state.take(&target.object) {
        Some(o) => ok(&o),
        None => not_found(target),
    }
}

fn patch(
    state: &mut State,
    target: &Target,
    content_type: Option<&str>,
    query: &BTreeMap<String, String>,
    body: Value,
) -> Reply {
    state.revision += 1;
    let revision = state.revision.to_string();
    let existing = state.objects.get(&target.object).cloned();
    let name = target.name.clone().unwrap_or_default();
    let updated = match content_type {
        Some("application/apply-patch+yaml") => {
            if query.get("fieldManager").is_none_or(|m| m.is_empty()) {
                return status(422, "Invalid", "fieldManager is required for apply patch");
            }
            if body["metadata"]["name"].as_str().is_some_and(|n| n != name) {
                return status(
                    400,
                    "BadRequest",
                    "the name of the body differs from the path",
                );
            }
            let kind = body["kind"].as_str().unwrap_or_default();
            if !kind_matches(kind, &target.plural) || body["apiVersion"].as_str().is_none() {
                return status(
                    400,
                    "BadRequest",
                    &format!(
                        "apply needs apiVersion and kind {kind:?} of {}",
                        target.plural
                    ),
                );
            }
            if target.status {
                let Some(mut object) = existing.clone() else {
                    return not_found(target);
                };
                object["status"] = body["status"].clone();
                object
            } else {
                apply(existing.clone(), body, &revision)
            }
        }
        Some("application/json-patch+json") => {
            let Some(mut object) = existing.clone() else {
                return not_found(target);
            };
            // The API server's JSON patch takes a missing field as null,
            // so `test` of an absent path against null passes.
            let body = match body {
                Value::Array(ops) => Value::Array(
                    ops.into_iter()
                        .filter(|op| {
                            let absent = op["path"]
                                .as_str()
                                .is_some_and(|p| object.pointer(p).is_none());
                            !(op["op"] == "test" && op["value"].is_null() && absent)
                        })
                        .collect(),
                ),
                other => other,
            };
            let ops: json_patch::Patch = match serde_json::from_value(body) {
                Ok(p) => p,
                Err(e) => return status(400, "BadRequest", &format!("bad JSON patch: {e}")),
            };
            if let Err(e) = json_patch::patch(&mut object, &ops) {
                return status(
                    422,
                    "Invalid",
                    &format!("the JSON patch does not apply: {e}"),
                );
            }
            object
        }
        Some("application/merge-patch+json") => {
            let Some(mut object) = existing.clone() else {
                return not_found(target);
            };
            json_patch::merge(&mut object, &body);
            object
        }
        other => {
            return status(
                415,
                "UnsupportedMediaType",
                &format!("content type {other:?} is not a patch type"),
            );
        }
    };
    let mut updated = updated;
    // A patch that changes nothing leaves the object as it was, its
    // resourceVersion included.
    let without_version = |o: &Value| {
        let mut o = o.clone();
        if let Some(meta) = o["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        o
    };
    let unchanged = existing
        .as_ref()
        .is_some_and(|old| without_version(old) == without_version(&updated));
    updated["metadata"]["resourceVersion"] = match (&existing, unchanged) {
        (Some(old), true) => old["metadata"]["resourceVersion"].clone(),
        _ => json!(revision),
    };
    let gone = updated["metadata"].get("deletionTimestamp").is_some()
        && updated["metadata"]["finalizers"]
            .as_array()
            .is_none_or(|f| f.is_empty());
    if gone {
        state.take(&target.object);
    } else if !unchanged {
        state.put(&target.object, updated.clone());
    }
    ok(&updated)
}

/// Server-side apply as far as one field manager sees it: the applied
/// object replaces what it sets; identity, status and fields set by the
/// server stay; a changed spec bumps the generation.
fn apply(existing: Option<Value>, mut body: Value, revision: &str) -> Value {
    let Some(old) = existing else {
        body["metadata"]["uid"] = json!(format!("uid-{revision}"));
        body["metadata"]["generation"] = json!(1);
        body["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        return body;
    };
    let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
    for key in [
        "uid",
        "creationTimestamp",
        "finalizers",
        "deletionTimestamp",
    ] {
        if let Some(v) = old["metadata"].get(key) {
            body["metadata"][key] = v.clone();
        }
    }
    let changed = body.get("spec") != old.get("spec");
    body["metadata"]["generation"] = json!(if changed { generation + 1 } else { generation });
    if let Some(status) = old.get("status") {
        body["status"] = status.clone();
    }
    body
}

fn kind_matches(kind: &str, plural: &str) -> bool {
    format!("{}s", kind.to_lowercase()) == plural
}

fn ok(object: &Value) -> Reply {
    respond(200, object)
}

fn respond(code: u16, object: &Value) -> Reply {
    let mut response = Response::new(BodyExt::boxed_unsync(Full::new(Bytes::from(
        object.to_string(),
    ))));
    *response.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::OK);
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

fn not_found(target: &Target) -> Reply {
    status(
        404,
        "NotFound",
        &format!(
            "{} \"{}\" not found",
            target.plural,
            target.name.clone().unwrap_or_default()
        ),
    )
}

/// A `Status` failure, as the API server answers one.
fn status(code: u16, reason: &str, message: &str) -> Reply {
    respond(
        code,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }),
    )
}
