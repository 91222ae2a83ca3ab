//! `StreamEvents` without following: order, content and hashes, every filter, resuming, bounds
//! by position and by recorded time, paging across windows, the query plans, corrupt rows.

use api::v1 as pb;
use api::v1::event::Body;
use chrono::{DateTime, Duration, Utc};
use domain::{DossierEvent, Level};
use eventlog::StoredEvent;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic_types::StatusExt;

use crate::support::*;

/// `n` dossiers of four kinds, their events interleaved over four appends (each append carries
/// the next event of every dossier that has one), business times spread over two weeks:
/// - district agency, land: received, supplement requested, supplement received, resolved;
/// - province agency, land: received, late, resolved;
/// - commune agency, justice: received, withdrawn;
/// - district agency, justice: refused at intake.
async fn seed(env: &mut Env, prefix: &str, n: usize) -> Vec<StoredEvent> {
    let base = local(2024, 4, 1, 8, 0);
    let mut stored = Vec::new();
    for round in 0..4 {
        let mut batch = Vec::new();
        for i in 0..n {
            let t0 = base + Duration::hours(i as i64);
            let at = t0 + Duration::days(3 * round as i64);
            let due = t0 + Duration::days(5);
            let id = format!("{prefix}-{i:03}");
            let (routing, event) = match (i % 4, round) {
                (0, _) => {
                    let r = routing(Level::District, DISTRICT, "land");
                    let e = match round {
                        0 => received(profile(Level::District, DISTRICT, "land"), due),
                        1 => DossierEvent::SupplementRequested {
                            closes_at: None,
                            reason: text("thiếu bản vẽ"),
                        },
                        2 => supplement_received(due + Duration::days(4)),
                        _ => resolved(DISTRICT, due + Duration::days(4)),
                    };
                    (r, e)
                }
                (1, 0..=2) => {
                    let r = routing(Level::Province, PROVINCE, "land");
                    let e = match round {
                        0 => received(profile(Level::Province, PROVINCE, "land"), due),
                        1 => DossierEvent::Late { due_at: due },
                        _ => resolved(PROVINCE, due),
                    };
                    (r, e)
                }
                (2, 0..=1) => {
                    let r = routing(Level::Commune, COMMUNE, "tu-phap");
                    let e = match round {
                        0 => received(profile(Level::Commune, COMMUNE, "tu-phap"), due),
                        _ => DossierEvent::Withdrawn {
                            reason: text("người nộp rút"),
                        },
                    };
                    (r, e)
                }
                (3, 0) => (
                    routing(Level::District, DISTRICT, "tu-phap"),
                    DossierEvent::RefusedAtIntake {
                        profile: profile(Level::District, DISTRICT, "tu-phap"),
                        reason: text("không đủ thành phần"),
                    },
                ),
                _ => continue,
            };
            batch.push((id, routing, At(at, event)));
        }
        let batch = batch
            .iter()
            .map(|(id, r, e)| (id.as_str(), r.clone(), e.clone()))
            .collect();
        stored.extend(env.append(batch).await);
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_in_position_order_with_its_content_and_hashes() {
    let mut env = Env::start().await;
    // 200 dossiers: 500 events, more than one page.
    seed(&mut env, "ALL", 200).await;
    let all = env.all().await;
    assert_eq!(all.len(), 500);

    let replayed = env.stream(pb::StreamEventsRequest::default()).await;
    assert_eq!(positions(&replayed), (1..=500).collect::<Vec<u64>>());

    let mut chain = [0u8; 32];
    for (r, s) in replayed.iter().zip(&all) {
        assert_eq!(r.event_id, s.event_id.to_string());
        assert_eq!(r.dossier_id, s.dossier_id);
        assert_eq!(r.version as i32, s.version);
        assert_eq!(r.event_type, s.event_type);
        assert_eq!(time(&r.occurred_at), s.occurred_at);
        assert_eq!(time(&r.recorded_at), s.recorded_at);
        assert_eq!(
            pb::Level::try_from(r.level).unwrap().as_str_name(),
            format!("LEVEL_{}", s.routing.level.to_uppercase())
        );
        assert_eq!(r.agency_code, s.routing.agency);
        assert_eq!(r.sector_code, s.routing.sector);
        // The canonical bytes are the ones hashed: an auditor recomputes both hashes.
        assert_eq!(r.canonical_json, eventlog::canonical_bytes(s));
        let leaf: [u8; 32] = Sha256::new()
            .chain_update([0u8])
            .chain_update(&r.canonical_json)
            .finalize()
            .into();
        assert_eq!(r.event_hash, leaf);
        chain = Sha256::new()
            .chain_update(chain)
            .chain_update(leaf)
            .finalize()
            .into();
        assert_eq!(r.chain_hash, chain, "position {}", r.position);
        // The typed content, with the same envelope.
        let event = r.event.as_ref().expect("typed event");
        assert_eq!(
            (
                event.position,
                event.version,
                &event.event_id,
                &event.dossier_id
            ),
            (r.position, r.version, &r.event_id, &r.dossier_id)
        );
        assert_eq!(
            (event.occurred_at, event.recorded_at),
            (r.occurred_at, r.recorded_at)
        );
        assert_eq!(
            svc::convert::body_type(event.body.as_ref().unwrap()).as_str(),
            r.event_type
        );
        let payload: serde_json::Value = serde_json::from_slice(&r.canonical_json).unwrap();
        assert_eq!(payload["payload"], s.payload);
    }
    // The typed content carries the payload's values.
    let received = replayed
        .iter()
        .find(|r| r.event_type == "received")
        .unwrap();
    let Some(Body::Received(body)) = &received.event.as_ref().unwrap().body else {
        panic!("received body");
    };
    let profile = body.profile.as_ref().unwrap();
    assert_eq!(profile.agency_code, received.agency_code);
    assert_eq!(profile.sector_code, "land");
    assert_eq!(body.components, ["don-de-nghi"]);
    let stored = &all[received.position as usize - 1];
    assert_eq!(
        Some(ts(stored.payload["due_at"]
            .as_str()
            .unwrap()
            .parse::<DateTime<Utc>>()
            .unwrap())),
        body.due_at
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_filter_selects_exactly_the_matching_events() {
    let mut env = Env::start().await;
    seed(&mut env, "F", 40).await;
    let all = env.all().await;
    let day = |d| local(2024, 4, d, 0, 0);

    type Check = Box<dyn Fn(&StoredEvent) -> bool>;
    let cases: Vec<(&str, pb::StreamEventsRequest, Check)> = vec![
        (
            "dossier",
            pb::StreamEventsRequest {
                dossier_id: "F-004".into(),
                ..Default::default()
            },
            Box::new(|e| e.dossier_id == "F-004"),
        ),
        (
            "agency",
            pb::StreamEventsRequest {
                agency_code: PROVINCE.into(),
                ..Default::default()
            },
            Box::new(|e| e.routing.agency == PROVINCE),
        ),
        (
            "level",
            pb::StreamEventsRequest {
                level: pb::Level::District as i32,
                ..Default::default()
            },
            Box::new(|e| e.routing.level == "district"),
        ),
        (
            "sector",
            pb::StreamEventsRequest {
                sector_code: "tu-phap".into(),
                ..Default::default()
            },
            Box::new(|e| e.routing.sector == "tu-phap"),
        ),
        (
            "event types",
            pb::StreamEventsRequest {
                event_types: vec!["late".into(), "withdrawn".into()],
                ..Default::default()
            },
            Box::new(|e| e.event_type == "late" || e.event_type == "withdrawn"),
        ),
        (
            "business time range",
            pb::StreamEventsRequest {
                occurred_from: Some(ts(day(4))),
                occurred_to: Some(ts(day(8))),
                ..Default::default()
            },
            Box::new(move |e| e.occurred_at >= day(4) && e.occurred_at < day(8)),
        ),
        (
            "business time from",
            pb::StreamEventsRequest {
                occurred_from: Some(ts(day(9))),
                ..Default::default()
            },
            Box::new(move |e| e.occurred_at >= day(9)),
        ),
        (
            "everything at once",
            pb::StreamEventsRequest {
                agency_code: DISTRICT.into(),
                level: pb::Level::District as i32,
                sector_code: "land".into(),
                event_types: vec!["resolved".into(), "supplement_received".into()],
                occurred_to: Some(ts(day(9))),
                ..Default::default()
            },
            Box::new(move |e| {
                e.routing.agency == DISTRICT
                    && e.routing.sector == "land"
                    && (e.event_type == "resolved" || e.event_type == "supplement_received")
                    && e.occurred_at < day(9)
            }),
        ),
        (
            "a dossier and a type",
            pb::StreamEventsRequest {
                dossier_id: "F-001".into(),
                event_types: vec!["late".into()],
                ..Default::default()
            },
            Box::new(|e| e.dossier_id == "F-001" && e.event_type == "late"),
        ),
        (
            "a dossier and another agency",
            pb::StreamEventsRequest {
                dossier_id: "F-001".into(),
                agency_code: DISTRICT.into(),
                ..Default::default()
            },
            Box::new(|_| false),
        ),
        (
            "an unknown dossier",
            pb::StreamEventsRequest {
                dossier_id: "NO-SUCH".into(),
                ..Default::default()
            },
            Box::new(|_| false),
        ),
    ];
    for (name, request, check) in cases {
        let expected: Vec<u64> = all
            .iter()
            .filter(|e| check(e))
            .map(|e| e.position as u64)
            .collect();
        let got = positions(&env.stream(request).await);
        assert_eq!(got, expected, "{name}");
        if !name.contains("another") && !name.contains("unknown") {
            assert!(
                !got.is_empty() && got.len() < all.len(),
                "{name}: a real filter"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_after_the_last_position_seen_returns_exactly_the_rest() {
    let mut env = Env::start().await;
    seed(&mut env, "RES", 120).await;
    let filters = [
        pb::StreamEventsRequest::default(),
        pb::StreamEventsRequest {
            agency_code: DISTRICT.into(),
            event_types: vec!["received".into(), "resolved".into()],
            ..Default::default()
        },
        pb::StreamEventsRequest {
            dossier_id: "RES-000".into(),
            ..Default::default()
        },
    ];
    for request in filters {
        let full = positions(&env.stream(request.clone()).await);
        assert!(full.len() >= 4);
        for cut in [1, full.len() / 2, full.len() - 1, full.len()] {
            // Read `cut` events, then hang up.
            let mut stream = env.open(request.clone()).await;
            let mut seen = Vec::new();
            for _ in 0..cut {
                seen.push(next(&mut stream).await.position);
            }
            drop(stream);
            let rest = env
                .stream(pb::StreamEventsRequest {
                    after_position: *seen.last().unwrap(),
                    ..request.clone()
                })
                .await;
            seen.extend(positions(&rest));
            assert_eq!(seen, full, "cut after {cut} of {request:?}");
        }
    }

    // `to_position` is included; a finished stream resumed is empty.
    let full = positions(&env.stream(pb::StreamEventsRequest::default()).await);
    let to = full[99];
    let bounded = env
        .stream(pb::StreamEventsRequest {
            after_position: 10,
            to_position: Some(to),
            ..Default::default()
        })
        .await;
    assert_eq!(positions(&bounded), (11..=to).collect::<Vec<_>>());
    let finished = env
        .stream(pb::StreamEventsRequest {
            after_position: to,
            to_position: Some(to),
            ..Default::default()
        })
        .await;
    assert!(finished.is_empty());
    // Beyond the head: the stream ends at the head.
    let beyond = env
        .stream(pb::StreamEventsRequest {
            after_position: full.len() as u64 - 2,
            to_position: Some(full.len() as u64 + 1000),
            ..Default::default()
        })
        .await;
    assert_eq!(beyond.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_and_before_a_recorded_time() {
    let mut env = Env::start().await;
    let first = seed(&mut env, "EARLY", 8).await;
    let second = seed(&mut env, "LATE", 8).await;
    let third = seed(&mut env, "LATER", 8).await;
    let from = second[0].recorded_at;
    let to = third[0].recorded_at;
    assert!(first.last().unwrap().recorded_at < from && from < to);
    let all = env.all().await;
    let expect = |f: &dyn Fn(&StoredEvent) -> bool| -> Vec<u64> {
        all.iter()
            .filter(|e| f(e))
            .map(|e| e.position as u64)
            .collect()
    };

    let since = env
        .stream(pb::StreamEventsRequest {
            recorded_from: Some(ts(from)),
            ..Default::default()
        })
        .await;
    assert_eq!(positions(&since), expect(&|e| e.recorded_at >= from));
    assert_eq!(since[0].position, second[0].position as u64);

    // The log as it stood before `to`, from `from`: exactly the second seeding.
    let window = env
        .stream(pb::StreamEventsRequest {
            recorded_from: Some(ts(from)),
            recorded_to: Some(ts(to)),
            ..Default::default()
        })
        .await;
    let expected: Vec<u64> = second.iter().map(|e| e.position as u64).collect();
    assert_eq!(positions(&window), expected);

    let before = env
        .stream(pb::StreamEventsRequest {
            recorded_to: Some(ts(from)),
            ..Default::default()
        })
        .await;
    assert_eq!(positions(&before), expect(&|e| e.recorded_at < from));

    // With a position too: both bounds hold; with a filter too.
    let after = second[5].position as u64;
    let both = env
        .stream(pb::StreamEventsRequest {
            after_position: after,
            recorded_from: Some(ts(from)),
            event_types: vec!["received".into()],
            ..Default::default()
        })
        .await;
    assert_eq!(
        positions(&both),
        expect(&|e| e.position as u64 > after
            && e.recorded_at >= from
            && e.event_type == "received")
    );
    // An earlier recorded time than the whole log, and a later one.
    let everything = env
        .stream(pb::StreamEventsRequest {
            recorded_from: Some(ts(first[0].recorded_at - Duration::days(1))),
            ..Default::default()
        })
        .await;
    assert_eq!(everything.len(), all.len());
    let nothing = env
        .stream(pb::StreamEventsRequest {
            recorded_from: Some(ts(
                third.last().unwrap().recorded_at + Duration::microseconds(1)
            )),
            ..Default::default()
        })
        .await;
    assert!(nothing.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_selective_filter_walks_windows_without_matches_and_reads_through_indexes() {
    let mut env = Env::start().await;
    let noise = |n: usize, tag: &str| -> Vec<(String, DossierEvent)> {
        (0..n)
            .map(|i| {
                (
                    format!("NOISE-{tag}-{i:05}"),
                    received(
                        profile(Level::District, DISTRICT, "land"),
                        local(2024, 5, 2, 8, 0),
                    ),
                )
            })
            .collect()
    };
    let province = routing(Level::Province, PROVINCE, "land");
    let district = routing(Level::District, DISTRICT, "land");
    let at = local(2024, 5, 1, 8, 0);
    // 12,000 noise events, a province dossier, 12,000 more, a province event: both matches
    // lie more than a window (10,000 positions) past the previous one.
    let mut matching = Vec::new();
    for (tag, with_match) in [("A", true), ("B", true)] {
        let events = noise(12_000, tag);
        for chunk in events.chunks(4_000) {
            let batch = chunk
                .iter()
                .map(|(id, e)| (id.as_str(), district.clone(), At(at, e.clone())))
                .collect();
            env.append(batch).await;
        }
        if with_match {
            let event = if tag == "A" {
                received(
                    profile(Level::Province, PROVINCE, "land"),
                    local(2024, 5, 8, 8, 0),
                )
            } else {
                DossierEvent::Late {
                    due_at: local(2024, 5, 8, 8, 0),
                }
            };
            let stored = env
                .append(vec![("PROV-1", province.clone(), At(at, event))])
                .await;
            matching.push(stored[0].position as u64);
        }
    }
    assert_eq!(matching, [12_001, 24_002]);
    let got = env
        .stream(pb::StreamEventsRequest {
            agency_code: PROVINCE.into(),
            ..Default::default()
        })
        .await;
    assert_eq!(positions(&got), matching);
    let got = env
        .stream(pb::StreamEventsRequest {
            after_position: 12_001,
            level: pb::Level::Province as i32,
            ..Default::default()
        })
        .await;
    assert_eq!(positions(&got), [24_002]);

    // The pages' plans use the primary key (a window of positions) and the dossier index.
    sqlx::query("ANALYZE events")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let plan = |sql: &'static str, dossier: Option<&'static str>| {
        let pool = env.db.pool.clone();
        async move {
            let explain = format!("EXPLAIN (FORMAT TEXT) {sql}");
            let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(explain))
                .bind(5_000i64)
                .bind(15_000i64)
                .bind(Some(PROVINCE))
                .bind(None::<String>)
                .bind(None::<String>)
                .bind(Vec::<String>::new())
                .bind(None::<DateTime<Utc>>)
                .bind(None::<DateTime<Utc>>)
                .bind(None::<DateTime<Utc>>)
                .bind(None::<DateTime<Utc>>)
                .bind(replay::query::PAGE);
            if let Some(d) = dossier {
                query = query.bind(d);
            }
            query.fetch_all(&pool).await.unwrap().join("\n")
        }
    };
    let by_position = plan(replay::query::PAGE_BY_POSITION, None).await;
    assert!(by_position.contains("events_pkey"), "{by_position}");
    assert!(!by_position.contains("Seq Scan"), "{by_position}");
    let by_dossier = plan(replay::query::PAGE_BY_DOSSIER, Some("PROV-1")).await;
    assert!(
        by_dossier.contains("events_dossier_version_key"),
        "{by_dossier}"
    );
    assert!(!by_dossier.contains("Seq Scan"), "{by_dossier}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_row_ends_the_stream_with_data_loss_after_the_events_before_it() {
    let mut env = Env::start().await;
    let total = seed(&mut env, "CORRUPT", 4).await.len();
    // As the database superuser, behind the log's back: a hash that is not 32 bytes.
    let mut conn = env.db.connect().await;
    for sql in [
        "ALTER TABLE events DROP CONSTRAINT events_event_hash_check",
        "SET session_replication_role = replica",
        "UPDATE events SET event_hash = '\\x00'::bytea WHERE position = 3",
    ] {
        sqlx::query(sql).execute(&mut conn).await.expect(sql);
    }
    let (events, end) = env
        .stream_until_end(AUDITOR, pb::StreamEventsRequest::default())
        .await;
    assert_eq!(positions(&events), [1, 2]);
    let status = end.expect("the stream fails");
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert_eq!(
        status.get_details_error_info().unwrap().reason,
        "corrupt_event"
    );
    assert!(status.message().contains("position 3"), "{status:?}");

    // The rows after it are still readable by resuming after it.
    let rest = env
        .stream(pb::StreamEventsRequest {
            after_position: 3,
            ..Default::default()
        })
        .await;
    assert_eq!(rest.len(), total - 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_log_streams_nothing() {
    let mut env = Env::start().await;
    assert!(
        env.stream(pb::StreamEventsRequest::default())
            .await
            .is_empty()
    );
    let mut stream = env
        .open(pb::StreamEventsRequest {
            recorded_from: Some(ts(local(2024, 1, 1, 0, 0))),
            ..Default::default()
        })
        .await;
    assert!(stream.next().await.is_none(), "ends with OK");
}
