//! The `ResultsService` RPCs: parse, authorize, hand the command to the write path, answer.

use api::v1 as pb;
use api::v1::results_service_server::ResultsService;
use domain::{Action, DossierEvent};
use svc::common_fields;
use svc::convert;
use svc::handler::{Desk, first_event, unexpected, write_response};
use svc::status::{timestamp, to_timestamp};
use svc::write::fingerprint;
use tonic::{Request, Response, Status};

/// The results service's state: cheap to clone, shared by every call.
#[derive(Debug, Clone)]
pub struct Results {
    desk: Desk,
}

impl Results {
    pub fn new(desk: Desk) -> Self {
        Results { desk }
    }
}

// Each RPC's own fields as a command (pure: the fuzz targets call them directly).

pub fn attach_result_action(r: &pb::AttachResultRequest) -> Result<Action, Status> {
    // The digest's form is a rule of the domain (`invalid_digest`).
    Ok(Action::AttachResult {
        document_ref: convert::text("document_ref", &r.document_ref)?,
        sha256: r.sha256.clone(),
    })
}

pub fn return_result_action(r: &pb::ReturnResultRequest) -> Result<Action, Status> {
    Ok(Action::ReturnResult {
        method: convert::return_method("method", r.method)?,
    })
}

pub fn issue_apology_action(r: &pb::IssueApologyRequest) -> Result<Action, Status> {
    Ok(Action::IssueApology {
        reason: convert::text("reason", &r.reason)?,
        // An appointment, not a business time: it lies in the future.
        new_appointment: timestamp("new_appointment", r.new_appointment.as_ref())?,
        // Left out by clients older than Mẫu 04: recorded as not stated.
        signer: convert::optional_text("signer", &r.signer)?,
        delivery: convert::optional("delivery", r.delivery, convert::apology_delivery)?,
    })
}

pub fn record_rating_action(r: &pb::RecordRatingRequest) -> Result<Action, Status> {
    Ok(Action::Rate {
        rating: convert::rating("rating", r.rating)?,
    })
}

#[tonic::async_trait]
impl ResultsService for Results {
    async fn attach_result(
        &self,
        request: Request<pb::AttachResultRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = attach_result_action(r)?;
        let fp = fingerprint("dossier.v1.ResultsService/AttachResult", r);
        let outcome = self.desk.execute(envelope, action, fp).await?;
        write_response(first_event(outcome)?)
    }

    async fn return_result(
        &self,
        request: Request<pb::ReturnResultRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = return_result_action(r)?;
        let fp = fingerprint("dossier.v1.ResultsService/ReturnResult", r);
        let outcome = self.desk.execute(envelope, action, fp).await?;
        write_response(first_event(outcome)?)
    }

    async fn issue_apology(
        &self,
        request: Request<pb::IssueApologyRequest>,
    ) -> Result<Response<pb::IssueApologyResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = issue_apology_action(r)?;
        let fp = fingerprint("dossier.v1.ResultsService/IssueApology", r);
        let (event, duplicate) = first_event(self.desk.execute(envelope, action, fp).await?)?;
        let DossierEvent::ApologyIssued {
            on_time,
            original_due_at,
            ..
        } = event.body.clone()
        else {
            return Err(unexpected(&event.stored));
        };
        Ok(Response::new(pb::IssueApologyResponse {
            event: Some(svc::recorded_event(&event.stored, duplicate)?),
            on_time,
            original_due_at: original_due_at.map(to_timestamp),
        }))
    }

    async fn record_rating(
        &self,
        request: Request<pb::RecordRatingRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = record_rating_action(r)?;
        let fp = fingerprint("dossier.v1.ResultsService/RecordRating", r);
        let outcome = self.desk.execute(envelope, action, fp).await?;
        write_response(first_event(outcome)?)
    }
}
