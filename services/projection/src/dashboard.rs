//! The dashboard: a web page served on the queries' HTTP port (`/dashboard/`), its assets
//! embedded in the binary, and the live notices it listens to (`GET /v1/stream`, served by
//! [`crate::http`]).
//!
//! The page (`services/projection/dashboard/`) is plain JavaScript modules and one vendored
//! chart library (uPlot, `dashboard/vendor/uplot/README.md`); it reads the same HTTP/JSON
//! routes as any client, with the bearer token the user signs in with (kept in the tab's
//! `sessionStorage`, sent in the `Authorization` header, never in a URL).
//!
//! [`Notices`] turns the consumer's status into server-sent events: after each committed and
//! acknowledged apply, `applied_position` grows and every subscriber gets
//! `event: applied` with the position; the watch channel coalesces bursts, so a subscriber
//! never falls behind by more than one notice. Subscribers are bounded
//! (`[projection.dashboard] max_stream_subscribers`); a heartbeat comment keeps proxies from
//! closing an idle stream; the streams end when the service stops.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

use crate::ConsumerStatus;

/// The `[projection.dashboard]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Where the page fetches the early-warning list (processing's `GET /v1/warnings`, with
    /// the user's token); absent: the page shows no warning panel. Its origin is allowed in
    /// the page's `Content-Security-Policy`.
    pub warnings_url: Option<String>,
    /// Live-notice streams (`GET /v1/stream`) open at once on this instance; one more is
    /// refused with 503 `too_many_subscribers` and `Retry-After`.
    pub max_stream_subscribers: u32,
    /// Seconds between heartbeats on an idle stream.
    pub heartbeat_secs: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            warnings_url: None,
            max_stream_subscribers: 64,
            heartbeat_secs: 15,
        }
    }
}

impl DashboardConfig {
    /// Checks the section: an error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.warnings_url {
            origin(url).ok_or_else(|| {
                format!("dashboard.warnings_url {url:?}: give an absolute http:// or https:// URL")
            })?;
        }
        if self.max_stream_subscribers == 0 {
            return Err("dashboard.max_stream_subscribers must be at least 1".to_owned());
        }
        if !(1..=3600).contains(&self.heartbeat_secs) {
            return Err("dashboard.heartbeat_secs must be within 1..=3600".to_owned());
        }
        Ok(())
    }
}

/// `scheme://host[:port]` of an absolute http(s) URL; `None` for anything else.
fn origin(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let valid = !authority.is_empty()
        && authority
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    valid.then(|| &url[..url.len() - rest.len() + authority.len()])
}

/// The live notices: the consumer's applied position, pushed to a bounded number of streams.
#[derive(Debug, Clone)]
pub struct Notices {
    status: watch::Receiver<ConsumerStatus>,
    slots: Arc<Semaphore>,
    limit: u32,
    heartbeat: Duration,
    closing: CancellationToken,
}

/// Why a stream was not opened.
#[derive(Debug, thiserror::Error)]
#[error("{limit} live-notice streams are open on this instance (the most it serves)")]
pub struct TooManySubscribers {
    pub limit: u32,
}

impl Notices {
    /// Notices of `status`; every stream ends when `closing` is cancelled.
    pub fn new(
        status: watch::Receiver<ConsumerStatus>,
        config: &DashboardConfig,
        closing: CancellationToken,
    ) -> Notices {
        Notices {
            status,
            slots: Arc::new(Semaphore::new(config.max_stream_subscribers as usize)),
            limit: config.max_stream_subscribers,
            heartbeat: Duration::from_secs(u64::from(config.heartbeat_secs)),
            closing,
        }
    }

    /// A stream of server-sent events: the current position at once, then one `applied`
    /// event per newer position, and a heartbeat comment when idle; it holds one subscriber
    /// slot until it ends.
    pub fn subscribe(&self) -> Result<Body, TooManySubscribers> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| TooManySubscribers { limit: self.limit })?;
        let mut status = self.status.clone();
        let first = status.borrow_and_update().applied_position;
        let state = StreamState {
            status,
            last: None,
            next: Some(first),
            heartbeat: self.heartbeat,
            closing: self.closing.clone(),
            _permit: permit,
        };
        Ok(Body::from_stream(futures::stream::unfold(
            state,
            |mut s| async move {
                s.next_event()
                    .await
                    .map(|e| (Ok::<_, std::convert::Infallible>(e), s))
            },
        )))
    }
}

struct StreamState {
    status: watch::Receiver<ConsumerStatus>,
    last: Option<i64>,
    next: Option<i64>,
    heartbeat: Duration,
    closing: CancellationToken,
    _permit: OwnedSemaphorePermit,
}

impl StreamState {
    /// The next chunk of the stream, or `None` when it ends (the service stops).
    async fn next_event(&mut self) -> Option<Bytes> {
        loop {
            if let Some(position) = self.next.take() {
                if self.last.is_none_or(|last| position > last) {
                    self.last = Some(position);
                    return Some(applied_event(position));
                }
            }
            if self.closing.is_cancelled() {
                return None;
            }
            tokio::select! {
                () = self.closing.cancelled() => return None,
                changed = self.status.changed() => {
                    // The consumer's status is gone: the service is stopping.
                    changed.ok()?;
                    self.next = Some(self.status.borrow_and_update().applied_position);
                }
                () = tokio::time::sleep(self.heartbeat) => {
                    return Some(Bytes::from_static(b": heartbeat\n\n"));
                }
            }
        }
    }
}

fn applied_event(position: i64) -> Bytes {
    Bytes::from(format!(
        "event: applied\ndata: {{\"position\":\"{position}\"}}\n\n"
    ))
}

/// What the page needs to know besides the API (no secret: served without a token).
#[derive(Debug, Clone)]
struct PageState {
    config_json: Bytes,
    csp: HeaderValue,
}

/// The page and its assets: `/` and `/dashboard` redirect to `/dashboard/`.
pub fn router(config: &DashboardConfig) -> Router {
    let warnings_origin = config.warnings_url.as_deref().and_then(origin);
    let csp = format!(
        "default-src 'self'; connect-src 'self'{}; img-src 'self' data: blob:; \
         style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; \
         base-uri 'none'; frame-ancestors 'none'",
        warnings_origin.map_or(String::new(), |o| format!(" {o}"))
    );
    let config_json = serde_json::json!({ "warningsUrl": config.warnings_url });
    let state = PageState {
        config_json: Bytes::from(config_json.to_string()),
        csp: HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static("default-src 'self'")),
    };
    Router::new()
        .route("/", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard", get(|| async { Redirect::to("/dashboard/") }))
        .route("/dashboard/", get(index))
        .route("/dashboard/config.json", get(page_config))
        .route("/dashboard/{*file}", get(asset))
        .with_state(state)
}

/// The embedded files: (path under `/dashboard/`, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../dashboard/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/api.js"),
    ),
    (
        "i18n.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/i18n.js"),
    ),
    (
        "format.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/format.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../dashboard/style.css"),
    ),
    (
        "vendor/uplot/uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../dashboard/vendor/uplot/uPlot.iife.min.js"),
    ),
    (
        "vendor/uplot/uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../dashboard/vendor/uplot/uPlot.min.css"),
    ),
];

fn serve(state: &PageState, content_type: &'static str, body: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Small files, and a new binary may bring new ones: always revalidate.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CONTENT_SECURITY_POLICY, state.csp.clone()),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn index(State(state): State<PageState>) -> Response {
    asset(State(state), Path("index.html".to_owned())).await
}

async fn page_config(State(state): State<PageState>) -> Response {
    let body = state.config_json.clone();
    serve(&state, "application/json", body)
}

async fn asset(State(state): State<PageState>, Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, bytes)) => serve(&state, content_type, Bytes::from_static(bytes)),
        None => (
            StatusCode::NOT_FOUND,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("no dashboard file {file:?}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_of_warning_urls() {
        assert_eq!(
            origin("http://127.0.0.1:8052/v1/warnings"),
            Some("http://127.0.0.1:8052")
        );
        assert_eq!(origin("https://x.gov.vn"), Some("https://x.gov.vn"));
        assert_eq!(origin("ftp://x/"), None);
        assert_eq!(origin("http:///v1"), None);
        assert_eq!(origin("http://a b/"), None);
        assert!(
            DashboardConfig {
                warnings_url: Some("/v1/warnings".to_owned()),
                ..DashboardConfig::default()
            }
            .validate()
            .is_err()
        );
        assert!(DashboardConfig::default().validate().is_ok());
    }

    #[tokio::test]
    async fn a_stream_tells_the_position_then_each_newer_one_and_ends_on_stop() {
        use futures::StreamExt;
        let (tx, rx) = watch::channel(ConsumerStatus::default());
        let closing = CancellationToken::new();
        let config = DashboardConfig {
            max_stream_subscribers: 1,
            ..DashboardConfig::default()
        };
        let notices = Notices::new(rx, &config, closing.clone());
        let mut body = notices.subscribe().expect("a slot").into_data_stream();
        assert!(notices.subscribe().is_err(), "the bound is 1");
        let next = async |body: &mut axum::body::BodyDataStream| {
            String::from_utf8(body.next().await.unwrap().unwrap().to_vec()).unwrap()
        };
        assert_eq!(
            next(&mut body).await,
            "event: applied\ndata: {\"position\":\"0\"}\n\n"
        );
        tx.send_modify(|s| s.applied_position = 7);
        tx.send_modify(|s| s.batches_total = 1); // no new position: no notice
        tx.send_modify(|s| s.applied_position = 9);
        assert_eq!(
            next(&mut body).await,
            "event: applied\ndata: {\"position\":\"9\"}\n\n"
        );
        closing.cancel();
        assert!(body.next().await.is_none());
        drop(body);
        assert!(notices.subscribe().is_ok(), "the slot is free again");
    }
}
