//! `AgencyStructureService`: administrators publish agency-structure entries over gRPC (the same
//! [`structure::publish`] as the CLI and the file loaded at start: one validation, one
//! transaction, each entry recorded with the token's name and the time); any valid token reads
//! the structure of a date and every recorded entry.
//!
//! Refusals name the request's field: format faults while converting (`changes[1].from`),
//! structural faults ([`stats::StructureError`]: an undeclared successor, a circle, a
//! contradiction with a recorded entry) mapped back from the entry they name to its place in the
//! request.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::agency_structure_service_server::AgencyStructureService;
use chrono::NaiveDate;
use domain::{AgencyCode, Level};
use sqlx::PgPool;
use stats::{
    AgencyChange, AgencyDecl, AgencyStructure, ChangeKind, LevelAbolition, StructureEntry,
    StructureError, StructureFile,
};
use svc::Tokens;
use svc::convert::{self, at, pb_level};
use svc::status::{field, invalid_field, to_timestamp};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::structure::{self, StructureStoreError};

/// The reason of a publication refused because an entry contradicts a recorded one.
pub const RECORDED_DIFFERENTLY: &str = "structure_entry_recorded_differently";

/// The agency-structure RPCs: cheap to clone.
#[derive(Debug, Clone)]
pub struct AgencyStructureRpc {
    pool: PgPool,
    tokens: Arc<Tokens>,
}

impl AgencyStructureRpc {
    pub fn new(pool: PgPool, tokens: Arc<Tokens>) -> Self {
        AgencyStructureRpc { pool, tokens }
    }
}

/// A local date `YYYY-MM-DD` within [`stats::DATE_YEARS`], naming `path` on a fault.
fn date(path: &str, text: &str) -> Result<NaiveDate, Status> {
    let d = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map_err(|_| invalid_field(path, "must be a local date YYYY-MM-DD"))?;
    if !stats::DATE_YEARS.contains(&chrono::Datelike::year(&d)) {
        return Err(invalid_field(
            path,
            format!(
                "a date of the years {} to {}",
                stats::DATE_YEARS.start(),
                stats::DATE_YEARS.end()
            ),
        ));
    }
    Ok(d)
}

fn declaration(path: &str, a: &pb::AgencyDeclaration) -> Result<AgencyDecl, Status> {
    Ok(AgencyDecl {
        code: convert::agency(&at(path, "code"), &a.code)?,
        name: a.name.clone(),
        level: convert::level(&at(path, "level"), a.level)?,
    })
}

fn change_kind(path: &str, value: i32) -> Result<ChangeKind, Status> {
    match pb::AgencyChangeKind::try_from(value) {
        Ok(pb::AgencyChangeKind::Merged) => Ok(ChangeKind::Merged),
        Ok(pb::AgencyChangeKind::Renamed) => Ok(ChangeKind::Renamed),
        Ok(pb::AgencyChangeKind::Dissolved) => Ok(ChangeKind::Dissolved),
        Ok(pb::AgencyChangeKind::Level) => Ok(ChangeKind::Level),
        _ => Err(invalid_field(
            path,
            "is required: choose one of the listed values",
        )),
    }
}

fn change(path: &str, c: &pb::AgencyChange) -> Result<AgencyChange, Status> {
    Ok(AgencyChange {
        agency: convert::agency(&at(path, "agency"), &c.agency)?,
        from: date(&at(path, "from"), &c.from)?,
        kind: change_kind(&at(path, "kind"), c.kind)?,
        successor: match c.successor.trim() {
            "" => None,
            s => Some(field(&at(path, "successor"), AgencyCode::parse(s))?),
        },
        level: convert::optional(&at(path, "level"), c.level, convert::level)?,
        source: c.source.clone(),
    })
}

fn abolition(path: &str, l: &pb::LevelAbolition) -> Result<LevelAbolition, Status> {
    Ok(LevelAbolition {
        level: convert::level(&at(path, "level"), l.level)?,
        from: date(&at(path, "from"), &l.from)?,
        source: l.source.clone(),
    })
}

/// The request as the structure file the CLI reads, each malformed field named.
pub fn publication(r: &pb::PublishAgencyStructureRequest) -> Result<StructureFile, Status> {
    let entries = r.agencies.len() + r.changes.len() + r.levels_abolished.len();
    if entries == 0 || entries > stats::MAX_ENTRIES_PER_PUBLICATION {
        return Err(invalid_field(
            "agencies",
            format!(
                "1 to {} entries in all (agencies, changes, levels_abolished); {entries} given",
                stats::MAX_ENTRIES_PER_PUBLICATION
            ),
        ));
    }
    let indexed = |name: &str, i: usize| format!("{name}[{i}]");
    Ok(StructureFile {
        agency: r
            .agencies
            .iter()
            .enumerate()
            .map(|(i, a)| declaration(&indexed("agencies", i), a))
            .collect::<Result<_, _>>()?,
        change: r
            .changes
            .iter()
            .enumerate()
            .map(|(i, c)| change(&indexed("changes", i), c))
            .collect::<Result<_, _>>()?,
        level_abolished: r
            .levels_abolished
            .iter()
            .enumerate()
            .map(|(i, l)| abolition(&indexed("levels_abolished", i), l))
            .collect::<Result<_, _>>()?,
    })
}

/// The path of each entry of `file` in the request, with its key.
fn paths(file: &StructureFile) -> Vec<(String, StructureEntry)> {
    let agencies = file
        .agency
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("agencies[{i}]"), StructureEntry::Agency(a.clone())));
    let changes = file
        .change
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("changes[{i}]"), StructureEntry::Change(c.clone())));
    let levels = file.level_abolished.iter().enumerate().map(|(i, l)| {
        (
            format!("levels_abolished[{i}]"),
            StructureEntry::LevelAbolished(l.clone()),
        )
    });
    agencies.chain(changes).chain(levels).collect()
}

/// A status with a field violation and, for a refusal by the state, a reason.
fn refused(code: Code, reason: Option<&str>, path: &str, message: String) -> Status {
    let mut details = ErrorDetails::with_bad_request_violation(path, message.clone());
    if let Some(reason) = reason {
        details.set_error_info(
            reason,
            svc::status::ERROR_DOMAIN,
            std::collections::HashMap::<String, String>::new(),
        );
    }
    Status::with_error_details(code, format!("{path}: {message}"), details)
}

/// Why the structure refused `file`, as a status naming the field of the request at fault.
pub fn invalid_status(e: &StructureError, file: &StructureFile) -> Status {
    let entries = paths(file);
    let path_of = |key: &str| {
        entries
            .iter()
            .rev()
            .find(|(_, e)| e.key() == key)
            .map(|(p, _)| p.clone())
    };
    let message = e.to_string();
    match e {
        StructureError::Contradiction(key) => {
            let same: Vec<&StructureEntry> = entries
                .iter()
                .filter(|(_, e)| e.key() == *key)
                .map(|(_, e)| e)
                .collect();
            let path = path_of(key).unwrap_or_default();
            if same.windows(2).any(|w| w[0] != w[1]) {
                refused(Code::InvalidArgument, None, &path, message)
            } else {
                refused(
                    Code::FailedPrecondition,
                    Some(RECORDED_DIFFERENTLY),
                    &path,
                    format!(
                        "{key} is recorded with other content: an entry is never rewritten; \
                         publish a later-dated change instead"
                    ),
                )
            }
        }
        StructureError::BadChange {
            agency,
            from,
            field,
            ..
        } => {
            let key = format!("change of {agency} from {from}");
            let path = path_of(&key).map_or_else(|| "changes".to_owned(), |p| at(&p, field));
            refused(Code::InvalidArgument, None, &path, message)
        }
        StructureError::BadEntry { key, field, .. } => {
            let path = path_of(key).map_or_else(|| "agencies".to_owned(), |p| at(&p, field));
            refused(Code::InvalidArgument, None, &path, message)
        }
        StructureError::Cycle { agencies, date } => {
            // A change of this request that closes the circle: on it, in force on the date.
            let path = file
                .change
                .iter()
                .enumerate()
                .filter(|(_, c)| {
                    agencies.contains(&c.agency) && c.from <= *date && c.successor.is_some()
                })
                .max_by_key(|(_, c)| c.from)
                .map_or_else(
                    || "changes".to_owned(),
                    |(i, _)| format!("changes[{i}].successor"),
                );
            refused(Code::InvalidArgument, None, &path, message)
        }
    }
}

/// The store's errors as statuses: retry, or an operator's problem.
fn store_status(e: StructureStoreError, file: &StructureFile) -> Status {
    match e {
        StructureStoreError::Invalid(e) => invalid_status(&e, file),
        StructureStoreError::Database(e) => svc::status::unavailable(e),
        e => svc::status::internal(e),
    }
}

fn pb_declaration(a: &AgencyDecl) -> pb::AgencyDeclaration {
    pb::AgencyDeclaration {
        code: a.code.as_str().to_owned(),
        name: a.name.clone(),
        level: pb_level(a.level) as i32,
    }
}

fn pb_change_kind(k: ChangeKind) -> pb::AgencyChangeKind {
    match k {
        ChangeKind::Merged => pb::AgencyChangeKind::Merged,
        ChangeKind::Renamed => pb::AgencyChangeKind::Renamed,
        ChangeKind::Dissolved => pb::AgencyChangeKind::Dissolved,
        ChangeKind::Level => pb::AgencyChangeKind::Level,
    }
}

fn pb_entry(e: &StructureEntry) -> pb::recorded_structure_entry::Entry {
    use pb::recorded_structure_entry::Entry;
    match e {
        StructureEntry::Agency(a) => Entry::Agency(pb_declaration(a)),
        StructureEntry::Change(c) => Entry::Change(pb::AgencyChange {
            agency: c.agency.as_str().to_owned(),
            from: crate::service::day(c.from),
            kind: pb_change_kind(c.kind) as i32,
            successor: c
                .successor
                .as_ref()
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            level: c.level.map_or(pb::Level::Unspecified, pb_level) as i32,
            source: c.source.clone(),
        }),
        StructureEntry::LevelAbolished(l) => Entry::LevelAbolished(pb::LevelAbolition {
            level: pb_level(l.level) as i32,
            from: crate::service::day(l.from),
            source: l.source.clone(),
        }),
    }
}

/// The structure on `date` and every recorded entry.
pub fn structure_at(
    structure: &AgencyStructure,
    recorded: &[structure::Recorded],
    date: NaiveDate,
) -> pb::AgencyStructureAt {
    pb::AgencyStructureAt {
        at: crate::service::day(date),
        agencies: structure
            .agencies()
            .map(|a| {
                let (level, under) = structure.successor_at(a.level, &a.code, date);
                pb::AgencyAt {
                    declared: Some(pb_declaration(a)),
                    counted_under: under.as_str().to_owned(),
                    level: pb_level(level) as i32,
                }
            })
            .collect(),
        levels_in_use: [Level::Province, Level::District, Level::Commune]
            .into_iter()
            .filter(|l| structure.level_in_use(*l, date))
            .map(|l| pb_level(l) as i32)
            .collect(),
        entries: recorded
            .iter()
            .map(|r| pb::RecordedStructureEntry {
                seq: u64::try_from(r.seq).unwrap_or(0),
                entry: Some(pb_entry(&r.entry)),
                recorded_by: r.recorded_by.clone(),
                recorded_at: Some(to_timestamp(r.recorded_at)),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl AgencyStructureService for AgencyStructureRpc {
    async fn publish_agency_structure(
        &self,
        request: Request<pb::PublishAgencyStructureRequest>,
    ) -> Result<Response<pb::PublishAgencyStructureResponse>, Status> {
        let principal = self.tokens.authenticate(request.metadata())?;
        principal.require_admin()?;
        let file = publication(request.get_ref())?;
        let published = structure::publish(&self.pool, &file, &principal.name)
            .await
            .map_err(|e| store_status(e, &file))?;
        tracing::info!(
            by = %principal.name,
            added = published.added,
            unchanged = published.unchanged,
            "agency structure published"
        );
        Ok(Response::new(pb::PublishAgencyStructureResponse {
            added: u32::try_from(published.added).unwrap_or(u32::MAX),
            unchanged: u32::try_from(published.unchanged).unwrap_or(u32::MAX),
        }))
    }

    async fn get_agency_structure(
        &self,
        request: Request<pb::GetAgencyStructureRequest>,
    ) -> Result<Response<pb::AgencyStructureAt>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let r = request.get_ref();
        let day = match r.at.trim() {
            "" => (chrono::Utc::now() + chrono::Duration::hours(7)).date_naive(),
            text => date("at", text)?,
        };
        let empty = StructureFile::default();
        let recorded = structure::recorded_entries(&self.pool)
            .await
            .map_err(|e| store_status(e, &empty))?;
        let entries: Vec<StructureEntry> = recorded.iter().map(|r| r.entry.clone()).collect();
        let structure = AgencyStructure::new(&entries)
            .map_err(|e| svc::status::internal(format!("the recorded structure: {e}")))?;
        Ok(Response::new(structure_at(&structure, &recorded, day)))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn structure_dates_span_the_years_of_every_api_date() {
        assert_eq!(stats::DATE_YEARS, svc::status::SUPPORTED_YEARS);
    }
}
