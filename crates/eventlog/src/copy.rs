//! PostgreSQL's binary `COPY` format (`COPY … FROM STDIN (FORMAT binary)`), for the rows the
//! bulk import writes ([`crate::bulk`]) and for the bench's baseline of the same encoding.
//!
//! The format (PostgreSQL documentation, "COPY", "Binary Format"): an 11-byte signature
//! `PGCOPY\n\xff\r\n\0`, a 32-bit flags field (0: no OIDs) and a 32-bit header-extension length
//! (0); then each row as a 16-bit field count followed by each field as a 32-bit byte length and
//! that many bytes (-1: NULL, never written here); then the trailer, a 16-bit -1. Every integer
//! is big-endian. Each field holds the type's binary send format:
//!
//! | type | bytes |
//! |---|---|
//! | `bigint` / `integer` | 8 / 4, two's complement |
//! | `uuid` | its 16 bytes |
//! | `text` | its UTF-8 bytes (the connection's client encoding is UTF-8) |
//! | `timestamptz` | 8: microseconds since 2000-01-01 00:00:00 UTC |
//! | `jsonb` | the version byte 1, then the JSON text |
//! | `bytea` | its bytes |
//!
//! No escaping and no text parsing of numbers, times and hashes: what the text format (and the
//! `UNNEST` of arrays) costs the server in parsing, this format does not.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The signature, flags and header-extension length that open every binary `COPY` stream.
const HEADER: &[u8; 19] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The stream's last two bytes: a field count of -1.
const TRAILER: [u8; 2] = (-1i16).to_be_bytes();
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// The largest field the format holds: its length is a signed 32-bit number.
pub const MAX_FIELD_BYTES: usize = i32::MAX as usize;

/// A field longer than [`MAX_FIELD_BYTES`]: it cannot be sent in the binary format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a COPY field of {bytes} bytes is longer than the {MAX_FIELD_BYTES} the format holds")]
pub struct FieldTooLarge {
    pub bytes: usize,
}

/// Rows in the binary `COPY` format, written one field after another into one buffer.
///
/// The caller writes, for each row, [`row`](Self::row) with the number of fields, then exactly
/// that many fields in the order of the `COPY` statement's column list; PostgreSQL refuses the
/// stream otherwise (nothing is written). [`finish`](Self::finish) appends the trailer.
#[derive(Debug, Clone, Default)]
pub struct BinaryRows {
    buf: Vec<u8>,
}

impl BinaryRows {
    /// A stream with its header, with room for `bytes` more.
    pub fn with_capacity(bytes: usize) -> BinaryRows {
        let mut buf = Vec::with_capacity(HEADER.len() + bytes + TRAILER.len());
        buf.extend_from_slice(HEADER);
        BinaryRows { buf }
    }

    /// Fields only, no header: a fragment of rows to be spliced into a stream later with
    /// [`fragment`](Self::fragment) (the bulk import encodes what it can before it holds the
    /// sequencer).
    pub fn fragment_with_capacity(bytes: usize) -> BinaryRows {
        BinaryRows {
            buf: Vec::with_capacity(bytes),
        }
    }

    /// Starts a row of `fields` fields.
    pub fn row(&mut self, fields: i16) {
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    /// A `bigint`.
    pub fn bigint(&mut self, value: i64) {
        self.buf.extend_from_slice(&8i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// An `integer`.
    pub fn int(&mut self, value: i32) {
        self.buf.extend_from_slice(&4i32.to_be_bytes());
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    /// A `uuid`.
    pub fn uuid(&mut self, value: &Uuid) {
        self.buf.extend_from_slice(&16i32.to_be_bytes());
        self.buf.extend_from_slice(value.as_bytes());
    }

    /// A `timestamptz`, to the microsecond (anything below is dropped, as `timestamptz` does).
    pub fn timestamptz(&mut self, value: &DateTime<Utc>) {
        self.bigint(value.timestamp_micros() - POSTGRES_EPOCH_MICROS);
    }

    /// A `text` (or any type whose binary form is its UTF-8 text).
    pub fn text(&mut self, value: &str) -> Result<(), FieldTooLarge> {
        self.bytea(value.as_bytes())
    }

    /// A `bytea` of a fixed size (a hash): no length to check.
    pub fn fixed<const N: usize>(&mut self, value: &[u8; N]) {
        const { assert!(N <= MAX_FIELD_BYTES) };
        // In range: asserted at compile time.
        self.buf.extend_from_slice(&(N as i32).to_be_bytes());
        self.buf.extend_from_slice(value);
    }

    /// A `bytea`.
    pub fn bytea(&mut self, value: &[u8]) -> Result<(), FieldTooLarge> {
        self.length(value.len())?;
        self.buf.extend_from_slice(value);
        Ok(())
    }

    /// A `jsonb` given as JSON text (PostgreSQL parses it, as it parses the text form; the text
    /// must be valid JSON or the whole `COPY` is refused).
    pub fn jsonb(&mut self, json: &[u8]) -> Result<(), FieldTooLarge> {
        let bytes = json.len().saturating_add(1);
        self.length(bytes)?;
        self.buf.push(1);
        self.buf.extend_from_slice(json);
        Ok(())
    }

    /// Appends the fields of a [`fragment`](Self::fragment_with_capacity), as they were written.
    pub fn fragment(&mut self, encoded: &[u8]) {
        self.buf.extend_from_slice(encoded);
    }

    /// The bytes written so far (a fragment's, or the stream's without its trailer).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The fields of a fragment (or the stream without its trailer).
    pub fn into_fragment(self) -> Vec<u8> {
        self.buf
    }

    /// The stream, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&TRAILER);
        self.buf
    }

    fn length(&mut self, bytes: usize) -> Result<(), FieldTooLarge> {
        let length = i32::try_from(bytes).map_err(|_| FieldTooLarge { bytes })?;
        self.buf.extend_from_slice(&length.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn header_fields_and_trailer() {
        let mut rows = BinaryRows::with_capacity(64);
        rows.row(3);
        rows.bigint(-2);
        rows.text("é").unwrap();
        rows.timestamptz(&Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 1).unwrap());
        let bytes = rows.finish();
        let mut expected = b"PGCOPY\n\xff\r\n\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe]);
        expected.extend_from_slice(&[0, 0, 0, 2, 0xc3, 0xa9]);
        expected.extend_from_slice(&[0, 0, 0, 8]);
        expected.extend_from_slice(&1_000_000i64.to_be_bytes());
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn jsonb_has_its_version_byte_and_times_before_2000_are_negative() {
        let mut rows = BinaryRows::fragment_with_capacity(16);
        rows.jsonb(b"{}").unwrap();
        assert_eq!(rows.as_bytes(), &[0, 0, 0, 3, 1, b'{', b'}']);
        let mut rows = BinaryRows::fragment_with_capacity(16);
        rows.timestamptz(&Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 59).unwrap());
        assert_eq!(&rows.as_bytes()[4..], &(-1_000_000i64).to_be_bytes());
    }
}
