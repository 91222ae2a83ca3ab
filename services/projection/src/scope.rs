//! What a statistics request asks, parsed once for gRPC and HTTP alike: the period, the filter,
//! the grouping and, for an auditor, the instant the figures are to be "as recorded at".

use chrono::{DateTime, NaiveDate, Utc};
use domain::{AgencyCode, ApplicantType, Channel, Level, ProcedureCode, SectorCode};
use stats::{Dimension, Query, SliceFilter};

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

/// The longest period a query may cover, in days (a guard against typos such as year 20240).
pub const MAX_PERIOD_DAYS: i64 = 366 * 20;

impl RawScope<'_> {
    /// The query, or the first malformed field.
    pub fn parse(&self) -> Result<Query, ScopeError> {
        let from = date("from", self.from)?;
        let to = date("to", self.to)?;
        if to <= from {
            return Err(ScopeError::new("to", "must be after from"));
        }
        if (to - from).num_days() > MAX_PERIOD_DAYS {
            return Err(ScopeError::new(
                "to",
                format!("the period may cover at most {MAX_PERIOD_DAYS} days"),
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

fn date(field: &str, text: &str) -> Result<NaiveDate, ScopeError> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| ScopeError::new(field, "must be a date YYYY-MM-DD"))
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
        .parse()
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
        let field = |r: RawScope| r.parse().unwrap_err().field;
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
}
