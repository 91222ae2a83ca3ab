//! `StreamEvents` with `follow`: events committed after the call started arrive, in order,
//! filtered; `to_position` ends a following stream; a stopping server ends it with UNAVAILABLE.

use api::v1 as pb;
use domain::{DossierEvent, Level};
use futures::StreamExt;
use tonic::Code;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_delivers_events_appended_after_the_call_started() {
    let mut env = Env::start().await;
    let district = routing(Level::District, DISTRICT, "land");
    let at = local(2024, 4, 22, 9, 0);
    let due = local(2024, 4, 25, 9, 0);
    let first = env
        .append(vec![
            (
                "FOL-1",
                district.clone(),
                At(
                    at,
                    received(profile(Level::District, DISTRICT, "land"), due),
                ),
            ),
            (
                "FOL-2",
                district.clone(),
                At(
                    at,
                    received(profile(Level::District, DISTRICT, "land"), due),
                ),
            ),
        ])
        .await;
    let mut stream = env
        .open(pb::StreamEventsRequest {
            follow: true,
            ..Default::default()
        })
        .await;
    assert_eq!(next(&mut stream).await.position, 1);
    assert_eq!(next(&mut stream).await.position, 2);

    // Nothing more yet: the stream waits.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), stream.next())
            .await
            .is_err(),
        "no event before one is appended"
    );
    for (i, dossier) in ["FOL-1", "FOL-2", "FOL-1"].into_iter().enumerate() {
        let stored = env
            .append(vec![(
                dossier,
                district.clone(),
                At(at, DossierEvent::Late { due_at: due }),
            )])
            .await;
        let event = next(&mut stream).await;
        assert_eq!(event.position, stored[0].position as u64);
        assert_eq!(event.position, 3 + i as u64);
        assert_eq!(event.event_hash, stored[0].event_hash);
    }
    assert_eq!(first.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_following_stream_ends_at_to_position() {
    let mut env = Env::start().await;
    let district = routing(Level::District, DISTRICT, "land");
    let province = routing(Level::Province, PROVINCE, "land");
    let at = local(2024, 4, 22, 9, 0);
    let due = local(2024, 4, 25, 9, 0);
    env.append(vec![(
        "OLD",
        province.clone(),
        At(
            at,
            received(profile(Level::Province, PROVINCE, "land"), due),
        ),
    )])
    .await;
    // Province events only, from after position 1 through position 6, following.
    let mut stream = env
        .open(pb::StreamEventsRequest {
            after_position: 1,
            to_position: Some(6),
            agency_code: PROVINCE.into(),
            follow: true,
            ..Default::default()
        })
        .await;
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(item) = stream.next().await {
            got.push(item.expect("no error").position);
        }
        got
    });
    // Positions 2..=8: district, province, district, province, province(6), province(7), …
    for (dossier, r) in [
        ("D-1", &district),
        ("P-1", &province),
        ("D-2", &district),
        ("P-2", &province),
        ("P-3", &province),
        ("P-4", &province),
        ("P-5", &province),
    ] {
        let event = if r.agency == PROVINCE {
            received(profile(Level::Province, PROVINCE, "land"), due)
        } else {
            received(profile(Level::District, DISTRICT, "land"), due)
        };
        env.append(vec![(dossier, r.clone(), At(at, event))]).await;
    }
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), reader)
        .await
        .expect("the stream ends once position 6 is passed")
        .unwrap();
    assert_eq!(got, [3, 5, 6]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_ends_open_streams_with_unavailable() {
    let mut env = Env::start().await;
    let district = routing(Level::District, DISTRICT, "land");
    let at = local(2024, 4, 22, 9, 0);
    env.append(vec![(
        "STOP-1",
        district,
        At(at, received(profile(Level::District, DISTRICT, "land"), at)),
    )])
    .await;
    let mut stream = env
        .open(pb::StreamEventsRequest {
            follow: true,
            ..Default::default()
        })
        .await;
    assert_eq!(next(&mut stream).await.position, 1);
    // Stops within 10 s, well before the 20 s drain: the open stream does not hold it.
    env.stop().await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends")
        .expect("with a status, not a clean end")
        .expect_err("an error");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("after_position"), "{status:?}");
}
