//! The invariants the targets assert: a panic here is a finding.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use domain::{Command, Dossier, DossierEvent, Event, EventId};
use eventlog::{MAX_EVENT_BYTES, StoredEvent, canonical_bytes};
use serde_json::Value;
use tonic::{Code, Status};
use tonic_types::StatusExt;

static EVENTS_CHECKED: AtomicU64 = AtomicU64::new(0);

/// How many events [`stored_events`] checked in this process (the tests' proof that the seeds
/// reach the canonical bytes).
pub fn events_checked() -> u64 {
    EVENTS_CHECKED.load(Ordering::Relaxed)
}

/// A reception refused by the catalogue: FAILED_PRECONDITION `catalogue_mismatch` whose
/// ErrorInfo names the field and the version, and whose message starts with the field.
pub fn catalogue_mismatch(status: &Status) {
    if status.code() != Code::FailedPrecondition {
        return;
    }
    let info = status
        .get_details_error_info()
        .unwrap_or_else(|| panic!("FAILED_PRECONDITION without ErrorInfo: {status:?}"));
    assert_eq!(info.reason, "catalogue_mismatch", "{status:?}");
    let field = &info.metadata["field"];
    assert!(status.message().starts_with(field.as_str()), "{status:?}");
    assert!(
        info.metadata.contains_key("catalogue_version"),
        "{status:?}"
    );
}

/// A refused request: INVALID_ARGUMENT naming a field in `google.rpc.BadRequest`, the message
/// `field: reason`; or one of `also` (e.g. PERMISSION_DENIED).
pub fn refusal(status: &Status, also: &[Code]) {
    if also.contains(&status.code()) {
        return;
    }
    assert_eq!(
        status.code(),
        Code::InvalidArgument,
        "a malformed request got {status:?}"
    );
    let details = status
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("INVALID_ARGUMENT without BadRequest details: {status:?}"));
    let violation = details
        .field_violations
        .first()
        .unwrap_or_else(|| panic!("BadRequest without a field violation: {status:?}"));
    assert!(
        !violation.field.is_empty(),
        "a violation names no field: {status:?}"
    );
    assert!(
        status
            .message()
            .starts_with(&format!("{}: ", violation.field)),
        "message and details disagree on the field: {status:?}"
    );
}

/// The top-level keys of every canonical event, sorted.
const KEYS: [&str; 11] = [
    "agency",
    "dossier_id",
    "event_id",
    "event_type",
    "level",
    "occurred_at",
    "payload",
    "position",
    "recorded_at",
    "sector",
    "version",
];

/// Runs what `decide` produced for `command` on `state` through the write path's pure steps
/// (routing, `new_events`) into stored events, checks each, and folds them into `state`.
pub fn decided(
    state: &mut Dossier,
    dossier_id: &str,
    first_id: EventId,
    command: &Command,
    decided: &[DossierEvent],
    fingerprint: [u8; 32],
) {
    if decided.is_empty() {
        return;
    }
    let routing = writepath::routing_of(state, decided)
        .expect("decide produced events for a dossier with no profile");
    let new = writepath::new_events(first_id, command, decided, fingerprint);
    assert_eq!(new.len(), decided.len());
    let stored: Vec<StoredEvent> = new
        .into_iter()
        .enumerate()
        .map(|(i, e)| StoredEvent {
            // The longest values these fields can take: the bound must hold for them.
            position: i64::MAX - 16 + i as i64,
            event_id: e.event_id,
            dossier_id: dossier_id.to_owned(),
            version: i32::try_from(state.version).expect("version fits") + 1 + i as i32,
            event_type: e.event_type,
            occurred_at: e.occurred_at,
            recorded_at: recorded_at(),
            routing: routing.clone(),
            payload: e.payload,
            fingerprint: e.fingerprint,
            event_hash: [0; 32],
            chain_hash: [0; 32],
        })
        .collect();
    stored_events(&stored);
    for (event, body) in stored.iter().zip(decided) {
        state.evolve(&Event {
            occurred_at: event.occurred_at,
            body: body.clone(),
        });
    }
}

fn recorded_at() -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(4_102_444_799, 999_999_000).expect("valid instant")
}

/// The canonical-bytes invariants for events about to be stored.
pub fn stored_events(events: &[StoredEvent]) {
    for event in events {
        EVENTS_CHECKED.fetch_add(1, Ordering::Relaxed);
        let bytes = canonical_bytes(event);
        assert!(
            bytes.len() <= MAX_EVENT_BYTES,
            "a {} event of {} canonical bytes exceeds MAX_EVENT_BYTES ({MAX_EVENT_BYTES})",
            event.event_type,
            bytes.len()
        );
        assert_eq!(canonical_bytes(event), bytes, "canonical bytes vary");

        let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "canonical bytes are not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        });
        sorted_keys(&value);
        let keys: Vec<&str> = value
            .as_object()
            .expect("a canonical event is an object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, KEYS, "canonical event keys");
        assert_eq!(
            serde_json::to_vec(&value).expect("a JSON value serializes"),
            bytes,
            "canonical bytes are not compact JSON with sorted keys as serde_json writes it"
        );

        // Stored as jsonb and read back: the same bytes, hence the same hash.
        let mut reread = event.clone();
        reread.payload = serde_json::from_slice(
            &serde_json::to_vec(&event.payload).expect("a payload serializes"),
        )
        .expect("a payload parses back");
        assert_eq!(canonical_bytes(&reread), bytes, "payload round trip");

        // Every reader decodes it back to the same event.
        let body = DossierEvent::from_parts(&event.event_type, &event.payload)
            .unwrap_or_else(|e| panic!("a {} payload does not decode: {e}", event.event_type));
        let (event_type, payload) = body.into_parts();
        assert_eq!(event_type, event.event_type);
        assert_eq!(
            payload, event.payload,
            "decode → encode changes the payload"
        );
    }
}

/// Keys sorted at every depth (checked on the parsed value, which keeps the document's order
/// when serde_json's `preserve_order` is on, and by the byte comparison above otherwise).
fn sorted_keys(value: &Value) {
    match value {
        Value::Object(map) => {
            let keys: Vec<&String> = map.keys().collect();
            assert!(keys.is_sorted(), "keys not sorted: {keys:?}");
            map.values().for_each(sorted_keys);
        }
        Value::Array(items) => items.iter().for_each(sorted_keys),
        Value::Number(n) => assert!(!n.is_f64(), "a float in a canonical event: {n}"),
        _ => {}
    }
}
