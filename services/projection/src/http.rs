//! The statistics over HTTP, for dashboards and BI tools: the answers of `StatsService`, as
//! JSON — each the very gRPC message in its standard proto3 JSON mapping (generated in the
//! `api` crate; README, "The HTTP JSON answers") —, and every report form and the indicator
//! table as CSV and `.xlsx` files (README, "Excel and CSV").
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/indicators` | `GetIndicatorsResponse`: S1–S14 in total and per group; `.csv`, `.xlsx` or `?format=`: the indicator table as that file |
//! | `GET /v1/reports/{form}` | `Report`: a form as a table; `{form}.csv`, `{form}.xlsx` or `?format=csv\|xlsx`: that file |
//! | `GET /v1/dossiers/{id}/status` | `DossierStatus`: the status and national portal code |
//! | `GET /openapi.json` | the OpenAPI 3 description of these routes ([`crate::openapi`]) |
//! | `GET /v1/whoami` | who the token is: `name`, `role`, `agency`, `level`, `mayAskAsRecordedAt` (JSON) |
//! | `GET /v1/stream` | live notices (server-sent events, [`crate::dashboard::Notices`]): `event: applied` with `{"position": "<log position>"}` after each committed apply, `: heartbeat` when idle |
//! | `GET /healthz` | `ok`, or 503 and one line per failing part (a dossier that fails to apply…), as the metrics port's `/healthz` |
//!
//! Query parameters: `from`, `to` (local dates `YYYY-MM-DD`, `to` excluded), `level`,
//! `agency_code`, `sector_code`, `procedure_code`, `channel`, `applicant_type` (values as
//! stored: `district`, `online`, `citizen`…), `group_by` (comma-separated dimensions: `level`,
//! `agency`, `sector`, `procedure`, `channel`, `applicant_type`), `as_recorded_at` (RFC 3339),
//! `structure_at` (a local date: counted in the agency structure of that date), `format`
//! (`json`, `csv`, `xlsx`), and for CSV `bom` (`true`: a UTF-8 byte-order mark) and `headings`
//! (`vi`: the Vietnamese headings). Each parameter at most once (a list such as `group_by` is
//! comma-separated in one value).
//! Every route but `/healthz` and `/openapi.json` needs `Authorization: Bearer <token>` (any valid token;
//! `as_recorded_at` an auditor's). The bounds of `[projection.limits]` apply as over gRPC.
//!
//! Errors are JSON `{"code", "message", "field"?}`: 400 (a malformed or repeated parameter, a
//! bound exceeded: `code` `invalid_argument` or `too_many_groups`; an amount sum beyond the
//! message's int64: `amount_exceeds_int64`), 401, 403
//! (`as_recorded_at_auditors_only`), 404 (unknown route, form or dossier), 405, 429
//! (`too_many_queries`, with `Retry-After`), 500, 503 (database unavailable) or 504
//! (`query_timeout`). Only a request whose header block hyper refuses before routing (more
//! than 100 header fields or about 400 KiB) gets hyper's bare 431.

use std::collections::HashMap;
use std::sync::Arc;

use crate::read::QueryLimits;
use axum::Router;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use stats::Dimension;
use svc::{Principal, Tokens};

use crate::answers;
use crate::dashboard::{DashboardConfig, Notices};
use crate::forms::{self, Form};
use crate::read::{RETRY_DELAY, ReadError, Reader};
use crate::scope::{self, RawScope, ScopeError, Source};
use crate::service::{self, AmountTooLarge, may_ask};
use crate::xlsx::{self, Heading};

#[derive(Debug, Clone)]
struct HttpState {
    reader: Reader,
    tokens: Arc<Tokens>,
    health: svc::Telemetry,
    notices: Notices,
}

/// The HTTP routes over the projection's database; `/healthz` reports the problems of
/// `health` (the service's telemetry: the consumer's failing dossiers…); `/v1/stream` serves
/// `notices`; the dashboard's page ([`crate::dashboard::router`]) is merged in.
pub fn router(
    reader: Reader,
    tokens: Arc<Tokens>,
    health: svc::Telemetry,
    notices: Notices,
    dashboard: &DashboardConfig,
) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/v1/indicators", get(indicators))
        .route("/v1/indicators.csv", get(indicators_csv))
        .route("/v1/indicators.xlsx", get(indicators_xlsx))
        .route("/v1/reports/{form}", get(report))
        .route("/v1/dossiers/{id}/status", get(dossier_status))
        .route("/v1/whoami", get(whoami))
        .route("/v1/stream", get(stream))
        .with_state(HttpState {
            reader,
            tokens,
            health,
            notices,
        })
        .merge(crate::dashboard::router(dashboard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// Who the token is, for the dashboard (what to offer: the auditors' picker).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WhoamiBody {
    name: String,
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    agency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    level: Option<&'static str>,
    may_ask_as_recorded_at: bool,
}

async fn whoami(State(state): State<HttpState>, headers: HeaderMap) -> Result<Response, HttpError> {
    let principal = authenticate(&state, &headers)?;
    let may_ask_as_recorded_at =
        may_ask(&principal, Source::AsRecordedAt(chrono::Utc::now())).is_ok();
    Ok(axum::Json(WhoamiBody {
        role: match principal.role {
            svc::Role::Counter => "counter",
            svc::Role::Importer => "importer",
            svc::Role::Auditor => "auditor",
            svc::Role::Admin => "admin",
        },
        agency: principal.agency.as_ref().map(|a| a.as_str().to_owned()),
        level: principal.level.map(domain::Level::as_str),
        name: principal.name,
        may_ask_as_recorded_at,
    })
    .into_response())
}

/// The live notices as server-sent events (read with `fetch`, so the token stays in the
/// `Authorization` header); 503 `too_many_subscribers` past the bound.
async fn stream(State(state): State<HttpState>, headers: HeaderMap) -> Result<Response, HttpError> {
    authenticate(&state, &headers)?;
    let body = state.notices.subscribe().map_err(|e| HttpError {
        retry_after: Some(RETRY_DELAY.as_secs().max(1)),
        ..HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_subscribers",
            e.to_string(),
        )
    })?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response())
}

/// 200 `ok`, or 503 with one line `part: reason` per failing part: a load balancer or probe
/// that watches the queries port sees what the metrics port's `/healthz` says.
async fn healthz(State(state): State<HttpState>) -> (StatusCode, String) {
    let problems = state.health.problems();
    if problems.is_empty() {
        return (StatusCode::OK, "ok\n".to_owned());
    }
    let text = problems
        .iter()
        .map(|(part, reason)| format!("{part}: {reason}\n"))
        .collect();
    (StatusCode::SERVICE_UNAVAILABLE, text)
}

/// The OpenAPI description of these routes ([`crate::openapi`]); no token needed.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

async fn not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route: /v1/indicators(.csv|.xlsx), /v1/reports/{form}(.csv|.xlsx), \
         /v1/dossiers/{id}/status, /v1/whoami, /v1/stream, /dashboard/, /healthz, /openapi.json",
    )
}

async fn method_not_allowed() -> HttpError {
    HttpError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "only GET is served",
    )
}

/// An error answer.
#[derive(Debug)]
struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    /// `Retry-After`, in seconds.
    retry_after: Option<u64>,
}

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }
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
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<ScopeError> for HttpError {
    fn from(e: ScopeError) -> Self {
        HttpError {
            field: Some(e.field),
            ..HttpError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.message)
        }
    }
}

impl From<ReadError> for HttpError {
    fn from(e: ReadError) -> Self {
        let status = match &e {
            ReadError::Invalid(_) | ReadError::TooManyGroups { .. } => StatusCode::BAD_REQUEST,
            ReadError::Busy { .. } => StatusCode::TOO_MANY_REQUESTS,
            ReadError::Deadline { .. } => StatusCode::GATEWAY_TIMEOUT,
            ReadError::AuditorsOnly => StatusCode::FORBIDDEN,
            ReadError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ReadError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        HttpError {
            field: e.field().map(str::to_owned),
            retry_after: matches!(e, ReadError::Busy { .. }).then_some(RETRY_DELAY.as_secs()),
            ..HttpError::new(status, e.reason(), e.public_message())
        }
    }
}

fn authenticate(state: &HttpState, headers: &HeaderMap) -> Result<Principal, HttpError> {
    let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
    state.tokens.authenticate(&metadata).map_err(|s| {
        HttpError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            s.message().to_owned(),
        )
    })
}

/// The query parameters, each at most once: a repeated one is refused rather than one of its
/// values silently taken.
fn params(
    query: Result<UrlQuery<Vec<(String, String)>>, QueryRejection>,
) -> Result<Params, HttpError> {
    let UrlQuery(pairs) = query
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.body_text()))?;
    let mut params = Params::new();
    for (name, value) in pairs {
        if params.contains_key(&name) {
            return Err(ScopeError::new(
                name,
                "is given more than once: give each parameter once (lists such as group_by \
                 are comma-separated)",
            )
            .into());
        }
        params.insert(name, value);
    }
    Ok(params)
}

/// A path segment (`{form}`, `{id}`), or a JSON 400 when it is not valid percent-encoded UTF-8.
fn segment(path: Result<Path<String>, PathRejection>, field: &str) -> Result<String, HttpError> {
    path.map(|Path(v)| v).map_err(|e| HttpError {
        field: Some(field.to_owned()),
        ..HttpError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.body_text())
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

const KNOWN: [&str; 14] = [
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
    "bom",
    "headings",
    "structure_at",
];

/// The query and source the parameters ask for (pure: the fuzz targets call it directly).
pub fn scope(params: &Params, limits: &QueryLimits) -> Result<(stats::Query, Source), ScopeError> {
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
    .parse(limits)?;
    let at = param(params, "as_recorded_at").trim();
    let source = if at.is_empty() {
        Source::Live
    } else {
        Source::AsRecordedAt(scope::instant("as_recorded_at", at)?)
    };
    Ok((query, source))
}

impl From<AmountTooLarge> for HttpError {
    fn from(e: AmountTooLarge) -> Self {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            AmountTooLarge::REASON,
            e.to_string(),
        )
    }
}

/// A message in its proto3 JSON mapping (the gRPC answer's own JSON form).
fn json<T: Serialize>(message: &T) -> Response {
    axum::Json(message).into_response()
}

/// How an answer is rendered: the route's suffix (`.csv`, `.xlsx`) or `format`, and the CSV
/// options `bom` and `headings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    File(FileFormat),
}

/// A table as a download.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileFormat {
    Csv(forms::CsvOptions),
    Xlsx,
}

/// The media type of `.xlsx` files.
pub const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// The rendering the route's suffix and the parameters ask for.
fn output(suffix: Option<&str>, params: &Params) -> Result<Output, ScopeError> {
    let format = match param(params, "format") {
        "" => suffix.unwrap_or("json"),
        f @ ("json" | "csv" | "xlsx") => match suffix {
            Some(s) if s != f => {
                return Err(ScopeError::new(
                    "format",
                    format!("{f} contradicts the route's .{s}"),
                ));
            }
            _ => f,
        },
        other => {
            return Err(ScopeError::new(
                "format",
                format!("unknown format {other:?}: json, csv or xlsx"),
            ));
        }
    };
    let bom = match param(params, "bom") {
        "" | "false" => false,
        "true" => true,
        other => {
            return Err(ScopeError::new("bom", format!("{other:?}: true or false")));
        }
    };
    let vietnamese = match param(params, "headings") {
        "" | "ids" => false,
        "vi" => true,
        other => {
            return Err(ScopeError::new("headings", format!("{other:?}: ids or vi")));
        }
    };
    if format != "csv" {
        for name in ["bom", "headings"] {
            if params.contains_key(name) {
                return Err(ScopeError::new(name, "applies to CSV only"));
            }
        }
    }
    Ok(match format {
        "csv" => Output::File(FileFormat::Csv(forms::CsvOptions { bom, vietnamese })),
        "xlsx" => Output::File(FileFormat::Xlsx),
        _ => Output::Json,
    })
}

/// `name.csv` → (`name`, `Some("csv")`); the same for `.xlsx`.
fn split_suffix(segment: &str) -> (&str, Option<&'static str>) {
    for suffix in ["csv", "xlsx"] {
        if let Some(stem) = segment
            .strip_suffix(suffix)
            .and_then(|s| s.strip_suffix('.'))
        {
            return (stem, Some(suffix));
        }
    }
    (segment, None)
}

/// A table as a file download: CSV or XLSX, named `{stem}_{from}_{to}.{ext}`.
async fn file(
    table: forms::Table,
    format: FileFormat,
    stem: &str,
    heading: Heading,
) -> Result<Response, HttpError> {
    let query = heading.query.clone();
    let (media, ext, body) = match format {
        FileFormat::Csv(options) => (
            "text/csv; charset=utf-8",
            "csv",
            forms::to_csv(&table, options).into_bytes(),
        ),
        FileFormat::Xlsx => {
            let bytes = tokio::task::spawn_blocking(move || xlsx::to_xlsx(&table, &heading))
                .await
                .map_err(|e| internal(format!("building the workbook: {e}")))?
                .map_err(|e| internal(format!("building the workbook: {e}")))?;
            (XLSX, "xlsx", bytes)
        }
    };
    let name = format!(
        "{stem}_{}_{}.{ext}",
        query.from.format("%Y-%m-%d"),
        query.to.format("%Y-%m-%d")
    );
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{name}\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media)),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        body,
    )
        .into_response())
}

fn internal(message: String) -> HttpError {
    tracing::error!("{message}");
    HttpError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

async fn indicators(
    state: State<HttpState>,
    headers: HeaderMap,
    query: Result<UrlQuery<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, HttpError> {
    indicators_as(None, state, headers, query).await
}

async fn indicators_csv(
    state: State<HttpState>,
    headers: HeaderMap,
    query: Result<UrlQuery<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, HttpError> {
    indicators_as(Some("csv"), state, headers, query).await
}

async fn indicators_xlsx(
    state: State<HttpState>,
    headers: HeaderMap,
    query: Result<UrlQuery<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, HttpError> {
    indicators_as(Some("xlsx"), state, headers, query).await
}

/// `/v1/indicators` with the suffix `suffix`.
async fn indicators_as(
    suffix: Option<&str>,
    State(state): State<HttpState>,
    headers: HeaderMap,
    query: Result<UrlQuery<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, HttpError> {
    let principal = authenticate(&state, &headers)?;
    let params = params(query)?;
    let output = output(suffix, &params)?;
    let (query, source) = scope(&params, state.reader.limits())?;
    let structure_at = scope::structure_at("structure_at", param(&params, "structure_at"))?;
    may_ask(&principal, source)?;
    let answer = state
        .reader
        .indicators(&query, source, structure_at)
        .await?;
    match output {
        Output::Json => {
            let mut response = service::indicators_response(&answer, source)?;
            response.structure_at = structure_at.map(service::day).unwrap_or_default();
            Ok(json(&response))
        }
        Output::File(format) => {
            let table = answers::indicators_table(&answer, &query.group_by);
            let heading = Heading::new(&query, source, structure_at);
            file(table, format, "indicators", heading).await
        }
    }
}

async fn report(
    State(state): State<HttpState>,
    form: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    query: Result<UrlQuery<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, HttpError> {
    let principal = authenticate(&state, &headers)?;
    let form = segment(form, "form")?;
    let params = params(query)?;
    let (slug, suffix) = split_suffix(&form);
    let form = Form::from_slug(slug).ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no form {slug:?}; forms: {} (JSON; .csv or .xlsx appended for files)",
                Form::ALL.map(Form::slug).join(", ")
            ),
        )
    })?;
    let output = output(suffix, &params)?;
    let (query, source) = scope(&params, state.reader.limits())?;
    let structure_at = scope::structure_at("structure_at", param(&params, "structure_at"))?;
    may_ask(&principal, source)?;
    let table = state
        .reader
        .report(form, &query, source, structure_at)
        .await?;
    match output {
        Output::Json => {
            let mut report = service::report_pb(&table, &query, source);
            report.structure_at = structure_at.map(service::day).unwrap_or_default();
            Ok(json(&report))
        }
        Output::File(format) => {
            let heading = Heading::new(&query, source, structure_at);
            file(table, format, form.slug(), heading).await
        }
    }
}

async fn dossier_status(
    State(state): State<HttpState>,
    id: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    authenticate(&state, &headers)?;
    let id = segment(id, "id")?;
    let id = domain::DossierId::parse(&id).map_err(|e| ScopeError::new("id", e.to_string()))?;
    let d = state.reader.dossier(id.as_str()).await?.ok_or_else(|| {
        HttpError::new(
            StatusCode::NOT_FOUND,
            "dossier_not_found",
            format!("no dossier {id} in the log"),
        )
    })?;
    Ok(json(&service::status_pb(id.as_str(), &d)))
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
            scope(&p, &QueryLimits::default()).unwrap_err().field
        };
        assert!(scope(&params(&period), &QueryLimits::default()).is_ok());
        assert_eq!(field(("color", "red")), "color");
        // Found by fuzzing (`?=202m=201&to=202`): a parameter without a name was reported
        // with an empty field.
        assert_eq!(field(("", "202m=201")), "query");
    }

    #[test]
    fn the_output_follows_the_suffix_or_format_and_csv_options_only_go_with_csv() {
        let out = |suffix, pairs: &[(&str, &str)]| output(suffix, &params(pairs));
        assert_eq!(out(None, &[]), Ok(Output::Json));
        let xlsx = Ok(Output::File(FileFormat::Xlsx));
        assert_eq!(out(None, &[("format", "xlsx")]), xlsx);
        assert_eq!(out(Some("xlsx"), &[]), xlsx);
        assert_eq!(
            out(Some("csv"), &[("bom", "true"), ("headings", "vi")]),
            Ok(Output::File(FileFormat::Csv(forms::CsvOptions {
                bom: true,
                vietnamese: true
            })))
        );
        assert_eq!(
            out(None, &[("format", "csv"), ("headings", "ids")]),
            Ok(Output::File(FileFormat::Csv(forms::CsvOptions::default())))
        );
        let field = |suffix, pairs: &[(&str, &str)]| out(suffix, pairs).unwrap_err().field;
        assert_eq!(field(Some("csv"), &[("format", "xlsx")]), "format");
        assert_eq!(field(None, &[("format", "xls")]), "format");
        assert_eq!(field(Some("csv"), &[("bom", "yes")]), "bom");
        assert_eq!(field(Some("csv"), &[("headings", "en")]), "headings");
        assert_eq!(field(Some("xlsx"), &[("bom", "true")]), "bom");
        assert_eq!(field(None, &[("headings", "vi")]), "headings");
        assert_eq!(split_suffix("ii06a.xlsx"), ("ii06a", Some("xlsx")));
        assert_eq!(split_suffix("ii06a.csv"), ("ii06a", Some("csv")));
        assert_eq!(split_suffix("ii06acsv"), ("ii06acsv", None));
    }

    #[test]
    fn an_amount_beyond_int64_is_a_400_naming_the_reason() {
        let e = HttpError::from(AmountTooLarge {
            field: "payment_amount_vnd",
            value: i128::from(i64::MAX) + 1,
        });
        assert_eq!(
            (e.status, e.code),
            (StatusCode::BAD_REQUEST, "amount_exceeds_int64")
        );
        assert!(e.message.contains("9223372036854775808"), "{}", e.message);
    }
}
