//! The `IntakeService` RPCs: parse, authorize, hand the command to the write path, answer.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::intake_service_server::IntakeService;
use domain::{Action, AgencyCode, DossierEvent};
use svc::convert;
use svc::handler::{CommonFields, Desk, body, first_event, unexpected, write_response};
use svc::status::{invalid_field, to_timestamp};
use svc::write::fingerprint;
use svc::{Clock, Tokens, WritePath};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::import::Importer;

/// The intake service's state: cheap to clone, shared by every call.
#[derive(Debug, Clone)]
pub struct Intake {
    desk: Desk,
    tokens: Arc<Tokens>,
    write: WritePath,
    clock: Arc<dyn Clock>,
}

impl Intake {
    pub fn new(write: WritePath, tokens: Arc<Tokens>, clock: Arc<dyn Clock>) -> Self {
        Intake {
            desk: Desk::new(write.clone(), tokens.clone(), clock.clone()),
            tokens,
            write,
            clock,
        }
    }
}

#[tonic::async_trait]
impl IntakeService for Intake {
    async fn receive_dossier(
        &self,
        request: Request<pb::ReceiveDossierRequest>,
    ) -> Result<Response<pb::ReceiveDossierResponse>, Status> {
        let req = request.get_ref();
        let envelope = self.desk.envelope(
            &request,
            new_dossier_fields(&req.event_id, &req.dossier_id, &req.occurred_at),
        )?;
        let (agency, action) = receive_dossier_action(req)?;
        envelope.principal.may_write_for(&agency)?;
        let print = fingerprint("dossier.v1.IntakeService/ReceiveDossier", req);
        let (event, duplicate) = first_event(self.desk.execute(envelope, action, print).await?)?;
        let DossierEvent::Received { due_at, .. } = body(&event)? else {
            return Err(unexpected(&event));
        };
        Ok(Response::new(pb::ReceiveDossierResponse {
            event: Some(svc::recorded_event(&event, duplicate)?),
            due_at: Some(to_timestamp(due_at)),
        }))
    }

    async fn record_digitized_components(
        &self,
        request: Request<pb::RecordDigitizedComponentsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.get_ref();
        let envelope = self.desk.envelope(&request, svc::common_fields!(req))?;
        let action = record_digitized_components_action(req)?;
        let print = fingerprint("dossier.v1.IntakeService/RecordDigitizedComponents", req);
        let outcome = self.desk.execute(envelope, action, print).await?;
        write_response(first_event(outcome)?)
    }

    async fn refuse_at_counter(
        &self,
        request: Request<pb::RefuseAtCounterRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let req = request.get_ref();
        let envelope = self.desk.envelope(
            &request,
            new_dossier_fields(&req.event_id, &req.dossier_id, &req.occurred_at),
        )?;
        let (agency, action) = refuse_at_counter_action(req)?;
        envelope.principal.may_write_for(&agency)?;
        let print = fingerprint("dossier.v1.IntakeService/RefuseAtCounter", req);
        write_response(first_event(
            self.desk.execute(envelope, action, print).await?,
        )?)
    }

    type ImportHistoryStream = ReceiverStream<Result<pb::ImportBatchResult, Status>>;

    async fn import_history(
        &self,
        request: Request<Streaming<pb::ImportBatch>>,
    ) -> Result<Response<Self::ImportHistoryStream>, Status> {
        self.tokens
            .authenticate(request.metadata())?
            .require_importer()?;
        let mut inbound = request.into_inner();
        let importer = Importer::new(self.write.clone(), self.clock.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let batch = match inbound.message().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::info!(%status, "import stream ended by the client");
                        break;
                    }
                };
                let answer = importer.import(batch).await;
                let failed = answer.is_err();
                if tx.send(answer).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// `ReceiveDossier`'s own fields as a command, and the agency whose counter may send it.
pub fn receive_dossier_action(
    req: &pb::ReceiveDossierRequest,
) -> Result<(AgencyCode, Action), Status> {
    let profile = convert::profile("profile", req.profile.as_ref())?;
    let components = convert::components("components", &req.components)?;
    if components.is_empty() {
        return Err(invalid_field(
            "components",
            "at least one submitted component is required",
        ));
    }
    let agency = profile.agency.clone();
    let action = Action::Receive {
        profile,
        statutory_time: convert::statutory_time("statutory_time", req.statutory_time.as_ref())?,
        fee_required: req.fee_required,
        components,
        due_at: None,
    };
    Ok((agency, action))
}

/// `RecordDigitizedComponents`' own fields as a command.
pub fn record_digitized_components_action(
    req: &pb::RecordDigitizedComponentsRequest,
) -> Result<Action, Status> {
    let digitized = convert::components("digitized", &req.digitized)?;
    let reused = convert::components("reused", &req.reused)?;
    if digitized.is_empty() && reused.is_empty() {
        return Err(invalid_field(
            "digitized",
            "name at least one digitized or reused component",
        ));
    }
    Ok(Action::RecordDigitized { digitized, reused })
}

/// `RefuseAtCounter`'s own fields as a command, and the agency whose counter may send it.
pub fn refuse_at_counter_action(
    req: &pb::RefuseAtCounterRequest,
) -> Result<(AgencyCode, Action), Status> {
    let profile = convert::profile("profile", req.profile.as_ref())?;
    let agency = profile.agency.clone();
    let action = Action::RefuseAtIntake {
        profile,
        reason: convert::text("reason", &req.reason)?,
    };
    Ok((agency, action))
}

/// The common fields of a request that creates a dossier (no expected version: it has none yet).
pub fn new_dossier_fields<'a>(
    event_id: &'a str,
    dossier_id: &'a str,
    occurred_at: &'a Option<api::Timestamp>,
) -> CommonFields<'a> {
    CommonFields {
        event_id,
        dossier_id,
        occurred_at: occurred_at.as_ref(),
        expected_version: None,
    }
}
