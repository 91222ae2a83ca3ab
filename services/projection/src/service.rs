//! `StatsService`: indicators (S1–S14, grouped), report forms and a dossier's status, from the
//! projection's aggregates or, "as recorded at" a past instant, from the log.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::stats_service_server::StatsService;
use chrono::NaiveDate;
use svc::convert::{self, optional};
use svc::status::invalid_field;
use svc::{Principal, Role, Tokens};
use tonic::{Request, Response, Status};

use crate::answers::IndicatorsAnswer;
use crate::forms::{Cell, Form, Table};
use crate::read::{QueryLimits, ReadError, Reader};
use crate::scope::{RawScope, Source};

/// The gRPC statistics queries. Any valid token may read; `as_recorded_at` is for auditors.
#[derive(Debug, Clone)]
pub struct Stats {
    reader: Reader,
    tokens: Arc<Tokens>,
}

impl Stats {
    pub fn new(reader: Reader, tokens: Arc<Tokens>) -> Stats {
        Stats { reader, tokens }
    }

    /// The refusals of the bounds, shared with the HTTP routes.
    pub fn rejections(&self) -> Arc<crate::read::Rejections> {
        self.reader.rejections()
    }
}

/// Refuses `as_recorded_at` to tokens other than auditors'. It recomputes figures from the log
/// (a scan, not a lookup): an audit, which the hundreds of counter tokens need not be able to
/// start (README, "The auditor's workflow").
pub fn may_ask(principal: &Principal, source: Source) -> Result<(), ReadError> {
    match source {
        Source::AsRecordedAt(_) if principal.role != Role::Auditor => Err(ReadError::AuditorsOnly),
        _ => Ok(()),
    }
}

/// The query and source of a request with the common fields (`GetIndicatorsRequest`,
/// `GetReportRequest`), each malformed field named.
macro_rules! scope {
    ($r:expr, $limits:expr) => {{
        let r = &$r;
        let query = RawScope {
            from: &r.from,
            to: &r.to,
            level: optional("level", r.level, convert::level)?,
            agency_code: &r.agency_code,
            sector_code: &r.sector_code,
            procedure_code: &r.procedure_code,
            channel: optional("channel", r.channel, convert::channel)?,
            applicant_type: optional("applicant_type", r.applicant_type, convert::applicant_type)?,
            group_by: dimensions("group_by", &r.group_by)?,
        }
        .parse($limits)
        .map_err(ReadError::from)?;
        (query, source("as_recorded_at", r.as_recorded_at.as_ref())?)
    }};
}

/// What a `GetIndicators` request asks, each malformed field named (pure: the fuzz targets
/// call it directly).
pub fn indicators_request(
    r: &pb::GetIndicatorsRequest,
    limits: &QueryLimits,
) -> Result<(stats::Query, Source), Status> {
    Ok(scope!(r, limits))
}

/// What a `GetReport` request asks, each malformed field named.
pub fn report_request(
    r: &pb::GetReportRequest,
    limits: &QueryLimits,
) -> Result<(Form, stats::Query, Source), Status> {
    let form = match pb::ReportForm::try_from(r.form) {
        Ok(pb::ReportForm::Ii06a) => Form::Ii06a,
        Ok(pb::ReportForm::BieuMau3Section3) => Form::BieuMau3Section3,
        Ok(pb::ReportForm::BieuMau7Section6) => Form::BieuMau7Section6,
        Ok(pb::ReportForm::Scorecard766) => Form::Scorecard766,
        _ => {
            return Err(invalid_field(
                "form",
                "is required: choose one of the listed forms",
            ));
        }
    };
    let (query, source) = scope!(r, limits);
    Ok((form, query, source))
}

#[tonic::async_trait]
impl StatsService for Stats {
    async fn get_indicators(
        &self,
        request: Request<pb::GetIndicatorsRequest>,
    ) -> Result<Response<pb::GetIndicatorsResponse>, Status> {
        let principal = self.tokens.authenticate(request.metadata())?;
        let r = request.into_inner();
        let (query, source) = indicators_request(&r, self.reader.limits())?;
        let structure_at = crate::scope::structure_at("structure_at", &r.structure_at)?;
        may_ask(&principal, source)?;
        let answer = self.reader.indicators(&query, source, structure_at).await?;
        let mut response = indicators_response(&answer, source)?;
        response.structure_at = structure_at.map(day).unwrap_or_default();
        Ok(Response::new(response))
    }

    async fn get_report(
        &self,
        request: Request<pb::GetReportRequest>,
    ) -> Result<Response<pb::Report>, Status> {
        let principal = self.tokens.authenticate(request.metadata())?;
        let r = request.into_inner();
        let (form, query, source) = report_request(&r, self.reader.limits())?;
        let structure_at = crate::scope::structure_at("structure_at", &r.structure_at)?;
        may_ask(&principal, source)?;
        let table = self
            .reader
            .report(form, &query, source, structure_at)
            .await?;
        let mut report = report_pb(&table, &query, source);
        report.structure_at = structure_at.map(day).unwrap_or_default();
        Ok(Response::new(report))
    }

    async fn get_dossier_status(
        &self,
        request: Request<pb::GetDossierStatusRequest>,
    ) -> Result<Response<pb::DossierStatus>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let id = svc::convert::dossier_id("dossier_id", &request.get_ref().dossier_id)?;
        let dossier = self.reader.dossier(id.as_str()).await?.ok_or_else(|| {
            svc::status::with_reason(
                tonic::Code::NotFound,
                "dossier_not_found",
                format!("no dossier {id} in the log"),
            )
        })?;
        Ok(Response::new(status_pb(id.as_str(), &dossier)))
    }
}

/// The source of a request's figures: live, or as recorded at the given instant.
pub fn source(field: &str, at: Option<&api::Timestamp>) -> Result<Source, Status> {
    match at {
        None => Ok(Source::Live),
        Some(_) => Ok(Source::AsRecordedAt(svc::status::timestamp(field, at)?)),
    }
}

fn dimension(value: i32) -> Option<stats::Dimension> {
    match pb::Dimension::try_from(value) {
        Ok(pb::Dimension::Level) => Some(stats::Dimension::Level),
        Ok(pb::Dimension::Agency) => Some(stats::Dimension::Agency),
        Ok(pb::Dimension::Sector) => Some(stats::Dimension::Sector),
        Ok(pb::Dimension::Procedure) => Some(stats::Dimension::Procedure),
        Ok(pb::Dimension::Channel) => Some(stats::Dimension::Channel),
        Ok(pb::Dimension::ApplicantType) => Some(stats::Dimension::ApplicantType),
        Ok(pb::Dimension::Unspecified) | Err(_) => None,
    }
}

fn dimensions(field: &str, values: &[i32]) -> Result<Vec<stats::Dimension>, Status> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            dimension(*v).ok_or_else(|| {
                invalid_field(&format!("{field}[{i}]"), "unknown or unspecified dimension")
            })
        })
        .collect()
}

/// The wire form of a rate: `percent` absent when the denominator is 0.
pub fn rate(r: stats::Rate) -> Option<pb::Rate> {
    Some(pb::Rate {
        numerator: r.numerator,
        denominator: r.denominator,
        percent: r.percent(),
    })
}

fn pending(p: &stats::PendingFigures) -> Option<pb::PendingFigures> {
    Some(pb::PendingFigures {
        total: p.total,
        within_time: p.within_time,
        overdue: p.overdue,
    })
}

/// An amount sum that does not fit the wire's `int64` (the sums themselves are exact, `i128`):
/// gRPC answers OUT_OF_RANGE and HTTP 400, both with reason `amount_exceeds_int64`, rather
/// than a wrong number; a shorter period or a narrower slice has a smaller sum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{field} is {value} VND, beyond int64: ask a shorter period or a narrower slice \
     (the figures themselves are exact)"
)]
pub struct AmountTooLarge {
    pub field: &'static str,
    pub value: i128,
}

impl AmountTooLarge {
    pub const REASON: &'static str = "amount_exceeds_int64";
}

impl From<AmountTooLarge> for Status {
    fn from(e: AmountTooLarge) -> Status {
        svc::status::with_reason(
            tonic::Code::OutOfRange,
            AmountTooLarge::REASON,
            e.to_string(),
        )
    }
}

fn amount_pb(field: &'static str, v: i128) -> Result<i64, AmountTooLarge> {
    i64::try_from(v).map_err(|_| AmountTooLarge { field, value: v })
}

/// The wire form of indicators; refused when an amount exceeds `int64` ([`AmountTooLarge`]).
pub fn indicators_pb(i: &stats::Indicators) -> Result<pb::Indicators, AmountTooLarge> {
    Ok(pb::Indicators {
        received: i.received.total,
        received_online: i.received.online,
        received_direct: i.received.direct,
        received_postal: i.received.postal,
        carried_over: i.received.carried_over,
        resolved: i.resolved.total,
        resolved_early: i.resolved.early,
        resolved_on_time: i.resolved.on_time,
        resolved_late: i.resolved.late,
        on_time_rate: rate(i.on_time_rate),
        pending: pending(&i.pending),
        pending_at_start: pending(&i.pending_at_start),
        ended: i.ended.total,
        withdrawn: i.ended.withdrawn,
        stopped: i.ended.stopped,
        refused_at_intake: i.refused_at_intake,
        apology_rate: rate(i.apology_rate),
        timely_apology_rate: rate(i.timely_apology_rate),
        components_digitized: rate(i.components_digitized),
        results_digitized: rate(i.results_digitized),
        data_reuse: rate(i.data_reuse),
        online: rate(i.online.all),
        online_full_online: rate(i.online.full_online),
        online_partial_online: rate(i.online.partial_online),
        full_online_of_all: rate(i.online.full_online_of_all),
        online_payment: rate(i.payment.rate),
        payment_transactions: i.payment.transactions,
        payment_amount_vnd: amount_pb("payment_amount_vnd", i.payment.amount_vnd)?,
        online_payment_transactions: i.payment.online_transactions,
        online_payment_amount_vnd: amount_pb(
            "online_payment_amount_vnd",
            i.payment.online_amount_vnd,
        )?,
        satisfaction: rate(i.satisfaction.rate),
        rated_very_satisfied: i.satisfaction.very_satisfied,
        rated_satisfied: i.satisfaction.satisfied,
        rated_unsatisfied: i.satisfaction.unsatisfied,
        electronic_transfer: rate(i.electronic_transfer),
    })
}

fn targets_pb(checks: &[stats::TargetCheck]) -> Vec<pb::TargetCheck> {
    checks
        .iter()
        .map(|c| pb::TargetCheck {
            id: c.id.to_owned(),
            rate: rate(c.rate),
            target: c.target,
            met: c.met,
        })
        .collect()
}

/// The wire form of a dimension.
pub fn dimension_pb(d: stats::Dimension) -> pb::Dimension {
    match d {
        stats::Dimension::Level => pb::Dimension::Level,
        stats::Dimension::Agency => pb::Dimension::Agency,
        stats::Dimension::Sector => pb::Dimension::Sector,
        stats::Dimension::Procedure => pb::Dimension::Procedure,
        stats::Dimension::Channel => pb::Dimension::Channel,
        stats::Dimension::ApplicantType => pb::Dimension::ApplicantType,
    }
}

/// A local date on the wire, `YYYY-MM-DD`.
pub fn day(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

/// The wire form of an indicators answer (gRPC, and HTTP through its proto3 JSON mapping);
/// `as_recorded_at` echoes the source.
pub fn indicators_response(
    a: &IndicatorsAnswer,
    source: Source,
) -> Result<pb::GetIndicatorsResponse, AmountTooLarge> {
    Ok(pb::GetIndicatorsResponse {
        from: day(a.from),
        to: day(a.to),
        total: Some(indicators_pb(&a.total)?),
        targets: targets_pb(&a.targets),
        groups: a
            .groups
            .iter()
            .map(|g| {
                Ok(pb::IndicatorGroup {
                    key: g
                        .key
                        .iter()
                        .map(|(d, v)| pb::GroupValue {
                            dimension: dimension_pb(*d) as i32,
                            value: v.clone(),
                        })
                        .collect(),
                    indicators: Some(indicators_pb(&g.indicators)?),
                    targets: targets_pb(&g.targets),
                    late_share: rate(g.late_share),
                })
            })
            .collect::<Result<_, AmountTooLarge>>()?,
        as_recorded_at: recorded_at(source),
        dossiers_not_counted: a.dossiers_not_counted,
        // Set by the caller, which knows what the request asked.
        structure_at: String::new(),
    })
}

/// The instant of an "as recorded at" source, on the wire.
fn recorded_at(source: Source) -> Option<api::Timestamp> {
    match source {
        Source::Live => None,
        Source::AsRecordedAt(at) => Some(svc::status::to_timestamp(at)),
    }
}

/// The wire form of a filled form (gRPC, and HTTP through its proto3 JSON mapping).
pub fn report_pb(t: &Table, query: &stats::Query, source: Source) -> pb::Report {
    pb::Report {
        form: t.form.map_or(pb::ReportForm::Unspecified, form_pb) as i32,
        title: t.title.to_owned(),
        from: day(query.from),
        to: day(query.to),
        columns: t
            .columns
            .iter()
            .map(|c| pb::Column {
                id: c.id.clone(),
                label: c.label.clone(),
            })
            .collect(),
        rows: t
            .rows
            .iter()
            .map(|cells| pb::ReportRow {
                cells: cells
                    .iter()
                    .map(|c| pb::Cell {
                        value: Some(match c {
                            Cell::Count(n) => pb::cell::Value::Count(*n),
                            Cell::Rate(r) => pb::cell::Value::Rate(rate(*r).unwrap_or_default()),
                            Cell::Text(t) => pb::cell::Value::Text(t.clone()),
                            Cell::Points {
                                hundredths,
                                max_hundredths,
                            } => pb::cell::Value::Points(pb::ScorePoints {
                                hundredths: *hundredths,
                                max_hundredths: *max_hundredths,
                            }),
                            Cell::NotComputed(reason) => {
                                pb::cell::Value::NotComputed(pb::NotComputed {
                                    reason: reason.clone(),
                                })
                            }
                            Cell::Mean { count, mean, unit } => {
                                pb::cell::Value::Average(pb::Average {
                                    count: *count,
                                    mean: *mean,
                                    unit: (*unit).to_owned(),
                                })
                            }
                        }),
                    })
                    .collect(),
            })
            .collect(),
        as_recorded_at: recorded_at(source),
        // Set by the caller, which knows what the request asked.
        structure_at: String::new(),
    }
}

fn form_pb(f: Form) -> pb::ReportForm {
    match f {
        Form::Ii06a => pb::ReportForm::Ii06a,
        Form::BieuMau3Section3 => pb::ReportForm::BieuMau3Section3,
        Form::BieuMau7Section6 => pb::ReportForm::BieuMau7Section6,
        Form::Scorecard766 => pb::ReportForm::Scorecard766,
    }
}

/// The wire form of a dossier's status (gRPC, and HTTP through its proto3 JSON mapping).
pub fn status_pb(dossier_id: &str, d: &domain::Dossier) -> pb::DossierStatus {
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(svc::status::to_timestamp);
    pb::DossierStatus {
        dossier_id: dossier_id.to_owned(),
        phase: d.phase.as_str().to_owned(),
        portal_status_code: d.portal_status().map_or(0, i32::from),
        description: d.phase.describe().to_owned(),
        profile: d.profile.as_ref().map(svc::convert::pb_profile),
        current_agency_code: d
            .current_agency
            .as_ref()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        received_at: ts(d.received_at),
        due_at: ts(d.due_at),
        paused: d.is_paused(),
        supplement_requests: d.supplement_requests,
        late_marked: d.late_marked,
        late_withdrawn: d.late_withdrawn,
        resolved_at: ts(d.resolution.as_ref().map(|r| r.at)),
        timeliness: d
            .resolution
            .as_ref()
            .map_or(pb::Timeliness::Unspecified, |r| {
                svc::convert::pb_timeliness(r.timeliness)
            }) as i32,
        outstanding_vnd: d.outstanding_vnd(),
        returned_at: ts(d.returned_at),
        version: d.version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_without_denominator_has_no_percent() {
        let absent = rate(stats::Rate::new(0, 0)).unwrap();
        assert_eq!(
            (absent.numerator, absent.denominator, absent.percent),
            (0, 0, None)
        );
        let half = rate(stats::Rate::new(1, 2)).unwrap();
        assert_eq!(half.percent, Some(50.0));
    }

    #[test]
    fn enums_map_and_unknown_ones_are_refused_naming_the_field() {
        assert_eq!(
            dimensions(
                "group_by",
                &[pb::Dimension::Sector as i32, pb::Dimension::Level as i32]
            )
            .unwrap(),
            vec![stats::Dimension::Sector, stats::Dimension::Level]
        );
        for bad in [0, 99] {
            let err = dimensions("group_by", &[pb::Dimension::Sector as i32, bad]).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
            assert!(err.message().starts_with("group_by[1]: "), "{err:?}");
        }
        for d in stats::Dimension::ALL {
            assert_eq!(dimension(dimension_pb(d) as i32), Some(d));
        }
    }

    /// The default `max_groups` keeps the largest answer (three grouping dimensions with codes
    /// of the longest allowed length, every figure large and every rate present) well under
    /// gRPC's default 4 MiB message limit.
    #[test]
    fn the_largest_answer_the_default_limits_allow_fits_a_grpc_message() {
        use prost::Message;
        use stats::{Dimension, GroupKey, Metric, Query, SliceFilter, Totals};
        let limits = crate::QueryLimits::default();
        let from = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let to = NaiveDate::from_ymd_opt(2025, 1, 1).unwrap();
        let mut totals = Totals::empty(from, to);
        for metric in Metric::ALL {
            totals.add_delta(from, *metric, 1_000_000_000_000);
        }
        let group_by = vec![Dimension::Agency, Dimension::Procedure, Dimension::Sector];
        assert_eq!(group_by.len(), limits.max_group_by as usize);
        let groups: std::collections::BTreeMap<GroupKey, Totals> = (0..limits.max_groups)
            .map(|i| {
                let key = vec![
                    format!("{i:0>40}"),
                    format!("{i:0>64}"),
                    format!("{i:0>40}"),
                ];
                (key, totals.clone())
            })
            .collect();
        let query = Query {
            from,
            to,
            filter: SliceFilter::default(),
            group_by,
        };
        let answer = crate::answers::indicators_of(&query, &groups, &stats::Targets::default());
        let bytes = indicators_response(&answer, Source::Live)
            .unwrap()
            .encoded_len();
        assert!(bytes < 3 * 1024 * 1024, "{bytes} bytes");
    }
}
