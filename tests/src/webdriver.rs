//! Headless Chromium for browser tests, driven over the W3C WebDriver
//! protocol: `chromedriver` on a free port, one session with a fresh
//! profile, and the few commands the tests use. Both are killed on drop.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};

use crate::process::{Guard, free_port, wait_for};

/// The key under which WebDriver names an element.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver_addr: String,
    // Dropped last: the driver takes its browser with it.
    _profile: tempfile::TempDir,
    _driver: Guard,
}

impl Browser {
    /// Debian's `chromium` through its `chromedriver`, headless, in a
    /// window of `width`×`height`.
    pub async fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        for program in ["chromium", "chromedriver"] {
            if Command::new(program).arg("--version").output().is_err() {
                bail!(
                    "{program} is not installed: run scripts/setup.sh (Debian's chromium and chromium-driver)"
                );
            }
        }
        let port = free_port()?;
        let driver = Guard::new(
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting chromedriver")?,
        );
        let base = format!("http://127.0.0.1:{port}");
        let status = format!("127.0.0.1:{port}");
        wait_for("chromedriver", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&status).is_ok()
        })?;
        let http = reqwest::Client::new();
        let profile = tempfile::tempdir()?;
        let args = [
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-quic".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args},
            }}}))
            .send()
            .await?
            .json()
            .await?;
        let session = created["value"]["sessionId"]
            .as_str()
            .with_context(|| format!("no WebDriver session: {created}"))?;
        Ok(Self {
            http,
            session: format!("{base}/session/{session}"),
            driver_addr: status,
            _profile: profile,
            _driver: driver,
        })
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response: Value = request.send().await?.json().await?;
        if let Some(error) = response["value"]["error"].as_str() {
            bail!(
                "WebDriver {path}: {error}: {}",
                response["value"]["message"]
            );
        }
        Ok(response["value"].clone())
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.command(reqwest::Method::POST, "/url", Some(json!({"url": url})))
            .await
            .map(drop)
    }

    pub async fn url(&self) -> anyhow::Result<String> {
        let url = self.command(reqwest::Method::GET, "/url", None).await?;
        Ok(url.as_str().unwrap_or_default().to_owned())
    }

    /// The element matching a CSS selector.
    async fn element(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .command(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await?;
        Ok(found[ELEMENT]
            .as_str()
            .with_context(|| format!("no element id for {css}: {found}"))?
            .to_owned())
    }

    /// The rendered text of the element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let id = self.element(css).await?;
        let text = self
            .command(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await?;
        Ok(text.as_str().unwrap_or_default().to_owned())
    }

    /// An attribute of the element matching `css`.
    pub async fn attribute(&self, css: &str, name: &str) -> anyhow::Result<Option<String>> {
        let id = self.element(css).await?;
        let value = self
            .command(
                reqwest::Method::GET,
                &format!("/element/{id}/attribute/{name}"),
                None,
            )
            .await?;
        Ok(value.as_str().map(str::to_owned))
    }

    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let id = self.element(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({"text": text})),
        )
        .await
        .map(drop)
    }

    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let id = self.element(css).await?;
        self.command(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await
        .map(drop)
    }

    /// Waits until the text of the element matching `css` satisfies
    /// `done`, polling the page every 100 ms; its last text on failure.
    pub async fn wait_for_text(
        &self,
        css: &str,
        within: Duration,
        done: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let text = self.text(css).await.unwrap_or_default();
            if done(&text) {
                return Ok(text);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{css} still reads {text:?} after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the window, written to `path`.
    pub async fn screenshot(&self, path: &std::path::Path) -> anyhow::Result<()> {
        let png = self
            .command(reqwest::Method::GET, "/screenshot", None)
            .await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().context("no screenshot")?)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, bytes)?;
        Ok(())
    }
}

impl Drop for Browser {
    /// Ends the session, so that the driver closes the browser it started
    /// (killing the driver alone would leave the browser running).
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let Some(path) = self.session.split_once("/session/").map(|(_, id)| id) else {
            return;
        };
        let Ok(mut s) = std::net::TcpStream::connect(&self.driver_addr) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let request = format!(
            "DELETE /session/{path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.driver_addr
        );
        if s.write_all(request.as_bytes()).is_ok() {
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
}
