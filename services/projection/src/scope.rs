//! What a statistics request asks, parsed once for gRPC and HTTP alike: the period, the filter,
//! the grouping and, for an auditor, the instant the figures are to be "as recorded at".

use crate::read::QueryLimits;
use chrono::{DateTime, Datelike, NaiveDate, Utc};
use domain::{AgencyCode, ApplicantType, Channel, Level, ProcedureCode, SectorCode};
use stats::{Dimension, Query, SliceFilter};
use svc::status::SUPPORTED_YEARS;

/// A malformed request: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ScopeError {
    pub field: String,
    pub message: String,
}

impl ScopeError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        ScopeError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl From<ScopeError> for tonic::Status {
    fn from(e: ScopeError) -> Self {
        svc::status::invalid_field(&e.field, e.message)
    }
}

/// Where the figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The projection's aggregates: the figures as they stand now.
    Live,
    /// Recomputed from the events recorded up to this instant.
    AsRecordedAt(DateTime<Utc>),
}

/// A request's fields, typed as far as the transport types them. Code filters are raw text
/// (empty: no filter).
#[derive(Debug, Clone, Default)]
pub struct RawScope<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub level: Option<Level>,
    pub agency_code: &'a str,
    pub sector_code: &'a str,
    pub procedure_code: &'a str,
    pub channel: Option<Channel>,
    pub applicant_type: Option<ApplicantType>,
    pub group_by: Vec<Dimension>,
}

impl RawScope<'_> {
    /// The query, or the first malformed field or the first bound of `limits` it exceeds.
    pub fn parse(&self, limits: &QueryLimits) -> Result<Query, ScopeError> {
        let from = date("from", self.from, false)?;
        let to = date("to", self.to, true)?;
        if to <= from {
            return Err(ScopeError::new("to", "must be after from"));
        }
        let max_days = i64::from(limits.max_period_days);
        if (to - from).num_days() > max_days {
            return Err(ScopeError::new(
                "to",
                format!("the period may cover at most {max_days} days: ask shorter periods"),
            ));
        }
        if self.group_by.len() > limits.max_group_by as usize {
            return Err(ScopeError::new(
                "group_by",
                format!(
                    "at most {} grouping dimensions per query, {} given",
                    limits.max_group_by,
                    self.group_by.len()
                ),
            ));
        }
        for (i, d) in self.group_by.iter().enumerate() {
            if self.group_by[..i].contains(d) {
                return Err(ScopeError::new(
                    format!("group_by[{i}]"),
                    format!("{d} is listed twice"),
                ));
            }
        }
        Ok(Query {
            from,
            to,
            filter: SliceFilter {
                level: self.level,
                agency: code("agency_code", self.agency_code, AgencyCode::parse)?,
                sector: code("sector_code", self.sector_code, SectorCode::parse)?,
                procedure: code("procedure_code", self.procedure_code, ProcedureCode::parse)?,
                channel: self.channel,
                applicant_type: self.applicant_type,
            },
            group_by: self.group_by.clone(),
        })
    }
}

/// A local date within [`SUPPORTED_YEARS`]; an exclusive end (`to`) may also be the first day
/// after them.
fn date(field: &str, text: &str, exclusive_end: bool) -> Result<NaiveDate, ScopeError> {
    let d = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| ScopeError::new(field, "must be a date YYYY-MM-DD"))?;
    let day_after = exclusive_end && d.year() == SUPPORTED_YEARS.end() + 1 && d.ordinal() == 1;
    if SUPPORTED_YEARS.contains(&d.year()) || day_after {
        Ok(d)
    } else {
        Err(ScopeError::new(field, out_of_range()))
    }
}

fn out_of_range() -> String {
    format!(
        "must lie in the years {} to {}",
        SUPPORTED_YEARS.start(),
        SUPPORTED_YEARS.end()
    )
}

/// `structure_at`: empty (each dossier under its agency of the time) or a local date within
/// [`SUPPORTED_YEARS`] (counted in the agency structure of that date).
pub fn structure_at(field: &str, text: &str) -> Result<Option<NaiveDate>, ScopeError> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    date(field, text, false).map(Some)
}

/// `as_recorded_at` as given over HTTP (RFC 3339), within [`SUPPORTED_YEARS`] (UTC), truncated
/// to microseconds like every instant of the API.
pub fn instant(field: &str, text: &str) -> Result<DateTime<Utc>, ScopeError> {
    let t = DateTime::parse_from_rfc3339(text.trim())
        .map_err(|_| ScopeError::new(field, "must be an RFC 3339 instant"))?
        .with_timezone(&Utc);
    if !SUPPORTED_YEARS.contains(&t.year()) {
        return Err(ScopeError::new(field, out_of_range()));
    }
    Ok(svc::status::truncate_micros(t))
}

fn code<T>(
    field: &str,
    value: &str,
    parse: impl Fn(String) -> Result<T, domain::FieldError>,
) -> Result<Option<T>, ScopeError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    parse(value.to_owned())
        .map(Some)
        .map_err(|e| ScopeError::new(field, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(from: &'a str, to: &'a str) -> RawScope<'a> {
        RawScope {
            from,
            to,
            ..RawScope::default()
        }
    }

    #[test]
    fn a_valid_scope_parses() {
        let q = RawScope {
            agency_code: " 000.00.12.H40 ",
            group_by: vec![Dimension::Sector, Dimension::Level],
            ..raw("2024-02-29", "2024-03-01")
        }
        .parse(&QueryLimits::default())
        .unwrap();
        assert_eq!(q.from, NaiveDate::from_ymd_opt(2024, 2, 29).unwrap());
        assert_eq!(
            q.filter.agency.as_ref().map(|a| a.as_str()),
            Some("000.00.12.H40")
        );
        assert_eq!(q.group_by, vec![Dimension::Sector, Dimension::Level]);
    }

    #[test]
    fn each_malformed_field_is_named() {
        let field = |r: RawScope| r.parse(&QueryLimits::default()).unwrap_err().field;
        assert_eq!(field(raw("2024-02-30", "2024-03-01")), "from");
        assert_eq!(field(raw("2024-03-01", "2024-03-01")), "to");
        assert_eq!(field(raw("2024-03-01", "20240-03-01")), "to");
        assert_eq!(
            field(RawScope {
                sector_code: "bad code",
                ..raw("2024-03-01", "2024-04-01")
            }),
            "sector_code"
        );
        assert_eq!(
            field(RawScope {
                group_by: vec![Dimension::Agency, Dimension::Agency],
                ..raw("2024-03-01", "2024-04-01")
            }),
            "group_by[1]"
        );
    }

    #[test]
    fn dates_outside_the_supported_years_are_refused_both_ways() {
        let limits = QueryLimits {
            max_period_days: u32::MAX,
            ..QueryLimits::default()
        };
        let err = |from, to| raw(from, to).parse(&limits).unwrap_err();
        for (from, to, field) in [
            ("-4714-01-01", "2024-01-01", "from"),
            ("-262000-01-01", "2024-01-01", "from"),
            ("1989-12-31", "2024-01-01", "from"),
            ("2024-01-01", "2101-01-02", "to"),
            ("2024-01-01", "+262000-01-01", "to"),
            ("2024-01-01", "9999-12-31", "to"),
            ("2101-01-01", "2101-01-02", "from"),
        ] {
            let e = err(from, to);
            assert_eq!(e.field, field, "{from} {to}");
            assert!(e.message.contains("1990 to 2100"), "{e}");
        }
        assert!(raw("1990-01-01", "2101-01-01").parse(&limits).is_ok());
        assert_eq!(
            instant("at", "1989-12-31T16:59:59Z").unwrap_err().field,
            "at"
        );
        assert_eq!(
            instant("at", "2101-01-01T00:00:00Z").unwrap_err().field,
            "at"
        );
        assert!(instant("at", "2100-12-31T23:59:59+00:00").is_ok());
        assert!(instant("at", "1990-01-01T07:00:00+07:00").is_ok());
    }

    #[test]
    fn the_period_and_grouping_limits_are_named() {
        let limits = QueryLimits {
            max_period_days: 31,
            max_group_by: 1,
            ..QueryLimits::default()
        };
        let e = raw("2024-01-01", "2024-02-02").parse(&limits).unwrap_err();
        assert_eq!(e.field, "to");
        assert!(raw("2024-01-01", "2024-02-01").parse(&limits).is_ok());
        let two = RawScope {
            group_by: vec![Dimension::Agency, Dimension::Sector],
            ..raw("2024-01-01", "2024-02-01")
        };
        assert_eq!(two.parse(&limits).unwrap_err().field, "group_by");
    }
}
