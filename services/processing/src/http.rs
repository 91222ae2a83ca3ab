//! The early warning over HTTP (`processing.http_listen`), for the dashboard and counter software
//! that speaks no gRPC.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/warnings` | `ListDueSoonResponse` as its proto3 JSON mapping |
//! | `GET /openapi.json` | the OpenAPI 3 description of this port ([`crate::openapi`]; no token) |
//!
//! Query parameters (each at most once; the proto field name or its lowerCamelCase JSON name):
//! `agency_code`, `page_size`, `page_token`, as in `ListDueSoonRequest`. `Authorization: Bearer
//! <token>` as for gRPC (never in the URL). The answer is the gRPC answer's standard proto3 JSON
//! mapping (the `api` crate's serde): `{"warnings":[{"dossierId","agencyCode",
//! "holdingAgencyCode","dueAt","apologyDeadline","warnFrom","raisedAt"}],"nextPageToken"}`,
//! timestamps RFC 3339 UTC, every field present.
//!
//! Errors are JSON `{"code", "message", "field"?}`: 400 `invalid_argument` (a malformed, unknown
//! or repeated parameter, naming it), 401 `unauthenticated`, 403 `permission_denied`, 404, 405,
//! 503 `unavailable`.
//!
//! CORS: a browser page served from one of `processing.cors_origins` (exact origins such as
//! `http://127.0.0.1:8055`) may call the route with its `Authorization` header; preflights are
//! answered for those origins only, and no other origin gets CORS headers.

use std::collections::HashMap;
use std::time::Duration;

use api::v1 as pb;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::warnings::{ListError, ReadError, WarningList};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The routes over `list`; with CORS for `cors_origins` (none: no CORS headers at all).
pub fn router(list: WarningList, cors_origins: &[HeaderValue]) -> Router {
    let router = Router::new()
        .route("/v1/warnings", get(warnings))
        .route("/openapi.json", get(openapi))
        .fallback(|| async {
            HttpError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route: /v1/warnings, /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            HttpError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "only GET is served",
            )
        })
        .with_state(list);
    if cors_origins.is_empty() {
        return router;
    }
    router.layer(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(cors_origins.iter().cloned()))
            .allow_methods([Method::GET])
            .allow_headers([header::AUTHORIZATION])
            .max_age(PREFLIGHT_MAX_AGE),
    )
}

/// Parses `processing.cors_origins`: each an origin as browsers send it (`scheme://host[:port]`).
pub fn cors_origins(origins: &[String]) -> Result<Vec<HeaderValue>, String> {
    origins
        .iter()
        .map(|o| {
            let valid = (o.starts_with("http://") || o.starts_with("https://"))
                && !o.ends_with('/')
                && o.split("://").nth(1).is_some_and(|rest| {
                    !rest.is_empty() && !rest.contains('/') && !rest.contains(char::is_whitespace)
                });
            if !valid {
                return Err(format!(
                    "processing.cors_origins: {o:?} is not an origin (scheme://host[:port], no path)"
                ));
            }
            HeaderValue::from_str(o)
                .map_err(|_| format!("processing.cors_origins: {o:?} is not a valid header value"))
        })
        .collect()
}

/// The OpenAPI description of this port; no token needed.
async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        crate::openapi::DOCUMENT,
    )
        .into_response()
}

async fn warnings(
    State(list): State<WarningList>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<axum::Json<pb::ListDueSoonResponse>, HttpError> {
    let request = request(query)?;
    let metadata = tonic::metadata::MetadataMap::from_headers(headers);
    let answer = list.answer(&metadata, &request).await?;
    Ok(axum::Json(answer))
}

/// The query string as a `ListDueSoonRequest`: each parameter once, known names only.
fn request(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<pb::ListDueSoonRequest, HttpError> {
    let Query(pairs) = query
        .map_err(|e| HttpError::new(StatusCode::BAD_REQUEST, "invalid_argument", e.body_text()))?;
    let mut seen: HashMap<&'static str, String> = HashMap::new();
    for (name, value) in pairs {
        let field = match name.as_str() {
            "agency_code" | "agencyCode" => "agency_code",
            "page_size" | "pageSize" => "page_size",
            "page_token" | "pageToken" => "page_token",
            _ => {
                return Err(HttpError::field(
                    name.clone(),
                    "is not a parameter of /v1/warnings (agency_code, page_size, page_token)",
                ));
            }
        };
        if seen.insert(field, value).is_some() {
            return Err(HttpError::field(
                field.to_owned(),
                "is given more than once",
            ));
        }
    }
    let page_size = match seen.get("page_size") {
        None => 0,
        Some(v) => v.parse::<u32>().map_err(|_| {
            HttpError::field("page_size".to_owned(), "must be a whole number of warnings")
        })?,
    };
    Ok(pb::ListDueSoonRequest {
        agency_code: seen.remove("agency_code").unwrap_or_default(),
        page_size,
        page_token: seen.remove("page_token").unwrap_or_default(),
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

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> HttpError {
        HttpError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    fn field(field: String, message: &str) -> HttpError {
        HttpError {
            message: format!("{field}: {message}"),
            field: Some(field),
            ..HttpError::new(StatusCode::BAD_REQUEST, "invalid_argument", "")
        }
    }
}

impl From<ReadError> for HttpError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Unauthenticated(m) => {
                HttpError::new(StatusCode::UNAUTHORIZED, "unauthenticated", m)
            }
            ReadError::Refused(ListError::Invalid { field, message }) => {
                HttpError::field(field.to_owned(), &message)
            }
            ReadError::Refused(ListError::Denied(m)) => {
                HttpError::new(StatusCode::FORBIDDEN, "permission_denied", m)
            }
            ReadError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "early warning list unavailable");
                HttpError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "the database is unavailable; retry",
                )
            }
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
        (self.status, axum::Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        assert!(
            cors_origins(&[
                "http://127.0.0.1:8055".into(),
                "https://ioc.example.vn".into()
            ])
            .is_ok()
        );
        for bad in [
            "127.0.0.1:8055",
            "http://a/",
            "http://a/path",
            "http://",
            "*",
        ] {
            assert!(cors_origins(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
