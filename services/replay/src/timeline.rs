//! A dossier's due-time history: pure, from its events, through the domain's own fold.
//!
//! The history is read off [`Dossier::evolve`] after each event rather than recomputed here, so
//! it can never disagree with what the rules and the statistics see: each entry reports the
//! due time in force and whether the clock is paused *after* its event.

use calendar::Timeliness;
use chrono::{DateTime, Utc};
use domain::{Dossier, DossierEvent, Event};

/// What an event did to the dossier's due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The due time computed at reception.
    Received,
    /// The clock stops; the due time waits.
    SupplementRequested,
    /// The clock runs again with a new due time.
    SupplementReceived,
    /// The due time passed with no resolution.
    LateMarked,
    /// The late mark is withdrawn: the resolution (dated before the due time, sent late by a
    /// counter that was offline) was early or on time.
    LateWithdrawn,
    /// A new appointment for the applicant; the due time in force does not move.
    ApologyIssued,
    /// The clock stops for good, judged against the due time in force.
    Resolved,
    Withdrawn,
    Stopped,
    /// A financial obligation; the clock stops when the procedure says so.
    ObligationRequested,
    /// Fulfilled: the clock runs again, the due time moved by the time paused.
    ObligationFulfilled,
}

/// One entry of the history: the event at `index` (in the slice given) and its effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimeChange {
    pub index: usize,
    pub kind: ChangeKind,
    /// The due time in force after the event.
    pub due_at: Option<DateTime<Utc>>,
    /// Whether the clock is stopped for a supplement after the event.
    pub paused: bool,
    /// Supplement received: working minutes the dossier waited.
    pub paused_minutes: u32,
    /// Apology: the new appointment and whether it came at least a working day before the due
    /// time in force.
    pub new_appointment: Option<DateTime<Utc>>,
    pub apology_on_time: Option<bool>,
    /// Resolved: against the due time in force; late withdrawn: the resolution's.
    pub timeliness: Option<Timeliness>,
}

/// The due-time history of a dossier's events (oldest first), and the dossier they fold into.
pub fn history(events: &[Event]) -> (Vec<DueTimeChange>, Dossier) {
    let mut dossier = Dossier::default();
    let mut changes = Vec::new();
    for (index, event) in events.iter().enumerate() {
        dossier.evolve(event);
        let mut change = DueTimeChange {
            index,
            kind: ChangeKind::Received,
            due_at: dossier.due_at,
            paused: dossier.clock_stopped(),
            paused_minutes: 0,
            new_appointment: None,
            apology_on_time: None,
            timeliness: None,
        };
        change.kind = match &event.body {
            DossierEvent::Received { .. } => ChangeKind::Received,
            DossierEvent::SupplementRequested { .. } => ChangeKind::SupplementRequested,
            DossierEvent::SupplementReceived { paused, .. } => {
                change.paused_minutes = paused.minutes();
                ChangeKind::SupplementReceived
            }
            DossierEvent::Late { .. } => ChangeKind::LateMarked,
            DossierEvent::ApologyIssued {
                new_appointment,
                on_time,
                ..
            } => {
                change.new_appointment = Some(*new_appointment);
                change.apology_on_time = Some(*on_time);
                ChangeKind::ApologyIssued
            }
            DossierEvent::Resolved { timeliness, .. } => {
                change.timeliness = Some(*timeliness);
                ChangeKind::Resolved
            }
            DossierEvent::LateWithdrawn { timeliness, .. } => {
                change.timeliness = Some(*timeliness);
                ChangeKind::LateWithdrawn
            }
            DossierEvent::Withdrawn { .. } => ChangeKind::Withdrawn,
            DossierEvent::Stopped { .. } => ChangeKind::Stopped,
            DossierEvent::FinancialObligationRequested { .. } => ChangeKind::ObligationRequested,
            DossierEvent::FinancialObligationFulfilled { paused, .. } => {
                change.paused_minutes = paused.minutes();
                ChangeKind::ObligationFulfilled
            }
            DossierEvent::ComponentsDigitized { .. }
            | DossierEvent::RefusedAtIntake { .. }
            | DossierEvent::Transferred { .. }
            | DossierEvent::FeeAssessed { .. }
            | DossierEvent::Paid { .. }
            | DossierEvent::ResultDigitized { .. }
            | DossierEvent::ResultReturned { .. }
            | DossierEvent::SatisfactionRated { .. } => continue,
        };
        changes.push(change);
    }
    (changes, dossier)
}

#[cfg(test)]
mod tests {
    use super::*;
    use calendar::{StatutoryTime, WorkingDuration};
    use chrono::TimeZone;
    use domain::{
        AgencyCode, ApplicantType, Channel, ComponentCode, Level, OnlineServiceLevel, Outcome,
        ProcedureCode, Profile, SectorCode, Text,
    };

    fn at(day: u32, hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 4, day, hour, 0, 0).unwrap()
    }

    fn event(occurred_at: DateTime<Utc>, body: DossierEvent) -> Event {
        Event { occurred_at, body }
    }

    fn profile() -> Profile {
        Profile {
            procedure: ProcedureCode::parse("1.004227").unwrap(),
            online_level: OnlineServiceLevel::FullOnline,
            sector: SectorCode::parse("land").unwrap(),
            agency: AgencyCode::parse("000.00.12.H40").unwrap(),
            level: Level::District,
            channel: Channel::Online,
            applicant_type: ApplicantType::Citizen,
        }
    }

    fn received(due_at: DateTime<Utc>) -> DossierEvent {
        DossierEvent::Received {
            procedure: None,
            profile: profile(),
            statutory_time: StatutoryTime::Days(3),
            fee_required: false,
            components: vec![ComponentCode::parse("don").unwrap()],
            due_at,
            applicant: None,
            return_method: None,
        }
    }

    fn text(s: &str) -> Text {
        Text::parse(s).unwrap()
    }

    #[test]
    fn supplement_late_apology_and_resolution_in_order() {
        let events = [
            event(at(1, 2), received(at(4, 2))),
            event(
                at(1, 3),
                DossierEvent::ComponentsDigitized {
                    digitized: vec![],
                    reused: vec![],
                },
            ),
            event(
                at(2, 2),
                DossierEvent::SupplementRequested {
                    closes_at: None,
                    reason: text("thiếu giấy"),
                },
            ),
            event(
                at(3, 2),
                DossierEvent::SupplementReceived {
                    due_at: at(8, 2),
                    paused: WorkingDuration::from_minutes(480),
                },
            ),
            event(
                at(5, 2),
                DossierEvent::ApologyIssued {
                    reason: text("chậm"),
                    new_appointment: at(10, 2),
                    on_time: true,
                    original_due_at: Some(at(8, 2)),
                    signer: None,
                    delivery: None,
                    notice: None,
                },
            ),
            event(at(8, 2), DossierEvent::Late { due_at: at(8, 2) }),
            event(
                at(9, 2),
                DossierEvent::Resolved {
                    outcome: Outcome::Approved,
                    deciding_agency: AgencyCode::parse("000.00.12.H40").unwrap(),
                    due_at: at(8, 2),
                    timeliness: Timeliness::Late,
                },
            ),
        ];
        let (changes, dossier) = history(&events);
        let summary: Vec<_> = changes
            .iter()
            .map(|c| (c.index, c.kind, c.due_at, c.paused))
            .collect();
        assert_eq!(
            summary,
            [
                (0, ChangeKind::Received, Some(at(4, 2)), false),
                (2, ChangeKind::SupplementRequested, Some(at(4, 2)), true),
                (3, ChangeKind::SupplementReceived, Some(at(8, 2)), false),
                (4, ChangeKind::ApologyIssued, Some(at(8, 2)), false),
                (5, ChangeKind::LateMarked, Some(at(8, 2)), false),
                (6, ChangeKind::Resolved, Some(at(8, 2)), false),
            ]
        );
        assert_eq!(changes[2].paused_minutes, 480);
        assert_eq!(changes[3].new_appointment, Some(at(10, 2)));
        assert_eq!(changes[3].apology_on_time, Some(true));
        assert_eq!(changes[5].timeliness, Some(Timeliness::Late));
        assert!(changes[..5].iter().all(|c| c.timeliness.is_none()));
        assert_eq!(dossier.version, 7);
        assert_eq!(dossier.portal_status(), Some(9));
    }

    #[test]
    fn refused_at_intake_has_no_due_time_history() {
        let events = [event(
            at(1, 2),
            DossierEvent::RefusedAtIntake {
                profile: profile(),
                reason: text("không đủ"),
            },
        )];
        let (changes, dossier) = history(&events);
        assert!(changes.is_empty());
        assert_eq!(dossier.portal_status(), Some(3));
    }

    #[test]
    fn withdrawal_and_stop_close_the_clock_while_paused() {
        for (body, kind) in [
            (
                DossierEvent::Withdrawn {
                    reason: text("rút"),
                },
                ChangeKind::Withdrawn,
            ),
            (
                DossierEvent::Stopped {
                    cause: None,
                    reason: text("dừng"),
                },
                ChangeKind::Stopped,
            ),
        ] {
            let events = [
                event(at(1, 2), received(at(4, 2))),
                event(
                    at(2, 2),
                    DossierEvent::SupplementRequested {
                        closes_at: None,
                        reason: text("thiếu"),
                    },
                ),
                event(at(3, 2), body),
            ];
            let (changes, _) = history(&events);
            assert_eq!(changes.len(), 3);
            assert_eq!(changes[2].kind, kind);
            assert_eq!(changes[2].index, 2);
            assert_eq!(changes[2].due_at, Some(at(4, 2)));
        }
    }
}
