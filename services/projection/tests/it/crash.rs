//! `kill -9` and redelivery: the real `projection` binary is killed with SIGKILL at random
//! moments while a writer appends realistic dossier lives and the relay publishes them; at the
//! end one instance catches up and every figure must be exactly the log's.
//!
//! Why it proves the issue's "exactly-once effect": a killed instance loses its open
//! transaction (PostgreSQL rolls it back) and its unacknowledged messages (JetStream
//! redelivers them after the consumer's `ack_wait`, here 2 s, to whichever instance pulls
//! next). The test checks after every kill that the read models are consistent with what they
//! claim to have applied (`verify`: no difference, only lag), and at the end that nothing is
//! behind and that `store::query` answers exactly what [`stats::Aggregates`] gives from every
//! dossier's contribution recomputed from the log. It also checks that the kills hit work in
//! progress (messages delivered and not acknowledged at kill time, redeliveries counted by the
//! server), so it cannot pass by killing idle processes.
//!
//! `CRASH_SEED=<n>` reproduces a run's lives and kill schedule (the timing of the processes
//! is the machine's).

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use calendar::{Calendar, StatutoryTime};
use chrono::{DateTime, NaiveDate, Utc};
use domain::{
    Action, AgencyCode, ApplicantType, Channel, ComponentCode, Dossier, FeeKind, Level,
    OnlineServiceLevel, Outcome, PaymentChannel, ProcedureCode, Profile, Rating, ReturnMethod,
    Rules, SectorCode, SupplementPolicy, Text, TransactionId, TransferMode,
};
use eventlog::{DossierAppend, EventLog, ExpectedVersion, NewEvent, Routing};
use projection::ConsumerConfig;
use stats::Aggregates;
use testkit::{TestDb, TestNats};
use tokio_util::sync::CancellationToken;

use crate::support::{AGENCIES, PROCEDURES, Rng, SECTORS, migrated_db, normal, sample_queries};

const CYCLES: usize = 8;
/// Short, so that messages held by a killed instance come back within the test.
const ACK_WAIT: Duration = Duration::from_secs(2);
const LIVES: usize = 700;
const SIGKILL: i32 = 9;

static CALENDAR: LazyLock<Calendar> = LazyLock::new(Calendar::vietnam_default);

// ---------------------------------------------------------------------------------------------
// Dossier lives, every step decided by `domain::decide`
// ---------------------------------------------------------------------------------------------

/// One dossier's whole life as the log will hold it (the writer appends it piecewise).
#[derive(Debug)]
pub(crate) struct Life {
    pub(crate) id: String,
    pub(crate) routing: Routing,
    pub(crate) events: Vec<domain::Event>,
}

/// Folds commands through `decide` the way the write path does; refused steps are skipped.
struct Lifeline {
    state: Dossier,
    events: Vec<domain::Event>,
    policy: SupplementPolicy,
}

impl Lifeline {
    fn act(&mut self, at: DateTime<Utc>, action: Action) -> bool {
        let command = domain::Command {
            occurred_at: at,
            action,
        };
        let rules = Rules {
            calendar: &CALENDAR,
            supplement_policy: self.policy,
            apology_notice: domain::NoticeUnit::WorkingDay,
        };
        let Ok(bodies) = domain::decide(&self.state, &command, rules) else {
            return false;
        };
        for body in bodies.into_events() {
            let event = domain::Event {
                occurred_at: domain::event_time(&command, &body),
                body,
            };
            self.state.evolve(&event);
            self.events.push(event);
        }
        true
    }
}

fn text(s: &str) -> Text {
    Text::parse(s).expect("text")
}

/// `minutes` after local (UTC+7) midnight of `day`.
fn local(day: NaiveDate, minutes: u64) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight").and_utc() - chrono::Duration::hours(7)
        + chrono::Duration::minutes(minutes as i64)
}

/// A random life in 2024: refused at the counter, or received and then any of digitized,
/// transferred, paused for a supplement, fee and payment, apology, late, and resolved (with a
/// result, its return and a rating), withdrawn, stopped or still pending.
pub(crate) fn life(rng: &mut Rng, n: usize) -> Life {
    let profile = Profile {
        procedure: ProcedureCode::parse(*rng.pick(&PROCEDURES)).unwrap(),
        online_level: *rng.pick(OnlineServiceLevel::ALL),
        sector: SectorCode::parse(*rng.pick(&SECTORS)).unwrap(),
        agency: AgencyCode::parse(*rng.pick(&AGENCIES)).unwrap(),
        level: *rng.pick(Level::ALL),
        channel: *rng.pick(Channel::ALL),
        applicant_type: *rng.pick(ApplicantType::ALL),
    };
    let routing = Routing {
        level: profile.level.as_str().to_owned(),
        agency: profile.agency.as_str().to_owned(),
        sector: profile.sector.as_str().to_owned(),
    };
    let policy = if rng.chance(50) {
        SupplementPolicy::Restart
    } else {
        SupplementPolicy::Extend
    };
    let mut l = Lifeline {
        state: Dossier::default(),
        events: Vec::new(),
        policy,
    };
    let day = NaiveDate::from_ymd_opt(2024, 1, 2).unwrap() + chrono::Days::new(rng.below(320));
    let mut t = local(day, 7 * 60 + rng.below(10 * 60));
    let step = |rng: &mut Rng, t: &mut DateTime<Utc>| {
        *t += match rng.below(4) {
            0 => chrono::Duration::minutes(5 + rng.below(120) as i64),
            1 => chrono::Duration::hours(2 + rng.below(20) as i64),
            _ => chrono::Duration::hours(20 + rng.below(70) as i64),
        };
        *t
    };

    if rng.chance(5) {
        let refused = l.act(
            t,
            Action::RefuseAtIntake {
                profile,
                reason: text("thiếu thành phần hồ sơ"),
            },
        );
        assert!(refused, "a refusal at the counter is always accepted");
        return Life {
            id: format!("HS-K-{n:05}"),
            routing,
            events: l.events,
        };
    }
    let components: Vec<ComponentCode> = (0..1 + rng.below(3))
        .map(|i| ComponentCode::parse(format!("tp-{i}")).unwrap())
        .collect();
    let fee_required = rng.chance(40);
    let statutory_time = if rng.chance(15) {
        StatutoryTime::Hours(4 + rng.below(12) as u32)
    } else {
        StatutoryTime::Days(1 + rng.below(7) as u32)
    };
    let received = l.act(
        t,
        Action::Receive {
            procedure: None,
            profile: profile.clone(),
            statutory_time,
            fee_required,
            components: components.clone(),
            due_at: None,
            applicant: None,
            return_method: None,
        },
    );
    assert!(received, "a reception is always accepted");
    if rng.chance(70) {
        let (mut digitized, mut reused) = (Vec::new(), Vec::new());
        for c in &components {
            if rng.chance(85) {
                if rng.chance(75) {
                    digitized.push(c.clone());
                } else {
                    reused.push(c.clone());
                }
            }
        }
        l.act(
            t + chrono::Duration::minutes(10),
            Action::RecordDigitized { digitized, reused },
        );
    }
    if rng.chance(25) {
        let to = AGENCIES
            .iter()
            .find(|a| **a != profile.agency.as_str())
            .expect("another agency");
        let at = step(rng, &mut t);
        l.act(
            at,
            Action::Transfer {
                to_agency: AgencyCode::parse(*to).unwrap(),
                mode: *rng.pick(TransferMode::ALL),
            },
        );
    }
    if fee_required || rng.chance(15) {
        let amount_vnd = 1000 * (10 + rng.below(500) as i64);
        let at = step(rng, &mut t);
        l.act(
            at,
            Action::AssessFee {
                amount_vnd,
                kind: *rng.pick(FeeKind::ALL),
            },
        );
        if rng.chance(80) {
            let at = step(rng, &mut t);
            l.act(
                at,
                Action::RecordPayment {
                    amount_vnd,
                    channel: *rng.pick(PaymentChannel::ALL),
                    transaction_id: TransactionId::parse(format!("TX-{n}")).unwrap(),
                },
            );
        }
    }
    if rng.chance(25) {
        let at = step(rng, &mut t);
        l.act(
            at,
            Action::RequestSupplement {
                reason: text("bổ sung giấy tờ"),
            },
        );
        if rng.chance(85) {
            let at = step(rng, &mut t);
            l.act(at, Action::ReceiveSupplement);
        }
    }
    if rng.chance(10)
        && let Some(due) = l.state.due_at
    {
        l.act(
            t + chrono::Duration::minutes(30),
            Action::IssueApology {
                reason: text("chờ kết quả đo đạc"),
                new_appointment: due + chrono::Duration::days(3),
                signer: None,
                delivery: None,
            },
        );
    }
    if rng.chance(30)
        && let Some(due) = l.state.due_at
    {
        // The deadline watcher noticed, some time after the due time.
        t = t.max(due) + chrono::Duration::minutes(1 + rng.below(600) as i64);
        l.act(t, Action::MarkLate);
    }
    match rng.below(100) {
        0..65 => {
            let at = step(rng, &mut t);
            let resolved = l.act(
                at,
                Action::Resolve {
                    outcome: *rng.pick(Outcome::ALL),
                    deciding_agency: profile.agency.clone(),
                },
            );
            if resolved {
                if rng.chance(50) {
                    let at = step(rng, &mut t);
                    l.act(
                        at,
                        Action::AttachResult {
                            document_ref: text(&format!("KQ-{n}")),
                            sha256: format!("{:064x}", rng.next_u64()),
                        },
                    );
                }
                if rng.chance(70) {
                    let at = step(rng, &mut t);
                    l.act(
                        at,
                        Action::ReturnResult {
                            method: *rng.pick(ReturnMethod::ALL),
                        },
                    );
                    if rng.chance(60) {
                        let at = step(rng, &mut t);
                        l.act(
                            at,
                            Action::Rate {
                                rating: *rng.pick(Rating::ALL),
                            },
                        );
                    }
                }
            }
        }
        65..72 => {
            let at = step(rng, &mut t);
            l.act(
                at,
                Action::Withdraw {
                    reason: text("công dân rút hồ sơ"),
                },
            );
        }
        72..77 => {
            let at = step(rng, &mut t);
            l.act(
                at,
                Action::Stop {
                    reason: text("dừng xử lý"),
                },
            );
        }
        _ => {} // still pending
    }
    Life {
        id: format!("HS-K-{n:05}"),
        routing,
        events: l.events,
    }
}

pub(crate) fn new_event(rng: &mut Rng, event: &domain::Event) -> NewEvent {
    let (event_type, payload) = event.body.into_parts();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
    let event_id = uuid::Builder::from_random_bytes(bytes).into_uuid();
    let mut fingerprint = [0u8; 32];
    fingerprint[..16].copy_from_slice(event_id.as_bytes());
    NewEvent {
        event_id,
        event_type: event_type.to_owned(),
        occurred_at: event.occurred_at,
        payload,
        fingerprint,
    }
}

// ---------------------------------------------------------------------------------------------
// The writer: appends the lives piecewise, interleaved, in bursts, until stopped
// ---------------------------------------------------------------------------------------------

/// What the writer appended: each life with the number of its events now in the log.
#[derive(Debug)]
struct Written {
    lives: Vec<Life>,
    written: Vec<usize>,
    appends: usize,
}

async fn write(log: EventLog, lives: Vec<Life>, mut rng: Rng, stop: CancellationToken) -> Written {
    let mut pieces = Interleaving::new(lives.len());
    let shape = Shape {
        several_percent: 20,
        most_dossiers: 4,
        active: 12,
        start_percent: 30,
        most_events: 3,
    };
    let mut appends = 0;
    'writing: while !stop.is_cancelled() {
        for _ in 0..1 + rng.below(20) {
            if pieces.done(&lives) {
                break 'writing;
            }
            let batch = pieces.next_batch(&lives, &mut rng, shape);
            let calls = pieces.appends(&lives, &batch, &mut rng);
            if !calls.is_empty() {
                log.append(calls).await.expect("append");
                appends += 1;
            }
            pieces.written_now(&lives, &batch);
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(20 + rng.below(180))) => {}
        }
    }
    Written {
        lives,
        written: pieces.written,
        appends,
    }
}

/// How [`Interleaving::next_batch`] cuts the lives into appends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// Percent of the appends that carry several dossiers (one transaction)…
    pub several_percent: u64,
    /// … at most this many.
    pub most_dossiers: u64,
    /// Lives in progress below which a new one is always started…
    pub active: usize,
    /// … and above it, the percent chance of starting one anyway.
    pub start_percent: u64,
    /// Events of one dossier in one append, at most.
    pub most_events: u64,
}

/// Lives written piecewise and interleaved, as counters would: which have started, how many of
/// each one's events are in the log.
pub(crate) struct Interleaving {
    pub written: Vec<usize>,
    active: Vec<usize>,
    next_new: usize,
}

impl Interleaving {
    pub fn new(lives: usize) -> Self {
        Interleaving {
            written: vec![0; lives],
            active: Vec::new(),
            next_new: 0,
        }
    }

    /// Every life is wholly written.
    pub fn done(&self, lives: &[Life]) -> bool {
        self.next_new == lives.len() && self.active.is_empty()
    }

    /// The next append: (life, number of its next events), one entry per dossier.
    pub fn next_batch(
        &mut self,
        lives: &[Life],
        rng: &mut Rng,
        shape: Shape,
    ) -> Vec<(usize, usize)> {
        let dossiers = if rng.chance(shape.several_percent) {
            2 + rng.below(shape.most_dossiers - 1)
        } else {
            1
        };
        let mut batch: Vec<(usize, usize)> = Vec::new();
        for _ in 0..dossiers {
            let start_new = self.next_new < lives.len()
                && (self.active.len() < shape.active || rng.chance(shape.start_percent));
            let i = if start_new {
                self.next_new += 1;
                self.active.push(self.next_new - 1);
                self.next_new - 1
            } else if self.active.is_empty() {
                break;
            } else {
                self.active[rng.below(self.active.len() as u64) as usize]
            };
            if batch.iter().any(|(j, _)| *j == i) {
                continue;
            }
            let left = lives[i].events.len() - self.written[i];
            batch.push((i, (1 + rng.below(shape.most_events) as usize).min(left)));
        }
        batch
    }

    /// The batch as appends, each expecting the version written so far.
    pub fn appends(
        &self,
        lives: &[Life],
        batch: &[(usize, usize)],
        rng: &mut Rng,
    ) -> Vec<DossierAppend> {
        batch
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|&(i, n)| DossierAppend {
                dossier_id: lives[i].id.clone(),
                expected_version: match self.written[i] {
                    0 => ExpectedVersion::NoStream,
                    v => ExpectedVersion::Exact(v as u32),
                },
                routing: lives[i].routing.clone(),
                events: lives[i].events[self.written[i]..self.written[i] + n]
                    .iter()
                    .map(|e| new_event(rng, e))
                    .collect(),
            })
            .collect()
    }

    /// The batch is in the log.
    pub fn written_now(&mut self, lives: &[Life], batch: &[(usize, usize)]) {
        for &(i, n) in batch {
            self.written[i] += n;
            if self.written[i] == lives[i].events.len() {
                self.active.retain(|j| *j != i);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The projection processes
// ---------------------------------------------------------------------------------------------

/// Quoted for TOML (a basic string; the values here are ASCII without control characters).
fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

fn write_config(dir: &Path, db: &TestDb, nats: &TestNats, durable: &str) -> PathBuf {
    let tokens = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/tokens.dev.toml");
    let text = format!(
        "[database]\nurl = {}\nmax_connections = 4\n\n\
         [nats]\nurl = {}\nstream = {}\nsubject_prefix = {}\n\n\
         [auth]\ntokens_file = {}\n\n\
         [projection]\nlisten = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\nconsumer = {}\n\n\
         [projection.apply]\nack_wait_secs = {}\n",
        toml_str(&db.url),
        toml_str(&nats.url),
        toml_str(&nats.stream),
        toml_str(&nats.prefix),
        toml_str(tokens.to_str().expect("UTF-8 path")),
        toml_str(durable),
        ACK_WAIT.as_secs(),
    );
    let path = dir.join("projection.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `projection serve`, its log in a file of the test's directory.
struct Instance {
    child: Child,
    name: String,
}

impl Instance {
    fn spawn(config: &Path, dir: &Path, name: String) -> Instance {
        let log = std::fs::File::create(dir.join(format!("{name}.log"))).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_projection"));
        command
            .arg("serve")
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for var in [
            "MOTCUA_CONFIG",
            "MOTCUA_DATABASE_URL",
            "MOTCUA_NATS_URL",
            "MOTCUA_TOKENS_FILE",
            "MOTCUA_PROJECTION_LISTEN",
            "MOTCUA_PROJECTION_HTTP_LISTEN",
            "MOTCUA_PROJECTION_METRICS_LISTEN",
            "MOTCUA_LOG_FORMAT",
        ] {
            command.env_remove(var);
        }
        let child = command.spawn().expect("start the projection binary");
        Instance { child, name }
    }

    /// SIGKILL; panics unless the process was still running (it died of this very signal).
    fn kill(mut self) {
        self.child.kill().expect("kill");
        let status = self.child.wait().expect("wait");
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "{} had already ended by itself ({status}); see its log",
            self.name
        );
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // After `kill` this is a no-op on a reaped child; on a panic it ends the process.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn consumer_info(nats: &TestNats, durable: &str) -> consumer::Info {
    nats.jetstream()
        .get_stream(&nats.stream)
        .await
        .expect("stream")
        .consumer_info(durable)
        .await
        .expect("consumer info")
}

/// Sum of the applied versions: grows whenever an instance commits an apply that did work.
async fn applied_total(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(SUM(version), 0)::bigint FROM projection_contributions")
        .fetch_one(&db.pool)
        .await
        .expect("applied total")
}

/// What one cycle saw at its kills.
#[derive(Debug)]
struct Cycle {
    instances: usize,
    waited_for_unacked: bool,
    ran: Duration,
    head: i64,
    num_pending: u64,
    num_ack_pending: usize,
    applied_during: i64,
    behind_after: usize,
}

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_leaves_the_figures_exact() {
    let started = Instant::now();
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xc0ffee_u64);
    eprintln!("seed {seed} (CRASH_SEED reproduces the lives and the kill schedule)");
    let mut rng_lives = Rng::new(seed);
    let rng_writer = Rng::new(seed ^ 0x5752_4954_4552);
    let mut rng = Rng::new(seed ^ 0x4b49_4c4c);

    let (db, log) = migrated_db().await;
    let nats = TestNats::new().await;
    let durable = format!("projection-crash-{}", testkit::unique_suffix());
    let dir = std::env::temp_dir().join(format!("projection-crash-{}", testkit::unique_suffix()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = write_config(&dir, &db, &nats, &durable);
    eprintln!("instance logs in {}", dir.display());

    // The stream, and the durable consumer with a short ack_wait (the instances' configuration
    // sets the same, `[projection.apply] ack_wait_secs`, so they keep it).
    let relay_config = relay::RelayConfig {
        stream: nats.stream.clone(),
        subject_prefix: nats.prefix.clone(),
        max_backoff: Duration::from_millis(500),
        poll_interval: Duration::from_millis(200),
        ..relay::RelayConfig::default()
    };
    let js = nats.jetstream();
    let stream: stream::Stream = relay::ensure_stream(&js, &relay_config)
        .await
        .expect("stream");
    let mut consumer_config = ConsumerConfig::new(&nats.stream, &nats.prefix, &durable);
    consumer_config.ack_wait = ACK_WAIT;
    stream
        .create_consumer(consumer_config.pull_config())
        .await
        .expect("durable consumer");

    // The relay, in this process.
    let stop_relay = CancellationToken::new();
    let relay = relay::Relay::new(
        log.clone(),
        jetstream::new(nats.client.clone()),
        relay_config,
    );
    let mut published = relay.progress();
    let relay_task = tokio::spawn({
        let stop = stop_relay.clone();
        async move { relay.run(stop).await.expect("relay runs") }
    });

    // The writer.
    let lives: Vec<Life> = (0..LIVES).map(|n| life(&mut rng_lives, n)).collect();
    let stop_writer = CancellationToken::new();
    let writer = tokio::spawn(write(log.clone(), lives, rng_writer, stop_writer.clone()));

    // Cycles: start one or two instances, let them work, kill -9 at a random moment.
    let mut cycles: Vec<Cycle> = Vec::new();
    let mut spawned = 0;
    for c in 0..CYCLES {
        let instances = if c == 1 || c == 5 || rng.chance(30) {
            2
        } else {
            1
        };
        let waited_for_unacked = c % 2 == 0 || rng.chance(30);
        let applied_before = applied_total(&db).await;
        let began = Instant::now();
        let mut running: Vec<Instance> = (0..instances)
            .map(|_| {
                spawned += 1;
                Instance::spawn(&config, &dir, format!("instance-{spawned}"))
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1500))).await;
        if waited_for_unacked {
            // Kill once this cycle's instances have applied something and some delivered
            // message is not acknowledged yet (a slow start under load only delays it).
            let deadline = Instant::now() + Duration::from_secs(10);
            while (applied_total(&db).await == applied_before
                || consumer_info(&nats, &durable).await.num_ack_pending == 0)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let info = consumer_info(&nats, &durable).await;
        let head = log.head().await.expect("head");
        let ran = began.elapsed();
        // Two instances die a random moment apart (sometimes at once).
        let first = running.remove(0);
        first.kill();
        if let Some(second) = running.pop() {
            tokio::time::sleep(Duration::from_millis(rng.below(400))).await;
            second.kill();
        }
        let applied_during = applied_total(&db).await - applied_before;

        // Whatever the moment, the read models hold whole applies only.
        let report = projection::verify::verify(&db.pool, 20)
            .await
            .expect("verify");
        assert!(
            report.is_consistent(),
            "cycle {c}: after kill -9 the read models differ from the log:\n{report}"
        );
        let cycle = Cycle {
            instances,
            waited_for_unacked,
            ran,
            head,
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending,
            applied_during,
            behind_after: report.behind.len(),
        };
        eprintln!(
            "cycle {c}: {} instance(s), ran {} ms{}, log head {}, consumer: {} not yet \
             delivered, {} unacknowledged at the kill; {} versions applied meanwhile, {} \
             dossiers behind after",
            cycle.instances,
            cycle.ran.as_millis(),
            if cycle.waited_for_unacked {
                " (killed once a message was unacknowledged)"
            } else {
                ""
            },
            cycle.head,
            cycle.num_pending,
            cycle.num_ack_pending,
            cycle.applied_during,
            cycle.behind_after
        );
        cycles.push(cycle);
        // Down for a while: the backlog grows.
        tokio::time::sleep(Duration::from_millis(rng.below(600))).await;
    }

    stop_writer.cancel();
    let written = writer.await.expect("writer");
    let caught_up_from = Instant::now();
    let head = log.head().await.expect("head");
    eprintln!(
        "writer: {} appends, {} events of {} dossiers",
        written.appends,
        head,
        written.written.iter().filter(|n| **n > 0).count()
    );

    // One instance catches up: everything published, delivered and acknowledged.
    tokio::time::timeout(Duration::from_secs(30), published.wait_for(|p| *p >= head))
        .await
        .expect("the relay publishes everything")
        .expect("relay progress");
    spawned += 1;
    let last = Instance::spawn(&config, &dir, format!("instance-{spawned}"));
    let deadline = Instant::now() + Duration::from_secs(40);
    let info = loop {
        let info = consumer_info(&nats, &durable).await;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break info;
        }
        assert!(
            Instant::now() < deadline,
            "the last instance did not catch up: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "caught up in {:.1} s after the writer stopped",
        caught_up_from.elapsed().as_secs_f64()
    );
    last.kill();
    stop_relay.cancel();
    relay_task.await.expect("relay task");

    // Exact: every dossier applied up to the log's version, every cell the log's sum.
    let report = projection::verify::verify(&db.pool, 20)
        .await
        .expect("verify");
    assert!(report.is_exact(), "after catching up:\n{report}");
    let dossiers_written = written.written.iter().filter(|n| **n > 0).count();
    assert_eq!(
        (report.position, report.dossiers),
        (head, dossiers_written as u64)
    );

    // The same through the queries: store::query equals the aggregates of every dossier's
    // contribution recomputed from the log (which holds what the writer wrote).
    let mut by_dossier: BTreeMap<String, Vec<domain::Event>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = log.read_after(after, 1000).await.expect("read the log");
        let Some(last) = page.last() else { break };
        after = last.position;
        for e in page {
            let body = domain::DossierEvent::from_parts(&e.event_type, &e.payload).expect("decode");
            by_dossier
                .entry(e.dossier_id)
                .or_default()
                .push(domain::Event {
                    occurred_at: e.occurred_at,
                    body,
                });
        }
    }
    let mut model = Aggregates::new();
    for (id, events) in &by_dossier {
        let contribution = stats::contribution(events);
        model.apply(&stats::diff(None, contribution.as_ref()));
        let i = written
            .lives
            .iter()
            .position(|l| &l.id == id)
            .expect("a dossier the writer wrote");
        let intended = stats::contribution(&written.lives[i].events[..written.written[i]]);
        assert_eq!(
            contribution, intended,
            "dossier {id}: the log is what was written"
        );
    }
    let mut with_figures = 0;
    for q in sample_queries() {
        let expected = normal(model.query(&q));
        let found = projection::store::query(&db.pool, &q).await.expect("query");
        assert_eq!(found, expected, "{q:?}");
        with_figures += usize::from(
            expected
                .values()
                .any(|t| !t.flows.is_empty() || !t.at_end.is_empty()),
        );
    }
    assert!(with_figures > 10, "the compared answers hold figures");

    // Not vacuous: the kills hit work in progress, and the server redelivered.
    let mid_work = cycles
        .iter()
        .filter(|c| c.num_ack_pending > 0 && c.applied_during > 0)
        .count();
    assert!(
        mid_work >= CYCLES / 2,
        "only {mid_work} of {CYCLES} kills hit an instance that was working and held \
         unacknowledged messages: {cycles:#?}"
    );
    assert!(
        cycles.iter().filter(|c| c.behind_after > 0).count() >= 2,
        "kills should leave work for the next instance: {cycles:#?}"
    );
    assert!(cycles.iter().any(|c| c.instances == 2));
    let redelivered = info.delivered.consumer_sequence - info.delivered.stream_sequence;
    assert!(redelivered > 0, "no message was delivered twice: {info:?}");
    eprintln!(
        "{} kills, {mid_work} mid-work; {redelivered} redeliveries; {} dossiers exact in {:.1} s",
        spawned - 1,
        report.dossiers,
        started.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).ok();
}
