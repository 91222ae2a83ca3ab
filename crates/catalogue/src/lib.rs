//! The procedure catalogue: each procedure's profile (name, sector, statutory time, online
//! service level, fee flag) and its own rules (supplement policy and limit, automatic closing,
//! same-day cut-off, whether a financial obligation stops the clock), as versioned data.
//!
//! - [`Procedure`]: one version's definition, in force from its `effective_from`; parsed from
//!   the TOML file ([`parse_file`]) or the administrator RPC, and checked once ([`Procedure::validate`]).
//! - [`store::Catalogue`]: the append-only table `procedure_versions` (migration 70001): who
//!   published what when; the version in force at an instant.
//! - [`resolve`]: what a reception states, checked against the version in force and completed
//!   from it; the result carries the [`domain::ProcedureRules`] the `received` event stores.
//!
//! Must never: rewrite or delete a version; be read when a dossier's history is replayed (the
//! `received` event carries the version and rules it used).

pub mod cache;
pub mod store;

use calendar::StatutoryTime;
use chrono::{DateTime, NaiveTime, Utc};
use domain::{
    OnlineServiceLevel, ProcedureCode, ProcedureRules, SectorCode, SupplementPolicy, Text,
};
use serde::{Deserialize, Serialize};

pub use store::{Catalogue, ProcedureVersion, StoreError};

/// Most supplement requests a procedure may allow (a bound, not a rule).
pub const MAX_SUPPLEMENT_REQUESTS: u32 = 100;
/// Longest automatic-closing delay, in working days.
pub const MAX_CLOSE_AFTER_DAYS: u32 = 365;
/// Most definitions in one file or one publication.
pub const MAX_DEFINITIONS: usize = 1000;

/// One version of one procedure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Procedure {
    pub code: ProcedureCode,
    pub name: Text,
    pub sector: SectorCode,
    pub statutory_time: StatutoryTime,
    pub online_level: OnlineServiceLevel,
    pub fee_required: bool,
    pub supplement_policy: SupplementPolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_supplement_requests: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_after_working_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_day_cutoff: Option<NaiveTime>,
    pub obligation_pauses_clock: bool,
    pub effective_from: DateTime<Utc>,
}

/// Why a definition is refused: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidDefinition {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> InvalidDefinition {
    InvalidDefinition {
        field,
        reason: reason.into(),
    }
}

impl Procedure {
    /// The rules a bound or a combination forbids (the types already hold the rest).
    pub fn validate(&self) -> Result<(), InvalidDefinition> {
        let limits = domain::limits::MAX_STATUTORY_DAYS;
        match self.statutory_time {
            StatutoryTime::Days(d) if !(1..=limits).contains(&d) => {
                return Err(invalid(
                    "statutory_time",
                    format!("must be 1 to {limits} working days"),
                ));
            }
            StatutoryTime::Hours(h) if !(1..=domain::limits::MAX_STATUTORY_HOURS).contains(&h) => {
                return Err(invalid(
                    "statutory_time",
                    format!(
                        "must be 1 to {} working hours",
                        domain::limits::MAX_STATUTORY_HOURS
                    ),
                ));
            }
            _ => {}
        }
        if let Some(max) = self.max_supplement_requests
            && !(1..=MAX_SUPPLEMENT_REQUESTS).contains(&max)
        {
            return Err(invalid(
                "max_supplement_requests",
                format!("must be 1 to {MAX_SUPPLEMENT_REQUESTS} (leave it out for unlimited)"),
            ));
        }
        if let Some(days) = self.close_after_working_days
            && !(1..=MAX_CLOSE_AFTER_DAYS).contains(&days)
        {
            return Err(invalid(
                "close_after_working_days",
                format!("must be 1 to {MAX_CLOSE_AFTER_DAYS} (leave it out for never)"),
            ));
        }
        if self.same_day_cutoff.is_some()
            && !matches!(
                self.statutory_time,
                StatutoryTime::Days(1) | StatutoryTime::Hours(1..=8)
            )
        {
            return Err(invalid(
                "same_day_cutoff",
                "only for same-day procedures: statutory time of at most one working day",
            ));
        }
        Ok(())
    }

    /// The rules a dossier received under this version keeps.
    pub fn rules(&self, version: u64) -> ProcedureRules {
        ProcedureRules {
            catalogue_version: version,
            supplement_policy: self.supplement_policy,
            max_supplement_requests: self.max_supplement_requests,
            close_after_working_days: self.close_after_working_days,
            same_day_cutoff: self.same_day_cutoff,
            obligation_pauses_clock: self.obligation_pauses_clock,
        }
    }
}

/// The catalogue file (`deploy/config/catalogue.toml`): `[[procedure]]` tables, see README.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    procedure: Vec<FileEntry>,
}

/// One `[[procedure]]`: the statutory time as `statutory_days` or `statutory_hours`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    code: String,
    name: String,
    sector: String,
    statutory_days: Option<u32>,
    statutory_hours: Option<u32>,
    online_level: String,
    fee_required: bool,
    supplement_policy: SupplementPolicy,
    max_supplement_requests: Option<u32>,
    close_after_working_days: Option<u32>,
    same_day_cutoff: Option<String>,
    #[serde(default)]
    obligation_pauses_clock: bool,
    effective_from: toml::value::Datetime,
}

/// Why a catalogue file was refused (nothing of it is published).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("catalogue file is not valid TOML of the expected shape: {0}")]
    Syntax(String),
    #[error("catalogue file, procedure[{index}] ({code}): {error}")]
    Invalid {
        index: usize,
        code: String,
        error: InvalidDefinition,
    },
    #[error("catalogue file holds {0} definitions; at most {MAX_DEFINITIONS}")]
    TooMany(usize),
}

/// Parses and checks a catalogue file: every definition or none.
pub fn parse_file(text: &str) -> Result<Vec<Procedure>, FileError> {
    let file: File = toml::from_str(text).map_err(|e| FileError::Syntax(e.to_string()))?;
    if file.procedure.len() > MAX_DEFINITIONS {
        return Err(FileError::TooMany(file.procedure.len()));
    }
    file.procedure
        .into_iter()
        .enumerate()
        .map(|(index, entry)| {
            let code = entry.code.clone();
            entry
                .into_procedure()
                .and_then(|p| p.validate().map(|()| p))
                .map_err(|error| FileError::Invalid { index, code, error })
        })
        .collect()
}

impl FileEntry {
    fn into_procedure(self) -> Result<Procedure, InvalidDefinition> {
        let statutory_time = match (self.statutory_days, self.statutory_hours) {
            (Some(d), None) => StatutoryTime::Days(d),
            (None, Some(h)) => StatutoryTime::Hours(h),
            _ => {
                return Err(invalid(
                    "statutory_days",
                    "give exactly one of statutory_days, statutory_hours",
                ));
            }
        };
        let same_day_cutoff = match self.same_day_cutoff.as_deref() {
            None => None,
            Some(text) => Some(parse_cutoff(text).map_err(|r| invalid("same_day_cutoff", r))?),
        };
        let effective_from = DateTime::parse_from_rfc3339(&self.effective_from.to_string())
            .map_err(|_| {
                invalid(
                    "effective_from",
                    "must be an offset date-time, e.g. 2025-07-01T00:00:00+07:00",
                )
            })?
            .with_timezone(&Utc);
        Ok(Procedure {
            code: ProcedureCode::parse(self.code).map_err(|e| invalid("code", e.reason))?,
            name: Text::parse(self.name).map_err(|e| invalid("name", e.reason))?,
            sector: SectorCode::parse(self.sector).map_err(|e| invalid("sector", e.reason))?,
            statutory_time,
            online_level: OnlineServiceLevel::parse(&self.online_level).ok_or_else(|| {
                invalid(
                    "online_level",
                    "one of full_online, partial_online, not_online",
                )
            })?,
            fee_required: self.fee_required,
            supplement_policy: self.supplement_policy,
            max_supplement_requests: self.max_supplement_requests,
            close_after_working_days: self.close_after_working_days,
            same_day_cutoff,
            obligation_pauses_clock: self.obligation_pauses_clock,
            effective_from,
        })
    }
}

/// A cut-off hour `HH:MM` (local time).
pub fn parse_cutoff(text: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(text, "%H:%M").map_err(|_| format!("{text:?} is not a time HH:MM"))
}

/// What a reception states about its procedure; `None` where the counter left it to the
/// catalogue. `fee_required` is a proto3 `bool` that cannot be absent: `true` is always
/// checked, `false` only when the reception states the full profile (a statutory time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stated {
    pub online_level: Option<OnlineServiceLevel>,
    pub sector: Option<SectorCode>,
    pub statutory_time: Option<StatutoryTime>,
    pub fee_required: bool,
}

/// A reception's procedure profile, complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub online_level: OnlineServiceLevel,
    pub sector: SectorCode,
    pub statutory_time: StatutoryTime,
    pub fee_required: bool,
    /// `None` for a procedure not in the catalogue (the full profile as stated).
    pub rules: Option<ProcedureRules>,
}

/// Why a reception's statement was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// It disagrees with the version in force: the field, both values, the version.
    #[error(
        "{field} is {stated} but the catalogue (version {version}, in force since {effective_from}) says {catalogue}"
    )]
    Mismatch {
        field: &'static str,
        stated: String,
        catalogue: String,
        version: u64,
        effective_from: DateTime<Utc>,
    },
    /// The procedure is not in the catalogue at that instant and the field was not stated.
    #[error(
        "{field} is required: the procedure is not in the catalogue in force at the reception time"
    )]
    Missing { field: &'static str },
}

impl ResolveError {
    /// The request field the error is about (without the message prefix).
    pub fn field(&self) -> &'static str {
        match self {
            ResolveError::Mismatch { field, .. } | ResolveError::Missing { field } => field,
        }
    }
}

/// Checks what a reception states against the version in force (`None`: the procedure is not
/// in the catalogue then) and completes it. Stated values must equal the catalogue's; a
/// procedure outside the catalogue is accepted as stated when the profile is complete (the
/// catalogue need not list every procedure), else the first missing field is named.
pub fn resolve(
    stated: &Stated,
    in_force: Option<&ProcedureVersion>,
) -> Result<Resolved, ResolveError> {
    let Some(v) = in_force else {
        return Ok(Resolved {
            online_level: stated.online_level.ok_or(ResolveError::Missing {
                field: "profile.online_level",
            })?,
            sector: stated.sector.clone().ok_or(ResolveError::Missing {
                field: "profile.sector_code",
            })?,
            statutory_time: stated.statutory_time.ok_or(ResolveError::Missing {
                field: "statutory_time",
            })?,
            fee_required: stated.fee_required,
            rules: None,
        });
    };
    let p = &v.procedure;
    let mismatch = |field, stated: String, catalogue: String| ResolveError::Mismatch {
        field,
        stated,
        catalogue,
        version: v.version,
        effective_from: p.effective_from,
    };
    if let Some(level) = stated.online_level.filter(|l| *l != p.online_level) {
        return Err(mismatch(
            "profile.online_level",
            level.as_str().into(),
            p.online_level.as_str().into(),
        ));
    }
    if let Some(sector) = stated.sector.as_ref().filter(|s| **s != p.sector) {
        return Err(mismatch(
            "profile.sector_code",
            sector.to_string(),
            p.sector.to_string(),
        ));
    }
    if let Some(t) = stated.statutory_time.filter(|t| *t != p.statutory_time) {
        return Err(mismatch(
            "statutory_time",
            t.to_string(),
            p.statutory_time.to_string(),
        ));
    }
    let fee_stated = stated.fee_required || stated.statutory_time.is_some();
    if fee_stated && stated.fee_required != p.fee_required {
        return Err(mismatch(
            "fee_required",
            stated.fee_required.to_string(),
            p.fee_required.to_string(),
        ));
    }
    Ok(Resolved {
        online_level: p.online_level,
        sector: p.sector.clone(),
        statutory_time: p.statutory_time,
        fee_required: p.fee_required,
        rules: Some(p.rules(v.version)),
    })
}
