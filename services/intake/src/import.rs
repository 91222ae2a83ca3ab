//! Bulk import of history (migration from an old system): batches of already-timestamped
//! events, parsed and validated here, then decided with the live rules and written by the write
//! path in batch form (`writepath::WritePath::prepare_import` / `write_import`, one checked
//! append per batch).
//!
//! One `ImportHistory` stream is a pipeline of two stages (`crate::service`): while batch n is
//! written, batch n+1 is read, parsed, sealed and prepared against what batch n leaves behind
//! (`writepath::Speculation`). The answers keep the batches' order and the first failure ends
//! the stream, so nothing is written past a failed batch.

use std::collections::HashMap;
use std::sync::Arc;

use api::v1 as pb;
use api::v1::event::Body;
use domain::{Action, Command};
use prost::Message;
use sha2::{Digest, Sha256};
use svc::convert::{self, at};
use svc::status::{
    business_time, event_too_large, internal, invalid_field, prefixed, timestamp, unavailable,
    with_reason,
};
use tonic::{Code, Status};
use writepath::{
    Clock, ImportError, ImportEvent, Imported, PreparedImport, Speculation, WritePath,
};

/// At most this many events per batch: bounds memory and transaction size.
pub const MAX_BATCH: usize = domain::limits::MAX_IMPORT_BATCH;

/// The longest one full batch ([`MAX_BATCH`] events) may take in each of its two stages
/// (preparing: lookups and decisions; writing: the append): a batch of 10,000 events takes a
/// few seconds on a healthy database. A smaller batch gets [`writepath::WRITE_TIMEOUT`] plus
/// its share of the rest ([`batch_timeout`]). Past it, a database that went silent (a
/// partition, a frozen host: the connection looks healthy) gives that batch UNAVAILABLE instead
/// of holding the import stream until TCP gives up; re-sending the batch is safe (events already
/// stored count as duplicates).
pub const IMPORT_BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The bound of each stage of one batch of `events` events: [`writepath::WRITE_TIMEOUT`] for a
/// small batch, growing linearly to [`IMPORT_BATCH_TIMEOUT`] for a full one.
pub fn batch_timeout(events: usize) -> std::time::Duration {
    let base = writepath::WRITE_TIMEOUT;
    let share = events.min(MAX_BATCH) as u32;
    base + IMPORT_BATCH_TIMEOUT.saturating_sub(base) * share / MAX_BATCH as u32
}

#[derive(Debug, Clone)]
pub(crate) struct Importer {
    write: WritePath,
    clock: Arc<dyn Clock>,
    vault: Option<personal::Vault>,
}

/// One event of a batch, parsed and validated (not yet decided).
#[derive(Debug, Clone)]
pub struct ImportItem {
    /// `events[i]`, prefixed to the batch's error messages.
    pub path: String,
    pub event: ImportEvent,
    /// A `received` event's applicant, validated, until [`Importer`] seals it into the command
    /// (and folds its keyed digest into the fingerprint).
    pub applicant: Option<personal::Applicant>,
}

/// A batch read from the stream, parsed and sealed.
#[derive(Debug)]
pub(crate) struct ParsedBatch {
    pub(crate) batch_seq: u64,
    pub(crate) paths: Vec<String>,
    pub(crate) events: Vec<ImportEvent>,
}

/// A batch ready to write, with what it leaves for the next one.
#[derive(Debug)]
pub(crate) struct ReadyBatch {
    pub(crate) batch: ParsedBatch,
    pub(crate) prepared: PreparedImport,
    pub(crate) speculation: Speculation,
}

impl Importer {
    pub(crate) fn new(
        write: WritePath,
        clock: Arc<dyn Clock>,
        vault: Option<personal::Vault>,
    ) -> Self {
        Importer {
            write,
            clock,
            vault,
        }
    }

    /// Seals each item's applicant under its dossier's key (deterministic, so a re-sent batch
    /// is recognised as the same events).
    async fn seal(&self, items: &mut [ImportItem]) -> Result<(), Status> {
        for item in items.iter_mut() {
            let Some(applicant) = item.applicant.take() else {
                continue;
            };
            let vault = crate::service::vault_or_refuse(&self.vault)
                .map_err(|s| prefixed(&item.path, s))?;
            let (sealed, mac, _) = crate::service::seal(vault, &item.event.dossier_id, &applicant)
                .await
                .map_err(|s| prefixed(&item.path, s))?;
            if let Action::Receive { applicant, .. } = &mut item.event.command.action {
                *applicant = Some(sealed);
            }
            let mut h = Sha256::new();
            h.update(item.event.fingerprint);
            h.update(b"\0personal\0");
            h.update(mac);
            item.event.fingerprint = h.finalize().into();
        }
        Ok(())
    }

    /// Parses and seals a batch as received (no database but the vault's keys).
    pub(crate) async fn parse(&self, batch: pb::ImportBatch) -> Result<ParsedBatch, Status> {
        let mut items = parse_batch(&batch, self.clock.now())?;
        self.seal(&mut items).await?;
        let (paths, events) = items.into_iter().map(|i| (i.path, i.event)).unzip();
        Ok(ParsedBatch {
            batch_seq: batch.batch_seq,
            paths,
            events,
        })
    }

    /// Stage 1: decides the batch against the log plus `after` (the batch being written before
    /// it, if any), within its bound.
    pub(crate) async fn prepare(
        &self,
        batch: ParsedBatch,
        after: Option<&Speculation>,
    ) -> Result<ReadyBatch, Status> {
        let bound = batch_timeout(batch.events.len());
        let prepared = tokio::time::timeout(bound, self.write.prepare_import(&batch.events, after))
            .await
            .map_err(|_| silent(batch.batch_seq, bound))?;
        let (prepared, speculation) = prepared.map_err(|e| import_status(&batch.paths, e))?;
        Ok(ReadyBatch {
            batch,
            prepared,
            speculation,
        })
    }

    /// Stage 2: writes a prepared batch, within its bound. The flag: whether it was written as
    /// prepared (else the speculation it left is void).
    pub(crate) async fn write(
        &self,
        batch: ParsedBatch,
        prepared: PreparedImport,
    ) -> Result<(pb::ImportBatchResult, bool), Status> {
        let bound = batch_timeout(batch.events.len());
        let written = tokio::time::timeout(bound, self.write.write_import(&batch.events, prepared))
            .await
            .map_err(|_| silent(batch.batch_seq, bound))?;
        let (imported, as_prepared) = written.map_err(|e| import_status(&batch.paths, e))?;
        Ok((result(batch.batch_seq, imported), as_prepared))
    }
}

fn silent(batch_seq: u64, bound: std::time::Duration) -> Status {
    unavailable(format!(
        "batch {batch_seq}: no answer from the event log within {bound:?}"
    ))
}

fn result(batch_seq: u64, imported: Imported) -> pb::ImportBatchResult {
    pb::ImportBatchResult {
        batch_seq,
        appended: imported.appended,
        duplicates: imported.duplicates,
        last_position: u64::try_from(imported.last_position).unwrap_or(0),
    }
}

/// The status of a failed batch, naming the event (`events[i]: …`) when it is one event's.
fn import_status(paths: &[String], error: ImportError) -> Status {
    let path = |index: usize| paths.get(index).map_or("events", String::as_str);
    match error {
        ImportError::Refused { index, refusal } => {
            prefixed(path(index), svc::status::refusal(&refusal))
        }
        ImportError::EventIdReused { index, event_id } => with_reason(
            Code::AlreadyExists,
            "event_id_reused",
            format!(
                "{}: event_id {event_id} was already used for a different event",
                path(index)
            ),
        ),
        ImportError::EventTooLarge { index, message } => {
            let status = event_too_large(message);
            match index {
                Some(index) => prefixed(path(index), status),
                None => status,
            }
        }
        e @ ImportError::Raced(_) => with_reason(Code::Aborted, "version_conflict", e.to_string()),
        ImportError::Unavailable(e) => unavailable(e),
        e @ ImportError::Undecodable(_) => internal(e),
        ImportError::Internal(e) => internal(e),
    }
}

/// Parses and validates a batch as received, naming the first malformed field (`events[3].…`):
/// its size, each event, and event ids repeated within it. Pure: `now` bounds business times.
pub fn parse_batch(
    batch: &pb::ImportBatch,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<ImportItem>, Status> {
    if batch.events.len() > MAX_BATCH {
        return Err(invalid_field(
            "events",
            format!("at most {MAX_BATCH} events per batch"),
        ));
    }
    let parse_from = |first: usize, events: &[pb::Event]| -> Vec<Result<ImportItem, Status>> {
        events
            .iter()
            .zip(first..)
            .map(|(event, i)| parse(&format!("events[{i}]"), event, now))
            .collect()
    };
    // Each event parses on its own: a large batch is parsed on several threads, in chunks
    // joined in order; the first error in the batch's order is the answer, as one by one.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(PARSE_THREADS);
    let parsed: Vec<Result<ImportItem, Status>> =
        if batch.events.len() < PARALLEL_PARSE_MIN || threads < 2 {
            parse_from(0, &batch.events)
        } else {
            let chunk = batch.events.len().div_ceil(threads);
            std::thread::scope(|scope| {
                let handles: Vec<_> = batch
                    .events
                    .chunks(chunk)
                    .enumerate()
                    .map(|(n, part)| scope.spawn(move || parse_from(n * chunk, part)))
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| match h.join() {
                        Ok(parsed) => parsed,
                        // Parsing cannot panic short of a bug; re-raise it where it belongs.
                        Err(panic) => std::panic::resume_unwind(panic),
                    })
                    .collect()
            })
        };
    let mut items = Vec::with_capacity(parsed.len());
    let mut seen = HashMap::with_capacity(parsed.len());
    for (i, item) in parsed.into_iter().enumerate() {
        let item = item?;
        if let Some(first) = seen.insert(item.event.event_id, i) {
            return Err(invalid_field(
                &at(&item.path, "event_id"),
                format!("repeats the event_id of events[{first}]"),
            ));
        }
        items.push(item);
    }
    Ok(items)
}

/// From this many events on, a batch is parsed on [`PARSE_THREADS`] threads at most.
const PARALLEL_PARSE_MIN: usize = 1024;
/// The most threads one batch is parsed on.
const PARSE_THREADS: usize = 4;

/// The content fingerprint of an imported event: its encoding without the fields the server
/// sets and without the applicant (whose keyed digest is folded in when it is sealed).
fn import_fingerprint(event: &pb::Event) -> [u8; 32] {
    let has_applicant = matches!(&event.body, Some(Body::Received(r)) if r.applicant.is_some());
    let server_set = event.recorded_at.is_some() || event.position != 0 || event.version != 0;
    let mut h = Sha256::new();
    h.update(b"dossier.v1.IntakeService/ImportHistory\0");
    if has_applicant || server_set {
        let mut content = event.clone();
        if let Some(Body::Received(received)) = &mut content.body {
            received.applicant = None;
        }
        content.recorded_at = None;
        content.position = 0;
        content.version = 0;
        h.update(content.encode_to_vec());
    } else {
        // Nothing to clear (an import's usual event): the same bytes without the copy.
        h.update(event.encode_to_vec());
    }
    h.finalize().into()
}

fn parse(
    path: &str,
    event: &pb::Event,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ImportItem, Status> {
    let event_id = convert::event_id(&at(path, "event_id"), &event.event_id)?;
    let dossier_id = convert::dossier_id(&at(path, "dossier_id"), &event.dossier_id)?;
    let occurred_at = business_time(&at(path, "occurred_at"), event.occurred_at.as_ref(), now)?;
    let body = event
        .body
        .as_ref()
        .ok_or_else(|| invalid_field(&at(path, "body"), "is required"))?;
    let action = action(path, body)?;
    let applicant = match (body, &action) {
        (Body::Received(b), Action::Receive { profile, .. }) => convert::applicant(
            &at(&at(path, "received"), "applicant"),
            b.applicant.as_ref(),
            profile.applicant_type,
        )?,
        _ => None,
    };
    let occurred_at = match action {
        // The watcher's notice comes after the due time; the event itself is dated at it.
        Action::MarkLate => occurred_at + chrono::Duration::seconds(1),
        _ => occurred_at,
    };
    Ok(ImportItem {
        path: path.to_owned(),
        event: ImportEvent {
            event_id,
            dossier_id,
            command: Command {
                occurred_at,
                action,
            },
            fingerprint: import_fingerprint(event),
        },
        applicant,
    })
}

fn action(path: &str, body: &Body) -> Result<Action, Status> {
    // The oneof's field names are the event types' names (checked in `svc::convert`).
    let body_path = at(path, convert::body_type(body).as_str());
    let p = |field: &str| at(&body_path, field);
    Ok(match body {
        Body::Received(b) => Action::Receive {
            procedure: None,
            profile: convert::profile(&p("profile"), b.profile.as_ref())?,
            statutory_time: convert::statutory_time(
                &p("statutory_time"),
                b.statutory_time.as_ref(),
            )?,
            fee_required: b.fee_required,
            components: convert::components(&p("components"), &b.components)?,
            due_at: b
                .due_at
                .as_ref()
                .map(|t| timestamp(&p("due_at"), Some(t)))
                .transpose()?,
            applicant: None,
            return_method: convert::optional(
                &p("return_method"),
                b.return_method,
                convert::return_method,
            )?,
        },
        Body::ComponentsDigitized(b) => Action::RecordDigitized {
            digitized: convert::components(&p("digitized"), &b.digitized)?,
            reused: convert::components(&p("reused"), &b.reused)?,
        },
        Body::RefusedAtIntake(b) => Action::RefuseAtIntake {
            profile: convert::profile(&p("profile"), b.profile.as_ref())?,
            reason: convert::text(&p("reason"), &b.reason)?,
        },
        Body::Transferred(b) => Action::Transfer {
            to_agency: convert::agency(&p("to_agency"), &b.to_agency)?,
            mode: convert::transfer_mode(&p("mode"), b.mode)?,
        },
        Body::SupplementRequested(b) => Action::RequestSupplement {
            reason: convert::text(&p("reason"), &b.reason)?,
        },
        Body::SupplementReceived(_) => Action::ReceiveSupplement,
        Body::Late(_) => Action::MarkLate,
        Body::ApologyIssued(b) => Action::IssueApology {
            reason: convert::text(&p("reason"), &b.reason)?,
            new_appointment: timestamp(&p("new_appointment"), b.new_appointment.as_ref())?,
            signer: convert::optional_text(&p("signer"), &b.signer)?,
            delivery: convert::optional(&p("delivery"), b.delivery, convert::apology_delivery)?,
        },
        Body::FeeAssessed(b) => Action::AssessFee {
            amount_vnd: convert::amount_vnd(&p("amount_vnd"), b.amount_vnd)?,
            kind: convert::fee_kind(&p("kind"), b.kind)?,
        },
        Body::Paid(b) => Action::RecordPayment {
            amount_vnd: convert::amount_vnd(&p("amount_vnd"), b.amount_vnd)?,
            channel: convert::payment_channel(&p("channel"), b.channel)?,
            transaction_id: convert::transaction_id(&p("transaction_id"), &b.transaction_id)?,
        },
        Body::Resolved(b) => Action::Resolve {
            outcome: convert::outcome(&p("outcome"), b.outcome)?,
            deciding_agency: convert::agency(&p("deciding_agency"), &b.deciding_agency)?,
        },
        Body::Withdrawn(b) => Action::Withdraw {
            reason: convert::text(&p("reason"), &b.reason)?,
        },
        Body::Stopped(b) if b.supplement_not_received.is_some() => {
            return Err(svc::status::invalid_field(
                &p("supplement_not_received"),
                "an automatic closing is recorded by the deadline watcher, never imported",
            ));
        }
        Body::Stopped(b) => Action::Stop {
            reason: convert::text(&p("reason"), &b.reason)?,
        },
        Body::FinancialObligationRequested(b) => Action::RequestFinancialObligation {
            reason: convert::text(&p("reason"), &b.reason)?,
        },
        Body::FinancialObligationFulfilled(_) => Action::FulfilFinancialObligation,
        Body::ResultDigitized(b) => Action::AttachResult {
            document_ref: convert::text(&p("document_ref"), &b.document_ref)?,
            sha256: b.sha256.clone(),
        },
        Body::ResultReturned(b) => Action::ReturnResult {
            method: convert::return_method(&p("method"), b.method)?,
        },
        Body::SatisfactionRated(b) => Action::Rate {
            rating: convert::rating(&p("rating"), b.rating)?,
        },
        // Derived, never given: the server writes it with the imported resolution that
        // contradicts a late mark.
        Body::LateWithdrawn(_) => {
            return Err(invalid_field(
                &body_path,
                "is written by the server with a resolution dated before the due time of a \
                 dossier marked late; leave it out of the import",
            ));
        }
    })
}

/// What the reading stage got from the stream.
enum Next {
    /// The next batch, prepared (or the status that ends the stream with it).
    Batch(Box<Result<ReadyBatch, Status>>, Option<ParsedBatch>),
    /// The client closed the stream (or it failed).
    End,
}

/// One `ImportHistory` stream: writes batch n while batch n+1 is read, parsed, sealed and
/// prepared (decided against the log plus what batch n writes). Answers go out in order, each as
/// soon as its batch is written; the first failure is the last answer. A batch prepared on a
/// speculation that did not hold (batch n lost a race and was checked again) is prepared again.
pub(crate) async fn pipeline(
    importer: Importer,
    mut inbound: tonic::Streaming<pb::ImportBatch>,
    tx: tokio::sync::mpsc::Sender<Result<pb::ImportBatchResult, Status>>,
) {
    let mut writing: Option<ReadyBatch> = None;
    let mut ended = false;
    while !(ended && writing.is_none()) {
        let (current, speculation) = match writing.take() {
            Some(ready) => (Some((ready.batch, ready.prepared)), Some(ready.speculation)),
            None => (None, None),
        };
        let (written, next) = {
            let after = speculation.as_ref();
            let read = async {
                if ended {
                    return Next::End;
                }
                let batch = match inbound.message().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => return Next::End,
                    Err(status) => {
                        tracing::info!(%status, "import stream ended by the client");
                        return Next::End;
                    }
                };
                let parsed = match importer.parse(batch).await {
                    Ok(parsed) => parsed,
                    Err(status) => return Next::Batch(Box::new(Err(status)), None),
                };
                // Kept for preparing again should the speculation not hold.
                let again = after.map(|_| ParsedBatch {
                    batch_seq: parsed.batch_seq,
                    paths: parsed.paths.clone(),
                    events: parsed.events.clone(),
                });
                Next::Batch(Box::new(importer.prepare(parsed, after).await), again)
            };
            // The write of batch n answers as soon as it is done (the client may wait for that
            // answer before sending batch n+1).
            let write = async {
                let (batch, prepared) = current?;
                let answer = importer.write(batch, prepared).await;
                let outcome = match &answer {
                    Ok((_, as_prepared)) => Ok(*as_prepared),
                    Err(_) => Err(()),
                };
                let _ = tx.send(answer.map(|(result, _)| result)).await;
                Some(outcome)
            };
            tokio::pin!(read);
            tokio::pin!(write);
            let (mut written, mut next) = (None, None);
            while written.is_none() || next.is_none() {
                tokio::select! {
                    w = &mut write, if written.is_none() => {
                        // A failed write ends the stream: nothing more is read or written.
                        if matches!(w, Some(Err(()))) {
                            return;
                        }
                        written = Some(w);
                    }
                    n = &mut read, if next.is_none() => next = Some(n),
                }
            }
            match (written, next) {
                (Some(written), Some(next)) => (written, next),
                _ => return,
            }
        };
        let speculation_held = !matches!(written, Some(Ok(false)));
        match next {
            Next::End => ended = true,
            Next::Batch(ready, again) => {
                let ready = match (speculation_held, again) {
                    (false, Some(again)) => importer.prepare(again, None).await,
                    _ => *ready,
                };
                match ready {
                    Ok(ready) => writing = Some(ready),
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fingerprint leaves out what the server sets and the applicant (folded in when
    /// sealed), whether or not the event carries them: a re-sent event is the same event.
    #[test]
    fn the_fingerprint_ignores_server_fields_and_the_applicant() {
        let plain = pb::Event {
            event_id: "67e55044-10b1-426f-9247-bb680e5fe0c8".into(),
            dossier_id: "H40.22-00000001".into(),
            occurred_at: Some(api::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            body: Some(Body::Received(pb::Received {
                fee_required: true,
                components: vec!["don-de-nghi".into()],
                ..Default::default()
            })),
            ..Default::default()
        };
        let mut decorated = plain.clone();
        decorated.position = 7;
        decorated.version = 2;
        decorated.recorded_at = plain.occurred_at;
        if let Some(Body::Received(received)) = &mut decorated.body {
            received.applicant = Some(pb::Applicant::default());
        }
        assert_eq!(import_fingerprint(&plain), import_fingerprint(&decorated));
        let mut other = plain.clone();
        other.dossier_id = "H40.22-00000002".into();
        assert_ne!(import_fingerprint(&plain), import_fingerprint(&other));
    }

    fn supplement(i: usize) -> pb::Event {
        pb::Event {
            event_id: format!("00000000-0000-4000-8000-{i:012}"),
            dossier_id: format!("H40.22-{i:08}"),
            occurred_at: Some(api::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
            body: Some(Body::SupplementReceived(pb::SupplementReceived::default())),
            ..Default::default()
        }
    }

    /// A batch large enough to be parsed on several threads answers as one parsed event by
    /// event: every item in order, and the first error in the batch's order.
    #[test]
    fn a_large_batch_parses_in_order_and_names_the_first_error() {
        let now = chrono::Utc::now();
        let events: Vec<pb::Event> = (0..3 * PARALLEL_PARSE_MIN).map(supplement).collect();
        let items = parse_batch(
            &pb::ImportBatch {
                batch_seq: 1,
                events: events.clone(),
            },
            now,
        )
        .expect("valid");
        assert_eq!(items.len(), events.len());
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item.path, format!("events[{i}]"));
            assert_eq!(item.event.dossier_id.as_str(), events[i].dossier_id);
        }

        // A malformed event late in the batch, and an earlier repeated id: the repeat is first.
        let mut bad = events.clone();
        bad[2500].dossier_id = String::new();
        bad[2000].event_id = bad[10].event_id.clone();
        let status = parse_batch(
            &pb::ImportBatch {
                batch_seq: 1,
                events: bad.clone(),
            },
            now,
        )
        .expect_err("refused");
        assert!(
            status.message().contains("events[2000].event_id")
                && status.message().contains("events[10]"),
            "{status:?}"
        );
        bad[2000] = events[2000].clone();
        let status = parse_batch(
            &pb::ImportBatch {
                batch_seq: 1,
                events: bad,
            },
            now,
        )
        .expect_err("refused");
        assert!(
            status.message().contains("events[2500].dossier_id"),
            "{status:?}"
        );
    }
}
