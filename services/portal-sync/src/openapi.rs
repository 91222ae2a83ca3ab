//! The OpenAPI 3 description of the HTTP routes (`services/portal-sync/openapi.json`, served at
//! `GET /openapi.json` on `portal.http_listen`). Its answers are not gRPC messages (portal-sync
//! has no gRPC service): their schemas are written by hand next to the paths, and the shared
//! check ([`openapi::check_document`](::openapi::check_document), no generated roots) keeps the
//! file valid JSON of OpenAPI 3.0 whose references resolve. `tests/tests/it/openapi.rs` checks
//! the running server against the file with schemathesis, which is what holds the hand-written
//! schemas true to `http`'s answers.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_is_well_formed() {
        ::openapi::check_document(
            env!("CARGO_MANIFEST_DIR"),
            "openapi.json",
            DOCUMENT,
            ::openapi::Roots::default(),
        )
        .unwrap();
    }
}
