//! `StatsService`: the indicators of a period and a slice, from `stats_daily`.

use std::sync::Arc;

use api::v1 as pb;
use api::v1::stats_service_server::StatsService;
use chrono::NaiveDate;
use sqlx::PgPool;
use svc::Tokens;
use svc::status::invalid_field;
use tonic::{Request, Response, Status};

use crate::store;

/// The gRPC statistics queries. Any valid token may read.
#[derive(Debug, Clone)]
pub struct Stats {
    pool: PgPool,
    tokens: Arc<Tokens>,
}

impl Stats {
    pub fn new(pool: PgPool, tokens: Arc<Tokens>) -> Stats {
        Stats { pool, tokens }
    }
}

#[tonic::async_trait]
impl StatsService for Stats {
    async fn get_indicators(
        &self,
        request: Request<pb::GetIndicatorsRequest>,
    ) -> Result<Response<pb::GetIndicatorsResponse>, Status> {
        self.tokens.authenticate(request.metadata())?;
        let r = request.into_inner();
        let from = date("from", &r.from)?;
        let to = date("to", &r.to)?;
        if to <= from {
            return Err(invalid_field("to", "must be after from"));
        }
        let query = stats::Query {
            from,
            to,
            filter: filter(&r)?,
            group_by: Vec::new(),
        };
        let mut groups = store::query(&self.pool, &query)
            .await
            .map_err(|e| match e {
                store::QueryError::Database(e) => svc::status::unavailable(e),
                e => svc::status::internal(e),
            })?;
        let totals = groups.remove(&Vec::new()).unwrap_or_else(|| stats::Totals::empty(from, to));
        Ok(Response::new(response(
            from,
            to,
            &stats::indicators(&totals),
        )))
    }
}

fn date(field: &str, text: &str) -> Result<NaiveDate, Status> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| invalid_field(field, "must be a date YYYY-MM-DD"))
}

/// An optional code filter: empty does not filter; otherwise it must be a valid code.
fn code<T>(
    field: &str,
    value: &str,
    parse: impl Fn(String) -> Result<T, domain::FieldError>,
) -> Result<Option<T>, Status> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    parse(value.to_owned())
        .map(Some)
        .map_err(|e| invalid_field(field, e.to_string()))
}

fn filter(r: &pb::GetIndicatorsRequest) -> Result<stats::SliceFilter, Status> {
    let level = match pb::Level::try_from(r.level) {
        Ok(pb::Level::Unspecified) => None,
        Ok(pb::Level::Province) => Some(domain::Level::Province),
        Ok(pb::Level::District) => Some(domain::Level::District),
        Ok(pb::Level::Commune) => Some(domain::Level::Commune),
        Err(_) => return Err(invalid_field("level", "unknown level")),
    };
    let channel = match pb::Channel::try_from(r.channel) {
        Ok(pb::Channel::Unspecified) => None,
        Ok(pb::Channel::Online) => Some(domain::Channel::Online),
        Ok(pb::Channel::Direct) => Some(domain::Channel::Direct),
        Ok(pb::Channel::Postal) => Some(domain::Channel::Postal),
        Err(_) => return Err(invalid_field("channel", "unknown channel")),
    };
    let applicant_type = match pb::ApplicantType::try_from(r.applicant_type) {
        Ok(pb::ApplicantType::Unspecified) => None,
        Ok(pb::ApplicantType::Citizen) => Some(domain::ApplicantType::Citizen),
        Ok(pb::ApplicantType::Business) => Some(domain::ApplicantType::Business),
        Ok(pb::ApplicantType::Organisation) => Some(domain::ApplicantType::Organisation),
        Err(_) => return Err(invalid_field("applicant_type", "unknown applicant type")),
    };
    Ok(stats::SliceFilter {
        level,
        agency: code("agency_code", &r.agency_code, domain::AgencyCode::parse)?,
        sector: code("sector_code", &r.sector_code, domain::SectorCode::parse)?,
        procedure: code("procedure_code", &r.procedure_code, domain::ProcedureCode::parse)?,
        channel,
        applicant_type,
    })
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

/// The wire form of the indicators of `[from, to)`.
pub fn response(
    from: NaiveDate,
    to: NaiveDate,
    i: &stats::Indicators,
) -> pb::GetIndicatorsResponse {
    pb::GetIndicatorsResponse {
        from: from.format("%Y-%m-%d").to_string(),
        to: to.format("%Y-%m-%d").to_string(),
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
        components_digitized: rate(i.components_digitized),
        results_digitized: rate(i.results_digitized),
        data_reuse: rate(i.data_reuse),
        online: rate(i.online.all),
        online_full_online: rate(i.online.full_online),
        online_partial_online: rate(i.online.partial_online),
        full_online_of_all: rate(i.online.full_online_of_all),
        online_payment: rate(i.payment.rate),
        payment_transactions: i.payment.transactions,
        payment_amount_vnd: i.payment.amount_vnd,
        online_payment_transactions: i.payment.online_transactions,
        online_payment_amount_vnd: i.payment.online_amount_vnd,
        satisfaction: rate(i.satisfaction.rate),
        rated_very_satisfied: i.satisfaction.very_satisfied,
        rated_satisfied: i.satisfaction.satisfied,
        rated_unsatisfied: i.satisfaction.unsatisfied,
        electronic_transfer: rate(i.electronic_transfer),
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
    fn filters_map_to_stored_values_and_unknown_enums_are_refused() {
        let request = pb::GetIndicatorsRequest {
            level: pb::Level::District as i32,
            channel: pb::Channel::Postal as i32,
            agency_code: " 000.00.12.H40 ".to_owned(),
            ..Default::default()
        };
        let f = filter(&request).unwrap();
        assert_eq!(f.level, Some(domain::Level::District));
        assert_eq!(f.channel, Some(domain::Channel::Postal));
        assert_eq!(f.agency.as_ref().map(|a| a.as_str()), Some("000.00.12.H40"));
        assert_eq!((f.sector, f.applicant_type), (None, None));
        let bad = pb::GetIndicatorsRequest {
            level: 42,
            ..Default::default()
        };
        assert_eq!(
            filter(&bad).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert!(date("from", "2024-02-30").is_err());
        assert_eq!(
            date("from", "2024-02-29").unwrap(),
            NaiveDate::from_ymd_opt(2024, 2, 29).unwrap()
        );
    }
}
