//! Every event survives the log's (type, payload) split, and the type column is the serde tag.

use calendar::{StatutoryTime, Timeliness, WorkingDuration};
use domain::{
    ApologyDelivery, DossierEvent, FeeKind, NoticeUnit, Outcome, PaymentChannel, Rating,
    ReturnMethod, TransferMode,
};

use crate::support::*;

/// One of every variant. The match makes a new variant a compile error here until it is listed.
fn every_event() -> Vec<DossierEvent> {
    let events = vec![
        received_event(true),
        DossierEvent::ComponentsDigitized {
            digitized: vec![comp("GT01")],
            reused: vec![comp("GT02")],
        },
        DossierEvent::RefusedAtIntake {
            profile: profile(),
            reason: text("thiếu giấy tờ"),
        },
        DossierEvent::Transferred {
            from_agency: agency(HOME),
            to_agency: agency(OTHER),
            mode: TransferMode::Paper,
        },
        DossierEvent::SupplementRequested {
            closes_at: None,
            reason: text("map"),
        },
        DossierEvent::SupplementReceived {
            due_at: vn(2024, 3, 11, 9, 0),
            paused: WorkingDuration::from_minutes(490),
        },
        DossierEvent::Late { due_at: due() },
        DossierEvent::ApologyIssued {
            reason: text("site survey delayed"),
            new_appointment: vn(2024, 3, 12, 9, 0),
            on_time: true,
            original_due_at: Some(due()),
            signer: Some(text("Trần Thị B")),
            delivery: Some(ApologyDelivery::Sms),
            notice: Some(NoticeUnit::CalendarDay),
        },
        DossierEvent::FeeAssessed {
            amount_vnd: 150_000,
            kind: FeeKind::Tax,
        },
        DossierEvent::Paid {
            amount_vnd: 150_000,
            channel: PaymentChannel::ProvincialGateway,
            transaction_id: txn("PG-2024-000017"),
        },
        DossierEvent::Resolved {
            outcome: Outcome::Refused,
            deciding_agency: agency(OTHER),
            due_at: due(),
            timeliness: Timeliness::OnTime,
        },
        DossierEvent::Withdrawn {
            reason: text("applicant request"),
        },
        DossierEvent::Stopped {
            cause: None,
            reason: text("court dispute"),
        },
        DossierEvent::ResultDigitized {
            document_ref: text("QD-123/2024"),
            sha256: SHA.to_owned(),
        },
        DossierEvent::ResultReturned {
            method: ReturnMethod::Online,
        },
        DossierEvent::SatisfactionRated {
            rating: Rating::VerySatisfied,
        },
        DossierEvent::FinancialObligationRequested {
            reason: text("land use levy"),
            pauses_clock: true,
        },
        DossierEvent::FinancialObligationFulfilled {
            due_at: vn(2024, 3, 12, 9, 0),
            paused: WorkingDuration::from_minutes(960),
        },
        DossierEvent::LateWithdrawn {
            due_at: due(),
            timeliness: Timeliness::Early,
        },
    ];
    for event in &events {
        match event {
            DossierEvent::Received { .. }
            | DossierEvent::ComponentsDigitized { .. }
            | DossierEvent::RefusedAtIntake { .. }
            | DossierEvent::Transferred { .. }
            | DossierEvent::SupplementRequested { .. }
            | DossierEvent::SupplementReceived { .. }
            | DossierEvent::Late { .. }
            | DossierEvent::ApologyIssued { .. }
            | DossierEvent::FeeAssessed { .. }
            | DossierEvent::Paid { .. }
            | DossierEvent::Resolved { .. }
            | DossierEvent::Withdrawn { .. }
            | DossierEvent::Stopped { .. }
            | DossierEvent::ResultDigitized { .. }
            | DossierEvent::ResultReturned { .. }
            | DossierEvent::SatisfactionRated { .. }
            | DossierEvent::FinancialObligationRequested { .. }
            | DossierEvent::FinancialObligationFulfilled { .. }
            | DossierEvent::LateWithdrawn { .. } => {}
        }
    }
    events
}

#[test]
fn every_event_round_trips_through_the_log_parts() {
    let events = every_event();
    let types: std::collections::BTreeSet<_> =
        events.iter().map(DossierEvent::event_type).collect();
    assert_eq!(types.len(), events.len(), "one sample per variant");
    for event in events {
        let (event_type, payload) = event.into_parts();
        assert!(
            payload.get("type").is_none(),
            "{event_type}: the payload carries no type"
        );
        let back = DossierEvent::from_parts(event_type, &payload).expect("decodes");
        assert_eq!(back, event);
    }
}

#[test]
fn event_type_is_the_serde_tag() {
    for event in every_event() {
        let json = serde_json::to_value(&event).expect("serialises");
        assert_eq!(json["type"], event.event_type().as_str());
    }
}

#[test]
fn a_payload_of_the_wrong_type_does_not_decode() {
    let (_, payload) = DossierEvent::Late { due_at: due() }.into_parts();
    let error =
        DossierEvent::from_parts("paid", &payload).expect_err("a late payload is not a payment");
    assert_eq!(error.event_type, "paid");
    assert!(DossierEvent::from_parts("no_such_event", &payload).is_err());
}

#[test]
fn received_payload_keeps_the_statutory_time() {
    let event = DossierEvent::Received {
        procedure: None,
        profile: profile(),
        statutory_time: StatutoryTime::Hours(4),
        fee_required: false,
        components: components(),
        due_at: due(),
        applicant: None,
        return_method: None,
    };
    let (_, payload) = event.into_parts();
    assert_eq!(
        DossierEvent::from_parts("received", &payload).expect("decodes"),
        event
    );
}

#[test]
fn the_event_type_column_wins_over_a_type_key_in_the_payload() {
    for event in every_event() {
        let (event_type, mut payload) = event.into_parts();
        payload
            .as_object_mut()
            .expect("an object")
            .insert("type".to_owned(), serde_json::json!("no_such_event"));
        let back = DossierEvent::from_parts(event_type, &payload).expect("decodes");
        assert_eq!(back, event);
    }
}

#[test]
fn a_payload_that_is_not_an_object_does_not_decode() {
    for payload in [
        serde_json::json!(null),
        serde_json::json!([]),
        serde_json::json!("late"),
    ] {
        let error = DossierEvent::from_parts("late", &payload).expect_err("not an event");
        assert_eq!(error.event_type, "late");
    }
}

/// `from_parts_text` answers exactly as `from_parts` on the parsed text: the same event, or an
/// error with the same words.
fn decodes_alike(event_type: &str, text: &str) -> Option<DossierEvent> {
    let from_text = DossierEvent::from_parts_text(event_type, text);
    let value: serde_json::Value = serde_json::from_str(text).expect("the cases are JSON");
    let from_value = DossierEvent::from_parts(event_type, &value);
    match (from_text, from_value) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "{event_type} {text}");
            Some(a)
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "{event_type} {text}");
            None
        }
        (a, b) => panic!("{event_type} {text}: from text {a:?}, from a value {b:?}"),
    }
}

#[test]
fn a_payload_decodes_from_its_text_as_from_its_value() {
    for event in every_event() {
        let (event_type, payload) = event.into_parts();
        // As `serde_json` prints it, and as PostgreSQL prints `jsonb` (a space after `:`, `,`).
        let compact = payload.to_string();
        let spaced = compact.replace("\":", "\": ").replace(",\"", ", \"");
        for text in [compact.clone(), spaced, format!("  {compact} \n")] {
            assert_eq!(decodes_alike(event_type, &text).as_ref(), Some(&event));
        }
        // A `type` of the payload's own: the column wins, as from a value.
        let mut typed = payload.clone();
        typed
            .as_object_mut()
            .expect("an object")
            .insert("type".to_owned(), serde_json::json!("no_such_event"));
        for text in [
            typed.to_string(),
            compact.replacen('{', "{\"type\":\"late\",", 1),
        ] {
            assert_eq!(decodes_alike(event_type, &text).as_ref(), Some(&event));
        }
        // A key twice: a value keeps the last; the text must not decode otherwise.
        if let Some((key, value)) = payload.as_object().and_then(|m| m.iter().next()) {
            let doubled = compact.replacen('{', &format!("{{\"{key}\":{value},"), 1);
            decodes_alike(event_type, &doubled);
        }
        decodes_alike("no_such_event", &compact);
        decodes_alike("Received", &compact);
    }
    for (event_type, text) in [
        ("late", "null"),
        ("late", "[]"),
        ("late", "\"late\""),
        ("late", "{}"),
        ("late", "{ }"),
        ("late", "{\"due_at\": 5}"),
        (
            "late",
            "{\"due_at\": \"2025-01-02T03:04:05Z\", \"due_at\": 5}",
        ),
        (
            "late",
            "{\"due_at\": 5, \"due_at\": \"2025-01-02T03:04:05Z\"}",
        ),
        ("late", "{\"due_\\u0061t\": \"2025-01-02T03:04:05Z\"}"),
    ] {
        decodes_alike(event_type, text);
    }
}

#[test]
fn a_payload_text_that_is_not_json_does_not_decode() {
    for text in ["", "{", "{\"due_at\": }", "{} {}", "late"] {
        let error = DossierEvent::from_parts_text("late", text).expect_err("not JSON");
        assert_eq!(error.event_type, "late");
    }
}
