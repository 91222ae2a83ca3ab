//! The agency structure as versioned data: which agencies exist, at which level, and how they
//! were dissolved, renamed or merged into a successor from a date (the two-tier reform of
//! 1 July 2025: the district level gone, provinces merged). Events are never rewritten: a
//! dossier's [`Slice`] keeps the agency and level that received it; a query asked "in the
//! structure of date D" relabels each slice with its successor at D ([`AgencyStructure::at`])
//! when it groups and filters. Relabelling moves whole slices between groups, so the sum over
//! all groups (the province's totals) is the same in either structure.
//!
//! No I/O: the structure is parsed and stored elsewhere (the projection).

use std::collections::{BTreeMap, BTreeSet};

use chrono::NaiveDate;
use domain::{AgencyCode, Level};
use serde::{Deserialize, Serialize};

use crate::metric::Slice;
use crate::query::{Dimension, GroupKey, Query, SliceFilter};
use crate::totals::Totals;

/// An agency as declared: its code, its name and its level when first declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyDecl {
    pub code: AgencyCode,
    pub name: String,
    pub level: Level,
}

/// What happens to an agency from a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// Merged into `successor` (which exists): its history counts under the successor.
    Merged,
    /// Renamed: `successor` is the new code (an agency declared for it).
    Renamed,
    /// Dissolved: its duties pass to `successor` when one is named; without one its history
    /// stays under its own code (there is nowhere else to count it).
    Dissolved,
    /// Its level changes to `level` (code unchanged).
    Level,
}

/// One change of the structure, in force from `from` (a local date) on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgencyChange {
    pub agency: AgencyCode,
    pub from: NaiveDate,
    pub kind: ChangeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<AgencyCode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<Level>,
    /// The legal act or notice behind the change.
    #[serde(default)]
    pub source: String,
}

/// A level abolished from a date (the district level since 1 July 2025).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LevelAbolition {
    pub level: Level,
    pub from: NaiveDate,
    #[serde(default)]
    pub source: String,
}

/// One entry of the structure: what an administrator adds (and the projection stores, one row
/// each, with who added it and when).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum StructureEntry {
    Agency(AgencyDecl),
    Change(AgencyChange),
    LevelAbolished(LevelAbolition),
}

impl StructureEntry {
    /// What identifies the entry: two entries with the same key and different content
    /// contradict each other (an existing entry is never rewritten).
    pub fn key(&self) -> String {
        match self {
            StructureEntry::Agency(a) => format!("agency {}", a.code),
            StructureEntry::Change(c) => format!("change of {} from {}", c.agency, c.from),
            StructureEntry::LevelAbolished(l) => format!("level {} abolished", l.level.as_str()),
        }
    }
}

/// The file an administrator edits (`deploy/config/agency-structure.toml`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructureFile {
    #[serde(default)]
    pub agency: Vec<AgencyDecl>,
    #[serde(default)]
    pub change: Vec<AgencyChange>,
    #[serde(default)]
    pub level_abolished: Vec<LevelAbolition>,
}

impl StructureFile {
    /// The file's entries, in the order agencies, changes, levels.
    pub fn entries(&self) -> Vec<StructureEntry> {
        let agencies = self.agency.iter().cloned().map(StructureEntry::Agency);
        let changes = self.change.iter().cloned().map(StructureEntry::Change);
        let levels = self
            .level_abolished
            .iter()
            .cloned()
            .map(StructureEntry::LevelAbolished);
        agencies.chain(changes).chain(levels).collect()
    }
}

/// The years a structure's dates may fall in: those of every date of the API
/// (`svc::status::SUPPORTED_YEARS`).
pub const DATE_YEARS: std::ops::RangeInclusive<i32> = 1990..=2100;
/// Longest agency name, in characters.
pub const MAX_NAME_CHARS: usize = 500;
/// Longest `source` (the legal act behind a change), in characters.
pub const MAX_SOURCE_CHARS: usize = 2000;
/// Most entries in one publication (file or administrator RPC).
pub const MAX_ENTRIES_PER_PUBLICATION: usize = 1000;

/// Why a set of entries is not a structure. Each names the entry ([`StructureEntry::key`]) and,
/// where one field is at fault, that field, so an RPC can point at it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StructureError {
    #[error("{0} is given twice with different content: an entry is never rewritten")]
    Contradiction(String),
    #[error("change of {agency} from {from}, {field}: {message}")]
    BadChange {
        agency: AgencyCode,
        from: NaiveDate,
        /// The field at fault: `kind`, `successor`, `level`, `from`, `source`.
        field: &'static str,
        message: String,
    },
    #[error("{key}, {field}: {message}")]
    BadEntry {
        /// [`StructureEntry::key`] of the entry.
        key: String,
        /// `name`, `from`, `source`.
        field: &'static str,
        message: String,
    },
    #[error(
        "agencies {} succeed one another in a circle from {date}: none would count anywhere",
        agencies.iter().map(AgencyCode::as_str).collect::<Vec<_>>().join(" → ")
    )]
    Cycle {
        /// The agencies on the circle, each succeeded by the next and the last by the first.
        agencies: Vec<AgencyCode>,
        date: NaiveDate,
    },
}

fn date_in_range(date: NaiveDate) -> bool {
    DATE_YEARS.contains(&chrono::Datelike::year(&date))
}

/// The validated structure: agencies, their changes by date, the abolished levels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgencyStructure {
    agencies: BTreeMap<AgencyCode, AgencyDecl>,
    /// Per agency, its changes sorted by date (at most one per date).
    changes: BTreeMap<AgencyCode, Vec<AgencyChange>>,
    abolished: BTreeMap<Level, NaiveDate>,
}

impl AgencyStructure {
    /// Validates `entries` (duplicates identical to an earlier entry are taken once): every
    /// successor declared, a merge or rename names one, a level change names a level, no
    /// agency its own successor at any date.
    pub fn new(entries: &[StructureEntry]) -> Result<AgencyStructure, StructureError> {
        let mut seen: BTreeMap<String, &StructureEntry> = BTreeMap::new();
        for e in entries {
            match seen.get(&e.key()) {
                Some(previous) if *previous != e => {
                    return Err(StructureError::Contradiction(e.key()));
                }
                _ => {
                    seen.insert(e.key(), e);
                }
            }
        }
        let mut s = AgencyStructure::default();
        for e in seen.values() {
            match e {
                StructureEntry::Agency(a) => {
                    s.agencies.insert(a.code.clone(), a.clone());
                }
                StructureEntry::Change(c) => s
                    .changes
                    .entry(c.agency.clone())
                    .or_default()
                    .push(c.clone()),
                StructureEntry::LevelAbolished(l) => {
                    s.abolished.insert(l.level, l.from);
                }
            }
        }
        for list in s.changes.values_mut() {
            list.sort_by_key(|c| c.from);
        }
        for a in s.agencies.values() {
            let chars = a.name.trim().chars().count();
            if chars == 0 || chars > MAX_NAME_CHARS {
                return Err(StructureError::BadEntry {
                    key: StructureEntry::Agency(a.clone()).key(),
                    field: "name",
                    message: format!("1 to {MAX_NAME_CHARS} characters"),
                });
            }
        }
        for (level, from) in &s.abolished {
            let entry = |field, message: String| StructureError::BadEntry {
                key: format!("level {} abolished", level.as_str()),
                field,
                message,
            };
            if !date_in_range(*from) {
                return Err(entry("from", years_message()));
            }
        }
        for e in seen.values() {
            if let StructureEntry::LevelAbolished(l) = e
                && l.source.chars().count() > MAX_SOURCE_CHARS
            {
                return Err(StructureError::BadEntry {
                    key: e.key(),
                    field: "source",
                    message: format!("at most {MAX_SOURCE_CHARS} characters"),
                });
            }
        }
        for c in s.changes.values().flatten() {
            let bad = |field: &'static str, message: &str| StructureError::BadChange {
                agency: c.agency.clone(),
                from: c.from,
                field,
                message: message.to_owned(),
            };
            if !date_in_range(c.from) {
                return Err(bad("from", &years_message()));
            }
            if c.source.chars().count() > MAX_SOURCE_CHARS {
                return Err(bad(
                    "source",
                    &format!("at most {MAX_SOURCE_CHARS} characters"),
                ));
            }
            match (c.kind, &c.successor, c.level) {
                (ChangeKind::Merged | ChangeKind::Renamed, None, _) => {
                    return Err(bad("successor", "a merge or a rename names its successor"));
                }
                (ChangeKind::Level, _, None) => {
                    return Err(bad("level", "a level change names the level"));
                }
                (ChangeKind::Level, Some(_), _) => {
                    return Err(bad(
                        "successor",
                        "a level change keeps the code: no successor",
                    ));
                }
                (ChangeKind::Merged | ChangeKind::Renamed | ChangeKind::Dissolved, _, Some(_)) => {
                    return Err(bad(
                        "level",
                        "only a level change names a level (a successor keeps its own)",
                    ));
                }
                _ => {}
            }
            if let Some(successor) = &c.successor {
                if !s.agencies.contains_key(successor) {
                    return Err(bad(
                        "successor",
                        &format!("successor {successor} is not declared: add an [[agency]] for it"),
                    ));
                }
                if *successor == c.agency {
                    return Err(StructureError::Cycle {
                        agencies: vec![c.agency.clone()],
                        date: c.from,
                    });
                }
            }
        }
        // An agency merged, renamed or dissolved has ended: a later change may only name a new
        // successor (a correction); anything else (its level, a dissolution without successor)
        // would silently take its history back from the successor.
        for list in s.changes.values() {
            let ended = list.iter().find(|c| c.kind != ChangeKind::Level);
            if let Some(end) = ended
                && let Some(c) = list
                    .iter()
                    .find(|c| c.from > end.from && c.successor.is_none())
            {
                return Err(StructureError::BadChange {
                    agency: c.agency.clone(),
                    from: c.from,
                    field: "kind",
                    message: format!(
                        "{} ended on {} ({:?}): a later change may only name a new successor; \
                         change the successor's level instead",
                        c.agency, end.from, end.kind
                    ),
                });
            }
        }
        // The successor graph can only change at a change's date: checking there covers all.
        let dates: BTreeSet<NaiveDate> = s.changes.values().flatten().map(|c| c.from).collect();
        for date in dates {
            for agency in s.changes.keys() {
                if s.follow(agency, date).is_none() {
                    return Err(StructureError::Cycle {
                        agencies: s.circle(agency, date),
                        date,
                    });
                }
            }
        }
        Ok(s)
    }

    /// The agencies on the circle that `agency`'s chain of successors at `date` runs into
    /// (called when [`AgencyStructure::follow`] found one).
    fn circle(&self, agency: &AgencyCode, date: NaiveDate) -> Vec<AgencyCode> {
        let mut visited: Vec<AgencyCode> = Vec::new();
        let mut current = agency.clone();
        loop {
            if let Some(at) = visited.iter().position(|a| *a == current) {
                return visited.split_off(at);
            }
            visited.push(current.clone());
            match self
                .change_at(&current, date)
                .and_then(|c| c.successor.clone())
            {
                Some(next) => current = next,
                None => return Vec::new(),
            }
        }
    }

    /// Whether nothing is declared (every query then counts under the structure of its time).
    pub fn is_empty(&self) -> bool {
        self.agencies.is_empty() && self.changes.is_empty() && self.abolished.is_empty()
    }

    /// The change of `agency` in force at `date` (the latest from a date `<= date`).
    fn change_at(&self, agency: &AgencyCode, date: NaiveDate) -> Option<&AgencyChange> {
        self.changes
            .get(agency)?
            .iter()
            .rev()
            .find(|c| c.from <= date)
    }

    /// The agency whose history `agency`'s counts under at `date`: its successors followed;
    /// `None` on a cycle (refused by [`AgencyStructure::new`]).
    fn follow(&self, agency: &AgencyCode, date: NaiveDate) -> Option<AgencyCode> {
        let mut current = agency.clone();
        for _ in 0..=self.changes.len() {
            let next = self
                .change_at(&current, date)
                .and_then(|c| c.successor.clone());
            match next {
                Some(n) => current = n,
                None => return Some(current),
            }
        }
        None
    }

    /// The level of `agency` at `date`: its latest level change, else its declared level;
    /// `None` for an agency the structure does not know.
    fn level_at(&self, agency: &AgencyCode, date: NaiveDate) -> Option<Level> {
        let changed = self.changes.get(agency).and_then(|list| {
            list.iter()
                .rev()
                .filter(|c| c.from <= date)
                .find_map(|c| c.level)
        });
        changed.or_else(|| self.agencies.get(agency).map(|a| a.level))
    }

    /// Where a dossier received by `agency` at `level` counts in the structure of `date`: the
    /// successor at that date and its level then. An agency the structure does not know keeps
    /// its code and the level recorded in the event.
    pub fn successor_at(
        &self,
        level: Level,
        agency: &AgencyCode,
        date: NaiveDate,
    ) -> (Level, AgencyCode) {
        let successor = self.follow(agency, date).unwrap_or_else(|| agency.clone());
        let level = self.level_at(&successor, date).unwrap_or(level);
        (level, successor)
    }

    /// `slice` relabelled in the structure of `date` ([`AgencyStructure::successor_at`]).
    pub fn at(&self, slice: &Slice, date: NaiveDate) -> Slice {
        let (level, agency) = self.successor_at(slice.level, &slice.agency, date);
        Slice {
            level,
            agency,
            ..slice.clone()
        }
    }

    /// Whether `level` still exists at `date` (not abolished by then).
    pub fn level_in_use(&self, level: Level, date: NaiveDate) -> bool {
        self.abolished.get(&level).is_none_or(|from| date < *from)
    }

    /// The declared agencies.
    pub fn agencies(&self) -> impl Iterator<Item = &AgencyDecl> {
        self.agencies.values()
    }
}

fn years_message() -> String {
    format!(
        "a date of the years {} to {}",
        DATE_YEARS.start(),
        DATE_YEARS.end()
    )
}

/// A query asked in the structure of a date: the stored figures are grouped by the recorded
/// agency and level ([`InStructure::stored_query`]), each group relabelled with its successor
/// at the date, then filtered and grouped as asked ([`InStructure::regroup`]). Nothing stored
/// changes, so no rebuild is needed when the structure changes.
#[derive(Debug, Clone, Copy)]
pub struct InStructure<'a> {
    pub structure: &'a AgencyStructure,
    pub date: NaiveDate,
}

impl InStructure<'_> {
    /// What to ask the stored figures for `query`: the same period and filters except level and
    /// agency (a successor's figures include its predecessors'), grouped by the asked
    /// dimensions plus level and agency. Cost: one group per recorded (agency, level) and asked
    /// group instead of one per asked group.
    pub fn stored_query(&self, query: &Query) -> Query {
        let mut group_by = query.group_by.clone();
        for d in [Dimension::Level, Dimension::Agency] {
            if !group_by.contains(&d) {
                group_by.push(d);
            }
        }
        Query {
            filter: SliceFilter {
                level: None,
                agency: None,
                ..query.filter.clone()
            },
            group_by,
            ..query.clone()
        }
    }

    /// The answer to `query` from the answer `stored` to [`InStructure::stored_query`]: each
    /// stored group relabelled with the successor at the date, kept when the relabelled level
    /// and agency pass `query`'s filter, and added into its group of `query`. Same shape as
    /// [`crate::Aggregates::query`]: no zero entry, no empty group, the one group `[]` always
    /// present without grouping.
    pub fn regroup(
        &self,
        query: &Query,
        stored: &BTreeMap<GroupKey, Totals>,
    ) -> BTreeMap<GroupKey, Totals> {
        let inner = self.stored_query(query);
        let position = |d: Dimension| inner.group_by.iter().position(|g| *g == d);
        let (Some(level_at), Some(agency_at)) =
            (position(Dimension::Level), position(Dimension::Agency))
        else {
            return BTreeMap::new();
        };
        let mut groups: BTreeMap<GroupKey, Totals> = BTreeMap::new();
        for (key, totals) in stored {
            let recorded_level = key.get(level_at).and_then(|l| Level::parse(l));
            let recorded_agency = key
                .get(agency_at)
                .and_then(|a| AgencyCode::parse(a.clone()).ok());
            let (level, agency) = match (recorded_level, recorded_agency) {
                (Some(l), Some(a)) => {
                    let (l, a) = self.structure.successor_at(l, &a, self.date);
                    (l.as_str().to_owned(), a.as_str().to_owned())
                }
                // Not a stored value (cannot happen for the projection's rows): as recorded.
                _ => (
                    key.get(level_at).cloned().unwrap_or_default(),
                    key.get(agency_at).cloned().unwrap_or_default(),
                ),
            };
            let f = &query.filter;
            if f.level.is_some_and(|l| l.as_str() != level)
                || f.agency.as_ref().is_some_and(|a| a.as_str() != agency)
            {
                continue;
            }
            let outer: GroupKey = query
                .group_by
                .iter()
                .map(|d| match d {
                    Dimension::Level => level.clone(),
                    Dimension::Agency => agency.clone(),
                    other => position(*other)
                        .and_then(|i| key.get(i).cloned())
                        .unwrap_or_default(),
                })
                .collect();
            groups
                .entry(outer)
                .or_insert_with(|| Totals::empty(query.from, query.to))
                .merge(totals);
        }
        tidy(query, groups)
    }
}

/// Drops zero entries and empty groups; keeps the one group `[]` of an ungrouped query: the
/// normal form of [`Aggregates::query`](crate::Aggregates::query)'s answers.
pub fn tidy(query: &Query, mut groups: BTreeMap<GroupKey, Totals>) -> BTreeMap<GroupKey, Totals> {
    for t in groups.values_mut() {
        for figures in [&mut t.flows, &mut t.at_start, &mut t.at_end] {
            figures.retain(|_, v| *v != 0);
        }
    }
    groups.retain(|_, t| !(t.flows.is_empty() && t.at_start.is_empty() && t.at_end.is_empty()));
    if query.group_by.is_empty() {
        groups
            .entry(Vec::new())
            .or_insert_with(|| Totals::empty(query.from, query.to));
    }
    groups
}
