//! The operator dashboard at `/dashboard`: cells, placement and moves,
//! provider-regions, traffic, cache hits, groundedness and cost per tenant,
//! with a chart of the last fifteen minutes. Server-rendered HTML; a small
//! script fetches the panel again every two seconds. Behind the operator
//! token: a login form sets a signed session cookie, so the token never sits
//! in a URL. `/dashboard/data` serves the same as JSON, to the session or to
//! the operator token as a bearer.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::model::now_ms;
use crate::service::Secret;
use crate::watch::ClusterWatch;

pub mod exposition;
pub mod history;
pub mod overview;
pub mod render;
pub mod session;

pub use history::History;
pub use overview::Overview;

/// How often cells' metrics are read by default.
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Clone)]
pub struct DashboardState {
    pub token: Secret,
    pub cluster: ClusterWatch,
    pub history: Arc<Mutex<History>>,
}

impl DashboardState {
    /// The state and the task that keeps its metrics history.
    pub fn start(
        token: Secret,
        cluster: ClusterWatch,
        scrape_interval: Duration,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let history = Arc::new(Mutex::new(History::default()));
        let task = tokio::spawn(history::scrape(
            cluster.clone(),
            history.clone(),
            scrape_interval,
        ));
        (
            Self {
                token,
                cluster,
                history,
            },
            task,
        )
    }

    fn overview(&self) -> Overview {
        let now = now_ms();
        let traffic = self
            .history
            .lock()
            .map(|h| h.traffic(now))
            .unwrap_or_default();
        Overview::gather(&self.cluster.snapshot(), traffic, now)
    }

    fn signed_in(&self, headers: &HeaderMap) -> bool {
        session::from_headers(headers)
            .is_some_and(|c| session::valid(self.token.expose(), c, now_ms()))
    }
}

pub fn routes(state: DashboardState) -> Router {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/login", get(login_form).post(login))
        .route("/dashboard/logout", post(logout))
        .route("/dashboard/panel", get(panel))
        .route("/dashboard/data", get(data))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/style.css", get(style))
        .layer(axum::middleware::map_response(secure))
        .with_state(state)
}

/// Every dashboard response: never cached, never framed, only its own
/// scripts and styles.
async fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"error": {"message": "sign in at /dashboard/login, or send the operator token as a bearer token"}})),
    )
        .into_response()
}

/// `GET /dashboard`: the page, or the way to the login form.
async fn page(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    if !state.signed_in(&headers) {
        return Redirect::to("/dashboard/login").into_response();
    }
    html(StatusCode::OK, render::page(&state.overview()))
}

async fn login_form(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    if state.signed_in(&headers) {
        return Redirect::to("/dashboard").into_response();
    }
    html(StatusCode::OK, render::login(None))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

/// `POST /dashboard/login` (a form): the operator token, for a session.
async fn login(
    State(state): State<DashboardState>,
    form: Result<Form<Login>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(Login { token })) = form else {
        return html(
            StatusCode::BAD_REQUEST,
            render::login(Some("the form must carry the operator token")),
        );
    };
    if !state.token.matches(token.trim()) {
        tracing::warn!("dashboard sign-in with a wrong operator token");
        return html(
            StatusCode::UNAUTHORIZED,
            render::login(Some("That is not the operator token.")),
        );
    }
    let cookie = session::issue(state.token.expose(), now_ms() + session::LIFETIME_MS);
    (
        [(header::SET_COOKIE, session::set_cookie(&cookie))],
        Redirect::to("/dashboard"),
    )
        .into_response()
}

async fn logout() -> Response {
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/dashboard/login"),
    )
        .into_response()
}

/// `GET /dashboard/panel`: the page's panel as of now, for the page's script.
async fn panel(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    if !state.signed_in(&headers) {
        return unauthorized();
    }
    html(StatusCode::OK, render::panel(&state.overview()))
}

/// `GET /dashboard/data`: what the panel shows, as JSON.
async fn data(State(state): State<DashboardState>, headers: HeaderMap) -> Response {
    let bearer = common::headers::bearer(&headers).is_some_and(|t| state.token.matches(t));
    if !bearer && !state.signed_in(&headers) {
        return unauthorized();
    }
    Json(state.overview()).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("app.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
        .into_response()
}
