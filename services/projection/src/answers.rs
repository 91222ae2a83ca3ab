//! The answers the statistics API gives, independent of the transport: gRPC
//! ([`crate::service`]) and HTTP ([`crate::http`]) both render these, so they cannot disagree.

use std::collections::BTreeMap;

use sqlx::PgPool;
use stats::{Dimension, GroupKey, Indicators, Query, Rate, TargetCheck, Targets, Totals};

use crate::figures::figures_in;
use crate::forms::{self, Form};
use crate::scope::{ScopeError, Source};
use crate::store::QueryError;

/// Indicators over the whole filter and per group, each with S14.
#[derive(Debug, Clone)]
pub struct IndicatorsAnswer {
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub total: Indicators,
    pub targets: Vec<TargetCheck>,
    pub groups: Vec<GroupAnswer>,
    /// Live figures: dossiers the projection failed to apply so far, not counted (any slice).
    pub dossiers_not_counted: u64,
}

#[derive(Debug, Clone)]
pub struct GroupAnswer {
    /// One entry per grouping dimension, in the request's order.
    pub key: Vec<(Dimension, String)>,
    pub indicators: Indicators,
    pub targets: Vec<TargetCheck>,
    /// S5: resolved late in this group / resolved late in all groups.
    pub late_share: Rate,
}

/// Indicators (S14 against `targets`, S5 per group) of the figures of `query`.
pub fn indicators_of(
    query: &Query,
    groups: &BTreeMap<GroupKey, Totals>,
    targets: &Targets,
) -> IndicatorsAnswer {
    let all = forms::merged(query, groups);
    let total = stats::indicators(&all);
    let shares = stats::late_shares(groups);
    let groups = if query.group_by.is_empty() {
        Vec::new()
    } else {
        groups
            .iter()
            .map(|(key, t)| {
                let indicators = stats::indicators(t);
                GroupAnswer {
                    key: query.group_by.iter().copied().zip(key.clone()).collect(),
                    indicators,
                    targets: stats::targets(&indicators, targets),
                    late_share: shares
                        .get(key)
                        .copied()
                        .unwrap_or(Rate::new(0, total.resolved.late)),
                }
            })
            .collect()
    };
    IndicatorsAnswer {
        from: query.from,
        to: query.to,
        total,
        targets: stats::targets(&total, targets),
        groups,
        dossiers_not_counted: 0,
    }
}

/// The query `form` runs for `query` (whose `group_by` is what the request asked; only II.06a
/// accepts one) and its figures; [`forms::fill`] makes the table.
pub async fn report_figures(
    pool: &PgPool,
    form: Form,
    query: &Query,
    source: Source,
    view: Option<stats::InStructure<'_>>,
    max_stored_groups: u32,
) -> Result<(Query, BTreeMap<GroupKey, Totals>), ReportError> {
    if !form.groups() && !query.group_by.is_empty() {
        return Err(ReportError::Scope(ScopeError::new(
            "group_by",
            format!("the form {} has fixed rows", form.slug()),
        )));
    }
    let query = Query {
        group_by: form.query_group_by(&query.group_by),
        ..query.clone()
    };
    let groups = figures_in(pool, &query, source, view, max_stored_groups).await?;
    Ok((query, groups))
}

/// Why a report has no figures: the request asks what the form cannot give, or the read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Scope(ScopeError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Read(#[from] crate::read::ReadError),
}

/// The dossier folded from every event in the log; `None` when the log has none.
pub async fn dossier(
    pool: &PgPool,
    dossier_id: &str,
) -> Result<Option<domain::Dossier>, QueryError> {
    let mut conn = pool.acquire().await?;
    let stored = eventlog::load_dossier_on(&mut conn, dossier_id)
        .await
        .map_err(|e| match e {
            eventlog::ReadError::Unavailable(e) => QueryError::Database(e),
            other => QueryError::Corrupt(format!("dossier {dossier_id}: {other}")),
        })?;
    if stored.is_empty() {
        return Ok(None);
    }
    svc::write::fold(&stored)
        .map(Some)
        .map_err(|e| QueryError::Corrupt(format!("dossier {dossier_id}: {e}")))
}
