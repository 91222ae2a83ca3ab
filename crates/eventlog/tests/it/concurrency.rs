//! Many writers at once: positions stay exactly 1..N, versions 1..k, the chain valid.

use std::collections::{BTreeMap, HashMap};

use eventlog::{AppendError, ExpectedVersion, StoredEvent};

use crate::support::*;

const WRITERS: usize = 16;
const APPENDS_PER_WRITER: usize = 50;
const DOSSIERS: u8 = 24;

fn random_below(n: u8) -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0] % n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_writers() {
    let (_db, log) = log().await;

    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine: Vec<StoredEvent> = Vec::new();
            let mut conflicts = 0usize;
            for _ in 0..APPENDS_PER_WRITER {
                let id = format!("D-{}", random_below(DOSSIERS));
                let count = 1 + usize::from(random_below(3));
                loop {
                    let current = log.load_dossier(&id).await.expect("load").len() as u32;
                    let expected = if current == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(current)
                    };
                    match log
                        .append(vec![dossier(&id, expected, events(count))])
                        .await
                    {
                        Ok(done) => {
                            assert_eq!(done.duplicate, vec![false]);
                            let versions: Vec<i32> =
                                done.events.iter().map(|e| e.version).collect();
                            let want: Vec<i32> =
                                (current as i32 + 1..=current as i32 + count as i32).collect();
                            assert_eq!(versions, want);
                            mine.extend(done.events);
                            break;
                        }
                        Err(AppendError::Conflict { .. }) => conflicts += 1,
                        Err(other) => panic!("unexpected error: {other:?}"),
                    }
                }
            }
            (mine, conflicts)
        }));
    }
    let mut returned: HashMap<i64, StoredEvent> = HashMap::new();
    let mut conflicts = 0;
    for task in tasks {
        let (mine, c) = task.await.expect("writer");
        conflicts += c;
        for event in mine {
            assert!(
                returned.insert(event.position, event).is_none(),
                "position given twice"
            );
        }
    }

    let all = read_all(&log).await;
    assert_eq!(
        all.len(),
        returned.len(),
        "every append stored once, nothing else"
    );
    assert_valid_log(&all); // positions exactly 1..=N, chain valid
    for event in &all {
        assert_eq!(
            Some(event),
            returned.get(&event.position),
            "stored = returned"
        );
    }
    let mut versions: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for event in &all {
        versions
            .entry(&event.dossier_id)
            .or_default()
            .push(event.version);
    }
    for (dossier_id, v) in versions {
        assert_eq!(
            v,
            (1..=v.len() as i32).collect::<Vec<_>>(),
            "versions of {dossier_id}"
        );
    }
    assert_eq!(log.head().await.unwrap(), all.len() as i64);
    eprintln!(
        "{} appends, {} events, {conflicts} conflicts retried",
        WRITERS * APPENDS_PER_WRITER,
        all.len()
    );
}
