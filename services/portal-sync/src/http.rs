//! HTTP/JSON on `portal.http_listen`; every route but `/healthz` needs
//! `Authorization: Bearer <token>` (any valid token):
//!
//! - `GET /v1/reconciliation?from=YYYY-MM-DD&to=YYYY-MM-DD[&agency=CODE]`: per receiving
//!   agency, the dossiers received (or refused at the counter) in `[from, to)` (business dates,
//!   Asia/Ho_Chi_Minh) that should be on the portal, those it holds at their latest version,
//!   those it ever acknowledged, those refused, and those late ([`store::Reconciliation`]),
//!   with the totals; the period is at most [`MAX_PERIOD_DAYS`] days.
//! - `GET /v1/refusals`: the dossiers whose latest version the portal refused (at most
//!   [`MAX_REFUSALS`]), with the portal's message.
//! - `GET /v1/dossiers/{id}`: one dossier's synchronisation state.
//! - `GET /openapi.json` (no token): the OpenAPI 3 description of these routes
//!   ([`crate::openapi`]), against which `tests/tests/it/openapi.rs` checks the running server.
//!
//! Errors are JSON `{code, message, field}` (unknown routes, other methods, undecodable query
//! strings and path segments included). No answer carries personal data (the records are
//! never stored here; a refusal message is the portal's).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::NaiveDate;
use serde::Serialize;
use svc::Tokens;
use writepath::Clock;

use crate::store;

/// The longest reconciliation period.
pub const MAX_PERIOD_DAYS: i64 = 366;
/// The most refusals listed.
pub const MAX_REFUSALS: i64 = 1000;

#[derive(Debug, Clone)]
struct HttpState {
    pool: sqlx::PgPool,
    tokens: Arc<Tokens>,
    clock: Arc<dyn Clock>,
    late_after: Duration,
    telemetry: svc::Telemetry,
}

/// The router.
pub fn router(
    pool: sqlx::PgPool,
    tokens: Arc<Tokens>,
    clock: Arc<dyn Clock>,
    late_after: Duration,
    telemetry: svc::Telemetry,
) -> axum::Router {
    axum::Router::new()
        .route("/v1/reconciliation", get(reconciliation))
        .route("/v1/refusals", get(refusals))
        .route("/v1/dossiers/{id}", get(dossier))
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            HttpError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route: /v1/reconciliation, /v1/refusals, /v1/dossiers/{id}, /healthz, \
                 /openapi.json",
                None,
            )
        })
        .method_not_allowed_fallback(|| async {
            HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET is served",
                None,
            )
        })
        .with_state(HttpState {
            pool,
            tokens,
            clock,
            late_after,
            telemetry,
        })
}

#[derive(Debug, Serialize)]
struct HttpError {
    #[serde(skip)]
    status: StatusCode,
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'static str>,
}

impl HttpError {
    fn new(
        status: StatusCode,
        code: &'static str,
        message: impl Into<String>,
        field: Option<&'static str>,
    ) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            field,
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> HttpError {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            message,
            Some(field),
        )
    }

    fn unavailable(e: sqlx::Error) -> HttpError {
        // 57014: query_canceled, here by the statement timeout.
        if let sqlx::Error::Database(db) = &e {
            if db.code().as_deref() == Some("57014") {
                return HttpError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "deadline_exceeded",
                    format!(
                        "the query took longer than {:?}: ask for a shorter period or one agency",
                        store::RECONCILIATION_TIMEOUT
                    ),
                    None,
                );
            }
        }
        tracing::warn!(error = %e, "portal-sync: a query failed");
        HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the database did not answer; retry",
            None,
        )
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, Json(self)).into_response()
    }
}

fn authenticate(state: &HttpState, headers: &HeaderMap) -> Result<(), HttpError> {
    let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
    state
        .tokens
        .authenticate(&metadata)
        .map(|_| ())
        .map_err(|s| {
            HttpError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                s.message().to_owned(),
                None,
            )
        })
}

fn date(params: &BTreeMap<String, String>, field: &'static str) -> Result<NaiveDate, HttpError> {
    let text = params
        .get(field)
        .ok_or_else(|| HttpError::invalid(field, format!("{field} is required (YYYY-MM-DD)")))?;
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| HttpError::invalid(field, format!("{field} must be a date YYYY-MM-DD")))?;
    if !(1990..=2100).contains(&chrono::Datelike::year(&date)) {
        return Err(HttpError::invalid(
            field,
            format!("{field} must be within 1990–2100"),
        ));
    }
    Ok(date)
}

/// The reconciliation's answer.
#[derive(Debug, Serialize)]
pub struct ReconciliationAnswer {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub late_after_secs: u64,
    pub agencies: Vec<store::Reconciliation>,
    pub total: store::Reconciliation,
}

async fn reconciliation(
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<ReconciliationAnswer>, HttpError> {
    authenticate(&state, &headers)?;
    let Query(params) = query.map_err(|e| HttpError::invalid("query", e.body_text()))?;
    if let Some(unknown) = params
        .keys()
        .find(|k| !matches!(k.as_str(), "from" | "to" | "agency"))
    {
        return Err(HttpError::invalid(
            "query",
            format!("unknown parameter {unknown:?} (from, to, agency)"),
        ));
    }
    let from = date(&params, "from")?;
    let to = date(&params, "to")?;
    let days = (to - from).num_days();
    if days <= 0 || days > MAX_PERIOD_DAYS {
        return Err(HttpError::invalid(
            "to",
            format!("the period [from, to) must hold 1 to {MAX_PERIOD_DAYS} days"),
        ));
    }
    let late_after =
        chrono::Duration::from_std(state.late_after).unwrap_or(chrono::Duration::days(1));
    let agencies = store::reconciliation(
        &state.pool,
        from,
        to,
        params.get("agency").map(String::as_str),
        late_after,
        state.clock.now(),
    )
    .await
    .map_err(HttpError::unavailable)?;
    let mut total = store::Reconciliation {
        agency: "*".to_owned(),
        ..Default::default()
    };
    for a in &agencies {
        total.should += a.should;
        total.synchronised += a.synchronised;
        total.ever_synchronised += a.ever_synchronised;
        total.refused += a.refused;
        total.late += a.late;
    }
    Ok(Json(ReconciliationAnswer {
        from,
        to,
        late_after_secs: state.late_after.as_secs(),
        agencies,
        total,
    }))
}

async fn refusals(
    State(state): State<HttpState>,
    headers: HeaderMap,
) -> Result<Json<Vec<store::SyncRow>>, HttpError> {
    authenticate(&state, &headers)?;
    store::refusals(&state.pool, MAX_REFUSALS)
        .await
        .map(Json)
        .map_err(HttpError::unavailable)
}

async fn dossier(
    State(state): State<HttpState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<store::SyncRow>, HttpError> {
    authenticate(&state, &headers)?;
    let Path(id) = id.map_err(|e| HttpError::invalid("id", e.body_text()))?;
    match store::sync_row(&state.pool, &id).await {
        Ok(Some(row)) => Ok(Json(row)),
        Ok(None) => Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such dossier announced to portal-sync",
            Some("id"),
        )),
        Err(e) => Err(HttpError::unavailable(e)),
    }
}

/// The OpenAPI description of these routes; no token needed.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

async fn healthz(State(state): State<HttpState>) -> Response {
    let problems = state.telemetry.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        let text: String = problems
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}\n"))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}
