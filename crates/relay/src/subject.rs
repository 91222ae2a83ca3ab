//! Subjects and headers of published events.

use async_nats::HeaderMap;
use async_nats::header::{HeaderValue, NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_STREAM};
use eventlog::StoredEvent;

/// Header carrying the event's global position in the log (decimal).
pub const HEADER_POSITION: &str = "Dossier-Position";
/// Header carrying the dossier id.
pub const HEADER_DOSSIER_ID: &str = "Dossier-Id";
/// Header carrying the event's 1-based version within its dossier (decimal).
pub const HEADER_VERSION: &str = "Dossier-Version";
/// Header carrying the event type, unaltered (the subject carries a subject-safe form).
pub const HEADER_EVENT_TYPE: &str = "Dossier-Event-Type";
/// `Nats-Msg-Id`: the event id, the key of the stream's deduplication.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Header carrying the event's `event_hash` (64 lower-case hex digits): SHA-256(0x00 ||
/// canonical bytes). Lets a consumer check the body, and `recover-log` refuse an altered one.
pub const HEADER_EVENT_HASH: &str = "Dossier-Event-Hash";
/// Header carrying the event's `chain_hash` (64 lower-case hex digits): the log's hash chain at
/// this position, which `recover-log` checks against the log it continues.
pub const HEADER_CHAIN_HASH: &str = "Dossier-Chain-Hash";
/// Header carrying the event's `fingerprint` (64 lower-case hex digits), the hash of the client
/// request that produced it: not in the canonical bytes, and needed to put the event back into
/// the log exactly (`recover-log`), so that a client's retry is still recognised.
pub const HEADER_FINGERPRINT: &str = "Dossier-Fingerprint";
/// Present only on a placeholder: the event's canonical bytes did not fit in the NATS server's
/// `max_payload`, so the message carries every header of the event but a small JSON body
/// instead of the event (see [`placeholder_body`]). Its value is [`BODY_OMITTED_TOO_LARGE`].
pub const HEADER_BODY_OMITTED: &str = "Dossier-Body-Omitted";
/// The value of [`HEADER_BODY_OMITTED`] on a placeholder for an event too large to publish.
pub const BODY_OMITTED_TOO_LARGE: &str = "too-large";

/// Longest event type the header budget allows for (event types are short snake_case words).
const MAX_EVENT_TYPE_BYTES: usize = 64;
/// Longest dossier id in bytes: 128 characters of up to 4 UTF-8 bytes.
const MAX_DOSSIER_ID_BYTES: usize = eventlog::MAX_DOSSIER_ID_CHARS * 4;

/// The subject of an event: `{prefix}.{level}.{agency}.{sector}.{event_type}`.
///
/// Each of the four tokens is made subject-safe by [`subject_token`]: a `.` becomes `_` (agency
/// codes such as `000.00.12.H40` contain dots and never contain `_`, so for the agency token
/// this is reversible: `000_00_12_H40` → `000.00.12.H40`), and every other character outside
/// `[A-Za-z0-9_-]` becomes `-`. The headers and the payload carry the exact values.
///
/// Consumers filter with wildcards: `dossier.district.*.land.*` (district land dossiers),
/// `dossier.*.*.*.resolved` (every resolution), `dossier.*.000_00_12_H40.>` (one agency),
/// `dossier.>` (everything).
pub fn subject_for(prefix: &str, e: &StoredEvent) -> String {
    format!(
        "{prefix}.{}.{}.{}.{}",
        subject_token(&e.routing.level),
        subject_token(&e.routing.agency),
        subject_token(&e.routing.sector),
        subject_token(&e.event_type),
    )
}

/// One subject token from a free value: `.` → `_`, any other character outside
/// `[A-Za-z0-9_-]` → `-` (one `-` per character), and an empty value → `-` (a subject token may
/// not be empty).
pub fn subject_token(value: &str) -> String {
    if value.is_empty() {
        return "-".to_owned();
    }
    value
        .chars()
        .map(|c| match c {
            '.' => '_',
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => c,
            _ => '-',
        })
        .collect()
}

/// The agency code back from its subject token (`_` → `.`).
pub fn agency_from_token(token: &str) -> String {
    token.replace('_', ".")
}

/// The headers of one published event. `expected_last_sequence` is the stream sequence the
/// stream must end at for the server to accept the message.
pub fn headers_for(stream: &str, e: &StoredEvent, expected_last_sequence: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, header_value(&e.event_id.to_string()));
    headers.insert(
        NATS_EXPECTED_LAST_SEQUENCE,
        HeaderValue::from(expected_last_sequence),
    );
    headers.insert(NATS_EXPECTED_STREAM, header_value(stream));
    headers.insert(HEADER_POSITION, HeaderValue::from(e.position));
    headers.insert(HEADER_DOSSIER_ID, header_value(&e.dossier_id));
    headers.insert(HEADER_VERSION, HeaderValue::from(e.version));
    headers.insert(HEADER_EVENT_TYPE, header_value(&e.event_type));
    headers.insert(
        HEADER_EVENT_HASH,
        HeaderValue::from(hex::encode(e.event_hash)),
    );
    headers.insert(
        HEADER_CHAIN_HASH,
        HeaderValue::from(hex::encode(e.chain_hash)),
    );
    headers.insert(
        HEADER_FINGERPRINT,
        HeaderValue::from(hex::encode(e.fingerprint)),
    );
    headers.insert("Content-Type", HeaderValue::from("application/json"));
    headers
}

/// The headers of the placeholder published instead of an event too large for the server:
/// [`headers_for`] plus `Dossier-Body-Omitted: too-large`.
pub fn placeholder_headers(
    stream: &str,
    e: &StoredEvent,
    expected_last_sequence: u64,
) -> HeaderMap {
    let mut headers = headers_for(stream, e, expected_last_sequence);
    headers.insert(HEADER_BODY_OMITTED, BODY_OMITTED_TOO_LARGE);
    headers
}

/// The body of a placeholder: `{"omitted":"too-large","position":…,"event_id":"…",
/// "event_hash":"…","bytes":…}` where `bytes` is the size of the event's canonical bytes. The
/// event itself stays in the log (read it there, e.g. with the replay service).
pub fn placeholder_body(e: &StoredEvent, canonical_len: usize) -> Vec<u8> {
    format!(
        r#"{{"omitted":"{BODY_OMITTED_TOO_LARGE}","position":{},"event_id":"{}","event_hash":"{}","bytes":{canonical_len}}}"#,
        e.position,
        e.event_id.hyphenated(),
        hex::encode(e.event_hash),
    )
    .into_bytes()
}

/// The size of a header block on the wire, as the server counts it against `max_payload`
/// (`NATS/1.0\r\n`, then `name: value\r\n` for each value, then `\r\n`).
pub fn headers_wire_len(headers: &HeaderMap) -> usize {
    let mut len = b"NATS/1.0\r\n".len() + b"\r\n".len();
    for (name, values) in headers.iter() {
        for value in values {
            len += AsRef::<[u8]>::as_ref(name).len()
                + b": ".len()
                + value.as_str().len()
                + b"\r\n".len();
        }
    }
    len
}

/// The largest header block of any message the relay publishes into `stream` (a placeholder's,
/// for an event with the longest dossier id, event type, position and sequence): what a message
/// needs in `max_payload` beside its body. The relay requires
/// `MAX_EVENT_BYTES + max_headers_len(stream) <= max_payload`.
pub fn max_headers_len(stream: &str) -> usize {
    let worst = StoredEvent {
        position: i64::MAX,
        event_id: uuid::Uuid::max(),
        dossier_id: "\u{10FFFF}".repeat(MAX_DOSSIER_ID_BYTES / 4),
        version: i32::MAX,
        event_type: "x".repeat(MAX_EVENT_TYPE_BYTES),
        occurred_at: chrono::DateTime::<chrono::Utc>::MAX_UTC,
        recorded_at: chrono::DateTime::<chrono::Utc>::MAX_UTC,
        routing: eventlog::Routing {
            level: String::new(),
            agency: String::new(),
            sector: String::new(),
        },
        payload: serde_json::Value::Null,
        fingerprint: [0xff; 32],
        event_hash: [0xff; 32],
        chain_hash: [0xff; 32],
    };
    headers_wire_len(&placeholder_headers(stream, &worst, u64::MAX))
}

/// A header value with line breaks (which the protocol cannot carry) replaced by spaces. The
/// payload always carries the exact value.
fn header_value(value: &str) -> HeaderValue {
    if value.contains(['\r', '\n']) {
        HeaderValue::from(value.replace(['\r', '\n'], " "))
    } else {
        HeaderValue::from(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_subject_safe() {
        assert_eq!(subject_token("000.00.12.H40"), "000_00_12_H40");
        assert_eq!(agency_from_token("000_00_12_H40"), "000.00.12.H40");
        assert_eq!(
            subject_token("supplement_requested"),
            "supplement_requested"
        );
        assert_eq!(subject_token("đất đai"), "--t--ai");
        assert_eq!(subject_token("a*b>c d"), "a-b-c-d");
        assert_eq!(subject_token(""), "-");
    }
}
