//! `GetTimeline`: a dossier written by the real rules (supplement, apology, late, resolution)
//! replays with its due-time history and state; a dossier refused at intake has none.

use api::v1 as pb;
use chrono::{DateTime, Utc};
use domain::{Action, AgencyCode, ComponentCode, Level, Outcome};
use eventlog::StoredEvent;
use pb::DueTimeChangeKind as Kind;
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::*;

fn payload_time(event: &StoredEvent, key: &str) -> DateTime<Utc> {
    event.payload[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {}", event.payload))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_shows_the_due_time_history_with_supplement_apology_and_lateness() {
    let mut env = Env::start().await;
    let dossier = "H40-TL-0001";
    let received = env
        .execute(
            dossier,
            local(2024, 4, 22, 9, 0),
            Action::Receive {
                procedure: None,
                profile: profile(Level::District, DISTRICT, "land"),
                statutory_time: calendar::StatutoryTime::Days(3),
                fee_required: false,
                components: vec![ComponentCode::parse("don-de-nghi").unwrap()],
                due_at: None,
                applicant: None,
                return_method: None,
            },
        )
        .await;
    // Another dossier's events in between: positions and versions differ.
    env.execute(
        "H40-TL-OTHER",
        local(2024, 4, 22, 9, 30),
        Action::Receive {
            procedure: None,
            profile: profile(Level::District, DISTRICT, "land"),
            statutory_time: calendar::StatutoryTime::Days(3),
            fee_required: false,
            components: vec![ComponentCode::parse("don-de-nghi").unwrap()],
            due_at: None,
            applicant: None,
            return_method: None,
        },
    )
    .await;
    let requested = env
        .execute(
            dossier,
            local(2024, 4, 23, 9, 0),
            Action::RequestSupplement {
                reason: text("Thiếu bản vẽ"),
            },
        )
        .await;
    let supplemented = env
        .execute(dossier, local(2024, 4, 24, 9, 0), Action::ReceiveSupplement)
        .await;
    let new_due = payload_time(&supplemented, "due_at");
    let apology = env
        .execute(
            dossier,
            local(2024, 4, 25, 9, 0),
            Action::IssueApology {
                reason: text("Chờ đo đạc"),
                new_appointment: new_due + chrono::Duration::days(7),
                signer: Some(text("Phó Chủ tịch UBND huyện")),
                delivery: Some(domain::ApologyDelivery::Sms),
            },
        )
        .await;
    let late = env
        .execute(
            dossier,
            new_due + chrono::Duration::hours(1),
            Action::MarkLate,
        )
        .await;
    let resolved = env
        .execute(
            dossier,
            new_due + chrono::Duration::days(2),
            Action::Resolve {
                outcome: Outcome::Approved,
                deciding_agency: AgencyCode::parse(DISTRICT).unwrap(),
            },
        )
        .await;
    let first_due = payload_time(&received, "due_at");
    assert!(new_due > first_due, "the restart policy moved the due time");

    let timeline = env
        .client
        .get_timeline(authed(
            AUDITOR,
            pb::GetTimelineRequest {
                dossier_id: dossier.into(),
            },
        ))
        .await
        .expect("timeline")
        .into_inner();
    assert_eq!(timeline.dossier_id, dossier);

    // Every event of the dossier, in order, as the log holds it.
    let stored = env.log.load_dossier(dossier).await.unwrap();
    assert_eq!(timeline.events.len(), 6);
    for (r, s) in timeline.events.iter().zip(&stored) {
        assert_eq!(
            (
                r.position,
                r.version,
                r.event_type.as_str(),
                r.event_hash.as_slice()
            ),
            (
                s.position as u64,
                s.version as u32,
                s.event_type.as_str(),
                s.event_hash.as_slice()
            )
        );
        assert_eq!(r.canonical_json, eventlog::canonical_bytes(s));
        assert!(r.event.is_some());
    }

    let history: Vec<_> = timeline
        .due_time_history
        .iter()
        .map(|c| {
            (
                Kind::try_from(c.kind).unwrap(),
                c.position,
                time(&c.due_at),
                c.paused,
            )
        })
        .collect();
    let p = |e: &StoredEvent| e.position as u64;
    assert_eq!(
        history,
        [
            (Kind::Received, p(&received), first_due, false),
            (Kind::SupplementRequested, p(&requested), first_due, true),
            (Kind::SupplementReceived, p(&supplemented), new_due, false),
            (Kind::ApologyIssued, p(&apology), new_due, false),
            (Kind::LateMarked, p(&late), new_due, false),
            (Kind::Resolved, p(&resolved), new_due, false),
        ]
    );
    let changes = &timeline.due_time_history;
    assert_eq!(
        changes[2].paused_minutes,
        supplemented.payload["paused"].as_u64().unwrap() as u32
    );
    assert!(changes[2].paused_minutes > 0);
    assert_eq!(
        time(&changes[3].new_appointment),
        new_due + chrono::Duration::days(7)
    );
    assert_eq!(
        changes[3].apology_on_time,
        apology.payload["on_time"].as_bool()
    );
    // The late event is dated at the due time that passed.
    assert_eq!(time(&changes[4].occurred_at), new_due);
    assert_eq!(changes[5].timeliness, pb::Timeliness::Late as i32);
    assert_eq!(time(&changes[5].recorded_at), resolved.recorded_at);
    assert_eq!(changes[5].event_id, resolved.event_id.to_string());
    assert_eq!(changes[5].version, 6);

    let state = timeline.state.expect("state");
    assert_eq!(state.version, 6);
    assert_eq!(state.phase, pb::DossierPhase::Resolved as i32);
    assert_eq!(state.portal_status, 9);
    assert_eq!(time(&state.due_at), new_due);
    assert!(!state.paused);
    assert!(state.late_marked);
    assert_eq!(
        time(&state.apology_appointment),
        new_due + chrono::Duration::days(7)
    );
    assert_eq!(state.outcome, pb::Outcome::Approved as i32);
    assert_eq!(state.timeliness, pb::Timeliness::Late as i32);
    assert_eq!(state.agency_code, DISTRICT);
    assert_eq!(state.current_agency_code, DISTRICT);
    assert_eq!(time(&state.received_at), local(2024, 4, 22, 9, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_resolution_withdraws_the_late_mark_in_the_timeline() {
    let mut env = Env::start().await;
    let dossier = "H40-TL-OFFLINE";
    let received = env
        .execute(
            dossier,
            local(2024, 4, 22, 9, 0),
            Action::Receive {
                profile: profile(Level::District, DISTRICT, "land"),
                statutory_time: calendar::StatutoryTime::Days(3),
                fee_required: false,
                components: vec![ComponentCode::parse("don-de-nghi").unwrap()],
                due_at: None,
                procedure: None,
                applicant: None,
                return_method: None,
            },
        )
        .await;
    let due = payload_time(&received, "due_at");
    let late = env
        .execute(dossier, due + chrono::Duration::hours(1), Action::MarkLate)
        .await;
    // The counter was offline: its resolution, a day before the due time, arrives now.
    let resolved_at = due - chrono::Duration::days(1);
    let resolved = env
        .execute(
            dossier,
            resolved_at,
            Action::Resolve {
                outcome: Outcome::Approved,
                deciding_agency: AgencyCode::parse(DISTRICT).unwrap(),
            },
        )
        .await;

    let timeline = env
        .client
        .get_timeline(authed(
            AUDITOR,
            pb::GetTimelineRequest {
                dossier_id: dossier.into(),
            },
        ))
        .await
        .expect("timeline")
        .into_inner();
    let types: Vec<_> = timeline
        .events
        .iter()
        .map(|e| e.event_type.as_str())
        .collect();
    assert_eq!(types, ["received", "late", "resolved", "late_withdrawn"]);
    let withdrawn = &timeline.events[3];
    assert_eq!(time(&withdrawn.occurred_at), resolved_at);
    assert_eq!(withdrawn.position, resolved.position as u64 + 1);
    let history: Vec<_> = timeline
        .due_time_history
        .iter()
        .map(|c| {
            (
                Kind::try_from(c.kind).unwrap(),
                time(&c.due_at),
                pb::Timeliness::try_from(c.timeliness).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (Kind::Received, due, pb::Timeliness::Unspecified),
            (Kind::LateMarked, due, pb::Timeliness::Unspecified),
            (Kind::Resolved, due, pb::Timeliness::Early),
            (Kind::LateWithdrawn, due, pb::Timeliness::Early),
        ]
    );
    assert_eq!(timeline.due_time_history[1].position, late.position as u64);
    let state = timeline.state.expect("state");
    assert!(!state.late_marked, "the mark is withdrawn");
    assert!(state.late_withdrawn);
    assert_eq!(state.timeliness, pb::Timeliness::Early as i32);
    assert_eq!(state.version, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_dossier_and_a_refused_one() {
    let mut env = Env::start().await;
    env.execute(
        "H40-TL-PAUSED",
        local(2024, 4, 22, 9, 0),
        Action::Receive {
            procedure: None,
            profile: profile(Level::District, DISTRICT, "land"),
            statutory_time: calendar::StatutoryTime::Days(3),
            fee_required: false,
            components: vec![ComponentCode::parse("don-de-nghi").unwrap()],
            due_at: None,
            applicant: None,
            return_method: None,
        },
    )
    .await;
    env.execute(
        "H40-TL-PAUSED",
        local(2024, 4, 23, 9, 0),
        Action::RequestSupplement {
            reason: text("Thiếu"),
        },
    )
    .await;
    let paused = env
        .client
        .get_timeline(authed(
            COUNTER,
            pb::GetTimelineRequest {
                dossier_id: "H40-TL-PAUSED".into(),
            },
        ))
        .await
        .expect("a counter token reads too")
        .into_inner();
    let state = paused.state.unwrap();
    assert_eq!(state.portal_status, 5);
    assert!(state.paused);
    assert_eq!(state.phase, pb::DossierPhase::Open as i32);
    assert_eq!(paused.due_time_history.len(), 2);

    env.execute(
        "H40-TL-REFUSED",
        local(2024, 4, 22, 9, 0),
        Action::RefuseAtIntake {
            profile: profile(Level::District, DISTRICT, "land"),
            reason: text("Không đủ thành phần"),
        },
    )
    .await;
    let refused = env
        .client
        .get_timeline(authed(
            AUDITOR,
            pb::GetTimelineRequest {
                dossier_id: "H40-TL-REFUSED".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(refused.due_time_history.is_empty());
    assert_eq!(refused.events.len(), 1);
    let state = refused.state.unwrap();
    assert_eq!(state.portal_status, 3);
    assert_eq!(state.phase, pb::DossierPhase::RefusedAtIntake as i32);
    assert!(state.due_at.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_dossier_ids() {
    let mut env = Env::start().await;
    let status = env
        .client
        .get_timeline(authed(
            AUDITOR,
            pb::GetTimelineRequest {
                dossier_id: "H40-NEVER".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "unknown_dossier"
    );

    for bad in ["", "has spaces", &"x".repeat(200)] {
        let status = env
            .client
            .get_timeline(authed(
                AUDITOR,
                pb::GetTimelineRequest {
                    dossier_id: bad.to_owned(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert_eq!(
            status.get_details_bad_request().unwrap().field_violations[0].field,
            "dossier_id"
        );
    }
}
