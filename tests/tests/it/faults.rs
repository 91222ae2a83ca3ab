//! Fault campaign, end to end: PostgreSQL crashes (and is stopped) under load.
//!
//! The whole write side runs as in production — intake and processing over gRPC, the relay
//! into JetStream, the projection consuming it — over a private PostgreSQL cluster that the test
//! starts itself (`testkit::PgCluster`), so it can crash it. Each service has its own pool, as
//! each binary has. Concurrent counters carry dossiers through their lives (receive, request a
//! supplement, receive it, resolve) while the database is crashed (immediate stop: every
//! PostgreSQL process exits at once, no checkpoint, crash recovery at the next start) and then
//! stopped cleanly (fast stop) and started again.
//!
//! What it proves:
//! - every call is answered OK or UNAVAILABLE, never another code, and within a bound (the
//!   write path's `WRITE_TIMEOUT` plus a margin): no caller hangs;
//! - retrying an UNAVAILABLE call with the same event id (the documented reaction) succeeds,
//!   and the log then holds that command's event exactly once, as answered (position, version,
//!   hash) — also when the first attempt had committed before the answer was lost;
//! - nothing is half-written: the log holds exactly the answered commands' events, each
//!   dossier's events are exactly its commands in order;
//! - the relay and the projection, never restarted, resume by themselves: the stream ends up
//!   holding the whole log once, in order, the projection's `verify` is exact, and the server
//!   redelivered the applies the faults failed; the deadline watcher marks a dossier that
//!   became overdue after the faults;
//! - an auditor following the log through replay (`StreamEvents { follow }`), resuming after
//!   the last position received whenever a stream ends with UNAVAILABLE (as the proto says),
//!   gets the whole log once, in order, and no stream ends any other way.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use api::v1 as pb;
use api::v1::intake_service_client::IntakeServiceClient;
use api::v1::processing_service_client::ProcessingServiceClient;
use api::v1::replay_service_client::ReplayServiceClient;
use chrono::{DateTime, Utc};
use domain::SupplementPolicy;
use eventlog::EventLog;
use processing::WatcherConfig;
use testkit::{PgCluster, StopMode, TestNats};
use tests::processing::{
    RunningProcessing, processing_tokens, receive_days, receive_supplement, request_supplement,
    resolve,
};
use tests::projection::{RunningProjection, wait_caught_up};
use tests::{AUDITOR, COUNTER_DISTRICT, RunningIntake, RunningRelay, authed, local};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

/// Longest a test waits for the system to reach a state.
const WAIT: Duration = Duration::from_secs(60);
/// Longest one call may take: the write path's own bound (`writepath::WRITE_TIMEOUT`, 15 s,
/// which includes waiting for a pooled connection) plus a margin. A call that takes longer is a
/// hang.
const CALL_BOUND: Duration = Duration::from_secs(writepath::WRITE_TIMEOUT.as_secs() + 10);
/// Concurrent counters.
const COUNTERS: usize = 12;
/// The projection's durable consumer.
const DURABLE: &str = "faults";
/// Pool size of each service, as `database.max_connections` defaults to.
const POOL: u32 = 16;

/// The services over one private PostgreSQL cluster and a private JetStream namespace.
struct Stack {
    pg: PgCluster,
    nats: TestNats,
    /// The test's own pool, for checks.
    log: EventLog,
    intake: RunningIntake,
    processing: RunningProcessing,
    relay: RunningRelay,
    projection: RunningProjection,
    /// The replay service's address (it stops with the test's runtime).
    replay: std::net::SocketAddr,
}

/// Starts PostgreSQL, then intake, processing (with its deadline watcher), the relay and the
/// projection, each with its own pool (`EventLog::connect`, as the binaries do).
async fn start_stack() -> Stack {
    let pg = PgCluster::start().await;
    let nats = TestNats::new().await;
    let pool = || async {
        EventLog::connect(&pg.url(), POOL)
            .await
            .expect("connect to the private PostgreSQL")
    };
    let intake = RunningIntake::start(pool().await).await;
    let mut deps = svc::ServiceDeps::for_tests(pool().await, processing_tokens());
    deps.supplement_policy = SupplementPolicy::Restart;
    let watcher = WatcherConfig {
        interval: Duration::from_millis(250),
        ..WatcherConfig::default()
    };
    let processing = RunningProcessing::start_with(deps, Some(watcher)).await;
    let relay = RunningRelay::start(pool().await, &nats.url, &nats.stream, &nats.prefix).await;
    let projection =
        RunningProjection::start(pool().await, &nats.url, &nats.stream, &nats.prefix, DURABLE)
            .await;
    let replay = replay::ReplayApp::build_with(
        pool().await,
        tests::test_tokens(),
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .expect("replay starts")
    .with_follow_poll(Duration::from_millis(200));
    let replay_addr = replay.local_addr();
    tokio::spawn(replay.run_until_stopped(tokio_util::sync::CancellationToken::new()));
    let log = pool().await;
    Stack {
        pg,
        nats,
        log,
        intake,
        processing,
        relay,
        projection,
        replay: replay_addr,
    }
}

/// What an auditor following the log through replay received.
#[derive(Debug, Default)]
struct Followed {
    /// Event ids in the order received.
    ids: Vec<String>,
    /// Streams that ended with UNAVAILABLE (then resumed after the last position received).
    resumed: usize,
    /// Anything else: a stream that ended otherwise, a gap or a repeat.
    defects: Vec<String>,
}

/// Follows the log from the start through `StreamEvents { follow }` until `stop`, resuming
/// after the last position received whenever a stream ends with UNAVAILABLE.
async fn follow(
    addr: std::net::SocketAddr,
    mut stop: watch::Receiver<bool>,
    progress: watch::Sender<u64>,
) -> Followed {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("address")
        .connect_lazy();
    let mut client = ReplayServiceClient::new(channel);
    let mut followed = Followed::default();
    let mut last = 0u64;
    'streams: loop {
        let request = pb::StreamEventsRequest {
            after_position: last,
            follow: true,
            ..Default::default()
        };
        let opened = tokio::select! {
            opened = client.stream_events(authed(AUDITOR, request)) => opened,
            _ = stop.wait_for(|s| *s) => break 'streams,
        };
        let end = match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                loop {
                    let next = tokio::select! {
                        next = stream.message() => next,
                        _ = stop.wait_for(|s| *s) => break 'streams,
                    };
                    match next {
                        Ok(Some(event)) => {
                            if event.position != last + 1 {
                                followed
                                    .defects
                                    .push(format!("position {} after {last}", event.position));
                            }
                            last = event.position;
                            followed.ids.push(event.event_id);
                            progress.send_replace(last);
                        }
                        Ok(None) => break Status::ok("a following stream completed"),
                        Err(status) => break status,
                    }
                }
            }
            Err(status) => status,
        };
        if end.code() == Code::Unavailable {
            followed.resumed += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            followed.defects.push(format!("stream ended: {end:?}"));
            break;
        }
    }
    followed
}

/// How one attempt of a call ended.
#[derive(Debug, Clone)]
enum Attempt {
    Ok(pb::RecordedEvent),
    /// With the status message.
    Unavailable(String),
    /// Any other code: a defect.
    Other(Code, String),
    /// No answer within [`CALL_BOUND`]: a defect.
    Hang,
}

/// Every attempt of every command, by the command's event id, in order.
#[derive(Debug, Default)]
struct Journal {
    attempts: HashMap<String, Vec<Attempt>>,
    /// The commands of each dossier, in the order they were answered.
    dossiers: BTreeMap<String, Vec<(String, &'static str)>>,
    succeeded: usize,
}

type Shared = Arc<Mutex<Journal>>;

/// Calls until the answer is not UNAVAILABLE, the same request (same event id) each time, every
/// attempt bounded and journaled. Returns the recorded event, or `None` after a defect (another
/// code or a hang), which the test reports at the end.
async fn call_until_answered<T, F, Fut>(
    journal: &Shared,
    event_id: &str,
    event: fn(&T) -> Option<&pb::RecordedEvent>,
    mut call: F,
) -> Option<pb::RecordedEvent>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    loop {
        let attempt = match tokio::time::timeout(CALL_BOUND, call()).await {
            Ok(Ok(answer)) => match event(answer.get_ref()) {
                Some(recorded) => Attempt::Ok(recorded.clone()),
                None => Attempt::Other(Code::Ok, "an answer without its event".to_owned()),
            },
            Ok(Err(status)) if status.code() == Code::Unavailable => {
                Attempt::Unavailable(status.message().to_owned())
            }
            Ok(Err(status)) => Attempt::Other(status.code(), status.message().to_owned()),
            Err(_) => Attempt::Hang,
        };
        journal
            .lock()
            .expect("journal")
            .attempts
            .entry(event_id.to_owned())
            .or_default()
            .push(attempt.clone());
        match attempt {
            Attempt::Ok(recorded) => return Some(recorded),
            Attempt::Unavailable(_) if tokio::time::Instant::now() < deadline => {
                // Back off a little, as a client would.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return None,
        }
    }
}

/// One counter: dossier lives, one after the other, until `stop`. A call answered neither OK nor
/// UNAVAILABLE ends its dossier's life there; the test reports it at the end.
async fn counter(
    n: usize,
    intake_addr: std::net::SocketAddr,
    processing_addr: std::net::SocketAddr,
    journal: Shared,
    mut stop: watch::Receiver<bool>,
) {
    let channel = |addr: std::net::SocketAddr| {
        Channel::from_shared(format!("http://{addr}"))
            .expect("address")
            .connect_lazy()
    };
    let intake = IntakeServiceClient::new(channel(intake_addr));
    let processing = ProcessingServiceClient::new(channel(processing_addr));
    let t0: DateTime<Utc> = local(2025, 3, 3, 9, 0);
    let hour = chrono::Duration::hours(1);
    for life in 0.. {
        if *stop.borrow_and_update() {
            return;
        }
        let dossier = format!("F-{n}-{life}");
        let record = |id: &str, step: &'static str, recorded: &pb::RecordedEvent| {
            let mut journal = journal.lock().expect("journal");
            journal.succeeded += 1;
            journal
                .dossiers
                .entry(recorded.dossier_id.clone())
                .or_default()
                .push((id.to_owned(), step));
        };

        let request = receive_days(&dossier, t0, 5);
        let id = request.event_id.clone();
        let Some(recorded) = call_until_answered(
            &journal,
            &id,
            |a: &pb::ReceiveDossierResponse| a.event.as_ref(),
            || {
                let mut client = intake.clone();
                let request = authed(COUNTER_DISTRICT, request.clone());
                async move { client.receive_dossier(request).await }
            },
        )
        .await
        else {
            continue;
        };
        record(&id, "received", &recorded);

        let request = request_supplement(&dossier, t0 + hour);
        let id = request.event_id.clone();
        let Some(recorded) = call_until_answered(
            &journal,
            &id,
            |a: &pb::WriteResponse| a.event.as_ref(),
            || {
                let mut client = processing.clone();
                let request = authed(COUNTER_DISTRICT, request.clone());
                async move { client.request_supplement(request).await }
            },
        )
        .await
        else {
            continue;
        };
        record(&id, "supplement_requested", &recorded);

        let request = receive_supplement(&dossier, t0 + hour * 2);
        let id = request.event_id.clone();
        let Some(recorded) = call_until_answered(
            &journal,
            &id,
            |a: &pb::ReceiveSupplementResponse| a.event.as_ref(),
            || {
                let mut client = processing.clone();
                let request = authed(COUNTER_DISTRICT, request.clone());
                async move { client.receive_supplement(request).await }
            },
        )
        .await
        else {
            continue;
        };
        record(&id, "supplement_received", &recorded);

        let request = resolve(&dossier, t0 + hour * 3, pb::Outcome::Approved);
        let id = request.event_id.clone();
        let Some(recorded) = call_until_answered(
            &journal,
            &id,
            |a: &pb::ResolveResponse| a.event.as_ref(),
            || {
                let mut client = processing.clone();
                let request = authed(COUNTER_DISTRICT, request.clone());
                async move { client.resolve(request).await }
            },
        )
        .await
        else {
            continue;
        };
        record(&id, "resolved", &recorded);
    }
}

/// Counters running until stopped.
struct Load {
    journal: Shared,
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(stack: &Stack) -> Load {
        let journal = Shared::default();
        let (stop, stopped) = watch::channel(false);
        let handles = (0..COUNTERS)
            .map(|n| {
                tokio::spawn(counter(
                    n,
                    stack.intake.addr,
                    stack.processing.addr,
                    journal.clone(),
                    stopped.clone(),
                ))
            })
            .collect();
        Load {
            journal,
            stop,
            handles,
        }
    }

    fn succeeded(&self) -> usize {
        self.journal.lock().expect("journal").succeeded
    }

    /// Attempts answered other than OK so far.
    fn failed(&self) -> usize {
        let journal = self.journal.lock().expect("journal");
        journal
            .attempts
            .values()
            .flatten()
            .filter(|a| !matches!(a, Attempt::Ok(_)))
            .count()
    }

    /// Waits until `count` more commands than now have succeeded.
    async fn progress(&self, count: usize, what: &str) {
        let target = self.succeeded() + count;
        eventually(what, || async { self.succeeded() >= target }).await;
    }

    /// Stops the counters after their current call and returns the journal.
    async fn stop(self) -> Journal {
        self.stop.send_replace(true);
        for handle in self.handles {
            tokio::time::timeout(3 * WAIT, handle)
                .await
                .expect("a counter stops within its calls' bounds")
                .expect("counter task");
        }
        Arc::try_unwrap(self.journal)
            .expect("the counters are gone")
            .into_inner()
            .expect("journal")
    }
}

/// Waits until `check` holds, within [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let check = &mut check;
    tests::eventually_some(what, WAIT, || {
        let holds = check();
        async move { holds.await.then_some(()) }
    })
    .await;
}

/// The projection's durable consumer, as the server sees it.
async fn consumer(stack: &Stack) -> async_nats::jetstream::consumer::Info {
    let stream = stack
        .nats
        .jetstream()
        .get_stream(&stack.nats.stream)
        .await
        .expect("the relay's stream");
    let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
        .get_consumer(DURABLE)
        .await
        .expect("the projection's consumer");
    consumer.info().await.expect("consumer info").clone()
}

/// Opens a transaction on `conn` and runs `statement` in it, so that `conn` holds what the
/// statement locks until the transaction ends.
async fn begin_holding(conn: &mut sqlx::PgConnection, statement: &'static str) {
    sqlx::query("BEGIN")
        .execute(&mut *conn)
        .await
        .expect("BEGIN");
    sqlx::query(statement)
        .execute(&mut *conn)
        .await
        .unwrap_or_else(|e| panic!("{statement}: {e}"));
}

/// Stops PostgreSQL in `mode` while the counters run and the projection is in the middle of an
/// apply (so the fault hits the projection's work too), and starts it again once a call has
/// failed (so it met calls in flight; how they failed is checked at the end).
///
/// "In the middle of an apply" is made certain, not left to timing (a batched apply takes a few
/// milliseconds and the projection is often idle between batches): a transaction of the test
/// holds `projection_contributions` in `EXCLUSIVE` mode, which the apply's row locks wait for,
/// and the server is stopped once an apply is seen waiting (a lock not granted on that table)
/// with its messages delivered and not acknowledged.
async fn crash_under_load(stack: &mut Stack, load: &Load, mode: StopMode) {
    use sqlx::Connection;
    let mut blocker = sqlx::PgConnection::connect(&stack.pg.url())
        .await
        .expect("connect the blocking session");
    begin_holding(
        &mut blocker,
        "LOCK TABLE projection_contributions IN EXCLUSIVE MODE",
    )
    .await;
    let log = stack.log.clone();
    eventually("an apply waits for the test's lock", || {
        let log = log.clone();
        async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_locks \
                 WHERE relation = 'projection_contributions'::regclass AND NOT granted)",
            )
            .fetch_one(log.pool())
            .await
            .unwrap_or(false)
        }
    })
    .await;
    let info = consumer(stack).await;
    assert!(
        info.num_ack_pending > 0,
        "the waiting apply's messages are delivered and not acknowledged: {info:?}"
    );
    let failed_before = load.failed();
    stack.pg.stop(mode).await;
    eventually(
        &format!("a call failed after the {mode:?} stop"),
        || async { load.failed() > failed_before },
    )
    .await;
    stack.pg.start_again().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_and_restart_under_load() {
    let mut stack = start_stack().await;
    let (stop_following, stopped) = watch::channel(false);
    let (progress, mut followed_to) = watch::channel(0);
    let follower = tokio::spawn(follow(stack.replay, stopped, progress));
    let load = Load::start(&stack);
    load.progress(150, "commands before the crash").await;

    crash_under_load(&mut stack, &load, StopMode::Immediate).await;
    load.progress(150, "commands after the crash").await;

    crash_under_load(&mut stack, &load, StopMode::Fast).await;
    load.progress(150, "commands after the restart").await;

    let journal = load.stop().await;

    // Every attempt was answered OK or UNAVAILABLE, within the bound.
    let defects: Vec<String> = journal
        .attempts
        .iter()
        .flat_map(|(id, attempts)| attempts.iter().map(move |a| (id, a)))
        .filter_map(|(id, attempt)| match attempt {
            Attempt::Other(code, message) => Some(format!("{id}: {code:?} {message}")),
            Attempt::Hang => Some(format!("{id}: no answer within {CALL_BOUND:?}")),
            // The server cannot know whether a write whose COMMIT was cut happened, and the
            // test sees such writes: the answer must not claim that nothing was written.
            Attempt::Unavailable(message) if message.contains("nothing was written") => Some(
                format!("{id}: UNAVAILABLE claiming what it cannot know: {message}"),
            ),
            Attempt::Ok(_) | Attempt::Unavailable(_) => None,
        })
        .collect();
    assert!(
        defects.is_empty(),
        "calls answered neither OK nor UNAVAILABLE: {defects:#?}\nPostgreSQL log:\n{}",
        stack.pg.log_tail()
    );
    let retried = journal.attempts.values().filter(|a| a.len() > 1).count();
    assert!(retried > 0, "the faults met no call in flight");

    // The deadline watcher resumed too: a dossier received now, overdue since 2025, is marked.
    let open = receive_days("F-open", local(2025, 3, 3, 9, 0), 5);
    stack
        .intake
        .client()
        .await
        .receive_dossier(authed(COUNTER_DISTRICT, open))
        .await
        .expect("receive with the database up");
    eventually("the watcher marks the open dossier late", || async {
        let events = stack.log.load_dossier("F-open").await.expect("load");
        events.iter().any(|e| e.event_type == "late")
    })
    .await;

    // Every command ended answered, and the log holds exactly the answered events (and the
    // watcher's `late` marks), once each, as answered.
    let events = stack
        .log
        .read_after(0, i64::MAX)
        .await
        .expect("read the log");
    let by_id: HashMap<String, &eventlog::StoredEvent> =
        events.iter().map(|e| (e.event_id.to_string(), e)).collect();
    assert_eq!(by_id.len(), events.len(), "event ids are unique in the log");
    let mut written_before_unavailable = 0;
    for (id, attempts) in &journal.attempts {
        let Some(Attempt::Ok(answer)) = attempts.last() else {
            panic!("command {id} was never answered OK: {attempts:?}");
        };
        let stored = by_id
            .get(id)
            .unwrap_or_else(|| panic!("command {id} was answered OK but is not in the log"));
        assert_eq!(answer.position, stored.position as u64, "{id}");
        assert_eq!(answer.version, stored.version as u32, "{id}");
        assert_eq!(answer.dossier_id, stored.dossier_id, "{id}");
        assert_eq!(answer.event_hash, stored.event_hash.to_vec(), "{id}");
        if answer.duplicate {
            assert!(
                attempts.len() > 1,
                "{id}: a first attempt cannot be a duplicate"
            );
            written_before_unavailable += 1;
        }
    }
    let commands: Vec<&eventlog::StoredEvent> = events
        .iter()
        // `late` is the watcher's; `late_withdrawn` rides in the append of the resolution that
        // contradicts a late mark (an offline counter's): neither is a command of its own.
        .filter(|e| {
            e.event_type != "late" && e.event_type != "late_withdrawn" && e.dossier_id != "F-open"
        })
        .collect();
    assert_eq!(
        commands.len(),
        journal.attempts.len(),
        "the log holds exactly the answered commands' events (no half-written or phantom command)"
    );
    for (dossier, answered) in &journal.dossiers {
        let stored: Vec<(String, &str)> = commands
            .iter()
            .filter(|e| &e.dossier_id == dossier)
            .map(|e| (e.event_id.to_string(), e.event_type.as_str()))
            .collect();
        let answered: Vec<(String, &str)> = answered
            .iter()
            .map(|(id, step)| (id.clone(), *step))
            .collect();
        assert_eq!(
            stored, answered,
            "dossier {dossier}: its commands, in order"
        );
        let marks = events
            .iter()
            .filter(|e| &e.dossier_id == dossier && e.event_type == "late")
            .count();
        assert!(
            marks <= 1,
            "dossier {dossier} was marked late {marks} times"
        );
    }

    // The relay and the projection resume by themselves.
    let head = stack.log.head().await.expect("head");
    stack.relay.wait_published(head, WAIT).await;
    let published = tests::lifecycle::published(&stack.nats).await;
    let ids: Vec<String> = published.into_iter().map(|(_, id)| id).collect();
    let log_ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(
        ids, log_ids,
        "the stream holds the whole log once, in order"
    );
    wait_caught_up(&stack.log, WAIT).await;

    // The auditor following through replay got the whole log once, in order, resuming after
    // each UNAVAILABLE.
    let reached = tokio::time::timeout(WAIT, followed_to.wait_for(|p| *p >= head as u64)).await;
    stop_following.send_replace(true);
    let followed = tokio::time::timeout(WAIT, follower)
        .await
        .expect("the follower stops")
        .expect("follower task");
    assert!(
        followed.defects.is_empty(),
        "replay: {:?}",
        followed.defects
    );
    assert_eq!(
        followed.ids, log_ids,
        "replay delivered the whole log once, in order"
    );
    assert!(
        matches!(reached, Ok(Ok(_))),
        "replay did not reach the head {head} within {WAIT:?}"
    );
    let report = projection::verify::verify(stack.log.pool(), 20)
        .await
        .expect("verify");
    assert!(report.is_exact(), "projection verify: {report:?}");
    assert_eq!(report.position, head);
    // Not vacuous: the faults failed applies, which the projection retried — by asking the
    // server to redeliver, or (batched apply) by falling back to one dossier at a time.
    let info = consumer(&stack).await;
    let redelivered = info.delivered.consumer_sequence - info.delivered.stream_sequence;
    let consumer_status = *stack.projection.status.borrow();
    assert!(
        redelivered > 0
            || consumer_status.apply_failures_total > 0
            || consumer_status.batch_fallbacks_total > 0,
        "the faults failed no apply: {info:?}, {consumer_status:?}"
    );

    eprintln!(
        "faults: {} commands, {retried} retried after UNAVAILABLE ({written_before_unavailable} \
         of them had been written before the error), {} late marks, {redelivered} redeliveries, \
         {} replay streams resumed",
        journal.attempts.len(),
        events.len() - commands.len() - 1,
        followed.resumed,
    );
    stack.projection.stop().await;
    stack.relay.stop().await;
    stack.processing.stop().await;
    stack.intake.stop().await;
}

/// A writer that stops answering inside the log's sequencing section — its process or machine
/// froze, or the network to it went silent, after `UPDATE log_head` and before `COMMIT` —
/// holds the head row's lock. PostgreSQL sees a healthy idle session, so without a bound every
/// other writer of the installation would wait behind it for as long as it stays frozen (here:
/// for ever). The log bounds how long a transaction holding the sequencer may sit idle
/// (`eventlog::SEQUENCER_IDLE_TIMEOUT`): the server then ends that session, its append rolls
/// back, and the others go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_frozen_in_the_sequencing_section_does_not_stop_the_others() {
    use sqlx::postgres::PgConnectOptions;

    let db = testkit::TestDb::new().await;
    let direct = EventLog::from_pool(db.pool.clone());
    let intake = RunningIntake::start(direct.clone()).await;
    let mut client = intake.client().await;
    client
        .receive_dossier(authed(
            COUNTER_DISTRICT,
            receive_days("FZ-before", local(2025, 3, 3, 9, 0), 5),
        ))
        .await
        .expect("a first write");

    // The writer that will freeze: its own pool through a proxy, as another service instance.
    let options: PgConnectOptions = db.url.parse().expect("test database url");
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve PostgreSQL")
        .next()
        .expect("an address for PostgreSQL");
    let proxy = testkit::TcpProxy::start(upstream).await;
    let frozen = EventLog::from_pool(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.host("127.0.0.1").port(proxy.addr().port()))
            .await
            .expect("connect through the proxy"),
    );
    let mut tx = frozen.pool().begin().await.expect("begin");
    let event_id = uuid::Uuid::new_v4();
    frozen
        .append_in(
            &mut tx,
            vec![eventlog::DossierAppend {
                dossier_id: "FZ-frozen".to_owned(),
                expected_version: eventlog::ExpectedVersion::NoStream,
                routing: eventlog::Routing {
                    level: "district".into(),
                    agency: tests::DISTRICT_AGENCY.into(),
                    sector: "land".into(),
                },
                events: vec![eventlog::NewEvent {
                    event_id,
                    event_type: "received".into(),
                    occurred_at: local(2025, 3, 3, 9, 0),
                    payload: serde_json::json!({}),
                    fingerprint: [7; 32],
                }],
            }],
        )
        .await
        .expect("the frozen writer takes the sequencer");
    // It now holds the head row, and stops answering.
    proxy.freeze();

    let after = tokio::time::timeout(
        CALL_BOUND,
        client.receive_dossier(authed(
            COUNTER_DISTRICT,
            receive_days("FZ-after", local(2025, 3, 3, 9, 0), 5),
        )),
    )
    .await;
    assert!(
        matches!(after, Ok(Ok(_))),
        "a write behind a frozen writer must go through within {CALL_BOUND:?}: {after:?}"
    );
    assert!(
        direct
            .find_events(&[event_id])
            .await
            .expect("find")
            .is_empty(),
        "the frozen writer's append was rolled back"
    );
    assert_eq!(direct.head().await.expect("head"), 2);
    proxy.cut().await;
    drop(tx);
    intake.stop().await;
}

/// A call in flight when the network to PostgreSQL goes silent (no reset: a partition, a frozen
/// database host) gets no answer from the database, ever — the connection looks healthy. The
/// write path bounds every write (`writepath::WRITE_TIMEOUT`), so the caller gets UNAVAILABLE
/// instead of waiting for TCP to give up (a quarter of an hour, or never behind a proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_when_the_database_goes_silent_is_answered_unavailable() {
    use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

    let db = testkit::TestDb::new().await;
    let direct = EventLog::from_pool(db.pool.clone());
    direct.migrate().await.expect("migrate");
    let options: PgConnectOptions = db.url.parse().expect("test database url");
    let upstream = tokio::net::lookup_host((options.get_host(), options.get_port()))
        .await
        .expect("resolve PostgreSQL")
        .next()
        .expect("an address for PostgreSQL");
    let proxy = testkit::TcpProxy::start(upstream).await;
    let through_proxy = EventLog::from_pool(
        PgPoolOptions::new()
            .max_connections(4)
            .connect_with(options.host("127.0.0.1").port(proxy.addr().port()))
            .await
            .expect("connect through the proxy"),
    );
    let intake = RunningIntake::start(through_proxy).await;
    let mut client = intake.client().await;

    // Hold the sequencer so that the call stops, in flight, at its `UPDATE log_head`.
    let mut holder = db.connect().await;
    begin_holding(&mut holder, "UPDATE log_head SET position = position").await;
    let call = tokio::spawn(async move {
        tokio::time::timeout(
            CALL_BOUND,
            client.receive_dossier(authed(
                COUNTER_DISTRICT,
                receive_days("SILENT-1", local(2025, 3, 3, 9, 0), 5),
            )),
        )
        .await
    });
    eventually("the call waits on the head row", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE c.relname = 'log_head' AND NOT l.granted",
        )
        .fetch_one(&db.pool)
        .await
        .expect("pg_locks");
        // A waiter on a row lock waits on the holder's transaction id, and on the tuple.
        let tuple: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&db.pool)
        .await
        .expect("pg_stat_activity");
        waiting > 0 || tuple > 0
    })
    .await;
    // The network goes silent; then the sequencer is free and the answer is sent — into the void.
    proxy.freeze();
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release the head row");

    let answer = call.await.expect("call task");
    match answer {
        Ok(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(Ok(answer)) => panic!("answered OK through a silent network: {answer:?}"),
        Err(_) => panic!("the call hung for {CALL_BOUND:?} after the database went silent"),
    }
    // The server ended the silent session (SEQUENCER_IDLE_TIMEOUT): nothing was written, and
    // the log takes writes again.
    eventually("the silent writer's session ends", || async {
        direct
            .append(vec![eventlog::DossierAppend {
                dossier_id: "SILENT-2".to_owned(),
                expected_version: eventlog::ExpectedVersion::NoStream,
                routing: eventlog::Routing {
                    level: "district".into(),
                    agency: tests::DISTRICT_AGENCY.into(),
                    sector: "land".into(),
                },
                events: vec![eventlog::NewEvent {
                    event_id: uuid::Uuid::new_v4(),
                    event_type: "received".into(),
                    occurred_at: local(2025, 3, 3, 9, 0),
                    payload: serde_json::json!({}),
                    fingerprint: [1; 32],
                }],
            }])
            .await
            .is_ok()
    })
    .await;
    assert!(
        direct
            .load_dossier("SILENT-1")
            .await
            .expect("load")
            .is_empty()
    );
    proxy.cut().await;
    intake.stop().await;
}
