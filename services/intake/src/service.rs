//! The `IntakeService` RPCs: parse, authorize, hand the command to the write path, answer.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::intake_service_server::IntakeService;
use std::collections::HashMap;

use catalogue::{Catalogue, ProcedureVersion, ResolveError, Stated};
use domain::{
    Action, AgencyCode, ApplicantType, Channel, ComponentCode, DossierEvent, Level, ProcedureCode,
    Profile, ReturnMethod, SectorCode,
};
use svc::Tokens;
use svc::convert;
use svc::handler::{CommonFields, Desk, first_event, unexpected, write_response};
use svc::status::{field, invalid_field, to_timestamp};
use svc::write::{fingerprint, fingerprint_with_personal};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::{Request, Response, Status, Streaming};
use tonic_types::{ErrorDetails, StatusExt};
use writepath::{Clock, WritePath};

use crate::import::Importer;

/// The intake service's state: cheap to clone, shared by every call.
#[derive(Debug, Clone)]
pub struct Intake {
    desk: Desk,
    catalogue: Catalogue,
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
        catalogue: Catalogue,
        vault: Option<personal::Vault>,
    ) -> Self {
        Intake {
            desk: Desk::new(write.clone(), tokens.clone(), clock.clone()),
            catalogue,
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
        let mut reception = Reception::parse(req)?;
        envelope
            .principal
            .may_write_for(&reception.profile_agency)?;
        let applicant = reception.applicant.take();
        let in_force = self
            .catalogue
            .in_force(&reception.procedure, envelope.occurred_at)
            .await
            .map_err(crate::catalogue::store_status)?;
        let mut action = reception.into_action(in_force.as_ref())?;
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
        let DossierEvent::Received { due_at, .. } = event.body.clone() else {
            return Err(unexpected(&event.stored));
        };
        Ok(Response::new(pb::ReceiveDossierResponse {
            event: Some(svc::recorded_event(&event.stored, duplicate)?),
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
        let inbound = request.into_inner();
        let importer = Importer::new(self.write.clone(), self.clock.clone(), self.vault.clone());
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(crate::import::pipeline(importer, inbound, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// `ReceiveDossier`'s own fields, parsed, before the catalogue completes them: the procedure's
/// profile fields (`profile.online_level`, `profile.sector_code`, `statutory_time`,
/// `fee_required`) may be left out and are then taken from the catalogue in force at
/// `occurred_at`; those given must agree with it.
#[derive(Debug, Clone)]
pub struct Reception {
    pub procedure: ProcedureCode,
    /// The receiving agency: the token's must be the same.
    pub profile_agency: AgencyCode,
    level: Level,
    channel: Channel,
    applicant_type: ApplicantType,
    stated: Stated,
    components: Vec<ComponentCode>,
    /// The validated applicant, not yet sealed (that needs the dossier's key).
    pub applicant: Option<personal::Applicant>,
    return_method: Option<ReturnMethod>,
}

impl Reception {
    pub fn parse(req: &pb::ReceiveDossierRequest) -> Result<Reception, Status> {
        let p = req
            .profile
            .as_ref()
            .ok_or_else(|| invalid_field("profile", "is required"))?;
        let applicant_type = convert::applicant_type("profile.applicant_type", p.applicant_type)?;
        let applicant = convert::applicant("applicant", req.applicant.as_ref(), applicant_type)?;
        let components = convert::components("components", &req.components)?;
        if components.is_empty() {
            return Err(invalid_field(
                "components",
                "at least one submitted component is required",
            ));
        }
        Ok(Reception {
            procedure: field(
                "profile.procedure_code",
                ProcedureCode::parse(p.procedure_code.as_str()),
            )?,
            profile_agency: convert::agency("profile.agency_code", &p.agency_code)?,
            level: convert::level("profile.level", p.level)?,
            channel: convert::channel("profile.channel", p.channel)?,
            applicant_type,
            stated: Stated {
                online_level: convert::optional(
                    "profile.online_level",
                    p.online_level,
                    convert::online_level,
                )?,
                sector: match p.sector_code.as_str() {
                    "" => None,
                    code => Some(field("profile.sector_code", SectorCode::parse(code))?),
                },
                statutory_time: req
                    .statutory_time
                    .as_ref()
                    .map(|t| convert::statutory_time("statutory_time", Some(t)))
                    .transpose()?,
                fee_required: req.fee_required,
            },
            components,
            applicant,
            return_method: convert::optional(
                "return_method",
                req.return_method,
                convert::return_method,
            )?,
        })
    }

    /// The command, completed from and checked against `in_force` (the catalogue version of
    /// the procedure at the reception time; `None` when it has none: the full profile must be
    /// given). A disagreement is FAILED_PRECONDITION `catalogue_mismatch` naming the field.
    pub fn into_action(self, in_force: Option<&ProcedureVersion>) -> Result<Action, Status> {
        let resolved = catalogue::resolve(&self.stated, in_force).map_err(|e| match e {
            ResolveError::Missing { field } => invalid_field(field, &e),
            ResolveError::Mismatch { field, version, .. } => Status::with_error_details(
                Code::FailedPrecondition,
                e.to_string(),
                ErrorDetails::with_error_info(
                    "catalogue_mismatch",
                    svc::status::ERROR_DOMAIN,
                    HashMap::from([
                        ("field".to_owned(), field.to_owned()),
                        ("catalogue_version".to_owned(), version.to_string()),
                    ]),
                ),
            ),
        })?;
        Ok(Action::Receive {
            profile: Profile {
                procedure: self.procedure,
                online_level: resolved.online_level,
                sector: resolved.sector,
                agency: self.profile_agency,
                level: self.level,
                channel: self.channel,
                applicant_type: self.applicant_type,
            },
            statutory_time: resolved.statutory_time,
            fee_required: resolved.fee_required,
            components: self.components,
            due_at: None,
            procedure: resolved.rules,
            applicant: None,
            return_method: self.return_method,
        })
    }
}

/// `ReceiveDossier`'s own fields as a command for a procedure outside the catalogue (the full
/// profile; its applicant not yet sealed: that needs the dossier's key), the agency whose
/// counter may send it, and the validated applicant.
pub fn receive_dossier_action(
    req: &pb::ReceiveDossierRequest,
) -> Result<(AgencyCode, Action, Option<personal::Applicant>), Status> {
    let mut reception = Reception::parse(req)?;
    let agency = reception.profile_agency.clone();
    let applicant = reception.applicant.take();
    Ok((agency, reception.into_action(None)?, applicant))
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
