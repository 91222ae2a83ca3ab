//! The `PaymentService` RPCs: parse, authorize, hand the command to the write path, answer.

use api::v1 as pb;
use api::v1::payment_service_server::PaymentService;
use domain::{Action, DossierEvent, TransactionId};
use svc::common_fields;
use svc::convert;
use svc::handler::{Desk, first_event, write_response};
use svc::status::internal;
use svc::write::fingerprint;
use tonic::{Request, Response, Status};
use writepath::{Recorded, WriteOutcome};

/// The payment service's state: cheap to clone, shared by every call.
#[derive(Debug, Clone)]
pub struct Payment {
    desk: Desk,
}

impl Payment {
    pub fn new(desk: Desk) -> Self {
        Payment { desk }
    }
}

/// Among a dossier's events, the `paid` event that recorded `transaction_id`: the answer to a
/// payment callback repeating it.
fn recorded_payment(
    events: Vec<Recorded>,
    transaction_id: &TransactionId,
) -> Result<Recorded, Status> {
    for event in events {
        if let DossierEvent::Paid {
            transaction_id: recorded,
            ..
        } = &event.body
            && recorded == transaction_id
        {
            return Ok(event);
        }
    }
    Err(internal(format!(
        "the rules found transaction {transaction_id} recorded, but no paid event has it"
    )))
}

// Each RPC's own fields as a command (pure: the fuzz targets call them directly).

pub fn assess_fee_action(r: &pb::AssessFeeRequest) -> Result<Action, Status> {
    Ok(Action::AssessFee {
        amount_vnd: convert::amount_vnd("amount_vnd", r.amount_vnd)?,
        kind: convert::fee_kind("kind", r.kind)?,
    })
}

/// The command, and its transaction id (to find the original payment a callback repeats).
pub fn record_payment_action(
    r: &pb::RecordPaymentRequest,
) -> Result<(TransactionId, Action), Status> {
    let transaction_id = convert::transaction_id("transaction_id", &r.transaction_id)?;
    let action = Action::RecordPayment {
        amount_vnd: convert::amount_vnd("amount_vnd", r.amount_vnd)?,
        channel: convert::payment_channel("channel", r.channel)?,
        transaction_id: transaction_id.clone(),
    };
    Ok((transaction_id, action))
}

#[tonic::async_trait]
impl PaymentService for Payment {
    async fn assess_fee(
        &self,
        request: Request<pb::AssessFeeRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = assess_fee_action(r)?;
        let fp = fingerprint("dossier.v1.PaymentService/AssessFee", r);
        let outcome = self.desk.execute(envelope, action, fp).await?;
        write_response(first_event(outcome)?)
    }

    async fn record_payment(
        &self,
        request: Request<pb::RecordPaymentRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let (transaction_id, action) = record_payment_action(r)?;
        let fp = fingerprint("dossier.v1.PaymentService/RecordPayment", r);
        let answer = match self.desk.execute(envelope, action, fp).await? {
            // A platform's callback repeating a recorded transaction (same amount and channel),
            // under any event id: the original payment.
            WriteOutcome::AlreadyApplied(events) => {
                (recorded_payment(events, &transaction_id)?, true)
            }
            outcome => first_event(outcome)?,
        };
        write_response(answer)
    }
}
