//! The HTTP client to the portal: one `POST` of a [`crate::shapes::Envelope`], classified.
//!
//! | answer | [`Outcome`] |
//! |---|---|
//! | HTTP 2xx, JSON, `error_code` 0 | `Accepted` |
//! | HTTP 2xx, JSON, `error_code` in `portal.retry_error_codes` | `Transient` (retried with backoff) |
//! | HTTP 2xx, JSON, any other `error_code` | `Refused` (permanent: the version is recorded as refused) |
//! | HTTP 400, 404, 409, 413, 415, 422 | `Refused` |
//! | any other HTTP status (401/403 credentials, 408, 429, 5xx…), an answer that is not the JSON shape, a connection error, no answer within `request_timeout` | `Transient` |
//!
//! Answers are read up to [`MAX_ANSWER_BYTES`]; a longer one is `Transient`. The credentials
//! go in `Authorization: Bearer`; they are never logged (see [`Credentials`]).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::shapes::{Answer, Envelope};

/// The longest answer read.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// The longest refusal message kept (in `portal_sync.refusal`).
pub const MAX_MESSAGE_CHARS: usize = 500;

/// The portal's credentials: printed as `***`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials(String);

impl Credentials {
    pub fn new(secret: impl Into<String>) -> Credentials {
        Credentials(secret.into().trim().to_owned())
    }

    fn header(&self) -> Option<String> {
        (!self.0.is_empty()).then(|| format!("Bearer {}", self.0))
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(***)")
    }
}

/// What a request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `error_code` 0.
    Accepted,
    /// Worth trying again later (the portal or the network failed, or asked to retry).
    Transient(String),
    /// The portal refuses this content; sending it again changes nothing.
    Refused { code: i64, message: String },
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("portal.endpoint {0:?} is not an http:// or https:// URL")]
    Endpoint(String),
    #[error("cannot load the system's trusted certificates for https: {0}")]
    Roots(std::io::Error),
}

type Body = Full<Bytes>;

#[derive(Debug, Clone)]
enum Inner {
    Plain(Client<HttpConnector, Body>),
    Tls(Client<hyper_rustls::HttpsConnector<HttpConnector>, Body>),
}

/// A client of one portal endpoint.
#[derive(Debug, Clone)]
pub struct PortalClient {
    inner: Inner,
    endpoint: Uri,
    credentials: Credentials,
    timeout: Duration,
    retry_codes: Vec<i64>,
}

impl PortalClient {
    pub fn new(
        endpoint: &str,
        credentials: Credentials,
        connect_timeout: Duration,
        timeout: Duration,
        retry_codes: Vec<i64>,
    ) -> Result<PortalClient, ClientError> {
        let uri: Uri = endpoint
            .parse()
            .map_err(|_| ClientError::Endpoint(endpoint.to_owned()))?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(connect_timeout));
        let builder = Client::builder(TokioExecutor::new());
        let inner = match uri.scheme_str() {
            Some("http") => Inner::Plain(builder.build(http)),
            Some("https") => {
                http.enforce_http(false);
                let tls = hyper_rustls::HttpsConnectorBuilder::new()
                    .with_native_roots()
                    .map_err(ClientError::Roots)?
                    .https_only()
                    .enable_http1()
                    .wrap_connector(http);
                Inner::Tls(builder.build(tls))
            }
            _ => return Err(ClientError::Endpoint(endpoint.to_owned())),
        };
        if uri.host().is_none() {
            return Err(ClientError::Endpoint(endpoint.to_owned()));
        }
        Ok(PortalClient {
            inner,
            endpoint: uri,
            credentials,
            timeout,
            retry_codes,
        })
    }

    /// POSTs `{"service": service, "data": data}` and classifies the answer.
    pub async fn post<T: Serialize>(&self, service: &'static str, data: &[T]) -> Outcome {
        let body = match serde_json::to_vec(&Envelope { service, data }) {
            Ok(body) => body,
            Err(e) => return Outcome::Transient(format!("cannot encode the request: {e}")),
        };
        let mut request = Request::post(self.endpoint.clone())
            .header("content-type", "application/json")
            .header("accept", "application/json");
        if let Some(auth) = self.credentials.header() {
            request = request.header("authorization", auth);
        }
        let request = match request.body(Full::new(Bytes::from(body))) {
            Ok(r) => r,
            Err(e) => return Outcome::Transient(format!("cannot build the request: {e}")),
        };
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(outcome) => outcome,
            Err(_) => Outcome::Transient(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn exchange(&self, request: Request<Body>) -> Outcome {
        let response = match &self.inner {
            Inner::Plain(c) => c.request(request).await,
            Inner::Tls(c) => c.request(request).await,
        };
        let response = match response {
            Ok(r) => r,
            Err(e) => return Outcome::Transient(format!("request failed: {e}")),
        };
        let status = response.status();
        let body = match Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e) => return Outcome::Transient(format!("reading the answer failed: {e}")),
        };
        classify(status.as_u16(), &body, &self.retry_codes)
    }
}

/// The outcome of an answer (the table in the module docs).
pub fn classify(status: u16, body: &[u8], retry_codes: &[i64]) -> Outcome {
    if matches!(status, 400 | 404 | 409 | 413 | 415 | 422) {
        return Outcome::Refused {
            code: -i64::from(status),
            message: format!("HTTP {status}: {}", excerpt(body)),
        };
    }
    if !(200..300).contains(&status) {
        return Outcome::Transient(format!("HTTP {status}"));
    }
    match serde_json::from_slice::<Answer>(body) {
        Ok(Answer { error_code: 0, .. }) => Outcome::Accepted,
        Ok(Answer { error_code, .. }) if retry_codes.contains(&error_code) => Outcome::Transient(
            format!("error_code {error_code} (retried by configuration)"),
        ),
        Ok(Answer {
            error_code,
            message,
        }) => Outcome::Refused {
            code: error_code,
            message: message
                .unwrap_or_default()
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect(),
        },
        Err(_) => Outcome::Transient(format!(
            "HTTP {status} with an answer that is not {{\"error_code\": …}}"
        )),
    }
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .chars()
        .take(MAX_MESSAGE_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_documented() {
        assert_eq!(
            classify(200, br#"{"error_code":0,"message":"ok"}"#, &[]),
            Outcome::Accepted
        );
        assert!(matches!(
            classify(200, br#"{"error_code":7,"message":"bad MaTTHC"}"#, &[]),
            Outcome::Refused { code: 7, .. }
        ));
        assert!(matches!(
            classify(200, br#"{"error_code":7}"#, &[7]),
            Outcome::Transient(_)
        ));
        assert!(matches!(classify(503, b"", &[]), Outcome::Transient(_)));
        assert!(matches!(classify(401, b"", &[]), Outcome::Transient(_)));
        assert!(matches!(
            classify(200, b"<html>", &[]),
            Outcome::Transient(_)
        ));
        assert!(matches!(
            classify(422, b"shape", &[]),
            Outcome::Refused { code: -422, .. }
        ));
    }

    #[test]
    fn credentials_are_never_printed() {
        let c = Credentials::new("s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
