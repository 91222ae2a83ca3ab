//! Scenario B: a province's history through one `ImportHistory` stream.
//!
//! Every dossier has the same eight valid events: received (with the old system's due time),
//! components digitized, fee assessed, paid online, resolved, result digitized, result
//! returned, satisfaction rated. A batch holds whole dossiers. Batches are generated as they
//! are sent, so the client holds at most `pipeline + 1` of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use api::v1 as pb;
use api::v1::event::Body;
use chrono::{DateTime, Utc};
use tests::{DISTRICT_AGENCY, IMPORTER, RunningIntake, authed, local, profile, ts};
use tokio::sync::{Semaphore, mpsc};
use uuid::Uuid;

use crate::Timing;

pub const EVENTS_PER_DOSSIER: usize = 8;

/// What the import measured.
#[derive(Debug, Clone)]
pub struct Import {
    pub timing: Timing,
    pub batches: u64,
    /// Client time spent building batches (inside the wall time, on the same two cores).
    pub generating: Duration,
}

/// Imports `events` (rounded up to whole dossiers) in batches of `batch` events, with up to
/// `pipeline` batches sent and not yet answered.
pub async fn run(
    intake: &RunningIntake,
    events: u64,
    batch: usize,
    pipeline: usize,
) -> Result<Import> {
    let per = EVENTS_PER_DOSSIER as u64;
    let dossiers = events.div_ceil(per);
    let per_batch = (batch / EVENTS_PER_DOSSIER) as u64;
    let batches = dossiers.div_ceil(per_batch);
    let total = dossiers * per;
    if total != events {
        eprintln!("bench: importing {total} events ({dossiers} whole dossiers of {per})");
    }

    let mut client = intake.client().await;
    let in_flight = Arc::new(Semaphore::new(pipeline));
    let (tx, rx) = mpsc::channel::<pb::ImportBatch>(1);
    let start = Instant::now();
    let producer = {
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            let mut generating = Duration::ZERO;
            for seq in 0..batches {
                in_flight.acquire().await.expect("never closed").forget();
                let t = Instant::now();
                let first = seq * per_batch;
                let last = (first + per_batch).min(dossiers);
                let mut events = Vec::with_capacity(((last - first) * per) as usize);
                for d in first..last {
                    events.extend(dossier_events(d));
                }
                let message = pb::ImportBatch {
                    batch_seq: seq,
                    events,
                };
                generating += t.elapsed();
                if tx.send(message).await.is_err() {
                    break;
                }
            }
            generating
        })
    };
    let outbound = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|batch| (batch, rx))
    });

    let mut answers = client
        .import_history(authed(IMPORTER, outbound))
        .await
        .context("ImportHistory")?
        .into_inner();
    let mut appended = 0u64;
    let mut answered = 0u64;
    while answered < batches {
        let Some(answer) = answers.message().await.context("ImportHistory answer")? else {
            bail!("the import stream ended after {answered} of {batches} batches");
        };
        let first = answer.batch_seq * per_batch;
        let expected = ((first + per_batch).min(dossiers) - first) * per;
        if answer.batch_seq != answered
            || u64::from(answer.appended) != expected
            || answer.duplicates != 0
        {
            bail!("batch {answered}: unexpected answer {answer:?} (expected {expected} appended)");
        }
        appended += expected;
        answered += 1;
        in_flight.add_permits(1);
    }
    let elapsed = start.elapsed();
    let generating = producer.await?;
    Ok(Import {
        timing: Timing::new(appended, elapsed, Vec::new()),
        batches,
        generating,
    })
}

/// The eight events of dossier `d`: valid under the domain rules, in their order.
pub fn dossier_events(d: u64) -> Vec<pb::Event> {
    let dossier_id = format!("H40.22-{d:08}");
    // Spread over about a year of business times, all in the past.
    let t0 = base_time() + chrono::Duration::seconds((d % 900_000) as i64 * 31);
    let minutes = |m: i64| t0 + chrono::Duration::minutes(m);
    let event = |at: DateTime<Utc>, body: Body| pb::Event {
        event_id: Uuid::new_v4().to_string(),
        dossier_id: dossier_id.clone(),
        occurred_at: Some(ts(at)),
        recorded_at: None,
        position: 0,
        version: 0,
        body: Some(body),
    };
    vec![
        event(
            t0,
            Body::Received(pb::Received {
                procedure: None,
                profile: Some(profile(DISTRICT_AGENCY)),
                statutory_time: Some(pb::StatutoryTime {
                    unit: Some(pb::statutory_time::Unit::WorkingDays(3)),
                }),
                fee_required: true,
                components: vec!["don-de-nghi".to_owned(), "ban-ve".to_owned()],
                due_at: Some(ts(minutes(5 * 24 * 60))),
                applicant: None,
                applicant_data: 0,
                return_method: 0,
            }),
        ),
        event(
            minutes(10),
            Body::ComponentsDigitized(pb::ComponentsDigitized {
                digitized: vec!["don-de-nghi".to_owned()],
                reused: vec!["ban-ve".to_owned()],
            }),
        ),
        event(
            minutes(60),
            Body::FeeAssessed(pb::FeeAssessed {
                amount_vnd: 50_000,
                kind: pb::FeeKind::Fee as i32,
            }),
        ),
        event(
            minutes(120),
            Body::Paid(pb::Paid {
                amount_vnd: 50_000,
                channel: pb::PaymentChannel::NationalPlatform as i32,
                transaction_id: format!("NP-{d:012}"),
            }),
        ),
        event(
            minutes(2 * 24 * 60),
            Body::Resolved(pb::Resolved {
                outcome: pb::Outcome::Approved as i32,
                deciding_agency: DISTRICT_AGENCY.to_owned(),
                due_at: None,
                timeliness: 0,
            }),
        ),
        event(
            minutes(2 * 24 * 60 + 60),
            Body::ResultDigitized(pb::ResultDigitized {
                document_ref: format!("KQ/H40.22/{d}"),
                sha256: format!("{:064x}", u128::from(d) * 0x9e37_79b9_7f4a_7c15),
            }),
        ),
        event(
            minutes(3 * 24 * 60),
            Body::ResultReturned(pb::ResultReturned {
                method: pb::ReturnMethod::Online as i32,
            }),
        ),
        event(
            minutes(3 * 24 * 60 + 60),
            Body::SatisfactionRated(pb::SatisfactionRated {
                rating: pb::Rating::Satisfied as i32,
            }),
        ),
    ]
}

fn base_time() -> DateTime<Utc> {
    local(2023, 1, 3, 8, 0)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn eight_ordered_events_with_distinct_ids() {
        let events = dossier_events(123_456);
        assert_eq!(events.len(), EVENTS_PER_DOSSIER);
        let times: Vec<_> = events
            .iter()
            .map(|e| e.occurred_at.unwrap().seconds)
            .collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        let mut ids: Vec<_> = events.iter().map(|e| e.event_id.clone()).collect();
        ids.dedup();
        assert_eq!(ids.len(), EVENTS_PER_DOSSIER);
        match &events[5].body {
            Some(Body::ResultDigitized(r)) => assert_eq!(r.sha256.len(), 64),
            _ => panic!("result_digitized expected"),
        }
    }
}
