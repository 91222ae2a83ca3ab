//! Scenario E: end to end. `--counters` counters drive whole dossier lives through the real
//! services, with the relay and the projection running on the same database and a private
//! JetStream stream and subject prefix, for `--secs` seconds.
//!
//! Intake, processing, payment and results run in-process on port 0 (the test harness), each
//! with a pool of its own of its production default size (`svc::config::DEFAULT_POOLS`), as
//! separate processes would; so do the relay and the projection (its consumer, `StatsService`
//! and HTTP endpoint). Each counter is a task with its own gRPC channel to each service. It
//! plays one dossier after another, one call at a time, each life drawn from a realistic mix
//! ([`plan`]): refused at the counter, or received (district or province, some with a fee);
//! components digitized; the fee assessed and paid online or at the counter; a transfer; a
//! supplement asked and received; withdrawn or stopped; resolved (approved or refused); the
//! result digitized and returned; a rating. Business times spread each life over up to ~1.6
//! times its statutory time, so some dossiers are late.
//!
//! Timed and counted:
//!
//! - the sustained rate: every committed event over the wall time of the load (the calls of a
//!   life still running at the deadline stop there);
//! - each call's latency at the client (with its retries, if any);
//! - append → visible figure, every `--sample`-th call: the same method as scenario L
//!   ([`crate::visible::Poller`]), from the call's answer to the first poll that sees the
//!   dossier's applied version reach the answered version; and append → message received by a
//!   plain subscriber of the stream for every call ([`crate::visible::Observer`]);
//! - where the database's sessions were: `pg_stat_activity` sampled every [`ACTIVITY_EVERY`].
//!
//! After the load the run is checked, so that it cannot report the speed of a wrong system:
//! every call succeeded (transient refusals retried with the same event id), the log's head
//! moved by exactly the number of calls, every answer carried the dossier's next version, the
//! projection caught up, `projection verify` finds no difference, and `GetIndicators` over the
//! whole period equals the statistics recomputed by `stats` from the raw events.
//!
//! Baselines, in the same run: **E0** the same rows (read back from `events`) inserted one per
//! autocommit statement by as many tasks as counters (as A0), and **L0** raw JetStream
//! publish → pull receipt at the rate E reached, from as many publishers ([`lag::raw_baseline`]).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::v1 as pb;
use api::v1::intake_service_client::IntakeServiceClient;
use api::v1::payment_service_client::PaymentServiceClient;
use api::v1::processing_service_client::ProcessingServiceClient;
use api::v1::results_service_client::ResultsServiceClient;
use chrono::{DateTime, SubsecRound, Utc};
use eventlog::EventLog;
use sqlx::PgPool;
use testkit::{Rng, TestDb};
use tests::lifecycle::{self as lc, RunningService};
use tests::processing::{self as pr, COMMUNE_AGENCY, RunningProcessing};
use tests::projection::RunningProjection;
use tests::{
    COUNTER_DISTRICT, COUNTER_PROVINCE, DISTRICT_AGENCY, PROVINCE_AGENCY, RunningIntake,
    RunningRelay, authed, new_event_id, ts,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};

use crate::lag::{self, LagConfig};
use crate::query::{ms, pct};
use crate::raw::{self, LIVE_TABLE};
use crate::report::{Machine, thousands};
use crate::visible::{Observer, Poller, Visibility, wait_for_consumer, wait_for_stream};
use crate::{Timing, settle};

/// The projection's durable consumer in this run.
const DURABLE: &str = "bench-e2e";
/// Dossier ids of the run: `E2E-<counter>-<life>`.
pub const DOSSIER_PREFIX: &str = "E2E-";
/// How often `pg_stat_activity` is sampled.
pub const ACTIVITY_EVERY: Duration = Duration::from_millis(20);
/// Retries of one call refused with a transient code before the run fails.
const MAX_RETRIES: u32 = 8;

#[derive(Debug, Clone, Copy)]
pub struct E2eConfig {
    pub counters: usize,
    pub secs: u64,
    /// Every `sample`-th call is awaited in the projection.
    pub sample: u64,
    /// Seconds of the raw JetStream baseline.
    pub baseline_secs: u64,
    /// `ANALYZE` before the baselines.
    pub analyze: bool,
}

/// One call of a life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Receive,
    RefuseAtCounter,
    Digitize,
    AssessFee,
    PayOnline,
    PayAtCounter,
    Transfer,
    RequestSupplement,
    ReceiveSupplement,
    Withdraw,
    Stop,
    Resolve,
    AttachResult,
    ReturnResult,
    Rate,
}

impl Step {
    pub const ALL: [Step; 15] = [
        Step::Receive,
        Step::RefuseAtCounter,
        Step::Digitize,
        Step::AssessFee,
        Step::PayOnline,
        Step::PayAtCounter,
        Step::Transfer,
        Step::RequestSupplement,
        Step::ReceiveSupplement,
        Step::Withdraw,
        Step::Stop,
        Step::Resolve,
        Step::AttachResult,
        Step::ReturnResult,
        Step::Rate,
    ];

    /// The RPC, as the report names it.
    pub fn rpc(self) -> &'static str {
        match self {
            Step::Receive => "intake `ReceiveDossier`",
            Step::RefuseAtCounter => "intake `RefuseAtCounter`",
            Step::Digitize => "intake `RecordDigitizedComponents`",
            Step::AssessFee => "payment `AssessFee`",
            Step::PayOnline => "payment `RecordPayment` (online)",
            Step::PayAtCounter => "payment `RecordPayment` (at the counter)",
            Step::Transfer => "processing `Transfer`",
            Step::RequestSupplement => "processing `RequestSupplement`",
            Step::ReceiveSupplement => "processing `ReceiveSupplement`",
            Step::Withdraw => "processing `Withdraw`",
            Step::Stop => "processing `StopProcessing`",
            Step::Resolve => "processing `Resolve`",
            Step::AttachResult => "results `AttachResult`",
            Step::ReturnResult => "results `ReturnResult`",
            Step::Rate => "results `RecordRating`",
        }
    }

    fn index(self) -> usize {
        Step::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }
}

/// One dossier's life, drawn before it starts.
#[derive(Debug, Clone)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub province: bool,
    pub fee: bool,
    pub working_days: u32,
    /// From the first step to the last, in business time.
    pub span: chrono::Duration,
}

/// The mix: 3 % refused at the counter; of the received, 20 % at the province, half with a
/// fee (paid online 60 %, at the counter 40 %), 85 % with components digitized, 15 %
/// transferred, 15 % asked for a supplement (one in ten of those then withdrawn), 2 %
/// withdrawn and 1 % stopped otherwise; the rest resolved (10 % refused on decision), 80 % with
/// a digitized result, all returned, 60 % rated.
pub fn plan(rng: &mut Rng) -> Plan {
    let province = rng.chance(20);
    let working_days = *rng.pick(&[3u32, 5, 7, 10, 15]);
    // Up to ~1.6 × the statutory time in calendar days (weekends included): some are late.
    let max_minutes = (i64::from(working_days) * 1440 * 16 / 10).max(120);
    let span = chrono::Duration::minutes(60 + rng.below(max_minutes as u64) as i64);
    let mut steps = Vec::with_capacity(12);
    let fee = rng.chance(50);
    let done = |steps| Plan {
        steps,
        province,
        fee,
        working_days,
        span,
    };
    if rng.chance(3) {
        return done(vec![Step::RefuseAtCounter]);
    }
    steps.push(Step::Receive);
    if rng.chance(85) {
        steps.push(Step::Digitize);
    }
    if fee {
        steps.push(Step::AssessFee);
        steps.push(if rng.chance(60) {
            Step::PayOnline
        } else {
            Step::PayAtCounter
        });
    }
    if rng.chance(15) {
        steps.push(Step::Transfer);
    }
    if rng.chance(15) {
        steps.push(Step::RequestSupplement);
        if rng.chance(10) {
            steps.push(Step::Withdraw);
            return done(steps);
        }
        steps.push(Step::ReceiveSupplement);
    }
    if rng.chance(2) {
        steps.push(Step::Withdraw);
        return done(steps);
    }
    if rng.chance(1) {
        steps.push(Step::Stop);
        return done(steps);
    }
    steps.push(Step::Resolve);
    if rng.chance(80) {
        steps.push(Step::AttachResult);
    }
    steps.push(Step::ReturnResult);
    if rng.chance(60) {
        steps.push(Step::Rate);
    }
    done(steps)
}

/// Backends seen in one state, summed over the samples.
#[derive(Debug, Clone)]
pub struct Activity {
    /// `wait_event_type:wait_event`, or `CPU` when not waiting.
    pub wait: String,
    /// The session's state and the start of its statement.
    pub what: String,
    /// Sessions seen, summed over the samples: divided by `samples`, the average number.
    pub seen: u64,
}

/// What one end-to-end run measured and checked.
#[derive(Debug, Clone)]
pub struct E2e {
    pub config: E2eConfig,
    /// Committed events (= successful calls) over the wall time of the load, with per-call
    /// latencies.
    pub calls: Timing,
    pub steps: Vec<(Step, u64)>,
    pub lives_started: u64,
    /// Lives that reached their last step before the deadline.
    pub lives_done: u64,
    pub retries: u64,
    /// Answers marked `duplicate` (a retry of a call that had committed).
    pub duplicates: u64,
    pub visible: Visibility,
    pub relayed: Vec<Duration>,
    /// From the end of the load until the projection had applied every dossier's last version:
    /// the backlog it was carrying.
    pub catch_up: Duration,
    /// `projection verify`'s summary line (no difference, or the run failed).
    pub verified: String,
    /// The period `GetIndicators` was compared over.
    pub indicators_period: (chrono::NaiveDate, chrono::NaiveDate),
    pub activity: Vec<Activity>,
    pub activity_samples: u64,
    /// E0: the same rows, single-row autocommit inserts.
    pub raw: Timing,
    /// L0: (messages, seconds, sorted latencies).
    pub raw_stream: (u64, f64, Vec<Duration>),
}

/// One counter's tally.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    steps: [u64; 15],
    answered: Vec<(i64, Instant)>,
    lives_started: u64,
    lives_done: u64,
    retries: u64,
    duplicates: u64,
}

/// A counter: its own channel to each service.
#[derive(Debug, Clone)]
struct Counter {
    intake: IntakeServiceClient<Channel>,
    processing: ProcessingServiceClient<Channel>,
    payment: PaymentServiceClient<Channel>,
    results: ResultsServiceClient<Channel>,
}

/// The answers that carry the recorded event.
trait Recorded {
    fn recorded(&self) -> Option<&pb::RecordedEvent>;
}

impl Recorded for pb::ReceiveDossierResponse {
    fn recorded(&self) -> Option<&pb::RecordedEvent> {
        self.event.as_ref()
    }
}

impl Recorded for pb::WriteResponse {
    fn recorded(&self) -> Option<&pb::RecordedEvent> {
        self.event.as_ref()
    }
}

impl Recorded for pb::ReceiveSupplementResponse {
    fn recorded(&self) -> Option<&pb::RecordedEvent> {
        self.event.as_ref()
    }
}

impl Recorded for pb::ResolveResponse {
    fn recorded(&self) -> Option<&pb::RecordedEvent> {
        self.event.as_ref()
    }
}

/// Codes a counter retries with the same request (same event id: the write path answers a
/// repeat with the stored event, marked duplicate).
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable | Code::ResourceExhausted | Code::Aborted
    )
}

/// Shared by every counter.
#[derive(Debug)]
struct Shared {
    poller: Poller,
    sample: u64,
    calls: AtomicU64,
    deadline: Instant,
}

/// Sends one call (again, on a transient refusal), checks its answer and records it.
async fn call<T, Fut>(
    tally: &mut Tally,
    shared: &Shared,
    step: Step,
    dossier_id: &str,
    version: u32,
    mut send: impl FnMut() -> Fut,
) -> Result<()>
where
    T: Recorded,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let sent = Instant::now();
    let mut attempts = 0;
    let answer = loop {
        match send().await {
            Ok(answer) => break answer.into_inner(),
            Err(status) if transient(&status) && attempts < MAX_RETRIES => {
                attempts += 1;
                tally.retries += 1;
                tokio::time::sleep(Duration::from_millis(10 << attempts.min(6))).await;
            }
            Err(status) => bail!(
                "{} for {dossier_id} (version {version}) refused: {status:?}",
                step.rpc()
            ),
        }
    };
    let answered = Instant::now();
    let event = answer
        .recorded()
        .with_context(|| format!("{} answered without its event", step.rpc()))?;
    if event.dossier_id != dossier_id || event.version != version {
        bail!(
            "{} for {dossier_id} answered {} version {}, expected version {version}",
            step.rpc(),
            event.dossier_id,
            event.version
        );
    }
    tally.latencies.push(answered - sent);
    tally.steps[step.index()] += 1;
    tally.duplicates += u64::from(event.duplicate);
    let position = i64::try_from(event.position).context("position beyond i64")?;
    tally.answered.push((position, answered));
    if shared.calls.fetch_add(1, Ordering::Relaxed) % shared.sample == 0 {
        shared
            .poller
            .watch(dossier_id, i32::try_from(version)?, answered);
    }
    Ok(())
}

/// One counter: lives one after another until the deadline.
async fn counter(number: usize, clients: Counter, shared: Arc<Shared>) -> Result<Tally> {
    let mut rng = Rng::new(0xe2e0_0000 + number as u64);
    let mut tally = Tally::default();
    let mut life = 0u64;
    while Instant::now() < shared.deadline {
        life += 1;
        let plan = plan(&mut rng);
        let dossier_id = format!("{DOSSIER_PREFIX}{number:03}-{life:06}");
        tally.lives_started += 1;
        if live(&mut tally, &shared, &clients, &mut rng, &plan, &dossier_id).await? {
            tally.lives_done += 1;
        }
    }
    Ok(tally)
}

/// Plays `plan` for `dossier_id`; false if the deadline cut it short.
async fn live(
    tally: &mut Tally,
    shared: &Shared,
    clients: &Counter,
    rng: &mut Rng,
    plan: &Plan,
    id: &str,
) -> Result<bool> {
    let (token, agency, other) = if plan.province {
        (COUNTER_PROVINCE, PROVINCE_AGENCY, DISTRICT_AGENCY)
    } else {
        (COUNTER_DISTRICT, DISTRICT_AGENCY, COMMUNE_AGENCY)
    };
    // Business times: spread over the span, ending a little before now.
    let end = (Utc::now() - chrono::Duration::minutes(1)).trunc_subsecs(0);
    let start = end - plan.span;
    let n = plan.steps.len() as i32;
    let at = |i: usize| -> DateTime<Utc> { start + plan.span * (i as i32) / n.max(1) };
    let mut profile = tests::profile(agency);
    profile.channel = *rng.pick(&[
        pb::Channel::Online as i32,
        pb::Channel::Online as i32,
        pb::Channel::Direct as i32,
        pb::Channel::Direct as i32,
        pb::Channel::Postal as i32,
    ]);
    profile.online_level = *rng.pick(&[
        pb::OnlineServiceLevel::FullOnline as i32,
        pb::OnlineServiceLevel::PartialOnline as i32,
        pb::OnlineServiceLevel::NotOnline as i32,
    ]);
    let mut components = vec!["don-de-nghi".to_owned(), "ban-ve".to_owned()];
    if rng.chance(40) {
        components.push("giay-chung-nhan".to_owned());
    }
    let amount = 10_000 * (1 + rng.below(50) as i64);

    for (i, step) in plan.steps.iter().copied().enumerate() {
        if Instant::now() >= shared.deadline {
            return Ok(false);
        }
        let t = at(i);
        let version = i as u32 + 1;
        let c = clients.clone();
        match step {
            Step::Receive => {
                let mut r = pr::receive_days(id, t, plan.working_days);
                r.profile = Some(profile.clone());
                r.fee_required = plan.fee;
                r.components = components.clone();
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.intake.clone(), authed(token, r.clone()));
                    async move { c.receive_dossier(r).await }
                })
                .await?;
            }
            Step::RefuseAtCounter => {
                let r = pb::RefuseAtCounterRequest {
                    event_id: new_event_id(),
                    dossier_id: id.to_owned(),
                    occurred_at: Some(ts(t)),
                    profile: Some(profile.clone()),
                    reason: "Hồ sơ không đủ thành phần theo quy định".to_owned(),
                };
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.intake.clone(), authed(token, r.clone()));
                    async move { c.refuse_at_counter(r).await }
                })
                .await?;
            }
            Step::Digitize => {
                let all = rng.chance(70);
                let r = pb::RecordDigitizedComponentsRequest {
                    event_id: new_event_id(),
                    dossier_id: id.to_owned(),
                    occurred_at: Some(ts(t)),
                    digitized: if all {
                        components.clone()
                    } else {
                        components[..1].to_vec()
                    },
                    reused: if all {
                        vec![]
                    } else {
                        components[1..].to_vec()
                    },
                    expected_version: None,
                };
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.intake.clone(), authed(token, r.clone()));
                    async move { c.record_digitized_components(r).await }
                })
                .await?;
            }
            Step::AssessFee => {
                let r = lc::assess_fee(id, t, amount, pb::FeeKind::Fee);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.payment.clone(), authed(token, r.clone()));
                    async move { c.assess_fee(r).await }
                })
                .await?;
            }
            Step::PayOnline | Step::PayAtCounter => {
                let channel = if step == Step::PayAtCounter {
                    pb::PaymentChannel::Counter
                } else if rng.chance(50) {
                    pb::PaymentChannel::NationalPlatform
                } else {
                    pb::PaymentChannel::ProvincialGateway
                };
                let r = lc::record_payment(id, t, amount, channel, &format!("GD-{id}"));
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.payment.clone(), authed(token, r.clone()));
                    async move { c.record_payment(r).await }
                })
                .await?;
            }
            Step::Transfer => {
                let mode = if rng.chance(80) {
                    pb::TransferMode::Electronic
                } else {
                    pb::TransferMode::Paper
                };
                let r = pr::transfer(id, t, other, mode);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.processing.clone(), authed(token, r.clone()));
                    async move { c.transfer(r).await }
                })
                .await?;
            }
            Step::RequestSupplement => {
                let r = pr::request_supplement(id, t);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.processing.clone(), authed(token, r.clone()));
                    async move { c.request_supplement(r).await }
                })
                .await?;
            }
            Step::ReceiveSupplement => {
                let r = pr::receive_supplement(id, t);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.processing.clone(), authed(token, r.clone()));
                    async move { c.receive_supplement(r).await }
                })
                .await?;
            }
            Step::Withdraw => {
                let r = pr::withdraw(id, t);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.processing.clone(), authed(token, r.clone()));
                    async move { c.withdraw(r).await }
                })
                .await?;
            }
            Step::Stop => {
                let r = pr::stop_processing(id, t);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.processing.clone(), authed(token, r.clone()));
                    async move { c.stop_processing(r).await }
                })
                .await?;
            }
            Step::Resolve => {
                let outcome = if rng.chance(90) {
                    pb::Outcome::Approved
                } else {
                    pb::Outcome::Refused
                };
                let mut r = pr::resolve(id, t, outcome);
                agency.clone_into(&mut r.deciding_agency);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.processing.clone(), authed(token, r.clone()));
                    async move { c.resolve(r).await }
                })
                .await?;
            }
            Step::AttachResult => {
                let r = lc::attach_result(id, t);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.results.clone(), authed(token, r.clone()));
                    async move { c.attach_result(r).await }
                })
                .await?;
            }
            Step::ReturnResult => {
                let method = *rng.pick(&[
                    pb::ReturnMethod::Counter,
                    pb::ReturnMethod::Counter,
                    pb::ReturnMethod::Post,
                    pb::ReturnMethod::Online,
                ]);
                let r = lc::return_result(id, t, method);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.results.clone(), authed(token, r.clone()));
                    async move { c.return_result(r).await }
                })
                .await?;
            }
            Step::Rate => {
                let rating = *rng.pick(&[
                    pb::Rating::VerySatisfied,
                    pb::Rating::VerySatisfied,
                    pb::Rating::Satisfied,
                    pb::Rating::Satisfied,
                    pb::Rating::Satisfied,
                    pb::Rating::Unsatisfied,
                ]);
                let r = lc::record_rating(id, t, rating);
                call(tally, shared, step, id, version, || {
                    let (mut c, r) = (c.results.clone(), authed(token, r.clone()));
                    async move { c.record_rating(r).await }
                })
                .await?;
            }
        }
    }
    Ok(true)
}

/// `service`'s pool as the service opens it (`svc::config`, the default `[database]` settings
/// and pool size).
async fn service_log(db: &TestDb, service: &str) -> Result<EventLog> {
    svc::config::DatabaseConfig::with_url(&db.url)
        .connect(service)
        .await
        .with_context(|| format!("{service}'s pool"))
}

/// Samples `pg_stat_activity` until `stop`: sessions of this database in a statement or in a
/// transaction, by wait event and statement.
async fn sample_activity(
    pool: PgPool,
    stop: CancellationToken,
) -> Result<(Vec<Activity>, u64), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut samples = 0u64;
    let mut tick = tokio::time::interval(ACTIVITY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_cancelled() {
        tick.tick().await;
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU'), \
                    state || ': ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 60), \
                    count(*) \
             FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid() \
               AND state IN ('active', 'idle in transaction') \
             GROUP BY 1, 2",
        )
        .fetch_all(&mut *conn)
        .await?;
        samples += 1;
        for (wait, what, n) in rows {
            *seen.entry((wait, what)).or_default() += n as u64;
        }
    }
    let mut activity: Vec<Activity> = seen
        .into_iter()
        .map(|((wait, what), seen)| Activity { wait, what, seen })
        .collect();
    activity.sort_by(|a, b| b.seen.cmp(&a.seen).then(a.what.cmp(&b.what)));
    Ok((activity, samples))
}

/// Waits until the projection has applied every dossier of the log up to its last version.
async fn caught_up(pool: &PgPool, timeout: Duration) -> Result<()> {
    let until = Instant::now() + timeout;
    loop {
        let behind: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT dossier_id, max(version) AS version FROM events \
                                   GROUP BY dossier_id) e \
             LEFT JOIN projection_contributions c USING (dossier_id) \
             WHERE coalesce(c.version, 0) < e.version",
        )
        .fetch_one(pool)
        .await?;
        if behind == 0 {
            return Ok(());
        }
        if Instant::now() >= until {
            bail!("the projection did not catch up within {timeout:?}: {behind} dossiers behind");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn run(db: &TestDb, config: E2eConfig) -> Result<E2e> {
    let pool = &db.pool;
    let log = EventLog::from_pool(pool.clone());
    log.migrate().await?;
    projection::store::migrate(pool).await?;
    let nats = testkit::TestNats::new().await;
    let js = nats.jetstream();

    let relay = RunningRelay::start(
        service_log(db, "relay").await?,
        &nats.url,
        &nats.stream,
        &nats.prefix,
    )
    .await;
    let stream = wait_for_stream(&js, &nats.stream).await?;
    let projection = RunningProjection::start(
        service_log(db, "projection").await?,
        &nats.url,
        &nats.stream,
        &nats.prefix,
        DURABLE,
    )
    .await;
    wait_for_consumer(&stream, DURABLE).await?;
    let intake = RunningIntake::start(service_log(db, "intake").await?).await;
    let processing = RunningProcessing::start(
        service_log(db, "processing").await?,
        domain::SupplementPolicy::Restart,
    )
    .await;
    let payment = RunningService::payment(service_log(db, "payment").await?).await;
    let results = RunningService::results(service_log(db, "results").await?).await;
    let observer = Observer::start(&stream).await?;

    let mut counters = Vec::with_capacity(config.counters);
    for _ in 0..config.counters {
        counters.push(Counter {
            intake: intake.client().await,
            processing: processing.client().await,
            payment: PaymentServiceClient::new(payment.channel().await),
            results: ResultsServiceClient::new(results.channel().await),
        });
    }
    let before = log.head().await?;
    eprintln!(
        "bench: E  {} counters driving dossier lives for {} s (relay and projection running)",
        config.counters, config.secs
    );
    let shared = Arc::new(Shared {
        poller: Poller::start(pool),
        sample: config.sample,
        calls: AtomicU64::new(0),
        deadline: Instant::now() + Duration::from_secs(config.secs),
    });
    let stop_sampling = CancellationToken::new();
    let sampling = tokio::spawn(sample_activity(pool.clone(), stop_sampling.clone()));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(config.counters);
    for (number, clients) in counters.into_iter().enumerate() {
        tasks.push(tokio::spawn(counter(number, clients, shared.clone())));
    }
    let mut tallies = Vec::with_capacity(tasks.len());
    for task in tasks {
        tallies.push(task.await?.context("a counter")?);
    }
    let elapsed = started.elapsed();
    stop_sampling.cancel();
    let (activity, activity_samples) = sampling.await?.context("pg_stat_activity")?;
    let head = log.head().await?;

    let mut latencies = Vec::new();
    let mut steps = [0u64; 15];
    let mut answered = Vec::new();
    let (mut lives_started, mut lives_done, mut retries, mut duplicates) = (0, 0, 0, 0);
    for t in tallies {
        latencies.extend(t.latencies);
        for (sum, n) in steps.iter_mut().zip(t.steps) {
            *sum += n;
        }
        answered.extend(t.answered);
        lives_started += t.lives_started;
        lives_done += t.lives_done;
        retries += t.retries;
        duplicates += t.duplicates;
    }
    let count = latencies.len() as u64;
    let calls = Timing::new(count, elapsed, latencies);
    eprintln!(
        "bench: E  {} ({lives_started} lives, {retries} retries); draining the projection",
        calls.summary()
    );
    if head - before != count as i64 {
        bail!(
            "{count} calls succeeded but the log's head moved by {}",
            head - before
        );
    }

    // Exactness: everything visible, verify finds nothing, the query path answers the log.
    let shared = Arc::into_inner(shared).context("the counters are done")?;
    // The projection may carry a backlog of several times the load's length.
    let drain = Duration::from_secs(120 + 4 * config.secs);
    let visible = shared.poller.drain(drain).await?;
    if visible.unseen > 0 {
        bail!(
            "{} sampled appends never became visible within {drain:?}",
            visible.unseen
        );
    }
    caught_up(pool, drain).await?;
    let catch_up = started.elapsed().saturating_sub(elapsed);
    let relayed = observer.stop(&answered).await?;
    let report = projection::verify::verify(pool, 20)
        .await
        .context("projection verify")?;
    if !report.is_exact() || report.position != head {
        bail!("projection verify found differences after the run:\n{report}");
    }
    let verified = report
        .to_string()
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    eprintln!("bench: E  {verified}");
    let today = Utc::now().date_naive();
    let period = (
        today - chrono::Duration::days(60),
        today + chrono::Duration::days(2),
    );
    let answered_figures = projection.indicators(period.0, period.1).await;
    let expected = tests::projection::expected_indicators(&log, period.0, period.1).await;
    if answered_figures != expected {
        bail!(
            "GetIndicators differs from the statistics recomputed from the log:\n\
             answered {answered_figures:?}\nexpected {expected:?}"
        );
    }

    intake.stop().await;
    processing.stop().await;
    payment.stop().await;
    results.stop().await;
    projection.stop().await;
    relay.stop().await;

    // E0: the same rows, one autocommit INSERT each, as many tasks as counters.
    raw::create_tables(pool).await?;
    let rows = raw::rows_between(pool, before, head).await?;
    settle(pool, config.analyze).await?;
    eprintln!(
        "bench: E0 raw single-row inserts of the same {} rows",
        rows.len()
    );
    let raw = raw::single_rows(pool, LIVE_TABLE, rows, config.counters).await?;
    eprintln!("bench: E0 {}", raw.summary());

    // L0: raw JetStream at the rate E reached.
    eprintln!("bench: L0 raw JetStream publish → receive at E's rate");
    let raw_stream = lag::raw_baseline(LagConfig {
        secs: config.baseline_secs,
        rate: (calls.rate().round() as u64).max(1),
        writers: config.counters,
        consumers: 1,
    })
    .await?;
    drop(nats);

    Ok(E2e {
        config,
        steps: Step::ALL.iter().map(|s| (*s, steps[s.index()])).collect(),
        calls,
        lives_started,
        lives_done,
        retries,
        duplicates,
        visible,
        relayed,
        catch_up,
        verified,
        indicators_period: period,
        activity,
        activity_samples,
        raw,
        raw_stream,
    })
}

/// Two decimals below 10, none above.
fn times(x: f64) -> String {
    if x >= 10.0 {
        format!("{x:.0} ×")
    } else {
        format!("{x:.2} ×")
    }
}

/// The Markdown report of scenario E.
pub fn render(e: &E2e, machine: &Machine, load_end: &str) -> String {
    let c = &e.config;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## E: end to end, {} counters for {} s\n",
        c.counters, c.secs
    );
    let _ = writeln!(
        out,
        "| scenario | count | seconds | rate | latency p50 / p99 (ms) | ratio to its baseline |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    let latency = |t: &Timing| match (t.percentile(50.0), t.percentile(99.0)) {
        (Some(a), Some(b)) => format!("{:.1} / {:.1}", ms(a), ms(b)),
        _ => "—".to_owned(),
    };
    let _ = writeln!(
        out,
        "| **E** whole lives through intake, processing, payment and results; relay and \
         projection running | {} events | {:.2} | {} events/s | {} | {:.2} × E0 |",
        thousands(e.calls.count),
        e.calls.seconds,
        thousands(e.calls.rate().round() as u64),
        latency(&e.calls),
        e.calls.rate() / e.raw.rate(),
    );
    let _ = writeln!(
        out,
        "| E0 baseline: the same rows, single-row `INSERT`, autocommit, {} tasks, plain table \
         | {} rows | {:.2} | {} rows/s | {} | 1 |",
        c.counters,
        thousands(e.raw.count),
        e.raw.seconds,
        thousands(e.raw.rate().round() as u64),
        latency(&e.raw),
    );

    let (n, secs, base) = &e.raw_stream;
    let ratios = |sorted: &[Duration]| {
        if sorted.is_empty() || base.is_empty() {
            return "—".to_owned();
        }
        let r = |p| ms(pct(sorted, p)) / ms(pct(base, p)).max(1e-6);
        format!("{} · {}", times(r(50.0)), times(r(99.0)))
    };
    let p50_p99 = |sorted: &[Duration]| {
        if sorted.is_empty() {
            return "—".to_owned();
        }
        format!(
            "{:.1} / {:.1}",
            ms(pct(sorted, 50.0)),
            ms(pct(sorted, 99.0))
        )
    };
    let max = |sorted: &[Duration]| ms(sorted.last().copied().unwrap_or_default());
    let _ = writeln!(
        out,
        "\n| lag | samples | p50 / p99 (ms) | max (ms) | ratio to L0 (p50 · p99) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    let _ = writeln!(
        out,
        "| **E** call answered → figure visible to the projection's queries (1 call in {}) | {} | {} | {:.1} | {} |",
        c.sample,
        thousands(e.visible.lags.len() as u64),
        p50_p99(&e.visible.lags),
        max(&e.visible.lags),
        ratios(&e.visible.lags),
    );
    let _ = writeln!(
        out,
        "| of which relay: call answered → message received from the stream (every call) | {} | {} | {:.1} | {} |",
        thousands(e.relayed.len() as u64),
        p50_p99(&e.relayed),
        max(&e.relayed),
        ratios(&e.relayed),
    );
    let _ = writeln!(
        out,
        "| L0 baseline: raw JetStream publish → pull consumer receipt (explicit ack), {} publishers at {:.0}/s | {} | {} | {:.1} | 1 |",
        c.counters,
        *n as f64 / secs,
        thousands(*n),
        p50_p99(base),
        max(base),
    );

    let _ = writeln!(
        out,
        "\nE: every committed event over the wall time of the load ({} lives started, {} \
         played to their end; a life still running at the deadline stops there); latency per \
         call at the client, retries included. Lag: as scenario L, from the call's answer to \
         the first poll (every {} ms) that sees the dossier's applied version reach it. E0: \
         the time inside the `INSERT`s of the rows E wrote, read back from `events`.",
        thousands(e.lives_started),
        thousands(e.lives_done),
        crate::visible::POLL.as_millis(),
    );

    let _ = writeln!(
        out,
        "\nThe projection had applied every dossier's last version {:.2} s after the load ended \
         ({} events in {:.2} s from the first call: {} events/s applied on average).",
        e.catch_up.as_secs_f64(),
        thousands(e.calls.count),
        e.calls.seconds + e.catch_up.as_secs_f64(),
        thousands(
            (e.calls.count as f64 / (e.calls.seconds + e.catch_up.as_secs_f64())).round() as u64
        ),
    );

    let _ = writeln!(out, "\n### The mix\n");
    let _ = writeln!(out, "| call | count | share |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (step, count) in &e.steps {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} % |",
            step.rpc(),
            thousands(*count),
            100.0 * *count as f64 / e.calls.count.max(1) as f64
        );
    }

    let _ = writeln!(out, "\n### Checked after the run\n");
    let _ = writeln!(
        out,
        "- every call succeeded: {} calls, {} retried after a transient refusal ({} answered as \
         duplicates of a committed first attempt); every answer carried the dossier's next \
         version; the log's head moved by exactly the number of calls",
        thousands(e.calls.count),
        e.retries,
        e.duplicates
    );
    let _ = writeln!(
        out,
        "- every sampled append became visible; the projection caught up with every dossier"
    );
    let _ = writeln!(out, "- `projection verify`: {}", e.verified);
    let _ = writeln!(
        out,
        "- `GetIndicators` for [{}, {}) equals the indicators `stats` computes from every \
         dossier's raw events",
        e.indicators_period.0, e.indicators_period.1
    );

    let _ = writeln!(
        out,
        "\n### Where the database's sessions were during the load\n\n\
         `pg_stat_activity` sampled every {} ms ({} samples): the average number of this \
         database's sessions in each state (in a statement, or in a transaction waiting for its \
         client), by wait event and statement.\n",
        ACTIVITY_EVERY.as_millis(),
        e.activity_samples
    );
    let _ = writeln!(out, "| sessions (average) | wait | state: statement |");
    let _ = writeln!(out, "|---:|---|---|");
    for a in e.activity.iter().take(12) {
        let _ = writeln!(
            out,
            "| {:.2} | {} | `{}` |",
            a.seen as f64 / e.activity_samples.max(1) as f64,
            a.wait,
            a.what.replace('`', "'").replace('|', "\\|")
        );
    }

    machine.render(&mut out, "### Machine", load_end);
    let _ = writeln!(
        out,
        "- everything on this one machine: PostgreSQL, NATS, the four write services, the relay, \
         the projection and the counters (one tokio runtime); each service with a pool of its \
         production default size"
    );
    out
}

#[cfg(test)]
mod unit {
    use super::*;

    /// Every drawn life is one the rules accept, in order: refused alone, or received first;
    /// payment after its assessment; a supplement received after it was asked; nothing after
    /// an ending; results only after the resolution, the rating only after the return.
    #[test]
    fn plans_are_valid_lives() {
        let mut rng = Rng::new(7);
        let mut seen = [0u64; 15];
        for _ in 0..20_000 {
            let p = plan(&mut rng);
            for s in &p.steps {
                seen[s.index()] += 1;
            }
            let pos = |step| p.steps.iter().position(|s| *s == step);
            if p.steps == [Step::RefuseAtCounter] {
                continue;
            }
            assert_eq!(p.steps[0], Step::Receive, "{p:?}");
            assert!(!p.steps.contains(&Step::RefuseAtCounter), "{p:?}");
            let last = *p.steps.last().unwrap();
            for ending in [Step::Withdraw, Step::Stop, Step::ReturnResult, Step::Rate] {
                if let Some(i) = pos(ending) {
                    assert!(i + 1 == p.steps.len() || last == Step::Rate, "{p:?}");
                }
            }
            assert_eq!(p.fee, pos(Step::AssessFee).is_some(), "{p:?}");
            if let Some(i) = pos(Step::AssessFee) {
                assert!(matches!(
                    p.steps[i + 1],
                    Step::PayOnline | Step::PayAtCounter
                ));
            }
            if let Some(i) = pos(Step::ReceiveSupplement) {
                assert_eq!(pos(Step::RequestSupplement), Some(i - 1), "{p:?}");
            }
            for after in [Step::AttachResult, Step::ReturnResult, Step::Rate] {
                if let Some(i) = pos(after) {
                    assert!(pos(Step::Resolve).is_some_and(|r| r < i), "{p:?}");
                }
            }
            if let Some(i) = pos(Step::Rate) {
                assert_eq!(pos(Step::ReturnResult), Some(i - 1), "{p:?}");
            }
            assert!(p.span >= chrono::Duration::minutes(60));
        }
        // The mix has every call in it.
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
    }
}
