//! From the counter's gRPC call to the JetStream subject, across a NATS outage.

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream::message::StreamMessage;
use eventlog::EventLog;
use testkit::{NatsServer, TestDb};
use tests::{
    COUNTER_DISTRICT, RunningIntake, RunningRelay, all_messages, authed, local, receive_request,
};

fn header(message: &StreamMessage, name: &str) -> String {
    message
        .headers
        .get_last(name)
        .unwrap_or_else(|| panic!("message {} lacks {name}", message.sequence))
        .as_str()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn received_dossiers_reach_jetstream_exactly_once_across_a_nats_outage() {
    let db = TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(log.clone()).await;
    let mut nats = NatsServer::start().await;
    let suffix = testkit::unique_suffix();
    let stream = format!("E2E_{suffix}");
    let prefix = format!("e2e{suffix}.dossier");
    let mut relay = RunningRelay::start(log.clone(), &nats.url(), &stream, &prefix).await;
    let mut client = intake.client().await;

    // A dossier received through gRPC…
    let first = receive_request("HS-E2E-0001", local(2024, 4, 22, 9, 0));
    let answer = client
        .receive_dossier(authed(COUNTER_DISTRICT, first.clone()))
        .await
        .expect("receive")
        .into_inner();
    let recorded = answer.event.expect("recorded event");

    // …is in PostgreSQL…
    let stored = log.load_dossier("HS-E2E-0001").await.expect("load");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event_id.to_string(), first.event_id);
    assert_eq!(stored[0].position as u64, recorded.position);

    // …and on its subject in JetStream, with the event id as Nats-Msg-Id.
    relay.wait_published(1, Duration::from_secs(30)).await;
    let messages = all_messages(&nats.url(), &stream).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(
        messages[0].subject.as_str(),
        format!("{prefix}.district.000_00_12_H40.land.received")
    );
    assert_eq!(header(&messages[0], "Nats-Msg-Id"), first.event_id);
    assert_eq!(
        messages[0].payload.as_ref(),
        eventlog::canonical_bytes(&stored[0]).as_slice()
    );

    // NATS goes down; the counters keep working.
    nats.stop().await;
    let mut during_outage = Vec::new();
    for i in 2..=11 {
        let request = receive_request(&format!("HS-E2E-{i:04}"), local(2024, 4, 22, 9, i));
        client
            .receive_dossier(authed(COUNTER_DISTRICT, request.clone()))
            .await
            .expect("intake accepts while NATS is down");
        during_outage.push(request.event_id);
    }
    assert_eq!(log.head().await.expect("head"), 11);

    // NATS comes back: publication catches up by itself.
    nats.restart().await;
    relay.wait_published(11, Duration::from_secs(60)).await;

    let messages = all_messages(&nats.url(), &stream).await;
    let events = log.read_after(0, 100).await.expect("read the log");
    let positions: Vec<i64> = messages
        .iter()
        .map(|m| header(m, "Dossier-Position").parse().unwrap())
        .collect();
    assert_eq!(
        positions,
        (1..=11).collect::<Vec<i64>>(),
        "every event once, in log order"
    );
    let ids: Vec<String> = messages.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    let expected: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(ids, expected);
    assert_eq!(
        ids.iter().collect::<HashSet<_>>().len(),
        11,
        "no duplicate message ids"
    );
    for id in &during_outage {
        assert!(
            ids.contains(id),
            "event {id} received during the outage was published"
        );
    }

    relay.stop().await;
    intake.stop().await;
}
