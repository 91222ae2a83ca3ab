//! The `ProcessingService` RPCs: parse, authorize, hand the command to the write path, answer.

use api::v1 as pb;
use api::v1::processing_service_server::ProcessingService;
use domain::{Action, AgencyCode, DossierEvent};
use svc::Principal;
use svc::common_fields;
use svc::convert;
use svc::handler::{Desk, first_event, unexpected, write_response};
use svc::status::to_timestamp;
use svc::write::fingerprint;
use tonic::{Request, Response, Status};

use crate::warnings::WarningList;

/// The processing service's state: cheap to clone, shared by every call.
#[derive(Debug, Clone)]
pub struct Processing {
    desk: Desk,
    warnings: WarningList,
}

impl Processing {
    pub fn new(desk: Desk, warnings: WarningList) -> Self {
        Processing { desk, warnings }
    }
}

/// Resolve: the deciding agency must be the caller's own.
fn deciding_agency(principal: &Principal, value: &str) -> Result<AgencyCode, Status> {
    let agency = convert::agency("deciding_agency", value)?;
    if principal.agency.as_ref() != Some(&agency) {
        return Err(Status::permission_denied(format!(
            "deciding_agency {agency} is not the agency of this token ({})",
            principal
                .agency
                .as_ref()
                .map_or("(no agency)", |a| a.as_str())
        )));
    }
    Ok(agency)
}

// Each RPC's own fields as a command (pure: the fuzz targets call them directly).

pub fn transfer_action(r: &pb::TransferRequest) -> Result<Action, Status> {
    Ok(Action::Transfer {
        to_agency: convert::agency("to_agency", &r.to_agency)?,
        mode: convert::transfer_mode("mode", r.mode)?,
    })
}

pub fn request_supplement_action(r: &pb::RequestSupplementRequest) -> Result<Action, Status> {
    Ok(Action::RequestSupplement {
        reason: convert::text("reason", &r.reason)?,
    })
}

/// `ReceiveSupplement` has no fields of its own.
pub fn receive_supplement_action(_: &pb::ReceiveSupplementRequest) -> Result<Action, Status> {
    Ok(Action::ReceiveSupplement)
}

/// The deciding agency must be the `principal`'s own.
pub fn resolve_action(r: &pb::ResolveRequest, principal: &Principal) -> Result<Action, Status> {
    Ok(Action::Resolve {
        outcome: convert::outcome("outcome", r.outcome)?,
        deciding_agency: deciding_agency(principal, &r.deciding_agency)?,
    })
}

pub fn stop_processing_action(r: &pb::StopProcessingRequest) -> Result<Action, Status> {
    Ok(Action::Stop {
        reason: convert::text("reason", &r.reason)?,
    })
}

pub fn withdraw_action(r: &pb::WithdrawRequest) -> Result<Action, Status> {
    Ok(Action::Withdraw {
        reason: convert::text("reason", &r.reason)?,
    })
}

pub fn request_financial_obligation_action(
    r: &pb::RequestFinancialObligationRequest,
) -> Result<Action, Status> {
    Ok(Action::RequestFinancialObligation {
        reason: convert::text("reason", &r.reason)?,
    })
}

/// `FulfilFinancialObligation` has no fields of its own.
pub fn fulfil_financial_obligation_action(
    _: &pb::FulfilFinancialObligationRequest,
) -> Result<Action, Status> {
    Ok(Action::FulfilFinancialObligation)
}

#[tonic::async_trait]
impl ProcessingService for Processing {
    async fn request_financial_obligation(
        &self,
        request: Request<pb::RequestFinancialObligationRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = request_financial_obligation_action(r)?;
        let fp = fingerprint("dossier.v1.ProcessingService/RequestFinancialObligation", r);
        write_response(first_event(self.desk.execute(envelope, action, fp).await?)?)
    }

    async fn fulfil_financial_obligation(
        &self,
        request: Request<pb::FulfilFinancialObligationRequest>,
    ) -> Result<Response<pb::ReceiveSupplementResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let fp = fingerprint("dossier.v1.ProcessingService/FulfilFinancialObligation", r);
        let (event, duplicate) = first_event(
            self.desk
                .execute(envelope, fulfil_financial_obligation_action(r)?, fp)
                .await?,
        )?;
        let DossierEvent::FinancialObligationFulfilled { due_at, paused } = event.body.clone()
        else {
            return Err(unexpected(&event.stored));
        };
        Ok(Response::new(pb::ReceiveSupplementResponse {
            event: Some(svc::recorded_event(&event.stored, duplicate)?),
            due_at: Some(to_timestamp(due_at)),
            paused_minutes: paused.minutes(),
        }))
    }

    async fn transfer(
        &self,
        request: Request<pb::TransferRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = transfer_action(r)?;
        let fp = fingerprint("dossier.v1.ProcessingService/Transfer", r);
        write_response(first_event(self.desk.execute(envelope, action, fp).await?)?)
    }

    async fn request_supplement(
        &self,
        request: Request<pb::RequestSupplementRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = request_supplement_action(r)?;
        let fp = fingerprint("dossier.v1.ProcessingService/RequestSupplement", r);
        write_response(first_event(self.desk.execute(envelope, action, fp).await?)?)
    }

    async fn receive_supplement(
        &self,
        request: Request<pb::ReceiveSupplementRequest>,
    ) -> Result<Response<pb::ReceiveSupplementResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let fp = fingerprint("dossier.v1.ProcessingService/ReceiveSupplement", r);
        let (event, duplicate) = first_event(
            self.desk
                .execute(envelope, receive_supplement_action(r)?, fp)
                .await?,
        )?;
        let DossierEvent::SupplementReceived { due_at, paused } = event.body.clone() else {
            return Err(unexpected(&event.stored));
        };
        Ok(Response::new(pb::ReceiveSupplementResponse {
            event: Some(svc::recorded_event(&event.stored, duplicate)?),
            due_at: Some(to_timestamp(due_at)),
            paused_minutes: paused.minutes(),
        }))
    }

    async fn resolve(
        &self,
        request: Request<pb::ResolveRequest>,
    ) -> Result<Response<pb::ResolveResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = resolve_action(r, &envelope.principal)?;
        let fp = fingerprint("dossier.v1.ProcessingService/Resolve", r);
        let outcome = self.desk.execute(envelope, action, fp).await?;
        let late_withdrawn = outcome.wrote(domain::EventType::LateWithdrawn);
        let (event, duplicate) = first_event(outcome)?;
        let DossierEvent::Resolved {
            due_at, timeliness, ..
        } = event.body.clone()
        else {
            return Err(unexpected(&event.stored));
        };
        Ok(Response::new(pb::ResolveResponse {
            event: Some(svc::recorded_event(&event.stored, duplicate)?),
            due_at: Some(to_timestamp(due_at)),
            timeliness: convert::pb_timeliness(timeliness) as i32,
            late_withdrawn,
        }))
    }

    async fn stop_processing(
        &self,
        request: Request<pb::StopProcessingRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = stop_processing_action(r)?;
        let fp = fingerprint("dossier.v1.ProcessingService/StopProcessing", r);
        write_response(first_event(self.desk.execute(envelope, action, fp).await?)?)
    }

    async fn withdraw(
        &self,
        request: Request<pb::WithdrawRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let r = request.get_ref();
        let envelope = self.desk.envelope(&request, common_fields!(r))?;
        let action = withdraw_action(r)?;
        let fp = fingerprint("dossier.v1.ProcessingService/Withdraw", r);
        write_response(first_event(self.desk.execute(envelope, action, fp).await?)?)
    }

    async fn list_due_soon(
        &self,
        request: Request<pb::ListDueSoonRequest>,
    ) -> Result<Response<pb::ListDueSoonResponse>, Status> {
        Ok(Response::new(
            self.warnings
                .answer(request.metadata(), request.get_ref())
                .await?,
        ))
    }
}
