//! The `IntakeService` RPCs: parse, authorize, hand the command to the write path, answer.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::intake_service_server::IntakeService;
use domain::{Action, Command, DossierEvent};
use svc::convert;
use svc::handler::{first_event, write_response};
use svc::status::{business_time, invalid_field, to_timestamp};
use svc::write::fingerprint;
use svc::{Clock, Principal, Tokens, WritePath, WriteRequest};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::import::Importer;

/// The intake service's state: cheap to clone, shared by every call.
#[derive(Debug, Clone)]
pub struct Intake {
    pub(crate) write: WritePath,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Intake {
    pub fn new(write: WritePath, tokens: Arc<Tokens>, clock: Arc<dyn Clock>) -> Self {
        Intake {
            write,
            tokens,
            clock,
        }
    }

    fn principal<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        self.tokens.authenticate(request.metadata())
    }
}

#[tonic::async_trait]
impl IntakeService for Intake {
    async fn receive_dossier(
        &self,
        request: Request<pb::ReceiveDossierRequest>,
    ) -> Result<Response<pb::ReceiveDossierResponse>, Status> {
        let principal = self.principal(&request)?;
        principal.require_counter()?;
        let req = request.into_inner();
        let profile = convert::profile("profile", req.profile.as_ref())?;
        principal.may_write_for(&profile.agency)?;
        let components = convert::components("components", &req.components)?;
        if components.is_empty() {
            return Err(invalid_field(
                "components",
                "at least one submitted component is required",
            ));
        }
        let write = WriteRequest {
            event_id: convert::event_id("event_id", &req.event_id)?,
            dossier_id: convert::dossier_id("dossier_id", &req.dossier_id)?,
            command: Command {
                occurred_at: business_time(
                    "occurred_at",
                    req.occurred_at.as_ref(),
                    self.clock.now(),
                )?,
                action: Action::Receive {
                    profile,
                    statutory_time: convert::statutory_time(
                        "statutory_time",
                        req.statutory_time.as_ref(),
                    )?,
                    fee_required: req.fee_required,
                    components,
                    due_at: None,
                },
            },
            expected_version: None,
            fingerprint: fingerprint("dossier.v1.IntakeService/ReceiveDossier", &req),
        };
        let (event, duplicate) = first_event(self.write.execute(&write, |_| Ok(())).await?)?;
        let due_at = match svc::write::decode(&event)?.body {
            DossierEvent::Received { due_at, .. } => due_at,
            _ => {
                return Err(Status::already_exists(format!(
                    "event_id {} belongs to a {} event",
                    event.event_id, event.event_type
                )));
            }
        };
        Ok(Response::new(pb::ReceiveDossierResponse {
            event: Some(svc::recorded_event(&event, duplicate)),
            due_at: Some(to_timestamp(due_at)),
        }))
    }

    async fn record_digitized_components(
        &self,
        request: Request<pb::RecordDigitizedComponentsRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = self.principal(&request)?;
        principal.require_counter()?;
        let req = request.into_inner();
        let digitized = convert::components("digitized", &req.digitized)?;
        let reused = convert::components("reused", &req.reused)?;
        if digitized.is_empty() && reused.is_empty() {
            return Err(invalid_field(
                "digitized",
                "name at least one digitized or reused component",
            ));
        }
        let write = WriteRequest {
            event_id: convert::event_id("event_id", &req.event_id)?,
            dossier_id: convert::dossier_id("dossier_id", &req.dossier_id)?,
            command: Command {
                occurred_at: business_time(
                    "occurred_at",
                    req.occurred_at.as_ref(),
                    self.clock.now(),
                )?,
                action: Action::RecordDigitized { digitized, reused },
            },
            expected_version: req.expected_version,
            fingerprint: fingerprint("dossier.v1.IntakeService/RecordDigitizedComponents", &req),
        };
        let outcome = self
            .write
            .execute(&write, |dossier| match &dossier.profile {
                Some(profile) => principal.may_write_for(&profile.agency),
                None => Ok(()),
            })
            .await?;
        Ok(write_response(first_event(outcome)?))
    }

    async fn refuse_at_counter(
        &self,
        request: Request<pb::RefuseAtCounterRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        let principal = self.principal(&request)?;
        principal.require_counter()?;
        let req = request.into_inner();
        let profile = convert::profile("profile", req.profile.as_ref())?;
        principal.may_write_for(&profile.agency)?;
        let write = WriteRequest {
            event_id: convert::event_id("event_id", &req.event_id)?,
            dossier_id: convert::dossier_id("dossier_id", &req.dossier_id)?,
            command: Command {
                occurred_at: business_time(
                    "occurred_at",
                    req.occurred_at.as_ref(),
                    self.clock.now(),
                )?,
                action: Action::RefuseAtIntake {
                    profile,
                    reason: convert::text("reason", &req.reason)?,
                },
            },
            expected_version: None,
            fingerprint: fingerprint("dossier.v1.IntakeService/RefuseAtCounter", &req),
        };
        Ok(write_response(first_event(
            self.write.execute(&write, |_| Ok(())).await?,
        )?))
    }

    type ImportHistoryStream = ReceiverStream<Result<pb::ImportBatchResult, Status>>;

    async fn import_history(
        &self,
        request: Request<Streaming<pb::ImportBatch>>,
    ) -> Result<Response<Self::ImportHistoryStream>, Status> {
        self.principal(&request)?.require_importer()?;
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
