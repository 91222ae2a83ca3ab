//! The canonical form of a stored event and the hashes of the tamper-evident chain; the format
//! is documented on [`canonical_bytes`].

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::StoredEvent;

/// The chain hash before the first event: 32 zero bytes.
pub const GENESIS_CHAIN_HASH: [u8; 32] = [0; 32];

/// The canonical form of an event, hashed into `event_hash`.
///
/// # Format
///
/// It is a compact JSON object (no whitespace anywhere) with exactly these keys,
/// written in this order, which is the lexicographic order of their UTF-8 bytes:
///
/// | key | value |
/// |---|---|
/// | `agency` | string |
/// | `dossier_id` | string |
/// | `event_id` | string, the UUID lower-case and hyphenated (`67e55044-10b1-426f-9247-bb680e5fe0c8`) |
/// | `event_type` | string |
/// | `level` | string |
/// | `occurred_at` | string, RFC 3339 in UTC with exactly 6 fractional digits and `Z` (`2024-01-02T03:04:05.123456Z`) |
/// | `payload` | the payload, canonicalised as below |
/// | `position` | integer |
/// | `recorded_at` | string, same format as `occurred_at` |
/// | `sector` | string |
/// | `version` | integer |
///
/// Inside the payload, objects are written with their keys sorted by the lexicographic order of
/// their UTF-8 bytes (equivalently, of their Unicode code points; this differs from RFC 8785,
/// which sorts by UTF-16 code units) at every depth, arrays keep their order, and there is no
/// whitespace. Strings (keys and values) are escaped exactly as `serde_json` escapes them: `"`
/// and `\` with a backslash, `\b \f \n \r \t` by name, the other control characters below
/// U+0020 as `\u00XX` with lower-case hex digits, everything else (including non-ASCII) as raw
/// UTF-8. Integers are written in decimal without a leading `+` or zeros; `true`, `false`,
/// `null` as such. Payloads are refused at append when they contain a float, so stored payloads
/// survive the round trip through `jsonb` unchanged; should one contain a float anyway, it is
/// written as `serde_json` writes an `f64`.
///
/// # Hashes ([`event_hash`], [`chain_hash`])
///
/// - `event_hash = SHA-256(0x00 || canonical_bytes)`: the RFC 6962 (Certificate Transparency)
///   leaf hash, so the events can later be the leaves of a Merkle tree whose interior nodes use
///   the `0x01` prefix.
/// - `chain_hash = SHA-256(previous_chain_hash || event_hash)`, where the previous chain hash is
///   that of the event at `position - 1`, and 32 zero bytes for position 1.
pub fn canonical_bytes(event: &StoredEvent) -> Vec<u8> {
    Canonical::of(event).bytes(event.position, &format_timestamp(&event.recorded_at))
}

/// The canonical form of an event, prepared without its `position` and `recorded_at`, which
/// the log only knows once it holds the sequencer: everything else (the payload above all) is
/// serialised beforehand, so the sequencing section only splices two values in and hashes.
#[derive(Debug, Clone)]
pub(crate) struct Canonical {
    /// The bytes around the holes: `parts.len() == holes.len() + 1`.
    parts: Vec<Vec<u8>>,
    holes: Vec<Hole>,
    /// Where the canonical payload is: `parts[payload.0][payload.1]`.
    payload: (usize, std::ops::Range<usize>),
}

#[derive(Debug, Clone, Copy)]
enum Hole {
    Position,
    RecordedAt,
}

impl Canonical {
    /// Everything of `event` but its `position` and `recorded_at`.
    pub(crate) fn of(event: &StoredEvent) -> Canonical {
        enum Field<'a> {
            Str(&'a str),
            Uuid(&'a uuid::Uuid),
            Time(&'a DateTime<Utc>),
            Int(i64),
            Json(&'a Value),
            Hole(Hole),
        }
        let mut fields = [
            ("agency", Field::Str(&event.routing.agency)),
            ("dossier_id", Field::Str(&event.dossier_id)),
            ("event_id", Field::Uuid(&event.event_id)),
            ("event_type", Field::Str(&event.event_type)),
            ("level", Field::Str(&event.routing.level)),
            ("occurred_at", Field::Time(&event.occurred_at)),
            ("payload", Field::Json(&event.payload)),
            ("position", Field::Hole(Hole::Position)),
            ("recorded_at", Field::Hole(Hole::RecordedAt)),
            ("sector", Field::Str(&event.routing.sector)),
            ("version", Field::Int(i64::from(event.version))),
        ];
        // Already in order; sorting keeps the rule explicit should a field ever be added.
        fields.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

        let mut parts = Vec::with_capacity(3);
        let mut holes = Vec::with_capacity(2);
        let mut payload = (0, 0..0);
        let mut out = Vec::with_capacity(320);
        out.push(b'{');
        for (i, (key, value)) in fields.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_string(&mut out, key);
            out.push(b':');
            match value {
                Field::Str(s) => write_string(&mut out, s),
                Field::Uuid(id) => {
                    // Lower-case hyphenated ASCII: nothing to escape.
                    out.push(b'"');
                    out.extend_from_slice(
                        id.hyphenated()
                            .encode_lower(&mut uuid::Uuid::encode_buffer())
                            .as_bytes(),
                    );
                    out.push(b'"');
                }
                Field::Time(t) => {
                    // Digits and punctuation only: nothing to escape.
                    out.push(b'"');
                    write_timestamp(&mut out, t);
                    out.push(b'"');
                }
                Field::Int(n) => write_int(&mut out, *n),
                Field::Json(v) => {
                    let start = out.len();
                    write_value(&mut out, v);
                    payload = (parts.len(), start..out.len());
                }
                Field::Hole(hole) => {
                    parts.push(std::mem::take(&mut out));
                    holes.push(*hole);
                }
            }
        }
        out.push(b'}');
        parts.push(out);
        Canonical {
            parts,
            holes,
            payload,
        }
    }

    /// The payload in canonical form: valid JSON for the same value (keys sorted, compact).
    pub(crate) fn payload(&self) -> &[u8] {
        let (part, range) = &self.payload;
        &self.parts[*part][range.clone()]
    }

    /// `event_hash` of the canonical bytes with the two values filled in, hashed as they are
    /// produced (no buffer); `recorded_at` as in [`bytes`](Self::bytes).
    pub(crate) fn event_hash(&self, position: i64, recorded_at: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update([0x00]);
        let mut value = Vec::with_capacity(32);
        for (i, part) in self.parts.iter().enumerate() {
            hasher.update(part);
            value.clear();
            match self.holes.get(i) {
                Some(Hole::Position) => write_int(&mut value, position),
                Some(Hole::RecordedAt) => write_string(&mut value, recorded_at),
                None => {}
            }
            hasher.update(&value);
        }
        hasher.finalize().into()
    }

    /// The length of the canonical bytes at the longest `position` and `recorded_at` there can
    /// be (`-9223372036854775808`, a quoted 27-character timestamp): an upper bound for every
    /// position and time the event may get, so a size check before sequencing is exact enough.
    pub(crate) fn max_len(&self) -> usize {
        let holes: usize = self
            .holes
            .iter()
            .map(|hole| match hole {
                Hole::Position => i64::MIN.to_string().len(),
                Hole::RecordedAt => "\"9999-12-31T23:59:59.999999Z\"".len(),
            })
            .sum();
        self.parts.iter().map(Vec::len).sum::<usize>() + holes
    }

    /// The canonical bytes, with the two values filled in (`recorded_at` already formatted by
    /// [`format_timestamp`], as it is the same for a whole batch).
    pub(crate) fn bytes(&self, position: i64, recorded_at: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.parts.iter().map(Vec::len).sum::<usize>() + 64);
        for (i, part) in self.parts.iter().enumerate() {
            out.extend_from_slice(part);
            match self.holes.get(i) {
                Some(Hole::Position) => write_int(&mut out, position),
                Some(Hole::RecordedAt) => write_string(&mut out, recorded_at),
                None => {}
            }
        }
        out
    }
}

/// `SHA-256(0x00 || canonical)`, the RFC 6962 leaf hash of an event's canonical bytes.
pub fn event_hash(canonical: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(canonical);
    hasher.finalize().into()
}

/// `SHA-256(previous || event_hash)`: the chain hash of an event given its predecessor's.
pub fn chain_hash(previous: &[u8; 32], event_hash: &[u8; 32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(previous);
    hasher.update(event_hash);
    hasher.finalize().into()
}

/// RFC 3339, UTC, exactly six fractional digits, `Z`: `2024-01-02T03:04:05.123456Z`.
pub(crate) fn format_timestamp(t: &DateTime<Utc>) -> String {
    let mut out = Vec::with_capacity(27);
    write_timestamp(&mut out, t);
    // Only ASCII is written.
    String::from_utf8(out).unwrap_or_else(|e| unreachable!("a timestamp is ASCII: {e}"))
}

/// [`format_timestamp`] into `out`. Digits are written directly for the years 0–9999 (every
/// time the log stores: `occurred_at` is checked to be in 1..=9999, `recorded_at` is the
/// database's clock); any other year, and a leap second, is formatted by chrono's `strftime`
/// (`%Y-%m-%dT%H:%M:%S%.6fZ`), whose output the fast path reproduces byte for byte otherwise.
fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    use chrono::{Datelike, Timelike};
    let year = t.year();
    let nanos = t.nanosecond();
    let Ok(year @ 0..=9999) = u32::try_from(year) else {
        out.extend_from_slice(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string().as_bytes());
        return;
    };
    if nanos >= 1_000_000_000 {
        out.extend_from_slice(t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string().as_bytes());
        return;
    }
    write_digits(out, year, 4);
    out.push(b'-');
    write_digits(out, t.month(), 2);
    out.push(b'-');
    write_digits(out, t.day(), 2);
    out.push(b'T');
    write_digits(out, t.hour(), 2);
    out.push(b':');
    write_digits(out, t.minute(), 2);
    out.push(b':');
    write_digits(out, t.second(), 2);
    out.push(b'.');
    // Truncated to the microsecond, as `%.6f` does.
    write_digits(out, nanos / 1000, 6);
    out.push(b'Z');
}

/// `value` in decimal, zero-padded to `width` (≤ 10) digits; `value` must fit in them.
fn write_digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut v = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// An integer in decimal, as `to_string` writes it, without allocating.
fn write_int(out: &mut Vec<u8>, n: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail: serde_json only fails on I/O or on map keys
    // that are not strings.
    if let Err(e) = serde_json::to_writer(&mut *out, s) {
        unreachable!("serialising a string into memory failed: {e}");
    }
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_int(out, i);
            } else if let Some(u) = n.as_u64() {
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Err(e) = serde_json::to_writer(&mut *out, n) {
                unreachable!("serialising a number into memory failed: {e}");
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Routing;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn sample() -> StoredEvent {
        StoredEvent {
            position: 7,
            event_id: Uuid::parse_str("67E55044-10B1-426F-9247-BB680E5FE0C8").unwrap(),
            dossier_id: "QN-2024-000001".into(),
            version: 2,
            event_type: "received".into(),
            occurred_at: Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap()
                + chrono::Duration::microseconds(123_456),
            recorded_at: Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 6).unwrap(),
            routing: Routing {
                level: "province".into(),
                agency: "Sở Tư pháp".into(),
                sector: "justice".into(),
            },
            payload: serde_json::json!({"z": [1, -2, {"b": true, "a": null}], "a\"\n": "x\u{1}y", "é": 18446744073709551615u64}),
            fingerprint: [1; 32],
            event_hash: [2; 32],
            chain_hash: [3; 32],
        }
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let text = String::from_utf8(canonical_bytes(&sample())).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"agency":"Sở Tư pháp","dossier_id":"QN-2024-000001","#,
                r#""event_id":"67e55044-10b1-426f-9247-bb680e5fe0c8","event_type":"received","#,
                r#""level":"province","occurred_at":"2024-01-02T03:04:05.123456Z","#,
                r#""payload":{"a\"\n":"x\u0001y","z":[1,-2,{"a":null,"b":true}],"é":18446744073709551615},"#,
                r#""position":7,"recorded_at":"2024-01-02T03:04:06.000000Z","sector":"justice","version":2}"#
            )
        );
    }

    #[test]
    fn the_prepared_form_gives_the_same_bytes_hash_and_payload() {
        let event = sample();
        let canonical = Canonical::of(&event);
        let recorded = format_timestamp(&event.recorded_at);
        let bytes = canonical.bytes(event.position, &recorded);
        assert_eq!(bytes, canonical_bytes(&event));
        assert_eq!(
            canonical.event_hash(event.position, &recorded),
            event_hash(&bytes)
        );
        for position in [1, -1, 0, i64::MAX, i64::MIN] {
            assert_eq!(
                canonical.event_hash(position, &recorded),
                event_hash(&canonical.bytes(position, &recorded))
            );
        }
        let payload: Value = serde_json::from_slice(canonical.payload()).unwrap();
        assert_eq!(payload, event.payload);
        let mut written = Vec::new();
        write_value(&mut written, &event.payload);
        assert_eq!(canonical.payload(), &written[..]);
    }

    #[test]
    fn integers_and_timestamps_are_written_as_to_string_and_strftime_write_them() {
        for n in [0, 1, -1, 9, 10, -10, 1234567890, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_int(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
        let strftime = |t: &DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let mut times = vec![
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap()
                + chrono::Duration::nanoseconds(999_999_999),
            Utc.with_ymd_and_hms(0, 6, 1, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-5, 6, 1, 12, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2024, 2, 29, 7, 8, 9).unwrap()
                + chrono::Duration::nanoseconds(1_999),
        ];
        // A spread of instants over the years 1970–2100, at every sub-second precision.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x % 4_102_444_800) as i64;
            let nanos = ((x >> 20) % 1_000_000_000) as u32;
            times.push(DateTime::from_timestamp(secs, nanos).unwrap());
        }
        for t in &times {
            assert_eq!(format_timestamp(t), strftime(t), "{t:?}");
        }
    }

    #[test]
    fn hashes_follow_rfc6962_and_the_chain_rule() {
        // SHA-256 of the single byte 0x00 (the RFC 6962 hash of an empty leaf).
        assert_eq!(
            hex::encode(event_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let leaf = event_hash(b"x");
        let mut joined = [0u8; 64];
        joined[32..].copy_from_slice(&leaf);
        let expected: [u8; 32] = Sha256::digest(joined).into();
        assert_eq!(chain_hash(&GENESIS_CHAIN_HASH, &leaf), expected);
    }
}
