//! The `CatalogueService` RPCs (publish for administrators, read for any token), the catalogue
//! file loaded at start, and the proto ↔ catalogue conversions.

use std::path::Path;
use std::sync::Arc;

use api::v1 as pb;
use api::v1::catalogue_service_server::CatalogueService;
use catalogue::{Catalogue, Procedure, ProcedureVersion, StoreError};
use domain::{ProcedureCode, SectorCode, Text};
use svc::Tokens;
use svc::convert::{
    self, at, cutoff_text, pb_online_level, pb_statutory_time, pb_supplement_policy,
};
use svc::status::{field, invalid_field, prefixed, timestamp, to_timestamp, with_reason};
use tonic::{Code, Request, Response, Status};
use writepath::Clock;

/// The catalogue's store errors as statuses: retry, or an operator's problem.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::Unavailable(e) => svc::status::unavailable(e),
        e => svc::status::internal(e),
    }
}

/// Loads the catalogue file at start: every definition is published unless identical to the
/// stored one (a restart changes nothing). Recorded by `file:<path>`.
pub async fn load_file(catalogue: &Catalogue, path: &Path) -> Result<(Vec<u64>, u32), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read catalogue file {}: {e}", path.display()))?;
    let procedures = catalogue::parse_file(&text).map_err(|e| e.to_string())?;
    catalogue
        .publish(&procedures, &format!("file:{}", path.display()))
        .await
        .map_err(|e| e.to_string())
}

/// A `ProcedureDefinition` as a checked [`Procedure`]; errors name the field under `path`.
pub fn procedure(path: &str, d: &pb::ProcedureDefinition) -> Result<Procedure, Status> {
    let p = |name: &str| at(path, name);
    let procedure = Procedure {
        code: field(&p("code"), ProcedureCode::parse(d.code.as_str()))?,
        name: field(&p("name"), Text::parse(d.name.as_str()))?,
        sector: field(&p("sector_code"), SectorCode::parse(d.sector_code.as_str()))?,
        statutory_time: convert::statutory_time(&p("statutory_time"), d.statutory_time.as_ref())?,
        online_level: convert::online_level(&p("online_level"), d.online_level)?,
        fee_required: d.fee_required,
        supplement_policy: convert::supplement_policy(
            &p("supplement_policy"),
            d.supplement_policy,
        )?,
        max_supplement_requests: d.max_supplement_requests,
        close_after_working_days: d.close_after_working_days,
        same_day_cutoff: match d.same_day_cutoff.as_str() {
            "" => None,
            text => Some(
                catalogue::parse_cutoff(text)
                    .map_err(|r| invalid_field(&p("same_day_cutoff"), r))?,
            ),
        },
        obligation_pauses_clock: d.obligation_pauses_clock,
        effective_from: timestamp(&p("effective_from"), d.effective_from.as_ref())?,
    };
    procedure
        .validate()
        .map_err(|e| invalid_field(&p(e.field), e.reason))?;
    Ok(procedure)
}

pub fn pb_definition(p: &Procedure) -> pb::ProcedureDefinition {
    pb::ProcedureDefinition {
        code: p.code.as_str().to_owned(),
        name: p.name.as_str().to_owned(),
        sector_code: p.sector.as_str().to_owned(),
        statutory_time: Some(pb_statutory_time(p.statutory_time)),
        online_level: pb_online_level(p.online_level) as i32,
        fee_required: p.fee_required,
        supplement_policy: pb_supplement_policy(p.supplement_policy) as i32,
        max_supplement_requests: p.max_supplement_requests,
        close_after_working_days: p.close_after_working_days,
        same_day_cutoff: cutoff_text(p.same_day_cutoff),
        obligation_pauses_clock: p.obligation_pauses_clock,
        effective_from: Some(to_timestamp(p.effective_from)),
    }
}

fn pb_version(v: &ProcedureVersion) -> pb::ProcedureVersion {
    pb::ProcedureVersion {
        version: v.version,
        definition: Some(pb_definition(&v.procedure)),
        recorded_by: v.recorded_by.clone(),
        recorded_at: Some(to_timestamp(v.recorded_at)),
    }
}

/// The catalogue service: cheap to clone.
#[derive(Debug, Clone)]
pub struct CatalogueRpc {
    catalogue: Catalogue,
    tokens: Arc<Tokens>,
    clock: Arc<dyn Clock>,
}

impl CatalogueRpc {
    pub fn new(catalogue: Catalogue, tokens: Arc<Tokens>, clock: Arc<dyn Clock>) -> Self {
        CatalogueRpc {
            catalogue,
            tokens,
            clock,
        }
    }
}

#[tonic::async_trait]
impl CatalogueService for CatalogueRpc {
    async fn publish_procedures(
        &self,
        request: Request<pb::PublishProceduresRequest>,
    ) -> Result<Response<pb::PublishProceduresResponse>, Status> {
        let principal = self.tokens.authenticate(request.metadata())?;
        principal.require_admin()?;
        let r = request.get_ref();
        if r.procedures.is_empty() || r.procedures.len() > catalogue::MAX_DEFINITIONS {
            return Err(invalid_field(
                "procedures",
                format!("1 to {} definitions", catalogue::MAX_DEFINITIONS),
            ));
        }
        let procedures = r
            .procedures
            .iter()
            .enumerate()
            .map(|(i, d)| procedure("", d).map_err(|s| prefixed(&format!("procedures[{i}]"), s)))
            .collect::<Result<Vec<_>, _>>()?;
        let (versions, published) = self
            .catalogue
            .publish(&procedures, &principal.name)
            .await
            .map_err(store_status)?;
        tracing::info!(by = %principal.name, published, "procedure catalogue published");
        Ok(Response::new(pb::PublishProceduresResponse {
            versions,
            published,
        }))
    }

    async fn get_procedure(
        &self,
        request: Request<pb::GetProcedureRequest>,
    ) -> Result<Response<pb::ProcedureVersion>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let r = request.get_ref();
        let code = field("code", ProcedureCode::parse(r.code.as_str()))?;
        let instant = match &r.at {
            Some(t) => timestamp("at", Some(t))?,
            None => self.clock.now(),
        };
        match self
            .catalogue
            .in_force(&code, instant)
            .await
            .map_err(store_status)?
        {
            Some(v) => Ok(Response::new(pb_version(&v))),
            None => Err(with_reason(
                Code::NotFound,
                "unknown_procedure",
                format!("procedure {code} has no version in force at {instant}"),
            )),
        }
    }
}
