//! Group commit: calls that arrive together share one transaction, and each keeps its own answer.
//!
//! A group is formed deterministically: another connection holds the head row, every slot of
//! the handle's committer is taken by a "plug" call blocked at the sequencer (checked through
//! `pg_locks`), and the calls under test are queued one after another (checked through the
//! committer's queue count). Releasing the head row lets the plugs commit; the committer then
//! takes every queued call as one group.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use eventlog::group::GROUPS_IN_FLIGHT;
use eventlog::{
    AppendError, Appended, DossierAppend, DossierHead, EventLog, ExpectedVersion, StoredEvent,
};
use futures::StreamExt;
use sqlx::PgConnection;
use testkit::TestDb;
use tokio::task::JoinHandle;

use crate::support::*;

type Call = JoinHandle<Result<Appended, AppendError>>;

fn spawn_append(log: &EventLog, call: Vec<DossierAppend>) -> Call {
    let log = log.clone();
    tokio::spawn(async move { log.append(call).await })
}

/// The head row, held by a connection of the test.
async fn hold_head(db: &TestDb) -> PgConnection {
    let mut holder = db.connect().await;
    sqlx::query("BEGIN").execute(&mut holder).await.unwrap();
    sqlx::query("UPDATE log_head SET position = position")
        .execute(&mut holder)
        .await
        .unwrap();
    holder
}

/// Holds the head row and fills every slot of `log`'s committer with a one-event call blocked
/// at the sequencer: from now on, calls to `log` queue.
async fn plug(db: &TestDb, log: &EventLog) -> (PgConnection, Vec<Call>) {
    let holder = hold_head(db).await;
    let already = waiting_at_sequencer(log).await;
    let mut plugs = Vec::new();
    for i in 0..GROUPS_IN_FLIGHT {
        let id = format!("plug-{}", uuid::Uuid::new_v4());
        plugs.push(spawn_append(
            log,
            vec![dossier(&id, ExpectedVersion::NoStream, events(1))],
        ));
        wait_for_blocked_writers(log, already + i as i64 + 1).await;
    }
    (holder, plugs)
}

/// Queues `calls` on `log` in this order, each one queued before the next is sent.
async fn queue(log: &EventLog, calls: Vec<Vec<DossierAppend>>) -> Vec<Call> {
    let base = log.group_commit_stats().queued;
    let mut handles = Vec::new();
    for (i, call) in calls.into_iter().enumerate() {
        handles.push(spawn_append(log, call));
        let want = base + i as u64 + 1;
        eventually(Duration::from_secs(20), "the call is queued", || async {
            log.group_commit_stats().queued >= want
        })
        .await;
    }
    handles
}

/// As [`queue`], each call one dossier's append decided on its head
/// ([`EventLog::append_after`]).
async fn queue_after(log: &EventLog, calls: Vec<(DossierHead, DossierAppend)>) -> Vec<Call> {
    let base = log.group_commit_stats().queued;
    let mut handles = Vec::new();
    for (i, (head, append)) in calls.into_iter().enumerate() {
        let handle = log.clone();
        handles.push(tokio::spawn(async move {
            handle.append_after(&head, append).await
        }));
        let want = base + i as u64 + 1;
        eventually(Duration::from_secs(20), "the call is queued", || async {
            log.group_commit_stats().queued >= want
        })
        .await;
    }
    handles
}

async fn head(log: &EventLog, dossier_id: &str) -> DossierHead {
    log.load_dossier_for_append(dossier_id)
        .await
        .expect("load")
        .head()
        .clone()
}

/// Releases the head row; the plugs commit, then the queued calls go as one group.
async fn release(mut holder: PgConnection, plugs: Vec<Call>) {
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    for plug in plugs {
        plug.await.unwrap().expect("a plug call commits");
    }
}

async fn answers(calls: Vec<Call>) -> Vec<Result<Appended, AppendError>> {
    let mut out = Vec::new();
    for call in calls {
        out.push(call.await.expect("call task"));
    }
    out
}

fn written(answer: &Result<Appended, AppendError>) -> &Appended {
    match answer {
        Ok(appended) => appended,
        Err(error) => panic!("expected a write, got {error:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflicting_dossier_fails_alone_and_the_rest_of_the_group_commits() {
    let (db, log) = log().await;
    log.append(vec![dossier("C", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    log.append(vec![dossier("D", ExpectedVersion::NoStream, events(2))])
        .await
        .unwrap();

    let (holder, plugs) = plug(&db, &log).await;
    let groups = log.group_commit_stats().groups;
    let calls = queue(
        &log,
        vec![
            vec![dossier("A", ExpectedVersion::NoStream, events(2))],
            vec![dossier("C", ExpectedVersion::Exact(1), events(1))],
            // Decided on the same version as the call before it: the first wins.
            vec![dossier("C", ExpectedVersion::Exact(1), events(1))],
            // Stale against the log.
            vec![dossier("D", ExpectedVersion::Exact(5), events(1))],
            // A call of two dossiers, one conflicting: nothing of it is written.
            vec![
                dossier("E", ExpectedVersion::NoStream, events(1)),
                dossier("C", ExpectedVersion::Exact(1), events(1)),
            ],
            vec![dossier("B", ExpectedVersion::NoStream, events(1))],
            // Decided on the version the second call leaves.
            vec![dossier("C", ExpectedVersion::Exact(2), events(1))],
        ],
    )
    .await;
    release(holder, plugs).await;
    let got = answers(calls).await;

    let stats = log.group_commit_stats();
    assert_eq!(
        stats.groups,
        groups + 1,
        "the seven calls went as one group"
    );
    assert_eq!(stats.largest, 7);
    assert_eq!(stats.reruns + stats.splits, 0);

    let conflict = |i: usize| match &got[i] {
        Err(AppendError::Conflict {
            dossier_id,
            expected,
            actual,
        }) => (dossier_id.clone(), *expected, *actual),
        other => panic!("call {i}: expected a conflict, got {other:?}"),
    };
    assert_eq!(conflict(2), ("C".into(), ExpectedVersion::Exact(1), 2));
    assert_eq!(conflict(3), ("D".into(), ExpectedVersion::Exact(5), 2));
    assert_eq!(conflict(4), ("C".into(), ExpectedVersion::Exact(1), 2));

    // Written in queue order, one sequencing step: consecutive positions, one recorded_at.
    let group: Vec<StoredEvent> = [0, 1, 5, 6]
        .iter()
        .flat_map(|&i| written(&got[i]).events.clone())
        .collect();
    for i in [0, 1, 5, 6] {
        assert_eq!(written(&got[i]).duplicate, vec![false]);
    }
    // After the 3 seeded events; the plugs may commit before or after the group.
    let first = group[0].position;
    assert!(first > 3);
    assert_eq!(
        group.iter().map(|e| e.position).collect::<Vec<_>>(),
        (first..first + 5).collect::<Vec<_>>()
    );
    assert!(group.iter().all(|e| e.recorded_at == group[0].recorded_at));
    assert_eq!(
        written(&got[6]).events[0].version,
        3,
        "C's second write in the group follows its first"
    );

    let all = read_all(&log).await;
    assert_valid_log(&all);
    assert_eq!(
        &all[(first - 1) as usize..(first + 4) as usize],
        &group[..],
        "stored = answered"
    );
    assert!(log.load_dossier("E").await.unwrap().is_empty());
    assert_eq!(
        log.load_dossier("C")
            .await
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(log.load_dossier("D").await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_retries_of_one_id_in_one_group_write_once() {
    let (db, log) = log().await;
    let seed = dossier("S", ExpectedVersion::NoStream, events(1));
    let seeded = log.append(vec![seed.clone()]).await.unwrap();
    let r = dossier("R", ExpectedVersion::NoStream, events(2));

    let (holder, plugs) = plug(&db, &log).await;
    let calls = queue(
        &log,
        vec![
            vec![r.clone()],
            vec![r.clone()],
            vec![dossier("Q", ExpectedVersion::NoStream, events(1))],
            vec![r.clone()],
            // Retries of a call stored before the group, twice.
            vec![seed.clone()],
            vec![seed.clone()],
        ],
    )
    .await;
    release(holder, plugs).await;
    let got = answers(calls).await;
    let stats = log.group_commit_stats();
    assert_eq!(stats.largest, 6);
    assert_eq!(
        stats.reruns + stats.splits,
        0,
        "one transaction, no race lost"
    );

    let original = written(&got[0]);
    assert_eq!(original.duplicate, vec![false]);
    for i in [1, 3] {
        assert_eq!(
            written(&got[i]),
            &Appended {
                events: original.events.clone(),
                duplicate: vec![true],
            },
            "call {i}: the retry gets the original's events"
        );
    }
    for i in [4, 5] {
        assert_eq!(
            written(&got[i]),
            &Appended {
                events: seeded.events.clone(),
                duplicate: vec![true],
            }
        );
    }
    assert_eq!(written(&got[2]).duplicate, vec![false]);
    // R and Q: one sequencing step.
    let q = &written(&got[2]).events[0];
    assert_eq!(q.position, original.events[1].position + 1);
    assert_eq!(q.recorded_at, original.events[0].recorded_at);
    assert_eq!(log.load_dossier("R").await.unwrap(), original.events);
    // The seed, the plugs, R once, Q.
    assert_eq!(count_rows(&log).await, 1 + GROUPS_IN_FLIGHT as i64 + 2 + 1);
    assert_valid_log(&read_all(&log).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reused_id_in_one_group_is_refused_alone() {
    let (db, log) = log().await;
    let r = dossier("R", ExpectedVersion::NoStream, events(2));
    let mut other_request = r.clone();
    other_request.events[0].fingerprint = [9; 32];
    let mut other_dossier = r.clone();
    other_dossier.dossier_id = "R2".into();
    let mut partly = dossier("R3", ExpectedVersion::NoStream, events(1));
    partly.events.insert(0, r.events[1].clone());

    let (holder, plugs) = plug(&db, &log).await;
    let calls = queue(
        &log,
        vec![
            vec![r.clone()],
            vec![other_request],
            vec![other_dossier],
            vec![partly],
            vec![dossier("Q", ExpectedVersion::NoStream, events(1))],
        ],
    )
    .await;
    release(holder, plugs).await;
    let got = answers(calls).await;
    let stats = log.group_commit_stats();
    assert_eq!(stats.largest, 5);
    assert_eq!(
        stats.reruns + stats.splits,
        0,
        "one transaction, no race lost"
    );

    for (i, id) in [
        (1, r.events[0].event_id),
        (2, r.events[0].event_id),
        (3, r.events[1].event_id),
    ] {
        match &got[i] {
            Err(AppendError::EventIdReused { event_id }) => assert_eq!(*event_id, id, "call {i}"),
            other => panic!("call {i}: expected event_id_reused, got {other:?}"),
        }
    }
    assert_eq!(written(&got[0]).duplicate, vec![false]);
    assert_eq!(written(&got[4]).duplicate, vec![false]);
    assert_eq!(
        log.load_dossier("R").await.unwrap(),
        written(&got[0]).events
    );
    assert!(log.load_dossier("R2").await.unwrap().is_empty());
    assert!(log.load_dossier("R3").await.unwrap().is_empty());
    assert_eq!(count_rows(&log).await, GROUPS_IN_FLIGHT as i64 + 3);
    assert_valid_log(&read_all(&log).await);
}

/// A statement error caused by one call's data (here a CHECK constraint the test adds) fails
/// that call alone: the group is split and the others are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_the_database_refuses_fails_alone() {
    let (db, log) = log().await;
    sqlx::query("ALTER TABLE events ADD CONSTRAINT test_poison CHECK (agency <> 'poison')")
        .execute(log.pool())
        .await
        .unwrap();
    let mut poison = dossier("P", ExpectedVersion::NoStream, events(1));
    poison.routing.agency = "poison".into();

    let (holder, plugs) = plug(&db, &log).await;
    let splits = log.group_commit_stats().splits;
    let calls = queue(
        &log,
        vec![
            vec![dossier("OK1", ExpectedVersion::NoStream, events(2))],
            vec![poison],
            vec![dossier("OK2", ExpectedVersion::NoStream, events(1))],
        ],
    )
    .await;
    release(holder, plugs).await;
    let got = answers(calls).await;

    assert_eq!(log.group_commit_stats().largest, 3);
    assert_eq!(log.group_commit_stats().splits, splits + 1);
    match &got[1] {
        Err(AppendError::Unavailable(error)) => assert_eq!(
            error
                .as_database_error()
                .and_then(|db| db.code())
                .as_deref(),
            Some("23514"),
            "{error}"
        ),
        other => panic!("expected the check violation, got {other:?}"),
    }
    assert_eq!(written(&got[0]).events.len(), 2);
    assert_eq!(written(&got[2]).events.len(), 1);
    assert!(log.load_dossier("P").await.unwrap().is_empty());
    assert_eq!(count_rows(&log).await, GROUPS_IN_FLIGHT as i64 + 3);
    assert_valid_log(&read_all(&log).await);
}

/// Sessions of this database waiting for a lock, with their query.
async fn lock_waiters(log: &EventLog) -> Vec<(i32, String)> {
    sqlx::query_as(
        "SELECT pid, query FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_all(log.pool())
    .await
    .unwrap()
}

/// The group's transaction dies after its `INSERT` and before its `COMMIT` (its session is
/// ended while the insert waits in a trigger the test adds): every call of the group is answered
/// `Unavailable`, nothing of any of them is stored, no position is lost, and the same calls
/// retried are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_is_half_written_when_a_group_dies_before_its_commit() {
    let (_db, log) = log().await;
    sqlx::query(
        "CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_xact_lock_shared(4242); RETURN NULL; END $$",
    )
    .execute(log.pool())
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER test_stall AFTER INSERT ON events
         FOR EACH STATEMENT EXECUTE FUNCTION test_stall()",
    )
    .execute(log.pool())
    .await
    .unwrap();
    let mut gate = _db.connect().await;
    sqlx::query("SELECT pg_advisory_lock(4242)")
        .execute(&mut gate)
        .await
        .unwrap();

    // The plugs: one stalls in the trigger holding the head row, the other waits for the row.
    let mut plugs = Vec::new();
    for i in 0..GROUPS_IN_FLIGHT {
        plugs.push(spawn_append(
            &log,
            vec![dossier(
                &format!("plug-{i}"),
                ExpectedVersion::NoStream,
                events(1),
            )],
        ));
        eventually(Duration::from_secs(20), "the plug waits", || async {
            lock_waiters(&log).await.len() > i
        })
        .await;
    }
    let calls: Vec<Vec<DossierAppend>> = (0..4)
        .map(|i| {
            vec![dossier(
                &format!("G{i}"),
                ExpectedVersion::NoStream,
                events(1 + i % 2),
            )]
        })
        .collect();
    let queued = queue(&log, calls.clone()).await;

    // End the plugs' sessions: the slots free up and the queued calls form one group, which
    // stalls in the trigger, its rows inserted, uncommitted.
    for (pid, _) in lock_waiters(&log).await {
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(log.pool())
            .await
            .unwrap();
    }
    for plug in plugs {
        assert!(matches!(
            plug.await.unwrap(),
            Err(AppendError::Unavailable(_))
        ));
    }
    eventually(
        Duration::from_secs(20),
        "the group stalls after its insert",
        || async {
            let waiters = lock_waiters(&log).await;
            waiters.len() == 1 && waiters[0].1.contains("INSERT INTO events")
        },
    )
    .await;
    assert_eq!(log.group_commit_stats().largest, 4);
    let (pid, _) = lock_waiters(&log).await[0].clone();
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(log.pool())
        .await
        .unwrap();
    for answer in answers(queued).await {
        assert!(
            matches!(answer, Err(AppendError::Unavailable(_))),
            "{answer:?}"
        );
    }
    assert_eq!(count_rows(&log).await, 0, "nothing of the group is stored");
    assert_eq!(log.head().await.unwrap(), 0, "no position taken");

    // The same calls again: written, from position 1.
    sqlx::query("SELECT pg_advisory_unlock(4242)")
        .execute(&mut gate)
        .await
        .unwrap();
    let mut stored = Vec::new();
    for call in calls {
        let appended = log.append(call).await.expect("the retry is written");
        assert_eq!(appended.duplicate, vec![false]);
        stored.extend(appended.events);
    }
    let all = read_all(&log).await;
    assert_eq!(all, stored);
    assert_valid_log(&all);
}

/// Writers on two handles (two processes), each forming groups, with conflicts and lost races:
/// a follower sees every event exactly once in position order, and the log is exactly what the
/// writers were told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_sees_every_event_once_while_groups_commit() {
    const WRITERS_PER_HANDLE: usize = 4;
    const APPENDS: usize = 25;
    const DOSSIERS: u8 = 10;

    let (db, first) = log().await;
    let second = EventLog::from_pool(db.pool.clone());
    let (tx, mut delivered) = tokio::sync::mpsc::unbounded_channel();
    let mut stream = first.follow(0);
    let follower = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if tx.send(event.expect("follow")).is_err() {
                return;
            }
        }
    });

    // Start everybody behind the held head row, so that each handle forms a group of queued
    // calls at once; after that, groups form as the calls come.
    let holder = hold_head(&db).await;
    let mut writers = Vec::new();
    for handle in [&first, &second] {
        for _ in 0..WRITERS_PER_HANDLE {
            let log = handle.clone();
            writers.push(tokio::spawn(async move {
                let mut mine: Vec<StoredEvent> = Vec::new();
                for _ in 0..APPENDS {
                    let id = format!("D-{}", uuid::Uuid::new_v4().as_bytes()[0] % DOSSIERS);
                    loop {
                        let current = log.load_dossier(&id).await.expect("load").len() as u32;
                        let expected = match current {
                            0 => ExpectedVersion::NoStream,
                            v => ExpectedVersion::Exact(v),
                        };
                        let count = 1 + usize::from(uuid::Uuid::new_v4().as_bytes()[0] % 3);
                        match log
                            .append(vec![dossier(&id, expected, events(count))])
                            .await
                        {
                            Ok(done) => {
                                assert_eq!(done.duplicate, vec![false]);
                                mine.extend(done.events);
                                break;
                            }
                            Err(AppendError::Conflict { .. }) => {}
                            Err(other) => panic!("unexpected error: {other:?}"),
                        }
                    }
                }
                mine
            }));
        }
    }
    // Every writer's first call has reached its committer: in a group waiting at the sequencer
    // or queued. Two slots for four calls: at least one group of two or more forms.
    for handle in [&first, &second] {
        eventually(Duration::from_secs(20), "every first call sent", || async {
            let stats = handle.group_commit_stats();
            (stats.calls + stats.queued) as usize >= WRITERS_PER_HANDLE
        })
        .await;
    }
    release(holder, Vec::new()).await;

    let mut returned: HashMap<i64, StoredEvent> = HashMap::new();
    for writer in writers {
        for event in writer.await.expect("writer") {
            assert!(
                returned.insert(event.position, event).is_none(),
                "position given twice"
            );
        }
    }
    for handle in [&first, &second] {
        assert!(
            handle.group_commit_stats().largest >= 2,
            "a group of several calls formed: {:?}",
            handle.group_commit_stats()
        );
    }

    let sentinel = first
        .append(vec![dossier(
            "sentinel",
            ExpectedVersion::NoStream,
            events(1),
        )])
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), delivered.recv())
            .await
            .expect("the follower delivers")
            .expect("follower alive");
        if event.event_id == sentinel.events[0].event_id {
            break;
        }
        seen.push(event);
    }
    follower.abort();

    let all = read_all(&first).await;
    assert_valid_log(&all);
    assert_eq!(
        seen,
        all[..all.len() - 1],
        "every event once, in position order"
    );
    assert_eq!(
        seen.len(),
        returned.len(),
        "nothing stored that nobody was told"
    );
    for event in &seen {
        assert_eq!(
            Some(event),
            returned.get(&event.position),
            "stored = returned"
        );
    }
    let mut versions: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for event in &seen {
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
}

/// The same call sent through two handles at once, many times, among other writers: exactly one
/// of the two writes it, the other is answered with the same events as a duplicate (or both get
/// the same conflict), never a half or a double.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_call_through_two_handles_at_once_is_written_once() {
    const ROUNDS: usize = 40;
    let (db, first) = log().await;
    let second = EventLog::from_pool(db.pool.clone());

    let mut pairs = Vec::new();
    for task in 0..4u8 {
        let (a, b) = (first.clone(), second.clone());
        pairs.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for round in 0..ROUNDS {
                let id = format!("T-{}", (usize::from(task) + round) % 6);
                let current = a.load_dossier(&id).await.expect("load").len() as u32;
                let expected = match current {
                    0 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v),
                };
                let call = vec![dossier(&id, expected, events(1 + round % 2))];
                let (x, y) = tokio::join!(a.append(call.clone()), b.append(call.clone()));
                outcomes.push((call, x, y));
            }
            outcomes
        }));
    }
    let mut written_ids: HashSet<uuid::Uuid> = HashSet::new();
    let mut writes = 0;
    for pair in pairs {
        for (call, x, y) in pair.await.expect("task") {
            match (x, y) {
                (Ok(x), Ok(y)) => {
                    assert_eq!(x.events, y.events, "both answered with the same events");
                    assert_eq!(
                        [x.duplicate[0], y.duplicate[0]]
                            .iter()
                            .filter(|d| !**d)
                            .count(),
                        1,
                        "exactly one of the two wrote: {:?} {:?}",
                        x.duplicate,
                        y.duplicate
                    );
                    writes += 1;
                    written_ids.extend(x.events.iter().map(|e| e.event_id));
                }
                (
                    Err(AppendError::Conflict { actual: ax, .. }),
                    Err(AppendError::Conflict { actual: ay, .. }),
                ) => {
                    assert!(
                        ax > 0 && ay > 0,
                        "a conflict means another writer came first"
                    );
                }
                (x, y) => panic!("{:?}: {x:?} / {y:?}", call[0].dossier_id),
            }
        }
    }
    assert!(writes > 0);
    let all = read_all(&first).await;
    assert_valid_log(&all);
    assert_eq!(
        all.iter().map(|e| e.event_id).collect::<HashSet<_>>(),
        written_ids,
        "exactly the events answered as written"
    );
    assert_eq!(all.len(), written_ids.len());
}

/// A caller that stops waiting (its own timeout) before its group starts gets nothing written.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_given_up_before_its_group_starts_is_not_written() {
    let (db, log) = log().await;
    let (holder, plugs) = plug(&db, &log).await;
    let mut calls = queue(
        &log,
        vec![
            vec![dossier("GONE", ExpectedVersion::NoStream, events(1))],
            vec![dossier("KEPT", ExpectedVersion::NoStream, events(1))],
        ],
    )
    .await;
    let kept = calls.pop().unwrap();
    let gone = calls.pop().unwrap();
    gone.abort();
    assert!(gone.await.unwrap_err().is_cancelled());
    release(holder, plugs).await;
    kept.await.unwrap().expect("the other call is written");
    assert!(log.load_dossier("GONE").await.unwrap().is_empty());
    assert_eq!(log.group_commit_stats().queued, 0);
    assert_eq!(count_rows(&log).await, GROUPS_IN_FLIGHT as i64 + 1);
}

/// Calls decided on their heads go to the insert without look-ups. One head is out of date (its
/// dossier was written since it was read): the insert hits the unique constraint, the group
/// runs again with the look-ups, and only that call fails — with the conflict a look-up gives
/// — while the others commit in one sequencing step. Had the first attempt looked up, the
/// conflict would have been found without a unique violation (`heads_looked_up` stays 0, as
/// the next test shows for a group whose heads are all current).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_out_of_date_head_fails_alone_and_the_rest_of_the_group_commits() {
    let (db, log) = log().await;
    log.append(vec![dossier("C", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    log.append(vec![dossier("D", ExpectedVersion::NoStream, events(2))])
        .await
        .unwrap();
    let (a, b, c, d) = (
        head(&log, "A").await,
        head(&log, "B").await,
        head(&log, "C").await,
        head(&log, "D").await,
    );
    assert_eq!(
        (a.version(), c.version(), d.version()),
        (0, 1, 2),
        "heads as read"
    );
    assert_eq!(d.expected_version(), ExpectedVersion::Exact(2));
    // D moves on after its head was read.
    log.append(vec![dossier("D", ExpectedVersion::Exact(2), events(1))])
        .await
        .unwrap();

    let (holder, plugs) = plug(&db, &log).await;
    let before = log.group_commit_stats();
    let calls = queue_after(
        &log,
        vec![
            (a.clone(), dossier("A", a.expected_version(), events(2))),
            (c.clone(), dossier("C", c.expected_version(), events(1))),
            (d.clone(), dossier("D", d.expected_version(), events(1))),
            (b.clone(), dossier("B", b.expected_version(), events(1))),
        ],
    )
    .await;
    release(holder, plugs).await;
    let got = answers(calls).await;

    let stats = log.group_commit_stats();
    assert_eq!(
        stats.groups,
        before.groups + 1,
        "the four calls went as one group"
    );
    assert_eq!(
        stats.heads_looked_up,
        before.heads_looked_up + 1,
        "the first attempt trusted the heads, and ran again with the look-ups"
    );
    assert_eq!(stats.reruns + stats.splits, before.reruns + before.splits);
    match &got[2] {
        Err(AppendError::Conflict {
            dossier_id,
            expected,
            actual,
        }) => assert_eq!(
            (dossier_id.as_str(), *expected, *actual),
            ("D", ExpectedVersion::Exact(2), 3)
        ),
        other => panic!("expected D's conflict, got {other:?}"),
    }
    let group: Vec<StoredEvent> = [0, 1, 3]
        .iter()
        .flat_map(|&i| written(&got[i]).events.clone())
        .collect();
    let first = group[0].position;
    assert_eq!(
        group.iter().map(|e| e.position).collect::<Vec<_>>(),
        (first..first + 4).collect::<Vec<_>>(),
        "one sequencing step, in queue order"
    );
    assert_eq!(written(&got[1]).events[0].version, 2);
    assert_eq!(written(&got[1]).events[0].routing, routing());
    let all = read_all(&log).await;
    assert_valid_log(&all);
    assert_eq!(log.load_dossier("D").await.unwrap().len(), 3);
    assert_eq!(
        &all[(first - 1) as usize..(first + 3) as usize],
        &group[..],
        "stored = answered"
    );
}

/// Retries on heads: two retries of one new call in one group write once, without look-ups
/// (the second is a duplicate of the first); a retry of a call stored after its head was read
/// is answered with the stored events once the insert has refused it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_on_heads_write_once() {
    let (db, log) = log().await;
    let s = dossier("S", ExpectedVersion::NoStream, events(2));
    let s_head = head(&log, "S").await;
    let q_head = head(&log, "Q").await;

    let (holder, plugs) = plug(&db, &log).await;
    let before = log.group_commit_stats();
    let calls = queue_after(
        &log,
        vec![
            (s_head.clone(), s.clone()),
            (
                q_head.clone(),
                dossier("Q", ExpectedVersion::NoStream, events(1)),
            ),
            (s_head.clone(), s.clone()),
        ],
    )
    .await;
    release(holder, plugs).await;
    let got = answers(calls).await;
    let stats = log.group_commit_stats();
    assert_eq!(stats.groups, before.groups + 1);
    assert_eq!(
        stats.heads_looked_up + stats.reruns + stats.splits,
        before.heads_looked_up + before.reruns + before.splits,
        "one attempt, on the heads"
    );
    let original = written(&got[0]);
    assert_eq!(original.duplicate, vec![false]);
    assert_eq!(
        written(&got[2]),
        &Appended {
            events: original.events.clone(),
            duplicate: vec![true],
        }
    );
    assert_eq!(written(&got[1]).duplicate, vec![false]);

    // The same request again, on the head read before the original was written.
    let (holder, plugs) = plug(&db, &log).await;
    let before = log.group_commit_stats();
    let calls = queue_after(
        &log,
        vec![
            (s_head.clone(), s.clone()),
            (
                head(&log, "P").await,
                dossier("P", ExpectedVersion::NoStream, events(1)),
            ),
        ],
    )
    .await;
    release(holder, plugs).await;
    let got = answers(calls).await;
    let stats = log.group_commit_stats();
    assert_eq!(stats.heads_looked_up, before.heads_looked_up + 1);
    assert_eq!(
        written(&got[0]),
        &Appended {
            events: original.events.clone(),
            duplicate: vec![true],
        },
        "the retry gets the original's events"
    );
    assert_eq!(written(&got[1]).duplicate, vec![false]);
    assert_eq!(log.load_dossier("S").await.unwrap(), original.events);
    // The plugs, S once, Q, P.
    assert_eq!(count_rows(&log).await, 2 * GROUPS_IN_FLIGHT as i64 + 4);
    assert_valid_log(&read_all(&log).await);
}

/// A head that does not fit its append (another dossier, another expected version) is not used:
/// the append is looked up and answered as by `append`.
#[tokio::test]
async fn a_head_that_does_not_fit_its_append_is_not_trusted() {
    let (_db, log) = log().await;
    log.append(vec![dossier("C", ExpectedVersion::NoStream, events(1))])
        .await
        .unwrap();
    let c = head(&log, "C").await;
    let before = log.group_commit_stats();
    match log
        .append_after(&c, dossier("C", ExpectedVersion::Exact(5), events(1)))
        .await
    {
        Err(AppendError::Conflict { actual: 1, .. }) => {}
        other => panic!("expected a conflict at version 1, got {other:?}"),
    }
    // C's head on another dossier's append: E is new, written after its own look-up.
    let e = log
        .append_after(&c, dossier("E", ExpectedVersion::NoStream, events(1)))
        .await
        .expect("written");
    assert_eq!(e.events[0].version, 1);
    assert_eq!(
        log.group_commit_stats().heads_looked_up,
        before.heads_looked_up
    );
    assert_valid_log(&read_all(&log).await);
}
