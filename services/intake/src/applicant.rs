//! `ApplicantService` (read, erase, access log, re-wrap) and `CitizenLookupService` with its
//! HTTP twin (`POST /v1/lookup`). Authorization here; keys and the access log in `personal`.

use std::net::SocketAddr;
use std::sync::Arc;

use api::v1 as pb;
use api::v1::applicant_service_server::ApplicantService;
use api::v1::citizen_lookup_service_server::CitizenLookupService;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::{Json, Router};
use domain::{DossierEvent, DossierId};
use personal::{LookupSecret, Opened, Reader, Vault};
use svc::status::{invalid_field, to_timestamp, unavailable};
use svc::{Principal, Role, Scope, Tokens};
use tonic::{Code, Request, Response, Status};
use writepath::WritePath;

use crate::limiter::{Exceeded, Limiter};
use crate::service::vault_status;

/// Rows per `ListApplicantAccess` page at most.
pub const MAX_ACCESS_PAGE: u32 = 1_000;

/// The personal-data RPCs' state.
#[derive(Debug, Clone)]
pub struct Applicants {
    vault: Vault,
    tokens: Arc<Tokens>,
    write: WritePath,
}

impl Applicants {
    pub fn new(vault: Vault, tokens: Arc<Tokens>, write: WritePath) -> Self {
        Applicants {
            vault,
            tokens,
            write,
        }
    }
}

fn reader(principal: &Principal, purpose: &str) -> Reader {
    Reader {
        name: principal.name.clone(),
        agency: principal.agency.as_ref().map(|a| a.to_string()),
        purpose: purpose.to_owned(),
    }
}

fn dossier_id(value: &str) -> Result<DossierId, Status> {
    svc::convert::dossier_id("dossier_id", value)
}

/// The dossier's folded state and its sealed applicant (`None` if received without one).
async fn load(
    write: &WritePath,
    dossier: &DossierId,
) -> Result<(domain::Dossier, Option<domain::SealedApplicant>), Status> {
    let events = write
        .log()
        .load_dossier(dossier.as_str())
        .await
        .map_err(unavailable)?;
    let state = writepath::fold(&events).map_err(svc::write::status)?;
    let sealed = events.first().and_then(|e| match writepath::decode(e) {
        Ok(domain::Event {
            body: DossierEvent::Received { applicant, .. },
            ..
        }) => applicant,
        _ => None,
    });
    Ok((state, sealed))
}

fn not_found() -> Status {
    Status::not_found("no applicant data for this dossier")
}

#[tonic::async_trait]
impl ApplicantService for Applicants {
    async fn get_applicant(
        &self,
        request: Request<pb::GetApplicantRequest>,
    ) -> Result<Response<pb::GetApplicantResponse>, Status> {
        let principal = self.tokens.authenticate(request.metadata())?;
        let dossier = dossier_id(&request.get_ref().dossier_id)?;
        let (state, sealed) = load(&self.write, &dossier).await?;
        let who = reader(&principal, "get_applicant");
        if !state.exists() {
            return Err(not_found());
        }
        if let Err(denied) = principal.may_read_personal(&state) {
            self.vault
                .record(&who, &dossier, "denied")
                .await
                .map_err(vault_status)?;
            return Err(denied);
        }
        let sealed = sealed.ok_or_else(not_found)?;
        match self
            .vault
            .open(&who, &dossier, &sealed)
            .await
            .map_err(vault_status)?
        {
            Opened::Applicant(a) => Ok(Response::new(pb::GetApplicantResponse {
                applicant: Some(svc::convert::pb_applicant(&a)),
                erased_at: None,
            })),
            Opened::Erased { erased_at } => Ok(Response::new(pb::GetApplicantResponse {
                applicant: None,
                erased_at: Some(to_timestamp(erased_at)),
            })),
        }
    }

    async fn erase_applicant(
        &self,
        request: Request<pb::EraseApplicantRequest>,
    ) -> Result<Response<pb::EraseApplicantResponse>, Status> {
        let principal = self.tokens.authenticate(request.metadata())?;
        principal.require_scope(Scope::Erasure)?;
        let req = request.get_ref();
        let dossier = dossier_id(&req.dossier_id)?;
        // A case reference has the shape of a code: no room for personal data.
        let reference = domain::ComponentCode::parse(req.reference.clone())
            .map_err(|e| invalid_field("reference", e.reason))?;
        let erased_at = self
            .vault
            .erase(&reader(&principal, "erasure"), &dossier, reference.as_str())
            .await
            .map_err(vault_status)?;
        tracing::info!(dossier = %dossier, "applicant data erased");
        Ok(Response::new(pb::EraseApplicantResponse {
            erased_at: Some(to_timestamp(erased_at)),
        }))
    }

    async fn list_applicant_access(
        &self,
        request: Request<pb::ListApplicantAccessRequest>,
    ) -> Result<Response<pb::ListApplicantAccessResponse>, Status> {
        let principal = self.tokens.authenticate(request.metadata())?;
        if principal.role != Role::Auditor && !principal.has_scope(Scope::PersonalData) {
            return Err(Status::permission_denied(
                "the access log is for auditor tokens and the personal_data scope",
            ));
        }
        let req = request.get_ref();
        let dossier = match req.dossier_id.as_str() {
            "" => None,
            id => Some(dossier_id(id)?),
        };
        let limit = match req.limit {
            0 => 100,
            n if n <= MAX_ACCESS_PAGE => n,
            _ => {
                return Err(invalid_field("limit", format!("at most {MAX_ACCESS_PAGE}")));
            }
        };
        let after =
            i64::try_from(req.after_id).map_err(|_| invalid_field("after_id", "out of range"))?;
        let rows = self
            .vault
            .access_log(dossier.as_ref(), after, i64::from(limit))
            .await
            .map_err(vault_status)?;
        Ok(Response::new(pb::ListApplicantAccessResponse {
            accesses: rows
                .into_iter()
                .map(|a| pb::ApplicantAccess {
                    id: a.id as u64,
                    at: Some(to_timestamp(a.at)),
                    dossier_id: a.dossier_id,
                    reader: a.reader,
                    agency: a.agency.unwrap_or_default(),
                    purpose: a.purpose,
                    outcome: a.outcome,
                })
                .collect(),
        }))
    }

    async fn rewrap_keys(
        &self,
        request: Request<pb::RewrapKeysRequest>,
    ) -> Result<Response<pb::RewrapKeysResponse>, Status> {
        self.tokens
            .authenticate(request.metadata())?
            .require_scope(Scope::Erasure)?;
        let rewrapped = self.vault.rewrap().await.map_err(vault_status)?;
        Ok(Response::new(pb::RewrapKeysResponse { rewrapped }))
    }
}

/// The citizen lookup (no token).
#[derive(Debug, Clone)]
pub struct Lookup {
    vault: Vault,
    write: WritePath,
    limiter: Limiter,
}

/// Why a lookup got no answer.
#[derive(Debug)]
pub enum LookupError {
    Invalid(Status),
    Limited(Exceeded),
    /// Unknown dossier or wrong secret: the same answer for both.
    NotFound,
    Unavailable(Status),
}

impl From<LookupError> for Status {
    fn from(e: LookupError) -> Status {
        match e {
            LookupError::Invalid(s) | LookupError::Unavailable(s) => s,
            LookupError::Limited(which) => svc::status::with_reason(
                Code::ResourceExhausted,
                "rate_limited",
                format!(
                    "too many lookups {}; try again in a minute",
                    match which {
                        Exceeded::Client => "from this address",
                        Exceeded::Dossier => "of this dossier",
                        Exceeded::Tracking => "right now",
                    }
                ),
            ),
            LookupError::NotFound => {
                Status::not_found("no dossier with this code and lookup secret")
            }
        }
    }
}

impl Lookup {
    pub fn new(vault: Vault, write: WritePath, limiter: Limiter) -> Self {
        Lookup {
            vault,
            write,
            limiter,
        }
    }

    /// The lookup itself, for gRPC and HTTP alike.
    pub async fn look_up(
        &self,
        client: &str,
        dossier_id: &str,
        secret: &str,
    ) -> Result<pb::LookUpDossierResponse, LookupError> {
        let dossier = self::dossier_id(dossier_id).map_err(LookupError::Invalid)?;
        self.limiter
            .admit(client, dossier.as_str())
            .map_err(LookupError::Limited)?;
        let secret = LookupSecret::parse(secret).ok_or(LookupError::NotFound)?;
        let matches = self
            .vault
            .lookup_matches(&dossier, &secret)
            .await
            .map_err(|e| LookupError::Unavailable(vault_status(e)))?;
        if !matches {
            return Err(LookupError::NotFound);
        }
        let (state, _) = load(&self.write, &dossier)
            .await
            .map_err(LookupError::Unavailable)?;
        let status = state.portal_status().ok_or(LookupError::NotFound)?;
        Ok(pb::LookUpDossierResponse {
            status: u32::from(status),
            due_at: state.due_at.map(to_timestamp),
            result_ready: state.resolution.is_some(),
            return_method: state.return_method.or(state.requested_return).map_or(
                pb::ReturnMethod::Unspecified,
                svc::convert::pb_return_method,
            ) as i32,
        })
    }
}

#[tonic::async_trait]
impl CitizenLookupService for Lookup {
    async fn look_up_dossier(
        &self,
        request: Request<pb::LookUpDossierRequest>,
    ) -> Result<Response<pb::LookUpDossierResponse>, Status> {
        let client = request
            .remote_addr()
            .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        let req = request.get_ref();
        Ok(Response::new(
            self.look_up(&client, &req.dossier_id, &req.secret).await?,
        ))
    }
}

/// `POST /v1/lookup` (a body, not a query string, so the secret stays out of access logs) and
/// `GET /openapi.json` ([`crate::openapi`]). The body is `LookUpDossierRequest` and the answer
/// `LookUpDossierResponse`, each in the standard proto3 JSON mapping (the `api` crate's serde:
/// `dossierId` or `dossier_id`, no other field); errors are JSON `{"code", "message",
/// "field"?}`: 400 `invalid_argument`, 404 `not_found` (unknown dossier or wrong secret, one
/// answer), 405, 413 `body_too_large`, 415 `unsupported_media_type`, 429 `rate_limited` (with
/// `Retry-After`), 503 `unavailable`.
pub fn router(lookup: Lookup) -> Router {
    Router::new()
        .route("/v1/lookup", axum::routing::post(http_lookup))
        .route(
            "/openapi.json",
            axum::routing::get(|| async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    crate::openapi::DOCUMENT,
                )
            }),
        )
        .fallback(|| async {
            http_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route: POST /v1/lookup, GET /openapi.json",
                None,
            )
        })
        .method_not_allowed_fallback(|| async {
            http_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "POST /v1/lookup, GET /openapi.json",
                None,
            )
        })
        .with_state(lookup)
}

/// Seconds a client told `rate_limited` waits: the limits' window.
const RETRY_AFTER_SECS: u64 = 60;

#[derive(Debug, serde::Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

fn http_error(status: StatusCode, code: &str, message: &str, field: Option<&str>) -> HttpResponse {
    (
        status,
        Json(ErrorBody {
            code,
            message,
            field,
        }),
    )
        .into_response()
}

async fn http_lookup(
    State(lookup): State<Lookup>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<pb::LookUpDossierRequest>, axum::extract::rejection::JsonRejection>,
) -> HttpResponse {
    let Json(body) = match body {
        Ok(body) => body,
        Err(e) => {
            let (status, code) = match e.status() {
                StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                    (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
                }
                StatusCode::PAYLOAD_TOO_LARGE => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
                _ => (StatusCode::BAD_REQUEST, "invalid_argument"),
            };
            return http_error(status, code, &e.body_text(), None);
        }
    };
    match lookup
        .look_up(&peer.ip().to_string(), &body.dossier_id, &body.secret)
        .await
    {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            let (status, code, field) = match &e {
                LookupError::Invalid(_) => (
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    Some("dossier_id"),
                ),
                LookupError::Limited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", None),
                LookupError::NotFound => (StatusCode::NOT_FOUND, "not_found", None),
                LookupError::Unavailable(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "unavailable", None)
                }
            };
            let limited = matches!(e, LookupError::Limited(_));
            let mut response = http_error(status, code, Status::from(e).message(), field);
            if limited {
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from(RETRY_AFTER_SECS),
                );
            }
            response
        }
    }
}
