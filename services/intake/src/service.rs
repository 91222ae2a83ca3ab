//! The `IntakeService` RPCs: parse, authorize, hand the command to the write path, answer.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::intake_service_server::IntakeService;
use domain::{Action, AgencyCode, DossierEvent};
use svc::convert;
use svc::handler::{CommonFields, Desk, body, first_event, unexpected, write_response};
use svc::status::{invalid_field, to_timestamp};
use svc::write::{fingerprint, fingerprint_with_personal};
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
    /// The applicants' keys (`None`: no master keys configured; an applicant is refused).
    vault: Option<personal::Vault>,
}

impl Intake {
    pub fn new(
        write: WritePath,
        tokens: Arc<Tokens>,
        clock: Arc<dyn Clock>,
        vault: Option<personal::Vault>,
    ) -> Self {
        Intake {
            desk: Desk::new(write.clone(), tokens.clone(), clock.clone()),
            tokens,
            write,
            clock,
            vault,
        }
    }
}

const RECEIVE_METHOD: &str = "dossier.v1.IntakeService/ReceiveDossier";

/// The vault, or FAILED_PRECONDITION for a request that carries personal data.
pub(crate) fn vault_or_refuse(vault: &Option<personal::Vault>) -> Result<&personal::Vault, Status> {
    vault.as_ref().ok_or_else(|| {
        svc::status::with_reason(
            tonic::Code::FailedPrecondition,
            "no_master_keys",
            "this installation has no master keys configured (auth.master_keys_file): it cannot record an applicant",
        )
    })
}

/// A vault failure as a status: never a value, never a key.
pub(crate) fn vault_status(e: personal::VaultError) -> Status {
    match e {
        personal::VaultError::Unavailable(e) => svc::status::unavailable(e),
        personal::VaultError::NoKey(d) => {
            Status::not_found(format!("dossier {d} is unknown or has no applicant data"))
        }
        e @ personal::VaultError::Erased { .. } => svc::status::with_reason(
            tonic::Code::FailedPrecondition,
            "applicant_erased",
            e.to_string(),
        ),
        e @ personal::VaultError::Crypto { .. } => {
            tracing::error!(error = %e, "personal data does not open");
            svc::status::internal(e)
        }
    }
}

/// Seals `applicant` into the dossier's key: the sealed record, the data key's digest of the
/// plaintext (for the request fingerprint) and the lookup secret.
pub(crate) async fn seal(
    vault: &personal::Vault,
    dossier: &domain::DossierId,
    applicant: &personal::Applicant,
) -> Result<(domain::SealedApplicant, [u8; 32], personal::LookupSecret), Status> {
    let key = vault.dossier_key(dossier).await.map_err(vault_status)?.key;
    let plaintext = serde_json::to_vec(applicant).map_err(svc::status::internal)?;
    Ok((
        key.seal(dossier, applicant),
        key.fingerprint(&plaintext),
        key.lookup_secret(dossier),
    ))
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
        let (agency, mut action, applicant) = receive_dossier_action(req)?;
        envelope.principal.may_write_for(&agency)?;
        let (print, secret) = match applicant {
            None => (fingerprint(RECEIVE_METHOD, req), None),
            Some(applicant) => {
                let vault = vault_or_refuse(&self.vault)?;
                let (sealed, mac, secret) = seal(vault, &envelope.dossier_id, &applicant).await?;
                if let Action::Receive { applicant, .. } = &mut action {
                    *applicant = Some(sealed);
                }
                let mut without = req.clone();
                without.applicant = None;
                (
                    fingerprint_with_personal(RECEIVE_METHOD, &without, mac),
                    Some(secret),
                )
            }
        };
        let (event, duplicate) = first_event(self.desk.execute(envelope, action, print).await?)?;
        let DossierEvent::Received { due_at, .. } = body(&event)? else {
            return Err(unexpected(&event));
        };
        Ok(Response::new(pb::ReceiveDossierResponse {
            event: Some(svc::recorded_event(&event, duplicate)?),
            due_at: Some(to_timestamp(due_at)),
            lookup_secret: secret.map(|s| s.printed()).unwrap_or_default(),
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
        let importer = Importer::new(self.write.clone(), self.clock.clone(), self.vault.clone());
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

/// `ReceiveDossier`'s own fields as a command (its applicant not yet sealed: that needs the
/// dossier's key), the agency whose counter may send it, and the validated applicant.
pub fn receive_dossier_action(
    req: &pb::ReceiveDossierRequest,
) -> Result<(AgencyCode, Action, Option<personal::Applicant>), Status> {
    let profile = convert::profile("profile", req.profile.as_ref())?;
    let applicant =
        convert::applicant("applicant", req.applicant.as_ref(), profile.applicant_type)?;
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
        applicant: None,
        return_method: convert::optional(
            "return_method",
            req.return_method,
            convert::return_method,
        )?,
    };
    Ok((agency, action, applicant))
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
