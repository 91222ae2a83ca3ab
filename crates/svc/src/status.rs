//! Turning what went wrong into the right gRPC status, with machine-readable details:
//! `google.rpc.BadRequest` naming the offending field for INVALID_ARGUMENT, and
//! `google.rpc.ErrorInfo` with a stable reason code for refusals. Messages say what was wrong
//! with the request; they never carry SQL or internal errors.

use std::collections::HashMap;
use std::fmt::Display;

use chrono::{DateTime, Utc};
use domain::FieldError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The `domain` of every `google.rpc.ErrorInfo` this system returns.
pub const ERROR_DOMAIN: &str = "dossier.v1";

/// INVALID_ARGUMENT naming one field (`profile.agency_code`, `events[3].occurred_at`…).
pub fn invalid_field(field: &str, reason: impl Display) -> Status {
    let reason = reason.to_string();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {reason}"),
        ErrorDetails::with_bad_request_violation(field, reason),
    )
}

/// A status whose details carry a stable `reason` code clients can branch on.
pub fn with_reason(code: Code, reason: &str, message: impl Into<String>) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, HashMap::new()),
    )
}

/// `status` about a part of a larger request (`events[3]`): its message prefixed with the
/// path, and so are the field paths of its `google.rpc.BadRequest`. The details are encoded
/// again with the new message, so the `google.rpc.Status` in `grpc-status-details-bin` and the
/// `grpc-status`/`grpc-message` always agree (clients such as Python's grpcio-status reject
/// details that do not). A status without details stays without.
pub fn prefixed(prefix: &str, status: Status) -> Status {
    let message = format!("{prefix}: {}", status.message());
    if status.details().is_empty() {
        return Status::new(status.code(), message);
    }
    let mut details = status.get_error_details();
    if let Some(bad) = details.bad_request() {
        let mut violations = bad.field_violations.clone();
        for violation in &mut violations {
            violation.field = prefix_path(prefix, &violation.field);
        }
        details.set_bad_request(violations);
    }
    Status::with_error_details(status.code(), message, details)
}

fn prefix_path(prefix: &str, field: &str) -> String {
    if field.is_empty() {
        prefix.to_owned()
    } else if field.starts_with('[') {
        format!("{prefix}{field}")
    } else {
        format!("{prefix}.{field}")
    }
}

/// Parses one field, naming it in the error.
pub fn field<T>(path: &str, parsed: Result<T, FieldError>) -> Result<T, Status> {
    parsed.map_err(|e| invalid_field(path, e.reason))
}

/// How far in the future a client's business time may be (clock skew between counter PCs).
pub const MAX_CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// A required business timestamp: present, valid, not in the future beyond [`MAX_CLOCK_SKEW`],
/// truncated to microseconds (what PostgreSQL keeps, so a stored event reads back identical).
pub fn business_time(
    path: &str,
    value: Option<&api::Timestamp>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, Status> {
    let t = timestamp(path, value)?;
    if t > now + MAX_CLOCK_SKEW {
        return Err(invalid_field(path, "lies in the future"));
    }
    Ok(t)
}

/// The years every date and instant of the API must fall in (UTC for instants): business times,
/// statistics periods (`to`, excluded, may be 2101-01-01), replay bounds, `as_recorded_at`.
/// Inside the working-time calendar's precomputed years (1900–2100) and PostgreSQL's range.
pub const SUPPORTED_YEARS: std::ops::RangeInclusive<i32> = 1990..=2100;

/// A required timestamp within [`SUPPORTED_YEARS`], truncated to microseconds; no check
/// against the clock.
pub fn timestamp(path: &str, value: Option<&api::Timestamp>) -> Result<DateTime<Utc>, Status> {
    let value = value.ok_or_else(|| invalid_field(path, "is required"))?;
    if !(0..1_000_000_000).contains(&value.nanos) {
        return Err(invalid_field(path, "nanos must be within 0..1e9"));
    }
    let t = DateTime::<Utc>::from_timestamp(value.seconds, value.nanos as u32)
        .ok_or_else(|| invalid_field(path, "is out of range"))?;
    if !SUPPORTED_YEARS.contains(&chrono::Datelike::year(&t)) {
        return Err(invalid_field(path, "must be between 1990 and 2100"));
    }
    Ok(truncate_micros(t))
}

pub fn truncate_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.timestamp_subsec_nanos();
    t - chrono::Duration::nanoseconds(i64::from(nanos % 1000))
}

pub fn to_timestamp(t: DateTime<Utc>) -> api::Timestamp {
    api::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// A refusal by the dossier's rules.
pub fn refusal(refusal: &domain::Refusal) -> Status {
    let code = match refusal.kind() {
        domain::RefusalKind::NotFound => Code::NotFound,
        domain::RefusalKind::AlreadyExists => Code::AlreadyExists,
        domain::RefusalKind::InvalidArgument => Code::InvalidArgument,
        domain::RefusalKind::FailedPrecondition => Code::FailedPrecondition,
    };
    with_reason(code, refusal.code(), refusal.to_string())
}

/// The request would produce an event larger than the log stores
/// (`eventlog::MAX_EVENT_BYTES`): INVALID_ARGUMENT with reason `event_too_large`. The request
/// bounds are meant to make this unreachable; it is logged as the bug it then is.
pub fn event_too_large(what: impl Display) -> Status {
    tracing::error!(error = %what, "a request passed the bounds but its event is too large");
    with_reason(
        Code::InvalidArgument,
        "event_too_large",
        format!(
            "the request would record an event larger than {} bytes; nothing was written",
            eventlog::MAX_EVENT_BYTES
        ),
    )
}

/// The event log could not be reached: the client should retry with the same event id. Usually
/// nothing was written, but when the connection was lost during the COMMIT the write may have
/// happened (the fault test `tests/tests/it/faults.rs` sees it): the retry then answers the
/// original as a duplicate. So the message never claims that nothing was written.
pub fn unavailable(what: impl Display) -> Status {
    tracing::warn!(error = %what, "event log unavailable");
    Status::unavailable(
        "the event log is unavailable; retry with the same event_id (if the call was recorded \
         before the failure, the retry answers it as a duplicate)",
    )
}

/// A fault of ours, logged with its cause and reported without it.
pub fn internal(what: impl Display) -> Status {
    tracing::error!(error = %what, "internal error");
    Status::internal("internal error; nothing was written")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_field_names_the_field() {
        let s = invalid_field("profile.agency_code", "must not be empty");
        assert_eq!(s.code(), Code::InvalidArgument);
        let details = s.get_details_bad_request().unwrap();
        assert_eq!(details.field_violations[0].field, "profile.agency_code");
        assert!(s.message().contains("profile.agency_code"));
    }

    /// What Python's grpcio-status `from_call` does: decode `grpc-status-details-bin` as a
    /// `google.rpc.Status` and reject it unless its code and message are the call's.
    #[track_caller]
    fn details_agree(s: &Status) {
        use prost::Message;
        let decoded = tonic_types::pb::Status::decode(s.details()).expect("details decode");
        assert_eq!(decoded.code, s.code() as i32, "{s:?}");
        assert_eq!(decoded.message, s.message(), "{s:?}");
    }

    #[test]
    fn details_always_agree_with_code_and_message() {
        let bad = invalid_field("profile.agency_code", "must not be empty");
        let refused = refusal(&domain::Refusal::AlreadyResolved);
        let too_large = event_too_large("test");
        for s in [&bad, &refused, &too_large] {
            details_agree(s);
        }
        let p = prefixed("events[3]", bad);
        details_agree(&p);
        assert_eq!(
            p.message(),
            "events[3]: profile.agency_code: must not be empty"
        );
        let fields = p.get_details_bad_request().unwrap().field_violations;
        assert_eq!(fields[0].field, "events[3].profile.agency_code");
        assert_eq!(
            prefixed("events", invalid_field("[2]", "x"))
                .get_details_bad_request()
                .unwrap()
                .field_violations[0]
                .field,
            "events[2]"
        );
        let p = prefixed("events[0]", refused);
        details_agree(&p);
        assert_eq!(p.code(), Code::FailedPrecondition);
        assert_eq!(
            p.get_details_error_info().unwrap().reason,
            "already_resolved"
        );
        assert!(p.message().starts_with("events[0]: "));
        let plain = prefixed("events[1]", Status::unavailable("down"));
        assert!(plain.details().is_empty());
        assert_eq!(plain.message(), "events[1]: down");
    }

    #[test]
    fn timestamps_are_checked_and_truncated() {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let ts = |s, n| api::Timestamp {
            seconds: s,
            nanos: n,
        };
        assert!(business_time("t", None, now).is_err());
        assert!(business_time("t", Some(&ts(1_700_000_000, -1)), now).is_err());
        assert!(business_time("t", Some(&ts(1_700_000_000 + 301, 0)), now).is_err());
        assert!(business_time("t", Some(&ts(1_700_000_000 + 299, 0)), now).is_ok());
        assert!(business_time("t", Some(&ts(0, 0)), now).is_err());
        let t = business_time("t", Some(&ts(1_600_000_000, 123_456_789)), now).unwrap();
        assert_eq!(t.timestamp_subsec_nanos(), 123_456_000);
    }

    #[test]
    fn timestamps_outside_the_supported_years_are_refused() {
        let ts = |s| api::Timestamp {
            seconds: s,
            nanos: 0,
        };
        // 1990-01-01T00:00:00Z and 2100-12-31T23:59:59Z are the bounds.
        assert!(timestamp("t", Some(&ts(631_152_000))).is_ok());
        assert!(timestamp("t", Some(&ts(4_133_980_799))).is_ok());
        for outside in [
            631_152_000 - 1,
            4_133_980_799 + 1,
            -210_000_000_000, // 4685 BC
            i64::MIN,
            i64::MAX,
            253_402_300_800, // 10000-01-01
        ] {
            let err = timestamp("t", Some(&ts(outside))).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{outside}");
            assert_eq!(
                err.get_details_bad_request().unwrap().field_violations[0].field,
                "t"
            );
        }
    }
}
