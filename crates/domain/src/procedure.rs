//! A procedure's own rules, as the catalogue had them when a dossier was received.
//!
//! The catalogue (crate `catalogue`) is versioned data an administrator changes; a dossier must
//! never depend on today's version of it. So reception copies the rules in force at the
//! reception time into the `received` event ([`crate::DossierEvent::Received`]'s `procedure`),
//! with the catalogue version they came from, and every later decision on the dossier reads
//! them from its own history. A dossier received without a catalogue entry (an unknown
//! procedure with the full profile, or imported history) has none: the province's supplement
//! policy applies, supplement requests are unlimited, nothing closes by itself, and a financial
//! obligation does not pause the clock.

use calendar::{Calendar, StatutoryTime};
use chrono::{DateTime, NaiveTime, Utc};
use serde::{Deserialize, Serialize};

use crate::command::SupplementPolicy;

/// The rules of one procedure at one catalogue version, stored with the dossier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcedureRules {
    /// The catalogue version these rules were read from (its append-only revision number).
    pub catalogue_version: u64,
    /// How the due time moves when a requested supplement arrives.
    pub supplement_policy: SupplementPolicy,
    /// At most this many supplement requests over the dossier's life; `None`: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_supplement_requests: Option<u32>,
    /// The dossier closes by itself (a `stopped` event) this many working days after a
    /// supplement request that was not answered; `None`: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_after_working_days: Option<u32>,
    /// A same-day procedure: received on a working day before this local hour, it is due at
    /// the close of that office day; otherwise at the close of the next working day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_day_cutoff: Option<NaiveTime>,
    /// Whether the time spent waiting for a financial obligation (portal status 6) does not
    /// count.
    pub obligation_pauses_clock: bool,
}

impl ProcedureRules {
    /// Whether one more supplement request is allowed after `made` requests.
    pub fn allows_supplement_request(&self, made: u32) -> bool {
        self.max_supplement_requests.is_none_or(|max| made < max)
    }

    /// When a supplement requested at `requested_at` and not received closes the dossier.
    pub fn closes_at(
        &self,
        calendar: &Calendar,
        requested_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        self.close_after_working_days.map(|days| {
            calendar.add_working_time(
                requested_at,
                calendar.to_duration(StatutoryTime::Days(days)),
            )
        })
    }
}

/// The due time of a same-day procedure received at `received_at` with cut-off `cutoff`
/// (local time): the close of office hours of the reception day when that is a working day and
/// the dossier came before the cut-off, else the close of the next working day.
pub fn same_day_due(
    calendar: &Calendar,
    received_at: DateTime<Utc>,
    cutoff: NaiveTime,
) -> DateTime<Utc> {
    let local = calendar::local(received_at);
    let mut day = local.date_naive();
    if !(calendar.is_working_day(day) && local.time() < cutoff) {
        day = next_working_day(calendar, day);
    }
    let close = calendar
        .office_hours()
        .periods()
        .last()
        .map_or(NaiveTime::MIN, |(_, end)| *end);
    day.and_time(close)
        .and_local_timezone(calendar::vn_offset())
        .single()
        .map_or(DateTime::<Utc>::MAX_UTC, |t| t.with_timezone(&Utc))
}

fn next_working_day(calendar: &Calendar, from: chrono::NaiveDate) -> chrono::NaiveDate {
    let mut day = from;
    // A calendar always has working days: at most a few weeks of holidays in a row.
    for _ in 0..366 {
        match day.succ_opt() {
            Some(next) => day = next,
            None => return from,
        }
        if calendar.is_working_day(day) {
            return day;
        }
    }
    day
}
