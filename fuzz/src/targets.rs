//! One function per fuzz target: input bytes → what the server does with them before the
//! database. Targets covering several RPCs take the first byte as the choice of RPC and the
//! rest as its protobuf request.

use std::collections::{BTreeMap, HashMap};

use api::v1 as pb;
use domain::{Action, Command, Dossier};
use prost::Message;
use stats::Query;
use svc::handler::CommonFields;
use tonic::{Code, Status};

use crate::check;
use crate::fixtures;

/// The RPC chosen by the first byte, and the request bytes after it.
fn split(data: &[u8], rpcs: usize) -> Option<(usize, &[u8])> {
    let (first, rest) = data.split_first()?;
    Some((usize::from(*first) % rpcs, rest))
}

/// A write RPC: decode, parse the common fields and the RPC's own, and if accepted decide the
/// command against every plausible dossier and check the events it would store.
fn write<M: Message + Default>(
    data: &[u8],
    method: &str,
    common: impl Fn(&M) -> CommonFields<'_>,
    action: impl Fn(&M) -> Result<Action, Status>,
) {
    write_refusing(data, method, common, action, &[Code::PermissionDenied]);
}

/// [`write`], where the request may also be refused with one of `also` (checked by `action`).
fn write_refusing<M: Message + Default>(
    data: &[u8],
    method: &str,
    common: impl Fn(&M) -> CommonFields<'_>,
    action: impl Fn(&M) -> Result<Action, Status>,
    also: &[Code],
) {
    let Ok(request) = M::decode(data) else {
        return;
    };
    let parsed = common(&request)
        .parse(fixtures::now())
        .and_then(|common| Ok((common, action(&request)?)));
    let ((event_id, dossier_id, occurred_at), action) = match parsed {
        Ok(parsed) => parsed,
        Err(status) => return check::refusal(&status, also),
    };
    let command = Command {
        occurred_at,
        action,
    };
    let fingerprint = svc::write::fingerprint(method, &request);
    for state in fixtures::states() {
        for rules in fixtures::rules() {
            match domain::decide(state, &command, rules) {
                Ok(events) => check::decided(
                    &mut state.clone(),
                    dossier_id.as_str(),
                    event_id,
                    &command,
                    events.events(),
                    fingerprint,
                ),
                // Refusals map to a status without panicking.
                Err(refusal) => drop(svc::status::refusal(&refusal)),
            }
        }
    }
}

fn with_agency<T>(parsed: Result<(T, Action), Status>) -> Result<Action, Status> {
    parsed.map(|(_, action)| action)
}

pub fn intake(data: &[u8]) {
    use intake::service::*;
    let Some((rpc, data)) = split(data, 3) else {
        return;
    };
    match rpc {
        0 => {
            // Outside the catalogue (the full profile), then completed from and checked
            // against a catalogue version of the same procedure code.
            write(
                data,
                "dossier.v1.IntakeService/ReceiveDossier",
                |r: &pb::ReceiveDossierRequest| {
                    new_dossier_fields(&r.event_id, &r.dossier_id, &r.occurred_at)
                },
                // The applicant is parsed (and its errors checked) but not sealed: sealing needs
                // the dossier's key from the database.
                |r| receive_dossier_action(r).map(|(_, action, _)| action),
            );
            // A disagreement with the catalogue is FAILED_PRECONDITION `catalogue_mismatch`
            // naming the field and the version.
            write_refusing(
                data,
                "dossier.v1.IntakeService/ReceiveDossier",
                |r: &pb::ReceiveDossierRequest| {
                    new_dossier_fields(&r.event_id, &r.dossier_id, &r.occurred_at)
                },
                |r| {
                    let mut reception = Reception::parse(r)?;
                    reception.applicant = None;
                    let version = fixtures::catalogued(&reception.procedure);
                    reception
                        .into_action(Some(&version))
                        .inspect_err(check::catalogue_mismatch)
                },
                &[Code::PermissionDenied, Code::FailedPrecondition],
            );
        }
        1 => write(
            data,
            "dossier.v1.IntakeService/RecordDigitizedComponents",
            |r: &pb::RecordDigitizedComponentsRequest| svc::common_fields!(r),
            record_digitized_components_action,
        ),
        _ => write(
            data,
            "dossier.v1.IntakeService/RefuseAtCounter",
            |r: &pb::RefuseAtCounterRequest| {
                new_dossier_fields(&r.event_id, &r.dossier_id, &r.occurred_at)
            },
            |r| with_agency(refuse_at_counter_action(r)),
        ),
    }
}

pub fn processing(data: &[u8]) {
    use processing::service::*;
    let Some((rpc, data)) = split(data, 8) else {
        return;
    };
    let principal = fixtures::counter();
    match rpc {
        0 => write(
            data,
            "dossier.v1.ProcessingService/Transfer",
            |r: &pb::TransferRequest| svc::common_fields!(r),
            transfer_action,
        ),
        1 => write(
            data,
            "dossier.v1.ProcessingService/RequestSupplement",
            |r: &pb::RequestSupplementRequest| svc::common_fields!(r),
            request_supplement_action,
        ),
        2 => write(
            data,
            "dossier.v1.ProcessingService/ReceiveSupplement",
            |r: &pb::ReceiveSupplementRequest| svc::common_fields!(r),
            receive_supplement_action,
        ),
        3 => write(
            data,
            "dossier.v1.ProcessingService/Resolve",
            |r: &pb::ResolveRequest| svc::common_fields!(r),
            |r| resolve_action(r, &principal),
        ),
        4 => write(
            data,
            "dossier.v1.ProcessingService/StopProcessing",
            |r: &pb::StopProcessingRequest| svc::common_fields!(r),
            stop_processing_action,
        ),
        5 => write(
            data,
            "dossier.v1.ProcessingService/Withdraw",
            |r: &pb::WithdrawRequest| svc::common_fields!(r),
            withdraw_action,
        ),
        6 => write(
            data,
            "dossier.v1.ProcessingService/RequestFinancialObligation",
            |r: &pb::RequestFinancialObligationRequest| svc::common_fields!(r),
            request_financial_obligation_action,
        ),
        _ => write(
            data,
            "dossier.v1.ProcessingService/FulfilFinancialObligation",
            |r: &pb::FulfilFinancialObligationRequest| svc::common_fields!(r),
            fulfil_financial_obligation_action,
        ),
    }
}

pub fn payment(data: &[u8]) {
    use payment::service::*;
    let Some((rpc, data)) = split(data, 2) else {
        return;
    };
    match rpc {
        0 => write(
            data,
            "dossier.v1.PaymentService/AssessFee",
            |r: &pb::AssessFeeRequest| svc::common_fields!(r),
            assess_fee_action,
        ),
        _ => write(
            data,
            "dossier.v1.PaymentService/RecordPayment",
            |r: &pb::RecordPaymentRequest| svc::common_fields!(r),
            |r| with_agency(record_payment_action(r)),
        ),
    }
}

pub fn results(data: &[u8]) {
    use results::service::*;
    let Some((rpc, data)) = split(data, 4) else {
        return;
    };
    match rpc {
        0 => write(
            data,
            "dossier.v1.ResultsService/AttachResult",
            |r: &pb::AttachResultRequest| svc::common_fields!(r),
            attach_result_action,
        ),
        1 => write(
            data,
            "dossier.v1.ResultsService/ReturnResult",
            |r: &pb::ReturnResultRequest| svc::common_fields!(r),
            return_result_action,
        ),
        2 => write(
            data,
            "dossier.v1.ResultsService/IssueApology",
            |r: &pb::IssueApologyRequest| svc::common_fields!(r),
            issue_apology_action,
        ),
        _ => write(
            data,
            "dossier.v1.ResultsService/RecordRating",
            |r: &pb::RecordRatingRequest| svc::common_fields!(r),
            record_rating_action,
        ),
    }
}

/// One `ImportHistory` stream message: parsed, then decided in order against new dossiers as
/// the import does, and every event of every append checked.
pub fn import_history(data: &[u8]) {
    let Ok(batch) = pb::ImportBatch::decode(data) else {
        return;
    };
    let items = match intake::parse_batch(&batch, fixtures::now()) {
        Ok(items) => items,
        Err(status) => return check::refusal(&status, &[]),
    };
    let events: Vec<writepath::ImportEvent> = items.into_iter().map(|i| i.event).collect();
    let order: Vec<usize> = (0..events.len()).collect();
    for rules in fixtures::rules() {
        let mut states: HashMap<String, Dossier> = events
            .iter()
            .map(|e| (e.dossier_id.to_string(), Dossier::default()))
            .collect();
        match writepath::decide_import(&mut states, &events, &order, rules) {
            Ok(writepath::DecidedImport {
                appends,
                already_done: duplicates,
            }) => {
                let written: usize = appends.iter().map(|a| a.events.len()).sum();
                assert!(written + duplicates as usize >= events.len() || written > events.len());
                for append in appends {
                    let stored: Vec<_> = append
                        .events
                        .into_iter()
                        .enumerate()
                        .map(|(i, e)| eventlog::StoredEvent {
                            position: i64::MAX - 100_000 + i as i64,
                            event_id: e.event_id,
                            dossier_id: append.dossier_id.clone(),
                            version: i as i32 + 1,
                            event_type: e.event_type,
                            occurred_at: e.occurred_at,
                            recorded_at: fixtures::now(),
                            routing: append.routing.clone(),
                            payload: e.payload,
                            fingerprint: e.fingerprint,
                            event_hash: [0; 32],
                            chain_hash: [0; 32],
                        })
                        .collect();
                    check::stored_events(&stored);
                }
            }
            Err(error) => drop(error),
        }
    }
}

/// What a parsed statistics query must be, and the pure work done with it before and after
/// PostgreSQL (with no figures): rollup choice, spans, the in-memory "as recorded at"
/// aggregation, indicators, every report form.
fn query(query: &Query, form: Option<projection::forms::Form>) {
    assert!(query.from < query.to, "{query:?}");
    assert!(
        (query.to - query.from).num_days()
            <= i64::from(projection::QueryLimits::default().max_period_days),
        "{query:?}"
    );
    for (i, d) in query.group_by.iter().enumerate() {
        assert!(!query.group_by[..i].contains(d), "{query:?}");
    }
    let _ = projection::store::rollup_for(query);
    let _ = projection::store::spans(Some(query.from), query.to);
    let _ = projection::store::prefix_spans(query.from);
    let _ = projection::store::prefix_spans(query.to);
    let groups = stats::Aggregates::new().query(query);
    let empty = BTreeMap::new();
    let _ = projection::answers::indicators_of(query, &groups, &stats::Targets::default());
    let _ = projection::answers::indicators_of(query, &empty, &stats::Targets::default());
    let forms = match form {
        Some(form) => vec![form],
        None => projection::forms::Form::ALL.to_vec(),
    };
    for form in forms {
        if !form.groups() && !query.group_by.is_empty() {
            continue;
        }
        let q = Query {
            group_by: form.query_group_by(&query.group_by),
            ..query.clone()
        };
        let table = projection::forms::fill(form, &q, &empty);
        let _ = projection::forms::to_csv(&table);
    }
}

/// The HTTP query string of `/v1/indicators` and `/v1/reports/{form}`, decoded as axum's
/// `Query` extractor decodes it.
pub fn stats_http(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(params) = serde_urlencoded::from_str::<projection::http::Params>(text) else {
        return;
    };
    match projection::http::scope(&params, &projection::QueryLimits::default()) {
        Ok((q, _source)) => query(&q, None),
        Err(e) => assert!(!e.field.is_empty(), "an HTTP error names no field: {e:?}"),
    }
}

/// `GetIndicators` (first byte even) or `GetReport` (odd).
pub fn stats_grpc(data: &[u8]) {
    let Some((rpc, data)) = split(data, 2) else {
        return;
    };
    let parsed = if rpc == 0 {
        let Ok(r) = pb::GetIndicatorsRequest::decode(data) else {
            return;
        };
        projection::service::indicators_request(&r, &projection::QueryLimits::default())
            .map(|(q, _)| (q, None))
    } else {
        let Ok(r) = pb::GetReportRequest::decode(data) else {
            return;
        };
        projection::service::report_request(&r, &projection::QueryLimits::default())
            .map(|(f, q, _)| (q, Some(f)))
    };
    match parsed {
        Ok((q, form)) => query(&q, form),
        Err(status) => check::refusal(&status, &[]),
    }
}

/// `StreamEvents` (first byte even) or `GetTimeline` (odd).
pub fn replay(data: &[u8]) {
    let Some((rpc, data)) = split(data, 2) else {
        return;
    };
    if rpc == 0 {
        let Ok(r) = pb::StreamEventsRequest::decode(data) else {
            return;
        };
        match replay::service::selection(&r) {
            Ok(s) => {
                assert!(s.after_position >= 0);
                if let Some(to) = s.to_position {
                    assert!(to >= 1 && to >= s.after_position, "{s:?}");
                }
                let f = &s.filter;
                if let (Some(a), Some(b)) = (f.recorded_from, f.recorded_to) {
                    assert!(a < b);
                }
                if let (Some(a), Some(b)) = (f.occurred_from, f.occurred_to) {
                    assert!(a < b);
                }
                assert!(!(s.follow && f.recorded_to.is_some()));
            }
            Err(status) => check::refusal(&status, &[]),
        }
    } else {
        let Ok(r) = pb::GetTimelineRequest::decode(data) else {
            return;
        };
        if let Err(status) = svc::convert::dossier_id("dossier_id", &r.dossier_id) {
            check::refusal(&status, &[]);
        }
    }
}
