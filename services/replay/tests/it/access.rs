//! Who may read, and what a malformed request gets back, through gRPC.

use api::v1 as pb;
use tonic::{Code, Request};
use tonic_types::StatusExt;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_valid_token_reads_and_no_other() {
    let mut env = Env::start().await;
    let at = local(2024, 4, 22, 9, 0);
    env.append(vec![(
        "ACC-1",
        routing(domain::Level::District, DISTRICT, "land"),
        At(
            at,
            received(profile(domain::Level::District, DISTRICT, "land"), at),
        ),
    )])
    .await;

    for token in [AUDITOR, COUNTER] {
        let (events, end) = env
            .stream_until_end(token, pb::StreamEventsRequest::default())
            .await;
        assert!(end.is_none(), "{token}: {end:?}");
        assert_eq!(events.len(), 1, "{token}");
    }

    let timeline = || pb::GetTimelineRequest {
        dossier_id: "ACC-1".into(),
    };
    for token in ["forged", ""] {
        let (events, end) = env
            .stream_until_end(token, pb::StreamEventsRequest::default())
            .await;
        assert!(events.is_empty());
        assert_eq!(end.unwrap().code(), Code::Unauthenticated, "{token:?}");
        let status = env
            .client
            .get_timeline(authed(token, timeline()))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{token:?}");
    }
    let status = env
        .client
        .stream_events(Request::new(pb::StreamEventsRequest::default()))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = env
        .client
        .get_timeline(Request::new(timeline()))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_request_is_refused_naming_the_field() {
    let mut env = Env::start().await;
    let cases = [
        (
            pb::StreamEventsRequest {
                after_position: 9,
                to_position: Some(3),
                ..Default::default()
            },
            "to_position",
        ),
        (
            pb::StreamEventsRequest {
                recorded_to: Some(ts(local(2024, 4, 1, 0, 0))),
                follow: true,
                ..Default::default()
            },
            "recorded_to",
        ),
        (
            pb::StreamEventsRequest {
                event_types: vec!["resolved".into(), "deleted".into()],
                ..Default::default()
            },
            "event_types[1]",
        ),
        (
            pb::StreamEventsRequest {
                occurred_from: Some(ts(local(2024, 4, 2, 0, 0))),
                occurred_to: Some(ts(local(2024, 4, 1, 0, 0))),
                ..Default::default()
            },
            "occurred_to",
        ),
        (
            pb::StreamEventsRequest {
                agency_code: "not_an_agency".into(),
                ..Default::default()
            },
            "agency_code",
        ),
    ];
    for (request, field) in cases {
        let (events, end) = env.stream_until_end(AUDITOR, request.clone()).await;
        assert!(events.is_empty());
        let status = end.expect("refused");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{request:?}: {status:?}"
        );
        let violations = status.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field, "{request:?}");
    }
}
