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
    headers.insert("Content-Type", HeaderValue::from("application/json"));
    headers
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
