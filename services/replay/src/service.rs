//! `ReplayService`: parsing and validating requests, resolving where a stream starts and ends,
//! and the timeline. Any valid token may read; nothing here writes.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::replay_service_server::ReplayService;
use chrono::{DateTime, Utc};
use domain::{AgencyCode, EventType, Phase, SectorCode};
use eventlog::{EventLog, Position, ReadError};
use svc::Tokens;
use svc::status::{field, invalid_field, timestamp, to_timestamp, with_reason};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use crate::convert;
use crate::query::{Filter, Reader, Selection};
use crate::stream::{self, EventStream, Plan};
use crate::timeline::{self, ChangeKind};

/// The gRPC replay service. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Replay {
    log: EventLog,
    reader: Reader,
    tokens: Arc<Tokens>,
    wakeups: watch::Receiver<u64>,
    stopping: CancellationToken,
    follow_poll: std::time::Duration,
}

impl Replay {
    /// `wakeups` is bumped on appends (see [`crate::wakeups`]).
    pub fn new(log: EventLog, tokens: Arc<Tokens>, wakeups: watch::Receiver<u64>) -> Replay {
        Replay {
            reader: Reader::new(log.pool().clone()),
            log,
            tokens,
            wakeups,
            stopping: CancellationToken::new(),
            follow_poll: crate::stream::FOLLOW_POLL,
        }
    }

    /// The same service polling the log every `poll` while following, when no notification
    /// came (tests set it long to prove that notifications alone wake followers).
    pub fn follow_poll(self, poll: std::time::Duration) -> Replay {
        Replay {
            follow_poll: poll,
            ..self
        }
    }

    /// The same service whose open streams end (UNAVAILABLE) when `stopping` is cancelled.
    pub fn stopping_on(self, stopping: CancellationToken) -> Replay {
        Replay { stopping, ..self }
    }

    /// Where a stream starts and ends, resolved against the log as it is now.
    async fn plan(&self, selection: Selection) -> Result<Plan, ReadError> {
        let head = self.reader.head().await?;
        let mut cursor = selection.after_position;
        if let Some(from) = selection.filter.recorded_from {
            let first = self.reader.first_recorded_at(from, head).await?;
            cursor = cursor.max(first - 1);
        }
        let end = if selection.follow {
            selection.to_position
        } else {
            let mut end = selection.to_position.map_or(head, |to| to.min(head));
            if let Some(to) = selection.filter.recorded_to {
                end = end.min(self.reader.first_recorded_at(to, head).await? - 1);
            }
            Some(end)
        };
        Ok(Plan {
            selection,
            cursor,
            end,
            poll: self.follow_poll,
        })
    }
}

#[tonic::async_trait]
impl ReplayService for Replay {
    type StreamEventsStream = EventStream;

    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let selection = selection(request.get_ref())?;
        let plan = self.plan(selection).await.map_err(read_status)?;
        Ok(Response::new(stream::start(
            self.reader.clone(),
            plan,
            self.wakeups.clone(),
            self.stopping.clone(),
        )))
    }

    async fn get_timeline(
        &self,
        request: Request<pb::GetTimelineRequest>,
    ) -> Result<Response<pb::GetTimelineResponse>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let dossier_id = svc::convert::dossier_id("dossier_id", &request.get_ref().dossier_id)?;
        let stored = self
            .log
            .load_dossier(dossier_id.as_str())
            .await
            .map_err(read_status)?;
        if stored.is_empty() {
            return Err(svc::status::refusal(&domain::Refusal::UnknownDossier));
        }
        let events = stored
            .iter()
            .map(|s| {
                writepath::decode(s).map_err(|e| {
                    tracing::error!(position = s.position, error = %e, "replay: stored event does not decode");
                    corrupt(s.position)
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let (changes, dossier) = timeline::history(&events);
        let due_time_history = changes
            .iter()
            .map(|c| {
                let source = &stored[c.index];
                let (position, version) = source.place().map_err(read_status)?;
                Ok(pb::DueTimeChange {
                    kind: change_kind(c.kind) as i32,
                    position: position.get(),
                    version: version.get(),
                    event_id: source.event_id.to_string(),
                    occurred_at: Some(to_timestamp(source.occurred_at)),
                    recorded_at: Some(to_timestamp(source.recorded_at)),
                    due_at: c.due_at.map(to_timestamp),
                    paused: c.paused,
                    paused_minutes: c.paused_minutes,
                    new_appointment: c.new_appointment.map(to_timestamp),
                    apology_on_time: c.apology_on_time,
                    timeliness: c
                        .timeliness
                        .map_or(pb::Timeliness::Unspecified, svc::convert::pb_timeliness)
                        as i32,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let mut events: Vec<pb::ReplayedEvent> = stored
            .iter()
            .zip(&events)
            .map(|(s, e)| convert::replayed_event_with(s, Some(convert::body(&e.body))))
            .collect::<Result<_, _>>()
            .map_err(read_status)?;
        let erased = personal::erased_among(self.log.pool(), &convert::sealed_dossiers(&events))
            .await
            .map_err(svc::status::unavailable)?;
        for event in &mut events {
            convert::mark_erased(event, &erased);
        }
        Ok(Response::new(pb::GetTimelineResponse {
            dossier_id: dossier_id.as_str().to_owned(),
            events,
            due_time_history,
            state: Some(state(&dossier)),
        }))
    }
}

/// Validates a `StreamEvents` request, naming the first offending field.
pub fn selection(r: &pb::StreamEventsRequest) -> Result<Selection, Status> {
    let after_position = position("after_position", r.after_position)?;
    let to_position = r
        .to_position
        .map(|to| {
            let to = position("to_position", to)?;
            if to < 1 {
                Err(invalid_field("to_position", "must be at least 1"))
            } else if to < after_position {
                Err(invalid_field(
                    "to_position",
                    "must not be before after_position",
                ))
            } else {
                Ok(to)
            }
        })
        .transpose()?;
    let (recorded_from, recorded_to) = time_range(
        ("recorded_from", &r.recorded_from),
        ("recorded_to", &r.recorded_to),
    )?;
    if r.follow && recorded_to.is_some() {
        return Err(invalid_field(
            "recorded_to",
            "cannot be combined with follow: bound a following stream with to_position",
        ));
    }
    let (occurred_from, occurred_to) = time_range(
        ("occurred_from", &r.occurred_from),
        ("occurred_to", &r.occurred_to),
    )?;
    let dossier_id = non_empty(&r.dossier_id)
        .map(|d| svc::convert::dossier_id("dossier_id", d).map(|d| d.as_str().to_owned()))
        .transpose()?;
    let agency = non_empty(&r.agency_code)
        .map(|a| field("agency_code", AgencyCode::parse(a)).map(|a| a.as_str().to_owned()))
        .transpose()?;
    let sector = non_empty(&r.sector_code)
        .map(|s| field("sector_code", SectorCode::parse(s)).map(|s| s.as_str().to_owned()))
        .transpose()?;
    let level = svc::convert::optional("level", r.level, svc::convert::level)?;
    let mut event_types = Vec::with_capacity(r.event_types.len());
    for (i, name) in r.event_types.iter().enumerate() {
        let Ok(event_type) = name.parse::<EventType>() else {
            return Err(invalid_field(
                &format!("event_types[{i}]"),
                "is not an event type (received, supplement_requested, …)",
            ));
        };
        let name = event_type.as_str().to_owned();
        if !event_types.contains(&name) {
            event_types.push(name);
        }
    }
    Ok(Selection {
        after_position,
        to_position,
        filter: Filter {
            dossier_id,
            agency,
            level: level.map(|l| l.as_str().to_owned()),
            sector,
            event_types,
            occurred_from,
            occurred_to,
            recorded_from,
            recorded_to,
        },
        follow: r.follow,
    })
}

fn position(name: &str, value: u64) -> Result<i64, Status> {
    Position::new(value)
        .map(Position::as_i64)
        .map_err(|_| invalid_field(name, "is beyond any position"))
}

fn non_empty(value: &str) -> Option<&str> {
    let value = value.trim();
    (!value.is_empty()).then_some(value)
}

type TimeField<'a> = (&'a str, &'a Option<api::Timestamp>);
type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// An optional half-open time range `[from, to)`; `to` after `from` when both are given.
fn time_range(
    (from_name, from): TimeField<'_>,
    (to_name, to): TimeField<'_>,
) -> Result<TimeRange, Status> {
    let from = from
        .as_ref()
        .map(|t| timestamp(from_name, Some(t)))
        .transpose()?;
    let to = to
        .as_ref()
        .map(|t| timestamp(to_name, Some(t)))
        .transpose()?;
    if let (Some(from), Some(to)) = (from, to)
        && to <= from
    {
        return Err(invalid_field(to_name, format!("must be after {from_name}")));
    }
    Ok((from, to))
}

/// The status for a failed read. Reads have no side effects, so the client just resumes.
pub(crate) fn read_status(error: ReadError) -> Status {
    match error {
        ReadError::Unavailable(e) => {
            tracing::warn!(error = %e, "replay: event log unavailable");
            Status::unavailable(
                "the event log cannot be read now; retry (a stream: resume with after_position = the last position received)",
            )
        }
        ReadError::Corrupt { position, reason } => {
            tracing::error!(position, %reason, "replay: corrupt stored event");
            corrupt(position)
        }
    }
}

fn corrupt(position: i64) -> Status {
    with_reason(
        Code::DataLoss,
        "corrupt_event",
        format!(
            "the stored event at position {position} is not as the log writes it; alert an operator and run `audit verify`"
        ),
    )
}

fn change_kind(kind: ChangeKind) -> pb::DueTimeChangeKind {
    match kind {
        ChangeKind::Received => pb::DueTimeChangeKind::Received,
        ChangeKind::SupplementRequested => pb::DueTimeChangeKind::SupplementRequested,
        ChangeKind::SupplementReceived => pb::DueTimeChangeKind::SupplementReceived,
        ChangeKind::LateMarked => pb::DueTimeChangeKind::LateMarked,
        ChangeKind::LateWithdrawn => pb::DueTimeChangeKind::LateWithdrawn,
        ChangeKind::ApologyIssued => pb::DueTimeChangeKind::ApologyIssued,
        ChangeKind::Resolved => pb::DueTimeChangeKind::Resolved,
        ChangeKind::Withdrawn => pb::DueTimeChangeKind::Withdrawn,
        ChangeKind::Stopped => pb::DueTimeChangeKind::Stopped,
        ChangeKind::ObligationRequested => pb::DueTimeChangeKind::ObligationRequested,
        ChangeKind::ObligationFulfilled => pb::DueTimeChangeKind::ObligationFulfilled,
    }
}

fn phase(phase: Phase) -> pb::DossierPhase {
    match phase {
        Phase::NotReceived => pb::DossierPhase::Unspecified,
        Phase::RefusedAtIntake => pb::DossierPhase::RefusedAtIntake,
        Phase::Open => pb::DossierPhase::Open,
        Phase::Resolved => pb::DossierPhase::Resolved,
        Phase::Withdrawn => pb::DossierPhase::Withdrawn,
        Phase::Stopped => pb::DossierPhase::Stopped,
    }
}

fn state(d: &domain::Dossier) -> pb::TimelineState {
    pb::TimelineState {
        version: d.version,
        phase: phase(d.phase) as i32,
        portal_status: d.portal_status().map_or(0, u32::from),
        due_at: d.due_at.map(to_timestamp),
        paused: d.is_paused(),
        late_marked: d.late_marked,
        late_withdrawn: d.late_withdrawn,
        apology_appointment: d.apology.as_ref().map(|a| to_timestamp(a.new_appointment)),
        outcome: d
            .resolution
            .as_ref()
            .map_or(pb::Outcome::Unspecified, |r| convert::outcome(r.outcome))
            as i32,
        timeliness: d
            .resolution
            .as_ref()
            .map_or(pb::Timeliness::Unspecified, |r| {
                svc::convert::pb_timeliness(r.timeliness)
            }) as i32,
        agency_code: d
            .profile
            .as_ref()
            .map(|p| p.agency.as_str().to_owned())
            .unwrap_or_default(),
        current_agency_code: d
            .current_agency
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        received_at: d.received_at.map(to_timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::StatusExt;

    fn bad_field(status: Status) -> String {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        status.get_details_bad_request().unwrap().field_violations[0]
            .field
            .clone()
    }

    fn ts(seconds: i64) -> Option<api::Timestamp> {
        Some(api::Timestamp { seconds, nanos: 0 })
    }

    const T: i64 = 1_714_000_000; // April 2024

    #[test]
    fn an_empty_request_selects_everything() {
        let s = selection(&pb::StreamEventsRequest::default()).unwrap();
        assert_eq!(s, Selection::default());
    }

    #[test]
    fn filters_are_parsed_and_deduplicated() {
        let s = selection(&pb::StreamEventsRequest {
            after_position: 7,
            to_position: Some(9),
            dossier_id: " H40-1 ".into(),
            agency_code: "000.00.12.H40".into(),
            level: pb::Level::Commune as i32,
            sector_code: "land".into(),
            event_types: vec!["late".into(), "resolved".into(), "late".into()],
            occurred_from: ts(T),
            occurred_to: ts(T + 1),
            recorded_from: ts(T),
            follow: true,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(s.after_position, 7);
        assert_eq!(s.to_position, Some(9));
        assert_eq!(s.filter.dossier_id.as_deref(), Some("H40-1"));
        assert_eq!(s.filter.level.as_deref(), Some("commune"));
        assert_eq!(s.filter.event_types, ["late", "resolved"]);
        assert!(s.filter.occurred_to.unwrap() > s.filter.occurred_from.unwrap());
        assert!(s.follow);
    }

    /// Far before 4713 BC (PostgreSQL's first day) and far after year 9999, both ways, on each
    /// time bound: INVALID_ARGUMENT naming it, before any SQL.
    #[test]
    fn times_out_of_the_supported_years_are_named() {
        for far in [
            -210_000_000_000_i64,
            i64::MIN,
            631_152_000 - 1,
            4_133_980_800,
            i64::MAX,
        ] {
            let cases = [
                pb::StreamEventsRequest {
                    recorded_from: ts(far),
                    ..Default::default()
                },
                pb::StreamEventsRequest {
                    recorded_to: ts(far),
                    ..Default::default()
                },
                pb::StreamEventsRequest {
                    occurred_from: ts(far),
                    ..Default::default()
                },
                pb::StreamEventsRequest {
                    occurred_to: ts(far),
                    ..Default::default()
                },
            ];
            let names = [
                "recorded_from",
                "recorded_to",
                "occurred_from",
                "occurred_to",
            ];
            for (request, name) in cases.into_iter().zip(names) {
                assert_eq!(bad_field(selection(&request).unwrap_err()), name, "{far}");
            }
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let cases: Vec<(pb::StreamEventsRequest, &str)> = vec![
            (
                pb::StreamEventsRequest {
                    after_position: u64::MAX,
                    ..Default::default()
                },
                "after_position",
            ),
            (
                pb::StreamEventsRequest {
                    to_position: Some(0),
                    ..Default::default()
                },
                "to_position",
            ),
            (
                pb::StreamEventsRequest {
                    after_position: 5,
                    to_position: Some(4),
                    ..Default::default()
                },
                "to_position",
            ),
            (
                pb::StreamEventsRequest {
                    recorded_from: ts(T),
                    recorded_to: ts(T),
                    ..Default::default()
                },
                "recorded_to",
            ),
            (
                pb::StreamEventsRequest {
                    recorded_to: ts(T),
                    follow: true,
                    ..Default::default()
                },
                "recorded_to",
            ),
            (
                pb::StreamEventsRequest {
                    recorded_from: Some(api::Timestamp {
                        seconds: T,
                        nanos: -1,
                    }),
                    ..Default::default()
                },
                "recorded_from",
            ),
            (
                pb::StreamEventsRequest {
                    occurred_from: ts(T + 10),
                    occurred_to: ts(T),
                    ..Default::default()
                },
                "occurred_to",
            ),
            (
                pb::StreamEventsRequest {
                    occurred_from: ts(0),
                    ..Default::default()
                },
                "occurred_from",
            ),
            (
                pb::StreamEventsRequest {
                    dossier_id: "bad id with spaces".into(),
                    ..Default::default()
                },
                "dossier_id",
            ),
            (
                pb::StreamEventsRequest {
                    agency_code: "bad_agency".into(),
                    ..Default::default()
                },
                "agency_code",
            ),
            (
                pb::StreamEventsRequest {
                    sector_code: "bad sector".into(),
                    ..Default::default()
                },
                "sector_code",
            ),
            (
                pb::StreamEventsRequest {
                    level: 42,
                    ..Default::default()
                },
                "level",
            ),
            (
                pb::StreamEventsRequest {
                    event_types: vec!["received".into(), "Received".into()],
                    ..Default::default()
                },
                "event_types[1]",
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(
                bad_field(selection(&request).unwrap_err()),
                expected,
                "{request:?}"
            );
        }
    }

    #[test]
    fn a_resumed_stream_that_had_finished_is_empty_not_invalid() {
        let s = selection(&pb::StreamEventsRequest {
            after_position: 5,
            to_position: Some(5),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((s.after_position, s.to_position), (5, Some(5)));
    }
}
