//! The OpenAPI 3 description of the HTTP routes (`services/projection/openapi.json`, served at
//! `GET /openapi.json`). The paths, parameters and errors are written by hand; the schemas of
//! the answers' messages are generated from the proto descriptors by the shared
//! [`openapi`](::openapi) crate (the proto3 JSON mapping that `pbjson-build` implements), and a
//! unit test keeps the file equal to them: `UPDATE_OPENAPI=1 cargo test -p projection --lib
//! openapi` rewrites them after a `.proto` change. The integration test `openapi` checks the
//! running server against the file with schemathesis.

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../openapi.json");

/// The messages the routes answer with; their schemas and those of every message and enum they
/// reach are generated.
pub const ROOTS: ::openapi::Roots<'static> = ::openapi::Roots {
    answers: &["GetIndicatorsResponse", "Report", "DossierStatus"],
    requests: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The file's message schemas are the generated ones and its references resolve;
    /// `UPDATE_OPENAPI=1` rewrites them.
    #[test]
    fn openapi_document_matches_the_proto_descriptors() {
        ::openapi::check_document(env!("CARGO_MANIFEST_DIR"), "openapi.json", DOCUMENT, ROOTS)
            .unwrap();
    }
}
