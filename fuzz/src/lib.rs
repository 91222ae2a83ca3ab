//! Coverage-guided fuzz targets for everything a request reaches before the database: the
//! protobuf decoding of each write RPC's request, its conversion into a domain command
//! (`svc::handler::CommonFields::parse` and each service's `*_action`), `domain::decide`
//! against plausible dossiers, the events' canonical bytes; the `ImportHistory` batch; the
//! statistics' HTTP query string and gRPC requests with the pure work done before the query
//! reaches PostgreSQL; the replay request.
//!
//! Each target is a function of the input bytes in [`targets`]; `fuzz_targets/*.rs` hand them
//! to libFuzzer (cargo-fuzz). A panic is a finding. Beyond "no panic", the targets check:
//!
//! - a refused request gets INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the field,
//!   and the message starting with that field (PERMISSION_DENIED only for `Resolve`'s
//!   deciding agency);
//! - every event an accepted request produces has canonical bytes of at most
//!   [`eventlog::MAX_EVENT_BYTES`], which are compact JSON with sorted keys, the same when
//!   computed twice and after the payload's round trip through JSON (as through `jsonb`), and
//!   the event decodes back from its stored type and payload;
//! - a parsed statistics query has `from < to`, at most `MAX_PERIOD_DAYS`, no dimension twice.
//!
//! The seeds (`seeds/<target>/`) are written by code ([`seeds`]); `cargo test` here checks they
//! are current (`FUZZ_BLESS=1 cargo test` rewrites them) and that every seed and every input
//! kept in `regressions/<target>/` (a fixed finding) runs clean.
//!
//! This crate is not a member of the workspace; it must never be a dependency of one.

pub mod check;
pub mod fixtures;
pub mod seeds;
pub mod targets;

/// A fuzz target: what it does with one input.
pub type Target = fn(&[u8]);

/// Every target, by name: what `cargo xtask fuzz` runs and the tests check.
pub const TARGETS: &[(&str, Target)] = &[
    ("intake", targets::intake),
    ("processing", targets::processing),
    ("payment", targets::payment),
    ("results", targets::results),
    ("import_history", targets::import_history),
    ("stats_http", targets::stats_http),
    ("stats_grpc", targets::stats_grpc),
    ("replay", targets::replay),
];

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn dir(kind: &str, target: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(kind)
            .join(target)
    }

    fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut files: Vec<_> = entries
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&p).unwrap())
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn seeds_are_current() {
        let bless = std::env::var_os("FUZZ_BLESS").is_some();
        for (target, _) in TARGETS {
            let want = seeds::seeds(target);
            assert!(!want.is_empty(), "{target} has no seeds");
            let dir = dir("seeds", target);
            if bless {
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).unwrap();
                for (name, bytes) in &want {
                    std::fs::write(dir.join(name), bytes).unwrap();
                }
            }
            let mut want = want;
            want.sort();
            assert_eq!(
                files(&dir),
                want,
                "seeds/{target} is stale: run `FUZZ_BLESS=1 cargo test` in fuzz/"
            );
        }
    }

    #[test]
    fn every_seed_and_regression_runs_clean() {
        for (target, run) in TARGETS {
            for (name, bytes) in seeds::seeds(target)
                .into_iter()
                .chain(files(&dir("regressions", target)))
            {
                println!("{target}/{name}");
                run(&bytes);
            }
        }
    }

    /// The size check catches an oversized event (issue 9's F1: a dossier with thousands of
    /// components). Byte-level mutation does not build a thousand distinct valid codes in a few
    /// minutes, so this is shown here: while the request is accepted, the target must fail on
    /// it; once the request bounds refuse it, it must be refused naming the field.
    #[test]
    fn an_oversized_event_is_a_finding() {
        use prost::Message;
        let mut request = api::v1::ReceiveDossierRequest::decode(
            &seeds::seeds("intake")
                .into_iter()
                .find(|(name, _)| name == "receive_dossier")
                .unwrap()
                .1[1..],
        )
        .unwrap();
        request.components = (0..1200).map(|i| format!("{i:064}")).collect();
        let mut input = vec![0u8];
        request.encode(&mut input).unwrap();
        match intake::service::receive_dossier_action(&request) {
            Ok(_) => {
                let panic = std::panic::catch_unwind(|| targets::intake(&input))
                    .expect_err("an oversized event passed the target");
                let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
                assert!(message.contains("exceeds MAX_EVENT_BYTES"), "{message}");
            }
            Err(status) => {
                check::refusal(&status, &[]);
                targets::intake(&input);
            }
        }
    }

    /// The seeds reach the deep end: each write seed is accepted and produces events (checked
    /// by counting, so a seed that silently became invalid fails here).
    #[test]
    fn write_seeds_are_accepted() {
        for target in [
            "intake",
            "processing",
            "payment",
            "results",
            "import_history",
        ] {
            for (name, bytes) in seeds::seeds(target) {
                let run = TARGETS.iter().find(|(t, _)| *t == target).unwrap().1;
                let before = check::events_checked();
                run(&bytes);
                assert!(
                    check::events_checked() > before,
                    "{target}/{name} produced no event"
                );
            }
        }
    }
}
