//! The statistics over HTTP, for dashboards and BI tools: the same answers as `StatsService`
//! ([`crate::answers`]), as JSON, and every report form as CSV.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/indicators` | S1–S14 in total and per group (JSON) |
//! | `GET /v1/reports/{form}` | a form as a table (JSON); `{form}.csv` or `?format=csv`: CSV |
//! | `GET /v1/dossiers/{id}/status` | the dossier's status and national portal code (JSON) |
//! | `GET /healthz` | `ok` |
//!
//! Query parameters: `from`, `to` (local dates `YYYY-MM-DD`, `to` excluded), `level`,
//! `agency_code`, `sector_code`, `procedure_code`, `channel`, `applicant_type` (values as
//! stored: `district`, `online`, `citizen`…), `group_by` (comma-separated dimensions: `level`,
//! `agency`, `sector`, `procedure`, `channel`, `applicant_type`), `as_recorded_at` (RFC 3339).
//! Every route but `/healthz` needs `Authorization: Bearer <token>` (any valid token).
//! Errors are JSON `{"code", "message", "field"?}` with 400, 401, 404 or 503.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use stats::Dimension;
use svc::Tokens;

use crate::answers;
use crate::forms::{self, Form};
use crate::scope::{RawScope, ScopeError, Source};
use crate::store::QueryError;

#[derive(Debug, Clone)]
struct HttpState {
    pool: PgPool,
    tokens: Arc<Tokens>,
    targets: stats::Targets,
}

/// The HTTP routes over the projection's database.
pub fn router(pool: PgPool, tokens: Arc<Tokens>, targets: stats::Targets) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/indicators", get(indicators))
        .route("/v1/reports/{form}", get(report))
        .route("/v1/dossiers/{id}/status", get(dossier_status))
        .with_state(HttpState {
            pool,
            tokens,
            targets,
        })
}

/// An error answer.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code,
            message: &self.message,
            field: self.field.as_deref(),
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<ScopeError> for HttpError {
    fn from(e: ScopeError) -> Self {
        HttpError {
            status: StatusCode::BAD_REQUEST,
            code: "invalid_argument",
            message: e.message,
            field: Some(e.field),
        }
    }
}

impl From<QueryError> for HttpError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Database(e) => {
                tracing::warn!(error = %e, "statistics query failed");
                HttpError {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    code: "unavailable",
                    message: "the database is unavailable; retry".to_owned(),
                    field: None,
                }
            }
            e => {
                tracing::error!(error = %e, "statistics query failed");
                HttpError {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    code: "internal",
                    message: "internal error".to_owned(),
                    field: None,
                }
            }
        }
    }
}

fn authenticate(state: &HttpState, headers: &HeaderMap) -> Result<(), HttpError> {
    let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
    state
        .tokens
        .authenticate(&metadata)
        .map(|_| ())
        .map_err(|s| HttpError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthenticated",
            message: s.message().to_owned(),
            field: None,
        })
}

/// The query parameters as axum's `Query` extractor decodes them.
pub type Params = HashMap<String, String>;

fn param<'a>(params: &'a Params, name: &str) -> &'a str {
    params.get(name).map_or("", String::as_str)
}

/// An optional enum given by its stored name (`district`); empty: no filter.
fn named<T>(
    params: &Params,
    name: &str,
    parse: fn(&str) -> Option<T>,
) -> Result<Option<T>, ScopeError> {
    let v = param(params, name).trim();
    if v.is_empty() {
        return Ok(None);
    }
    parse(v)
        .map(Some)
        .ok_or_else(|| ScopeError::new(name, format!("unknown value {v:?}")))
}

const KNOWN: [&str; 11] = [
    "from",
    "to",
    "level",
    "agency_code",
    "sector_code",
    "procedure_code",
    "channel",
    "applicant_type",
    "group_by",
    "as_recorded_at",
    "format",
];

/// The query and source the parameters ask for (pure: the fuzz targets call it directly).
pub fn scope(params: &Params) -> Result<(stats::Query, Source), ScopeError> {
    if let Some(unknown) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        // `?=x` (found by fuzzing): name the query rather than an empty field.
        if unknown.is_empty() {
            return Err(ScopeError::new("query", "a parameter has no name"));
        }
        return Err(ScopeError::new(unknown.as_str(), "unknown parameter"));
    }
    let mut group_by = Vec::new();
    for (i, name) in param(params, "group_by")
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .enumerate()
    {
        group_by.push(Dimension::parse(name).ok_or_else(|| {
            ScopeError::new(
                format!("group_by[{i}]"),
                format!("unknown dimension {name:?}"),
            )
        })?);
    }
    let query = RawScope {
        from: param(params, "from"),
        to: param(params, "to"),
        level: named(params, "level", domain::Level::parse)?,
        agency_code: param(params, "agency_code"),
        sector_code: param(params, "sector_code"),
        procedure_code: param(params, "procedure_code"),
        channel: named(params, "channel", domain::Channel::parse)?,
        applicant_type: named(params, "applicant_type", domain::ApplicantType::parse)?,
        group_by,
    }
    .parse()?;
    let at = param(params, "as_recorded_at").trim();
    let source = if at.is_empty() {
        Source::Live
    } else {
        Source::AsRecordedAt(
            DateTime::parse_from_rfc3339(at)
                .map_err(|_| ScopeError::new("as_recorded_at", "must be an RFC 3339 instant"))?
                .with_timezone(&Utc),
        )
    };
    Ok((query, source))
}

#[derive(Serialize)]
struct IndicatorsBody {
    #[serde(flatten)]
    answer: answers::IndicatorsAnswer,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_recorded_at: Option<DateTime<Utc>>,
}

fn recorded_at(source: Source) -> Option<DateTime<Utc>> {
    match source {
        Source::Live => None,
        Source::AsRecordedAt(at) => Some(at),
    }
}

async fn indicators(
    State(state): State<HttpState>,
    headers: HeaderMap,
    UrlQuery(params): UrlQuery<Params>,
) -> Result<Response, HttpError> {
    authenticate(&state, &headers)?;
    let (query, source) = scope(&params)?;
    let answer = answers::indicators(&state.pool, &query, source, &state.targets).await?;
    Ok(axum::Json(IndicatorsBody {
        answer,
        as_recorded_at: recorded_at(source),
    })
    .into_response())
}

#[derive(Serialize)]
struct ReportBody {
    from: chrono::NaiveDate,
    to: chrono::NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    as_recorded_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    table: forms::Table,
}

async fn report(
    State(state): State<HttpState>,
    Path(form): Path<String>,
    headers: HeaderMap,
    UrlQuery(params): UrlQuery<Params>,
) -> Result<Response, HttpError> {
    authenticate(&state, &headers)?;
    let (slug, csv_suffix) = match form.strip_suffix(".csv") {
        Some(slug) => (slug, true),
        None => (form.as_str(), false),
    };
    let form = Form::from_slug(slug).ok_or_else(|| HttpError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: format!(
            "no form {slug:?}; forms: {}",
            Form::ALL.map(Form::slug).join(", ")
        ),
        field: None,
    })?;
    let csv = match param(&params, "format") {
        "" | "json" => csv_suffix,
        "csv" => true,
        other => {
            return Err(ScopeError::new(
                "format",
                format!("unknown format {other:?}: json or csv"),
            )
            .into());
        }
    };
    let (query, source) = scope(&params)?;
    let table = answers::report(&state.pool, form, &query, source).await??;
    if csv {
        let name = format!(
            "{}_{}_{}.csv",
            form.slug(),
            query.from.format("%Y-%m-%d"),
            query.to.format("%Y-%m-%d")
        );
        let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
            .unwrap_or(HeaderValue::from_static("attachment"));
        return Ok((
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/csv; charset=utf-8"),
                ),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            forms::to_csv(&table),
        )
            .into_response());
    }
    Ok(axum::Json(ReportBody {
        from: query.from,
        to: query.to,
        as_recorded_at: recorded_at(source),
        table,
    })
    .into_response())
}

#[derive(Serialize)]
struct StatusBody {
    dossier_id: String,
    phase: &'static str,
    portal_status_code: Option<u8>,
    description: &'static str,
    current_agency_code: Option<String>,
    received_at: Option<DateTime<Utc>>,
    due_at: Option<DateTime<Utc>>,
    paused: bool,
    supplement_requests: u32,
    late_marked: bool,
    resolved_at: Option<DateTime<Utc>>,
    timeliness: Option<calendar::Timeliness>,
    outstanding_vnd: i64,
    returned_at: Option<DateTime<Utc>>,
    version: u32,
}

async fn dossier_status(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    authenticate(&state, &headers)?;
    let id = domain::DossierId::parse(&id).map_err(|e| ScopeError::new("id", e.to_string()))?;
    let d = answers::dossier(&state.pool, id.as_str())
        .await?
        .ok_or_else(|| HttpError {
            status: StatusCode::NOT_FOUND,
            code: "dossier_not_found",
            message: format!("no dossier {id} in the log"),
            field: None,
        })?;
    Ok(axum::Json(StatusBody {
        dossier_id: id.as_str().to_owned(),
        phase: d.phase.as_str(),
        portal_status_code: d.portal_status(),
        description: d.phase.describe(),
        current_agency_code: d.current_agency.as_ref().map(|a| a.as_str().to_owned()),
        received_at: d.received_at,
        due_at: d.due_at,
        paused: d.is_paused(),
        supplement_requests: d.supplement_requests,
        late_marked: d.late_marked,
        resolved_at: d.resolution.as_ref().map(|r| r.at),
        timeliness: d.resolution.as_ref().map(|r| r.timeliness),
        outstanding_vnd: d.outstanding_vnd(),
        returned_at: d.returned_at,
        version: d.version,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_malformed_parameter_is_named() {
        let period = [("from", "2024-01-01"), ("to", "2024-02-01")];
        let field = |extra: (&str, &str)| {
            let mut p = params(&period);
            p.insert(extra.0.to_owned(), extra.1.to_owned());
            scope(&p).unwrap_err().field
        };
        assert!(scope(&params(&period)).is_ok());
        assert_eq!(field(("color", "red")), "color");
        // Found by fuzzing (`?=202m=201&to=202`): a parameter without a name was reported
        // with an empty field.
        assert_eq!(field(("", "202m=201")), "query");
    }
}
