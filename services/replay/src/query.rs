//! Reading the log for replay: what to deliver ([`Selection`], [`Filter`]), the filtered pages
//! ([`Reader::page`]), and where a recorded time falls in the log ([`Reader::first_recorded_at`]).
//!
//! Every read is bounded and index-driven:
//! - with a dossier filter, through the dossier's unique index `(dossier_id, version)`: a
//!   dossier has few events, so the page is cheap on any log size;
//! - otherwise, through the primary key over a window of positions `(after, through]`: the
//!   caller keeps the window short ([`WINDOW`]), so a query scans at most that many rows even
//!   when a selective filter matches none of them. No index on agency, sector or business time
//!   is needed (`events` has none on purpose: every index slows the bulk import).
//! - a recorded time becomes a position by binary search over the primary key, since
//!   `recorded_at` never decreases along positions: `log2(head)` point reads.

use chrono::{DateTime, Utc};
use eventlog::{ReadError, StoredEvent};
use sqlx::PgPool;

/// How many positions a page without a dossier filter covers at most.
pub const WINDOW: i64 = 10_000;
/// How many events a page returns at most.
pub const PAGE: i64 = 256;
/// The longest one read (the head, a page, a point read of the search) may take. A database
/// that went silent (a partition, a frozen host: the connection looks healthy) would otherwise
/// hold a stream or a follower until TCP gives up; past it the read fails as unavailable
/// (`UNAVAILABLE`: resume after the last position received). A healthy page takes milliseconds.
pub const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// `read`, failing as [`ReadError::Unavailable`] (an I/O timeout) past [`READ_TIMEOUT`].
async fn bounded<T>(read: impl Future<Output = Result<T, sqlx::Error>>) -> Result<T, ReadError> {
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(result) => result.map_err(ReadError::Unavailable),
        Err(_) => Err(ReadError::Unavailable(sqlx::Error::Io(
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer from PostgreSQL within {READ_TIMEOUT:?}"),
            ),
        ))),
    }
}

/// Which events to deliver, besides where to start and stop. `None` / empty does not filter.
/// The values are already validated (codes parsed, ranges ordered).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub dossier_id: Option<String>,
    pub agency: Option<String>,
    /// `province` | `district` | `commune`, as stored.
    pub level: Option<String>,
    pub sector: Option<String>,
    /// Stored type names; empty: every type.
    pub event_types: Vec<String>,
    /// Business time: `occurred_from <= occurred_at < occurred_to`.
    pub occurred_from: Option<DateTime<Utc>>,
    pub occurred_to: Option<DateTime<Utc>>,
    /// Recording time: `recorded_from <= recorded_at < recorded_to`.
    pub recorded_from: Option<DateTime<Utc>>,
    pub recorded_to: Option<DateTime<Utc>>,
}

/// A validated `StreamEvents` request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Deliver positions above this one.
    pub after_position: i64,
    /// Deliver no position above this one.
    pub to_position: Option<i64>,
    pub filter: Filter,
    /// Keep delivering new events until `to_position` or cancellation.
    pub follow: bool,
}

/// `SELECT <every column of events> FROM events WHERE <filters> AND <rest>`, bound as
/// `$1 after, $2 through, $3 agency, $4 level, $5 sector, $6 types, $7 occurred_from,
/// $8 occurred_to, $9 recorded_from, $10 recorded_to, $11 limit[, $12 dossier]`.
macro_rules! select_page {
    ($($rest:literal),* $(,)?) => {
        concat!(
            "SELECT position, event_id, dossier_id, version, event_type, occurred_at, recorded_at, ",
            "level, agency, sector, payload, fingerprint, event_hash, chain_hash FROM events ",
            "WHERE position > $1 AND position <= $2 ",
            "AND ($3::text IS NULL OR agency = $3) ",
            "AND ($4::text IS NULL OR level = $4) ",
            "AND ($5::text IS NULL OR sector = $5) ",
            "AND (cardinality($6::text[]) = 0 OR event_type = ANY($6)) ",
            "AND ($7::timestamptz IS NULL OR occurred_at >= $7) ",
            "AND ($8::timestamptz IS NULL OR occurred_at < $8) ",
            "AND ($9::timestamptz IS NULL OR recorded_at >= $9) ",
            "AND ($10::timestamptz IS NULL OR recorded_at < $10) ",
            $($rest),*
        )
    };
}

/// A window of positions through the primary key.
pub const PAGE_BY_POSITION: &str = select_page!("ORDER BY position LIMIT $11");
/// One dossier's events through its `(dossier_id, version)` index; its versions grow with its
/// positions, so version order is position order.
pub const PAGE_BY_DOSSIER: &str =
    select_page!("AND dossier_id = $12 ORDER BY dossier_id, version LIMIT $11");

/// The replay's reads on the log's `events` table.
#[derive(Debug, Clone)]
pub struct Reader {
    pool: PgPool,
}

impl Reader {
    pub fn new(pool: PgPool) -> Reader {
        Reader { pool }
    }

    /// Which of `dossiers` had their applicant erased (`personal::erased_among`, bounded).
    pub async fn erased_among(
        &self,
        dossiers: &[String],
    ) -> Result<std::collections::HashSet<String>, ReadError> {
        bounded(personal::erased_among(&self.pool, dossiers)).await
    }

    /// The highest committed position (0 when the log is empty). Every position up to it is
    /// visible to any later statement (positions become visible in order).
    pub async fn head(&self) -> Result<i64, ReadError> {
        bounded(sqlx::query_scalar("SELECT position FROM log_head").fetch_one(&self.pool)).await
    }

    /// Up to `limit` events with `after < position <= through` matching `filter`, in position
    /// order. Without a dossier filter the caller keeps `through - after` within [`WINDOW`].
    /// Rows are decoded one by one, so the events before a corrupt row can still be delivered
    /// before the failure is reported.
    pub async fn page(
        &self,
        filter: &Filter,
        after: i64,
        through: i64,
        limit: i64,
    ) -> Result<Vec<Result<StoredEvent, ReadError>>, ReadError> {
        let sql = if filter.dossier_id.is_some() {
            PAGE_BY_DOSSIER
        } else {
            PAGE_BY_POSITION
        };
        let mut query = sqlx::query(sql)
            .bind(after)
            .bind(through)
            .bind(filter.agency.as_deref())
            .bind(filter.level.as_deref())
            .bind(filter.sector.as_deref())
            .bind(&filter.event_types)
            .bind(filter.occurred_from)
            .bind(filter.occurred_to)
            .bind(filter.recorded_from)
            .bind(filter.recorded_to)
            .bind(limit.max(0));
        if let Some(dossier) = &filter.dossier_id {
            query = query.bind(dossier.as_str());
        }
        let rows = bounded(query.fetch_all(&self.pool)).await?;
        Ok(rows.iter().map(eventlog::decode_row).collect())
    }

    /// The first position in `1..=head` recorded at or after `at`, or `head + 1` when every
    /// event up to `head` was recorded before it. Binary search: `recorded_at` never decreases
    /// along positions.
    pub async fn first_recorded_at(&self, at: DateTime<Utc>, head: i64) -> Result<i64, ReadError> {
        let (mut low, mut high) = (1, head.max(0) + 1);
        while low < high {
            let middle = low + (high - low) / 2;
            if self.recorded_at(middle, head).await? >= at {
                high = middle;
            } else {
                low = middle + 1;
            }
        }
        Ok(low)
    }

    async fn recorded_at(&self, position: i64, head: i64) -> Result<DateTime<Utc>, ReadError> {
        bounded(
            sqlx::query_scalar("SELECT recorded_at FROM events WHERE position = $1")
                .bind(position)
                .fetch_optional(&self.pool),
        )
        .await?
        .ok_or_else(|| ReadError::Corrupt {
            position,
            reason: format!("no event at this position although the head is at {head}"),
        })
    }
}
