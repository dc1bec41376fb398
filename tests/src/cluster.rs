//! A whole system on one machine for end-to-end tests: etcd, Redis, the
//! provider simulator, the control plane, cells in two regions and a router.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::process::{Etcd, Redis, Service};

pub const ADMIN_TOKEN: &str = "test-operator-token-0123456789";
pub const PROVIDER_KEY: &str = "sim-key";

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// (cell id, region) of each cell.
    pub cells: Vec<(String, String)>,
    pub router_max_body_bytes: usize,
    /// Extra router settings, merged into its config.
    pub router_settings: Value,
    /// Extra cell settings, merged into every cell's config; `{sim}` in a
    /// string stands for the simulator's URL.
    pub cell_settings: Value,
    /// The cells' provider list, replacing the default (Azure East US, then
    /// Azure West Europe); `{sim}` in a string stands for the simulator's URL.
    pub providers: Option<Value>,
    /// Routers started (all alike, sharing Redis); `router` is the first.
    pub routers: usize,
    /// Extra control-plane settings, merged into its config.
    pub control_plane_settings: Value,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            cells: vec![("cell-a".into(), "eu-west".into())],
            router_max_body_bytes: 1024 * 1024,
            router_settings: json!({}),
            cell_settings: json!({}),
            providers: None,
            routers: 1,
            control_plane_settings: json!({}),
        }
    }
}

impl ClusterOptions {
    /// Two cells in two regions (cell-a in eu-west, cell-b in us-east): one
    /// replica set holding every tenant.
    pub fn two_regions() -> Self {
        Self {
            cells: vec![
                ("cell-a".into(), "eu-west".into()),
                ("cell-b".into(), "us-east".into()),
            ],
            ..Self::default()
        }
    }
}

pub struct Cluster {
    pub etcd: Etcd,
    pub redis: Redis,
    pub sim: Service,
    pub control_plane: Service,
    pub cells: Vec<(String, Service)>,
    pub router: Service,
    /// Routers beyond the first.
    pub more_routers: Vec<Service>,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    cell_configs: Vec<PathBuf>,
    control_plane_config: PathBuf,
    /// What every cell's config starts from; `id`, `region` and `data_dir` are set per cell.
    cell_template: Value,
}

fn merge(base: &mut Value, extra: &Value) {
    if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
        base.extend(extra.clone());
    }
}

fn write(path: &Path, value: &Value) -> anyhow::Result<()> {
    // JSON is YAML: configs are written as JSON for exactness.
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Writes a cell's config from the template (with `extra` merged in) and
/// starts it.
fn start_cell(
    dir: &Path,
    template: &Value,
    id: &str,
    region: &str,
    extra: &Value,
) -> anyhow::Result<(Service, PathBuf)> {
    let config = dir.join(format!("{id}.yaml"));
    let mut cell_config = template.clone();
    merge(&mut cell_config, extra);
    merge(
        &mut cell_config,
        &json!({"id": id, "region": region, "data_dir": dir.join(id)}),
    );
    write(&config, &cell_config)?;
    let cell = Service::start("cell", &config, &[("TEST_PROVIDER_KEY", PROVIDER_KEY)], dir)?;
    Ok((cell, config))
}

impl Cluster {
    /// Starts one more cell; it registers and joins like the others.
    pub fn add_cell(&mut self, id: &str, region: &str) -> anyhow::Result<()> {
        self.add_cell_with(id, region, &json!({}))
    }

    /// Starts one more cell with `settings` merged into its config (a
    /// `template`, say).
    pub fn add_cell_with(
        &mut self,
        id: &str,
        region: &str,
        settings: &Value,
    ) -> anyhow::Result<()> {
        let (cell, config) =
            start_cell(self.dir.path(), &self.cell_template, id, region, settings)?;
        self.cells.push((id.to_owned(), cell));
        self.cell_configs.push(config);
        Ok(())
    }

    /// Starts the control plane again (after a kill) with its config.
    pub fn restart_control_plane(&mut self) -> anyhow::Result<()> {
        self.control_plane = Service::start(
            "control-plane",
            &self.control_plane_config,
            &[("CELLNET_ADMIN_TOKEN", ADMIN_TOKEN)],
            self.dir.path(),
        )?;
        Ok(())
    }

    /// Every router's base URL, the first one first.
    pub fn router_urls(&self) -> Vec<String> {
        std::iter::once(&self.router)
            .chain(&self.more_routers)
            .map(|r| r.url.clone())
            .collect()
    }

    pub async fn start(options: ClusterOptions) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let logs = dir.path();
        let etcd = Etcd::start()?;
        let redis = Redis::start()?;
        let etcd_section = json!({"endpoints": [etcd.client_url], "prefix": "/cellnet/"});

        let sim_config = dir.path().join("sim.yaml");
        write(
            &sim_config,
            &json!({
                "listen": "127.0.0.1:0",
                "api_key": PROVIDER_KEY,
                "regions": [
                    {"name": "azure-eastus", "deployments": ["gpt-4o-mini", "text-embedding-3-small"]},
                    {"name": "azure-westeurope", "deployments": ["gpt-4o-mini"]},
                    {"name": "vertex-us-central1", "deployments": ["gemini-2.0-flash", "text-embedding-005"]},
                    {"name": "openai-local", "deployments": ["llama-3.1-8b-instruct"]}
                ]
            }),
        )?;
        let sim = Service::start("provider-sim", &sim_config, &[], logs)?;

        let cp_config = dir.path().join("control-plane.yaml");
        let mut cp_settings = json!({
            "listen": "127.0.0.1:0",
            "etcd": etcd_section,
            "redis": {"url": redis.url},
        });
        merge(&mut cp_settings, &options.control_plane_settings);
        write(&cp_config, &cp_settings)?;
        let control_plane = Service::start(
            "control-plane",
            &cp_config,
            &[("CELLNET_ADMIN_TOKEN", ADMIN_TOKEN)],
            logs,
        )?;

        let providers = match &options.providers {
            Some(p) => serde_json::from_str(&p.to_string().replace("{sim}", &sim.url))?,
            None => json!([
                {"kind": "azure_openai", "name": "azure-eastus", "region": "eastus",
                 "endpoint": format!("{}/azure-eastus", sim.url), "deployment": "gpt-4o-mini",
                 "api_key_env": "TEST_PROVIDER_KEY", "timeout": "10s"},
                {"kind": "azure_openai", "name": "azure-westeurope", "region": "westeurope",
                 "endpoint": format!("{}/azure-westeurope", sim.url), "deployment": "gpt-4o-mini",
                 "api_key_env": "TEST_PROVIDER_KEY", "timeout": "10s"}
            ]),
        };
        let cell_settings: Value =
            serde_json::from_str(&options.cell_settings.to_string().replace("{sim}", &sim.url))?;
        let mut cell_template = json!({
            "listen": "127.0.0.1:0",
            "etcd": etcd_section,
            "redis": {"url": redis.url},
            "providers": providers,
            "prices": {"gpt-4o-mini": {"input_per_million": 0.15, "output_per_million": 0.6}}
        });
        merge(&mut cell_template, &cell_settings);
        let mut cells = Vec::new();
        let mut cell_configs = Vec::new();
        for (id, region) in &options.cells {
            let (cell, config) = start_cell(dir.path(), &cell_template, id, region, &json!({}))?;
            cells.push((id.clone(), cell));
            cell_configs.push(config);
        }

        let router_config = dir.path().join("router.yaml");
        let mut router_settings = json!({
            "listen": "127.0.0.1:0",
            "etcd": etcd_section,
            "request_timeout": "30s",
            "max_body_bytes": options.router_max_body_bytes,
            "redis": {"url": redis.url},
        });
        merge(&mut router_settings, &options.router_settings);
        write(&router_config, &router_settings)?;
        let router = Service::start("router", &router_config, &[], logs)?;
        let mut more_routers = Vec::new();
        for i in 1..options.routers.max(1) {
            let config = dir.path().join(format!("router-{i}.yaml"));
            write(&config, &router_settings)?;
            more_routers.push(Service::start("router", &config, &[], logs)?);
        }
        let cluster = Self {
            etcd,
            redis,
            sim,
            control_plane,
            cells,
            router,
            more_routers,
            http: reqwest::Client::new(),
            dir,
            cell_configs,
            control_plane_config: cp_config,
            cell_template,
        };
        cluster.wait_for_cells(options.cells.len()).await?;
        Ok(cluster)
    }

    /// The body of a GET to the router's `path` (`/readyz`, `/metrics`), whatever its status.
    pub async fn router_text(&self, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.router.url);
        Ok(self.http.get(url).send().await?.text().await?)
    }

    /// The body of a GET to cell `cell`'s `path` (`/metrics`), whatever its status.
    pub async fn cell_text(&self, cell: &str, path: &str) -> anyhow::Result<String> {
        let url = format!("{}{path}", self.cell_url(cell)?);
        Ok(self.http.get(url).send().await?.text().await?)
    }

    /// Waits until every router routes to `n` cells (its `/readyz` counts them).
    pub async fn wait_for_cells(&self, n: usize) -> anyhow::Result<()> {
        let want = format!("ok: {n} cells");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        for url in self.router_urls() {
            loop {
                let body = self
                    .http
                    .get(format!("{url}/readyz"))
                    .send()
                    .await?
                    .text()
                    .await?;
                if body.trim() == want {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    bail!("router {url} never saw {n} cells; last said {body:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Creates a tenant through the admin API; returns its API key.
    pub async fn create_tenant(&self, id: &str) -> anyhow::Result<String> {
        self.create_tenant_on_plan(id, "standard").await
    }

    pub async fn create_tenant_on_plan(&self, id: &str, plan: &str) -> anyhow::Result<String> {
        let body = self
            .admin(
                reqwest::Method::POST,
                "/admin/tenants",
                Some(&json!({"id": id, "plan": plan})),
            )
            .await
            .with_context(|| format!("creating tenant {id}"))?;
        body["api_key"]
            .as_str()
            .map(str::to_owned)
            .context("no api_key in answer")
    }

    /// Creates a tenant, waits until it is usable and ingests `documents`
    /// (a `POST /v1/documents` body); returns its API key.
    pub async fn tenant_with_documents(
        &self,
        id: &str,
        documents: &Value,
    ) -> anyhow::Result<String> {
        let key = self.create_tenant(id).await?;
        self.wait_for_tenant(&key).await?;
        let (status, body, _) = self.post(&key, "/v1/documents", documents).await?;
        if status != 200 {
            bail!("ingesting for {id}: {status} {body}");
        }
        Ok(key)
    }

    /// Waits until every cell and the router know the tenant, by asking the
    /// router a question that the tenant may ask.
    pub async fn wait_for_tenant(&self, key: &str) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let status = self.purge_cache(key).await?;
            if status.is_success() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("tenant not usable: {status}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `DELETE /v1/cache` for the tenant: its next answers are fresh.
    pub async fn purge_cache(&self, key: &str) -> anyhow::Result<reqwest::StatusCode> {
        Ok(self
            .http
            .delete(format!("{}/v1/cache", self.router.url))
            .bearer_auth(key)
            .send()
            .await?
            .status())
    }

    pub async fn post(
        &self,
        key: &str,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<(u16, Value, reqwest::header::HeaderMap)> {
        let resp = self
            .http
            .post(format!("{}{path}", self.router.url))
            .bearer_auth(key)
            .json(body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body, headers))
    }

    pub async fn get(
        &self,
        key: &str,
        path: &str,
    ) -> anyhow::Result<(u16, Value, reqwest::header::HeaderMap)> {
        let resp = self
            .http
            .get(format!("{}{path}", self.router.url))
            .bearer_auth(key)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.json().await.unwrap_or(Value::Null);
        Ok((status, body, headers))
    }

    /// The tenant's stored points, as exported by `GET /v1/points`.
    pub async fn export_points(&self, key: &str) -> anyhow::Result<Vec<Value>> {
        let resp = self
            .http
            .get(format!("{}/v1/points", self.router.url))
            .bearer_auth(key)
            .send()
            .await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("exporting points: {status} {}", resp.text().await?);
        }
        resp.text()
            .await?
            .lines()
            .map(|l| Ok(serde_json::from_str(l)?))
            .collect()
    }

    /// Changes a tenant through the admin API (`PATCH /admin/tenants/{id}`).
    pub async fn update_tenant(&self, id: &str, update: &Value) -> anyhow::Result<Value> {
        self.admin(
            reqwest::Method::PATCH,
            &format!("/admin/tenants/{id}"),
            Some(update),
        )
        .await
        .with_context(|| format!("updating tenant {id}"))
    }

    /// Rotates the router-cell signing key (`POST /admin/signing-key/rotate`);
    /// returns the new key's fingerprint.
    pub async fn rotate_signing_key(&self) -> anyhow::Result<String> {
        let body = self
            .admin(reqwest::Method::POST, "/admin/signing-key/rotate", None)
            .await
            .context("rotating the signing key")?;
        Ok(body["fingerprint"].as_str().unwrap_or_default().to_owned())
    }

    /// An operator's call to the control plane's admin API; an answer other
    /// than 2xx is an error carrying its status and body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.control_plane.url))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(body);
        }
        let resp = request.send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("{status} {body}");
        }
        Ok(body)
    }

    /// A JSON `POST` straight to a cell, for `tenant`, signed under
    /// `signing_key` as a router signs it.
    pub async fn post_signed(
        &self,
        cell_url: &str,
        signing_key: &[u8],
        tenant: &str,
        path_and_query: &str,
        request_id: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<reqwest::Response> {
        self.send_signed(
            reqwest::Method::POST,
            cell_url,
            signing_key,
            (tenant, request_id),
            path_and_query,
            body,
        )
        .await
    }

    /// A request straight to a cell, signed as a router signs it, for
    /// `(tenant, request id)`.
    pub async fn send_signed(
        &self,
        method: reqwest::Method,
        cell_url: &str,
        signing_key: &[u8],
        (tenant, request_id): (&str, &str),
        path_and_query: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<reqwest::Response> {
        let now = common::signing::now_secs();
        let signature = common::signing::sign(
            signing_key,
            &common::signing::SignedParts {
                method: method.as_str(),
                path_and_query,
                tenant,
                request_id,
                timestamp: now,
                body: &body,
            },
        );
        Ok(self
            .http
            .request(method, format!("{cell_url}{path_and_query}"))
            .header("content-type", "application/json")
            .header(common::headers::TENANT, tenant)
            .header(common::headers::REQUEST_ID, request_id)
            .header(common::signing::TIMESTAMP_HEADER, now)
            .header(common::signing::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await?)
    }

    /// A cell's base URL.
    pub fn cell_url(&self, cell: &str) -> anyhow::Result<&str> {
        Ok(&self
            .cells
            .iter()
            .find(|(c, _)| c == cell)
            .context("no such cell")?
            .1
            .url)
    }

    /// The tenant's points on one cell, asked of the cell directly (signed
    /// as a router signs).
    pub async fn points_on(&self, cell: &str, tenant: &str) -> anyhow::Result<u64> {
        let url = self.cell_url(cell)?;
        let key = self.cell_auth_key().await?;
        let resp = self
            .send_signed(
                reqwest::Method::GET,
                url,
                &key,
                (tenant, "points-on"),
                "/v1/points/count",
                Vec::new(),
            )
            .await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("counting {tenant}'s points on {cell}: {status} {body}");
        }
        body["points"].as_u64().context("no points in answer")
    }

    /// The router-cell signing key, read from etcd as routers read it.
    pub async fn cell_auth_key(&self) -> anyhow::Result<Vec<u8>> {
        let keys = control_plane::model::Keys::new("/cellnet/");
        let mut client =
            etcd_client::Client::connect([self.etcd.client_url.as_str()], None).await?;
        let resp = client.get(keys.cell_auth_key(), None).await?;
        let kv = resp.kvs().first().context("no signing key in etcd")?;
        Ok(hex::decode(kv.value_str()?.trim())?)
    }

    /// Requests served by a simulator region so far.
    pub async fn provider_requests(&self, region: &str) -> anyhow::Result<u64> {
        let stats: Value = self
            .http
            .get(format!("{}/sim/stats", self.sim.url))
            .send()
            .await?
            .json()
            .await?;
        Ok(stats["regions"][region]["requests"].as_u64().unwrap_or(0))
    }

    /// Requests a simulator region is working on right now.
    pub async fn provider_in_flight(&self, region: &str) -> anyhow::Result<u64> {
        let stats: Value = self
            .http
            .get(format!("{}/sim/stats", self.sim.url))
            .send()
            .await?
            .json()
            .await?;
        Ok(stats["regions"][region]["in_flight"].as_u64().unwrap_or(0))
    }

    /// Replaces a simulator region's fault profile.
    pub async fn set_faults(&self, region: &str, profile: &Value) -> anyhow::Result<()> {
        let resp = self
            .http
            .put(format!("{}/sim/regions/{region}/faults", self.sim.url))
            .json(profile)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("setting faults on {region}: {}", resp.text().await?);
        }
        Ok(())
    }

    /// Starts a killed cell again with its config and data.
    pub fn restart_cell(&mut self, id: &str) -> anyhow::Result<()> {
        let config = self.cell_config(id).context("no such cell")?.to_path_buf();
        let cell = Service::start(
            "cell",
            &config,
            &[("TEST_PROVIDER_KEY", PROVIDER_KEY)],
            self.dir.path(),
        )?;
        if let Some(slot) = self.cell_mut(id) {
            *slot = cell;
        }
        Ok(())
    }

    /// Hints waiting in Redis for `cell`.
    pub fn pending_hints(&self, cell: &str) -> anyhow::Result<u64> {
        let out = std::process::Command::new("redis-cli")
            .args([
                "-p",
                &self.redis.port.to_string(),
                "XLEN",
                &format!("cn:hints:{cell}"),
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }

    pub fn cell_mut(&mut self, id: &str) -> Option<&mut Service> {
        self.cells.iter_mut().find(|(c, _)| c == id).map(|(_, s)| s)
    }

    pub fn cell_config(&self, id: &str) -> Option<&Path> {
        self.cells
            .iter()
            .position(|(c, _)| c == id)
            .and_then(|i| self.cell_configs.get(i))
            .map(PathBuf::as_path)
    }
}
