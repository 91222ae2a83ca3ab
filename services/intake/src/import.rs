//! Bulk import of history (migration from an old system): batches of already-timestamped
//! events, validated with the live rules, written with one append per batch.
//!
//! Per batch: drop events already stored by an earlier attempt (same id and content), load
//! the dossiers the rest touch with one query, decide every event in order against the folded
//! state, then append everything in one transaction with one sequencing step. A batch is all or
//! nothing; re-sending it after a failure is safe, even while the first send is still being
//! written (the loser of that race checks the batch again and counts the winner's events as
//! duplicates).

use std::collections::HashMap;
use std::sync::Arc;

use api::v1 as pb;
use api::v1::event::Body;
use domain::{Action, Command, Dossier, DossierId, Event, EventId, Rules};
use eventlog::{AppendError, DossierAppend, ExpectedVersion};
use prost::Message;
use sha2::{Digest, Sha256};
use svc::convert::{self, at};
use svc::status::{
    business_time, event_too_large, internal, invalid_field, prefixed, timestamp, unavailable,
    with_reason,
};
use tonic::{Code, Status};
use writepath::{Clock, WritePath};
use writepath::{fold, new_events, routing_of};

/// At most this many events per batch: bounds memory and transaction size.
pub const MAX_BATCH: usize = domain::limits::MAX_IMPORT_BATCH;

/// The longest one full batch ([`MAX_BATCH`] events) may take, checks and append included: a
/// batch of 10,000 events takes a few seconds on a healthy database. A smaller batch gets
/// [`writepath::WRITE_TIMEOUT`] plus its share of the rest ([`batch_timeout`]). Past it, a
/// database that went silent (a partition, a frozen host: the connection looks healthy) gives
/// that batch UNAVAILABLE instead of holding the import stream until TCP gives up; re-sending
/// the batch is safe (events already stored count as duplicates).
pub const IMPORT_BATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The bound of one batch of `events` events: [`writepath::WRITE_TIMEOUT`] for a small batch,
/// growing linearly to [`IMPORT_BATCH_TIMEOUT`] for a full one.
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
    pub event_id: EventId,
    pub dossier_id: DossierId,
    pub command: Command,
    pub fingerprint: [u8; 32],
    /// A `received` event's applicant, validated, until [`Importer`] seals it into `command`
    /// (and folds its keyed digest into `fingerprint`).
    pub applicant: Option<personal::Applicant>,
}

/// Attempts per batch: a batch that loses a race with another writer of one of its dossiers
/// (typically the same batch re-sent while the first send is still being written) is checked
/// again from the top, where the winner's events are found and counted as duplicates.
const MAX_ATTEMPTS: usize = 4;

/// One attempt lost a race on a dossier: check the batch again.
struct Raced {
    dossier_id: String,
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
            let (sealed, mac, _) = crate::service::seal(vault, &item.dossier_id, &applicant)
                .await
                .map_err(|s| prefixed(&item.path, s))?;
            if let Action::Receive { applicant, .. } = &mut item.command.action {
                *applicant = Some(sealed);
            }
            let mut h = Sha256::new();
            h.update(item.fingerprint);
            h.update(b"\0personal\0");
            h.update(mac);
            item.fingerprint = h.finalize().into();
        }
        Ok(())
    }

    pub(crate) async fn import(
        &self,
        batch: pb::ImportBatch,
    ) -> Result<pb::ImportBatchResult, Status> {
        let mut items = parse_batch(&batch, self.clock.now())?;
        self.seal(&mut items).await?;
        let bound = batch_timeout(items.len());
        match tokio::time::timeout(bound, self.import_items(batch.batch_seq, &items)).await {
            Ok(answer) => answer,
            Err(_) => Err(unavailable(format!(
                "batch {}: no answer from the event log within {bound:?}",
                batch.batch_seq
            ))),
        }
    }

    async fn import_items(
        &self,
        batch_seq: u64,
        items: &[ImportItem],
    ) -> Result<pb::ImportBatchResult, Status> {
        let mut raced = None;
        for _ in 0..MAX_ATTEMPTS {
            match self.attempt(batch_seq, items).await? {
                Ok(result) => return Ok(result),
                Err(race) => {
                    tracing::debug!(dossier = %race.dossier_id, "import lost a race; checking the batch again");
                    raced = Some(race);
                }
            }
        }
        let dossier_id = raced.map(|r| r.dossier_id).unwrap_or_default();
        Err(with_reason(
            Code::Aborted,
            "version_conflict",
            format!("dossier {dossier_id} changed while the batch was checked; re-send the batch"),
        ))
    }

    /// Checks the batch against the log as it is now and appends what is new, or reports that
    /// a dossier changed between the check and the append.
    async fn attempt(
        &self,
        batch_seq: u64,
        items: &[ImportItem],
    ) -> Result<Result<pb::ImportBatchResult, Raced>, Status> {
        let log = self.write.log();
        let ids: Vec<_> = items.iter().map(|i| i.event_id.as_uuid()).collect();
        let stored: HashMap<_, _> = log
            .find_events(&ids)
            .await
            .map_err(unavailable)?
            .into_iter()
            .map(|e| (e.event_id, e))
            .collect();
        let mut duplicates = 0u32;
        let mut fresh = Vec::with_capacity(items.len());
        for item in items {
            match stored.get(&item.event_id.as_uuid()) {
                Some(existing) => {
                    already_stored(item, existing)?;
                    duplicates += 1;
                }
                None => fresh.push(item),
            }
        }

        let mut dossier_ids: Vec<String> = fresh.iter().map(|i| i.dossier_id.to_string()).collect();
        dossier_ids.sort();
        dossier_ids.dedup();
        let loaded = log.load_dossiers(&dossier_ids).await.map_err(unavailable)?;
        // Events committed since the lookup above (a racing send of the same batch) are in the
        // dossiers just loaded: they are duplicates too, never decided again on top of
        // themselves.
        let committed_since: HashMap<_, _> =
            loaded.values().flatten().map(|e| (e.event_id, e)).collect();
        let mut still_fresh = Vec::with_capacity(fresh.len());
        for item in fresh {
            match committed_since.get(&item.event_id.as_uuid()) {
                Some(existing) => {
                    already_stored(item, existing)?;
                    duplicates += 1;
                }
                None => still_fresh.push(item),
            }
        }
        let fresh = still_fresh;
        let mut states: HashMap<String, (Dossier, u32)> = HashMap::with_capacity(dossier_ids.len());
        for id in &dossier_ids {
            let events = loaded.get(id).map(Vec::as_slice).unwrap_or_default();
            let dossier = fold(events).map_err(svc::write::status)?;
            let version = dossier.version;
            states.insert(id.clone(), (dossier, version));
        }

        let (appends, decided_duplicates) = decide_items(&mut states, &fresh, self.write.rules())?;
        duplicates += decided_duplicates;
        if appends.is_empty() {
            return Ok(Ok(pb::ImportBatchResult {
                batch_seq,
                appended: 0,
                duplicates,
                last_position: 0,
            }));
        }
        let counts: Vec<u32> = appends.iter().map(|a| a.events.len() as u32).collect();
        let appended = match log.append(appends).await {
            Ok(appended) => appended,
            Err(AppendError::Conflict { dossier_id, .. }) => {
                return Ok(Err(Raced { dossier_id }));
            }
            Err(AppendError::EventIdReused { event_id }) => {
                return Err(with_reason(
                    Code::AlreadyExists,
                    "event_id_reused",
                    format!("event_id {event_id} was already used for a different event"),
                ));
            }
            Err(AppendError::EventTooLarge {
                event_id,
                bytes,
                max,
            }) => {
                let status = event_too_large(format!("event {event_id}: {bytes} > {max} bytes"));
                return Err(
                    match items.iter().find(|i| i.event_id.as_uuid() == event_id) {
                        Some(item) => prefixed(&item.path, status),
                        None => status,
                    },
                );
            }
            Err(AppendError::Unavailable(e)) => return Err(unavailable(e)),
            Err(e) => return Err(internal(e)),
        };
        // A dossier's events found already stored by a racing identical batch count as duplicates.
        let mut appended_count = 0u32;
        for (count, duplicate) in counts.iter().zip(&appended.duplicate) {
            if *duplicate {
                duplicates += *count;
            } else {
                appended_count += *count;
            }
        }
        Ok(Ok(pb::ImportBatchResult {
            batch_seq,
            appended: appended_count,
            duplicates,
            last_position: appended
                .events
                .iter()
                .map(|e| e.position)
                .max()
                .unwrap_or(0) as u64,
        }))
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
    let mut items = Vec::with_capacity(batch.events.len());
    let mut seen = HashMap::with_capacity(batch.events.len());
    for (i, event) in batch.events.iter().enumerate() {
        let path = format!("events[{i}]");
        let item = parse(&path, event, now)?;
        if let Some(first) = seen.insert(item.event_id, i) {
            return Err(invalid_field(
                &at(&path, "event_id"),
                format!("repeats the event_id of events[{first}]"),
            ));
        }
        items.push(item);
    }
    Ok(items)
}

/// Decides `items` in order against `states` (each dossier's folded state and loaded version,
/// one entry per dossier the items touch), folding each decision in: the appends to write
/// (one per dossier) and how many items the rules found already applied. Pure; a refusal names
/// the item's path.
pub fn decide_items(
    states: &mut HashMap<String, (Dossier, u32)>,
    items: &[&ImportItem],
    rules: Rules<'_>,
) -> Result<(Vec<DossierAppend>, u32), Status> {
    let mut duplicates = 0u32;
    let mut appends: Vec<DossierAppend> = Vec::new();
    let mut append_of: HashMap<String, usize> = HashMap::new();
    for item in items {
        let key = item.dossier_id.to_string();
        let (dossier, loaded_version) = states
            .get_mut(&key)
            .ok_or_else(|| internal(format!("dossier {key} of the batch was not loaded")))?;
        let decided = match domain::decide(dossier, &item.command, rules)
            .map_err(|refusal| prefixed(&item.path, svc::status::refusal(&refusal)))?
        {
            domain::Decision::AlreadyDone => {
                duplicates += 1;
                continue;
            }
            decision => decision.into_events(),
        };
        let new = new_events(item.event_id, &item.command, &decided, item.fingerprint);
        for (event, body) in new.iter().zip(decided.iter()) {
            dossier.evolve(&Event {
                occurred_at: event.occurred_at,
                body: body.clone(),
            });
        }
        let index = match append_of.get(&key) {
            Some(&index) => index,
            None => {
                let routing = routing_of(dossier, &decided)
                    .ok_or_else(|| internal("imported dossier has no profile"))?;
                appends.push(DossierAppend {
                    dossier_id: key.clone(),
                    expected_version: match *loaded_version {
                        0 => ExpectedVersion::NoStream,
                        v => ExpectedVersion::Exact(v),
                    },
                    routing,
                    events: Vec::new(),
                });
                append_of.insert(key, appends.len() - 1);
                appends.len() - 1
            }
        };
        appends[index].events.extend(new);
    }
    Ok((appends, duplicates))
}

/// An event with the item's id is stored: the same event (a duplicate, `Ok`), or another one
/// that reused the id.
fn already_stored(item: &ImportItem, existing: &eventlog::StoredEvent) -> Result<(), Status> {
    if existing.fingerprint == item.fingerprint && existing.dossier_id == item.dossier_id.as_str() {
        return Ok(());
    }
    Err(with_reason(
        Code::AlreadyExists,
        "event_id_reused",
        format!(
            "{}: event_id {} was already used for a different event",
            item.path, item.event_id
        ),
    ))
}

/// The content fingerprint of an imported event: its encoding without the fields the server
/// sets and without the applicant (whose keyed digest is folded in when it is sealed).
fn import_fingerprint(event: &pb::Event) -> [u8; 32] {
    let mut content = event.clone();
    if let Some(Body::Received(received)) = &mut content.body {
        received.applicant = None;
    }
    content.recorded_at = None;
    content.position = 0;
    content.version = 0;
    let mut h = Sha256::new();
    h.update(b"dossier.v1.IntakeService/ImportHistory\0");
    h.update(content.encode_to_vec());
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
        event_id,
        dossier_id,
        command: Command {
            occurred_at,
            action,
        },
        fingerprint: import_fingerprint(event),
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
