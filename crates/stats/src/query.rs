//! What a statistics query asks: a period, a filter on the slice dimensions, and the dimensions
//! to group by. The projection answers it from its tables, the auditor's "as recorded at T"
//! from the log; both through [`Aggregates::query`] semantics, so they cannot disagree.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use domain::{AgencyCode, ApplicantType, Channel, Level, ProcedureCode, SectorCode};

use crate::metric::Slice;
use crate::totals::{Aggregates, Totals};

/// A dimension figures can be filtered and grouped by (a field of [`Slice`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    Level,
    Agency,
    Sector,
    Procedure,
    Channel,
    ApplicantType,
}

impl Dimension {
    /// Every dimension, in the order of [`Slice`]'s fields.
    pub const ALL: [Dimension; 6] = [
        Dimension::Level,
        Dimension::Agency,
        Dimension::Sector,
        Dimension::Procedure,
        Dimension::Channel,
        Dimension::ApplicantType,
    ];

    /// The stable name (a column of the projection's tables, a CSV header, an HTTP parameter).
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Level => "level",
            Dimension::Agency => "agency",
            Dimension::Sector => "sector",
            Dimension::Procedure => "procedure",
            Dimension::Channel => "channel",
            Dimension::ApplicantType => "applicant_type",
        }
    }

    pub fn parse(name: &str) -> Option<Dimension> {
        Dimension::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The slice's value in this dimension, as stored (`district`, `online`, an agency code…).
    pub fn value(self, slice: &Slice) -> &str {
        match self {
            Dimension::Level => slice.level.as_str(),
            Dimension::Agency => slice.agency.as_str(),
            Dimension::Sector => slice.sector.as_str(),
            Dimension::Procedure => slice.procedure.as_str(),
            Dimension::Channel => slice.channel.as_str(),
            Dimension::ApplicantType => slice.applicant_type.as_str(),
        }
    }
}

impl serde::Serialize for Dimension {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl std::fmt::Display for Dimension {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which slices a query keeps: every dimension given must match; `None` keeps all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceFilter {
    pub level: Option<Level>,
    pub agency: Option<AgencyCode>,
    pub sector: Option<SectorCode>,
    pub procedure: Option<ProcedureCode>,
    pub channel: Option<Channel>,
    pub applicant_type: Option<ApplicantType>,
}

impl SliceFilter {
    /// Whether the slice passes the filter.
    pub fn matches(&self, slice: &Slice) -> bool {
        self.level.is_none_or(|l| l == slice.level)
            && self.agency.as_ref().is_none_or(|a| *a == slice.agency)
            && self.sector.as_ref().is_none_or(|s| *s == slice.sector)
            && self
                .procedure
                .as_ref()
                .is_none_or(|p| *p == slice.procedure)
            && self.channel.is_none_or(|c| c == slice.channel)
            && self
                .applicant_type
                .is_none_or(|a| a == slice.applicant_type)
    }

    /// The value the filter requires in a dimension, as stored; `None` when it does not filter
    /// on it.
    pub fn value(&self, dimension: Dimension) -> Option<&str> {
        match dimension {
            Dimension::Level => self.level.map(Level::as_str),
            Dimension::Agency => self.agency.as_ref().map(AgencyCode::as_str),
            Dimension::Sector => self.sector.as_ref().map(SectorCode::as_str),
            Dimension::Procedure => self.procedure.as_ref().map(ProcedureCode::as_str),
            Dimension::Channel => self.channel.map(Channel::as_str),
            Dimension::ApplicantType => self.applicant_type.map(ApplicantType::as_str),
        }
    }

    /// The dimensions the filter constrains.
    pub fn dimensions(&self) -> impl Iterator<Item = Dimension> + '_ {
        Dimension::ALL
            .into_iter()
            .filter(|d| self.value(*d).is_some())
    }
}

/// The values of a group, one per grouping dimension, in the query's `group_by` order; empty
/// when the query does not group.
pub type GroupKey = Vec<String>;

/// A statistics query: the period `[from, to)` of local dates, the slices kept, and the
/// dimensions to group by (none: one group with the empty key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub filter: SliceFilter,
    /// Distinct dimensions, in the order the group keys list them.
    pub group_by: Vec<Dimension>,
}

impl Query {
    /// The group a slice belongs to.
    pub fn group_of(&self, slice: &Slice) -> GroupKey {
        self.group_by
            .iter()
            .map(|d| d.value(slice).to_owned())
            .collect()
    }
}

impl Aggregates {
    /// The answer to `query`: one [`Totals`] per group with at least one non-zero figure in
    /// the period (flows in it, stocks at its start or end), holding no zero entry. Without
    /// grouping, the one group (key `[]`) is always present, possibly empty.
    pub fn query(&self, query: &Query) -> BTreeMap<GroupKey, Totals> {
        let groups = self.grouped(
            query.from,
            query.to,
            |s| query.filter.matches(s),
            |s| query.group_of(s),
        );
        crate::structure::tidy(query, groups)
    }
}
