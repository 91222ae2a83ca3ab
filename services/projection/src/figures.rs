//! Where a query's figures come from: the live aggregates, or — "as recorded at T" — a
//! recomputation from the events recorded up to `T`.
//!
//! `recorded_at` never decreases along positions (ARCHITECTURE.md, "The global position"), so the
//! events recorded up to `T` are a prefix of the log: exactly what the projection had been given
//! by `T`. Their figures are computed with the same pure functions the projection applies
//! (`stats::contribution`, `Aggregates::query`), so a report printed at `T` from the live
//! service is reproduced to the dossier, whatever arrived afterwards (late events of the same
//! period included). It reads every matching event up to `T`, so it costs a scan of that part
//! of the log: an auditor's query, not a dashboard's.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sqlx::{PgPool, Row};
use stats::{Aggregates, Dimension, GroupKey, Query, Totals};

use crate::scope::Source;
use crate::store::{self, QueryError};

/// The answer to `query` from `source`, in the agency structure of `view`'s date when given
/// ([`stats::InStructure`]: the stored figures grouped by recorded agency and level, relabelled
/// with their successors at that date; nothing stored changes). `max_stored_groups` bounds the
/// stored answer, larger than the final one by up to the number of recorded agencies.
pub async fn figures_in(
    pool: &PgPool,
    query: &Query,
    source: Source,
    view: Option<stats::InStructure<'_>>,
    max_stored_groups: u32,
) -> Result<BTreeMap<GroupKey, Totals>, crate::read::ReadError> {
    let Some(view) = view else {
        return Ok(figures(pool, query, source).await?);
    };
    let stored = figures(pool, &view.stored_query(query), source).await?;
    if stored.len() > max_stored_groups as usize {
        return Err(crate::read::ReadError::TooManyGroups {
            groups: stored.len(),
            limit: max_stored_groups,
        });
    }
    Ok(view.regroup(query, &stored))
}

/// The answer to `query` from `source`.
pub async fn figures(
    pool: &PgPool,
    query: &Query,
    source: Source,
) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    match source {
        Source::Live => store::query(pool, query).await,
        Source::AsRecordedAt(at) => as_recorded_at(pool, query, at).await,
    }
}

/// The answer to `query` counting only the events recorded up to `at` (inclusive).
pub async fn as_recorded_at(
    pool: &PgPool,
    query: &Query,
    at: DateTime<Utc>,
) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    Ok(aggregates_as_recorded_at(pool, query, at)
        .await?
        .query(query))
}

/// The aggregates of every dossier the filter may keep, from the events recorded up to `at`.
/// The log's `level`, `agency` and `sector` columns are the receiving agency's for every event
/// of a dossier — the dossier's slice — so filtering on them in SQL keeps whole dossiers.
pub async fn aggregates_as_recorded_at(
    pool: &PgPool,
    query: &Query,
    at: DateTime<Utc>,
) -> Result<Aggregates, QueryError> {
    let f = &query.filter;
    let mut rows = sqlx::query(
        "SELECT dossier_id, event_type, payload, occurred_at FROM events \
         WHERE recorded_at <= $1 \
           AND ($2::text IS NULL OR level = $2) \
           AND ($3::text IS NULL OR agency = $3) \
           AND ($4::text IS NULL OR sector = $4) \
         ORDER BY dossier_id, version",
    )
    .bind(at)
    .bind(f.value(Dimension::Level))
    .bind(f.value(Dimension::Agency))
    .bind(f.value(Dimension::Sector))
    .fetch(pool);

    let mut aggregates = Aggregates::new();
    let mut current: Option<String> = None;
    let mut events: Vec<domain::Event> = Vec::new();
    let flush = |events: &mut Vec<domain::Event>, aggregates: &mut Aggregates| {
        if let Some(c) = stats::contribution(events) {
            aggregates.add_contribution(&c);
        }
        events.clear();
    };
    while let Some(row) = rows.try_next().await? {
        let dossier: String = row.try_get("dossier_id")?;
        if current.as_deref() != Some(dossier.as_str()) {
            flush(&mut events, &mut aggregates);
            current = Some(dossier.clone());
        }
        let event_type: String = row.try_get("event_type")?;
        let payload: serde_json::Value = row.try_get("payload")?;
        let event = domain::Event::from_row(&event_type, row.try_get("occurred_at")?, &payload)
            .map_err(|e| {
                QueryError::Corrupt(format!(
                    "an event of dossier {dossier} does not decode: {e}"
                ))
            })?;
        events.push(event);
    }
    flush(&mut events, &mut aggregates);
    Ok(aggregates)
}
