//! Where a query's figures come from: the live aggregates, or — "as recorded at T" — the
//! figures of the events recorded up to `T`.
//!
//! `recorded_at` never decreases along positions (ARCHITECTURE.md, "The global position"), so the
//! events recorded up to `T` are a prefix of the log: exactly what the projection had been given
//! by `T`. Their figures are computed with the same pure functions the projection applies
//! (`stats::contribution`, `Aggregates::query`), so a report printed at `T` from the live
//! service is reproduced to the dossier, whatever arrived afterwards (late events of the same
//! period included). They come from the checkpoints of [`crate::asof`] plus at most one window
//! of the log, or, for what the checkpoints do not hold (procedure, channel, applicant type),
//! from a scan of the log up to `T`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use stats::{GroupKey, Query, Totals};

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

/// The answer to `query` counting only the events recorded up to `at` (inclusive): from the
/// checkpoints ([`crate::asof::as_recorded_at`]) when they can answer it, else from the log
/// ([`crate::asof::scan`]). Both give the same answer (tested).
pub async fn as_recorded_at(
    pool: &PgPool,
    query: &Query,
    at: DateTime<Utc>,
) -> Result<BTreeMap<GroupKey, Totals>, QueryError> {
    match crate::asof::as_recorded_at(pool, query, at).await? {
        Some(answer) => Ok(answer),
        None => crate::asof::scan(pool, query, at).await,
    }
}
