//! The OpenAPI 3 description of the citizen lookup's HTTP port (`services/intake/openapi.json`,
//! served at `GET /openapi.json` on `intake.lookup_http_listen`). Paths and errors are written
//! by hand; the schemas of `LookUpDossierRequest` (the body) and `LookUpDossierResponse` (the
//! answer) are generated from the proto descriptors by the shared [`openapi`](::openapi) crate,
//! and a unit test keeps the file equal to them (`UPDATE_OPENAPI=1 cargo test -p intake --lib
//! openapi` rewrites them). `tests/tests/it/openapi.rs` checks the running server against the
//! file with schemathesis.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The messages the route reads and answers with.
pub const ROOTS: ::openapi::Roots<'static> = ::openapi::Roots {
    answers: &["LookUpDossierResponse"],
    requests: &["LookUpDossierRequest"],
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
