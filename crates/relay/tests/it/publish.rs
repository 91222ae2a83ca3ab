//! Every event once, in position order, with the right subject, headers and payload.

use std::collections::HashMap;

use testkit::TestNats;

use crate::support::{self, Running, append, assert_stream_is_log, header, routing};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_every_event_once_in_order_with_subject_and_headers() {
    let (_db, log) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    let p = &nats.prefix;

    // A backlog before the relay starts: three dossiers of three levels, interleaved.
    let land = routing("district", "000.00.12.H40", "land");
    let business = routing("province", "000.00.01.H40", "business-registration");
    let justice = routing("commune", "000.21.30.H40", "tư pháp");
    let a = append(&log, "D-A", &land, 0, &["received"]).await;
    let b = append(
        &log,
        "D-B",
        &business,
        0,
        &["received", "components_digitized"],
    )
    .await;
    let a = append(&log, "D-A", &land, a, &["supplement_requested"]).await;
    let c = append(&log, "D-C", &justice, 0, &["received"]).await;

    let mut relay = Running::start(&log, js.clone(), cfg.clone());
    relay.published(log.head().await.unwrap()).await;
    assert_stream_is_log(&js, &cfg, &log).await;

    let stream = js.get_stream(&nats.stream).await.unwrap();
    let last = stream
        .get_last_raw_message_by_subject(&format!(
            "{p}.district.000_00_12_H40.land.supplement_requested"
        ))
        .await
        .expect("the agency's dots become underscores in the subject");
    assert_eq!(header(&last, "Dossier-Id"), "D-A");
    let last = stream
        .get_last_raw_message_by_subject(&format!("{p}.commune.000_21_30_H40.t--ph-p.received"))
        .await
        .expect("characters outside [A-Za-z0-9_-] become '-'");
    assert_eq!(header(&last, "Dossier-Id"), "D-C");

    // Appends while the relay runs wake it up; a backlog larger than a batch takes several.
    let a = append(&log, "D-A", &land, a, &["supplement_received", "resolved"]).await;
    append(&log, "D-B", &business, b, &["fee_assessed", "paid"]).await;
    append(&log, "D-C", &justice, c, &["resolved"]).await;
    let head = support::append_dossiers(&log, "bulk", 20, 4).await;
    assert!(head > 3 * cfg.max_batch as i64);
    relay.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;
    assert_eq!(a, 4);

    // Consumers filter with wildcards on level, agency, sector and event type.
    let resolved = stream
        .get_last_raw_message_by_subject(&format!("{p}.*.*.*.resolved"))
        .await
        .unwrap();
    assert_eq!(header(&resolved, "Dossier-Id"), "D-C");
    let land_district = stream
        .get_last_raw_message_by_subject(&format!("{p}.district.*.land.*"))
        .await
        .unwrap();
    assert!(header(&land_district, "Dossier-Id").starts_with("bulk-"));
    let province = stream
        .get_last_raw_message_by_subject(&format!("{p}.province.>"))
        .await
        .unwrap();
    assert_eq!(header(&province, "Dossier-Event-Type"), "paid");

    relay.stop().await.expect("stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keeps_each_dossiers_order_under_concurrent_appends() {
    let (_db, log) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    let mut relay = Running::start(&log, js.clone(), cfg.clone());

    // Four writers, each appending to its own dossiers in small steps, while the relay runs.
    let mut writers = Vec::new();
    for w in 0..4 {
        let log = log.clone();
        writers.push(tokio::spawn(async move {
            let routing = routing("district", &format!("000.00.{w}.H40"), "land");
            let mut versions = [0u32; 3];
            for step in 0..6 {
                for (d, version) in versions.iter_mut().enumerate() {
                    let types: &[&str] = if step % 2 == 0 {
                        &["processing"]
                    } else {
                        &["processing", "transferred"]
                    };
                    *version = append(&log, &format!("W{w}-{d}"), &routing, *version, types).await;
                }
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let head = log.head().await.unwrap();
    assert_eq!(head, 4 * 3 * 9);
    relay.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;

    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for message in support::stream_messages(&js, &nats.stream).await {
        seen.entry(header(&message, "Dossier-Id").to_owned())
            .or_default()
            .push(header(&message, "Dossier-Version").parse().unwrap());
    }
    assert_eq!(seen.len(), 12);
    for (dossier, versions) in seen {
        assert_eq!(
            versions,
            (1..=9).collect::<Vec<i64>>(),
            "order of {dossier}"
        );
    }
    relay.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_restarted_midway_does_not_duplicate() {
    let (_db, log) = support::log().await;
    let nats = TestNats::new().await;
    let js = nats.jetstream();
    let cfg = support::config(&nats.stream, &nats.prefix);
    let head = support::append_dossiers(&log, "r", 100, 3).await;
    assert_eq!(head, 300);

    // Stop the first relay somewhere in the backlog (it publishes 25 at a time).
    let mut first = Running::start(&log, js.clone(), cfg.clone());
    first.published(50).await;
    first.stop().await.expect("stops cleanly");
    let stopped_at = relay::stream_position(&js, &cfg).await.unwrap();
    assert!(stopped_at.position >= 50);
    assert_eq!(stopped_at.last_sequence, stopped_at.position as u64);

    let head = support::append_dossiers(&log, "s", 10, 2).await;
    let mut second = Running::start(&log, js.clone(), cfg.clone());
    second.published(head).await;
    assert_stream_is_log(&js, &cfg, &log).await;
    second.stop().await.unwrap();

    // A third start with nothing new publishes nothing.
    let mut third = Running::start(&log, js.clone(), cfg.clone());
    third.published(head).await;
    third.stop().await.unwrap();
    assert_stream_is_log(&js, &cfg, &log).await;
}
