//! The OpenAPI 3 description of the HTTP route (`services/processing/openapi.json`, served at
//! `GET /openapi.json` on `processing.http_listen`). Paths, parameters and errors are written by
//! hand; the schemas of `ListDueSoonResponse` and what it reaches are generated from the proto
//! descriptors by the shared [`openapi`](::openapi) crate, and a unit test keeps the file equal
//! to them (`UPDATE_OPENAPI=1 cargo test -p processing --lib openapi` rewrites them).
//! `tests/tests/it/openapi.rs` checks the running server against the file with schemathesis.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The messages the route answers with.
pub const ROOTS: ::openapi::Roots<'static> = ::openapi::Roots {
    answers: &["ListDueSoonResponse"],
    requests: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_matches_the_proto_descriptors() {
        ::openapi::check_document(env!("CARGO_MANIFEST_DIR"), "openapi.json", DOCUMENT, ROOTS)
            .unwrap();
    }
}
