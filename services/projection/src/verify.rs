//! `projection verify`: recomputes every figure from the log and lists every difference from the
//! live read models.
//!
//! In one snapshot of the database (a `REPEATABLE READ` transaction, exported to a second one
//! that holds the expected cells in a temporary table) it reads every dossier up to the head `P`
//! with the log's reader ([`eventlog::dossiers_up_to`], the columns figures need), and the
//! dossiers' rows of `projection_contributions` a thousand at a time on the second connection
//! (the same snapshot). The live tables claim
//! that each dossier contributes [`stats::contribution`] of its events up to the stored
//! version, and that the cells (`stats_cells` by slice of `stats_slice`, read through the long
//! view `stats_rollup`) are the sum of those contributions
//! ([`crate::rollup::rollup_cells`]). Verify checks exactly that claim:
//!
//! - per dossier: the stored contribution equals the one recomputed from the log up to the
//!   stored version; a stored version beyond the log, or a row for a dossier the log does not
//!   know, is a difference;
//! - per cell: every cell of `stats_rollup`, every rollup and grain, equals the sum of the
//!   recomputed contributions (missing cells count as 0).
//!
//! What verify shares with the code it checks, and what it computes independently:
//!
//! - shared: [`stats::contribution`], what one dossier contributes (its own oracle is the
//!   `oracle` crate, which the `stats` model tests compare it with), and the list of rollups
//!   ([`crate::rollup::ROLLUPS`], part of the table's definition);
//! - independent: everything that adds. Apply adds `new − old` diffs ([`stats::diff`]) expanded
//!   by [`crate::rollup::rollup_cells`] and upserted; rebuild sums contributions in memory and
//!   goes through the same expansion. Verify sums each dossier's whole recomputed contribution
//!   per slice, day and metric (checked `i128`: an overflow is an error, never a clamp) into a
//!   temporary table, adds those rows up in PostgreSQL `numeric`, and expands them into every
//!   rollup and grain with one `GROUP BY` in SQL (periods by `date_trunc`, dimensions outside a
//!   rollup by the mask). A bug in the shared expansion or arithmetic therefore shows as cell
//!   differences.
//!
//! Dossiers whose apply keeps failing (`projection_failures`, written by the consumer) are
//! listed too ([`VerifyReport::failing`]): they are missing from the figures until they apply.
//!
//! Dossiers the projection has not yet applied up to the log's version are listed apart
//! ([`VerifyReport::behind`]): that is lag, which the consumer catches up, not corruption. A
//! projection at rest (the consumer caught up) is exact only when both lists are empty.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use eventlog::{DossierEvents, EventBody, ReadError, RoutingFilter};
use futures::TryStreamExt;
use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgRow};
use stats::{Contribution, Metric, Slice};

use crate::rollup::{self, Grain};

/// Day deltas kept in memory before they are expanded and written to the temporary table.
const CELLS_IN_MEMORY: usize = 200_000;
/// Dossiers whose stored rows are looked up in one statement.
const DOSSIERS_PER_LOOKUP: usize = 1_000;

/// Why verification could not run (differences are not errors: they are in the report).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A stored event does not decode: the log itself is unreadable here.
    #[error("undecodable event: {0}")]
    Corrupt(String),
    /// A sum went beyond `i128`: impossible for a log of `i64` positions (see the `stats` crate
    /// docs), so the contributions are corrupt.
    #[error("a sum of contributions overflows i128 at {0}")]
    Overflow(String),
}

/// A dossier the consumer could not apply (a row of `projection_failures`): its figures are
/// missing until an apply succeeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub dossier_id: String,
    pub attempts: i64,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub last_error: String,
}

impl fmt::Display for Failing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "failing     dossier {}: {} failed applies from {} to {}; last error: {}",
            self.dossier_id,
            self.attempts,
            self.first_failed_at.to_rfc3339(),
            self.last_failed_at.to_rfc3339(),
            self.last_error
        )
    }
}

/// A dossier the projection has applied only up to an earlier version than the log's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    pub dossier_id: String,
    /// 0: no row at all (never applied, or the row is missing).
    pub applied: i32,
    pub log: i32,
}

/// A dossier whose row in `projection_contributions` is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DossierDifference {
    /// The stored contribution is not what its events up to the stored version give.
    Contribution { dossier_id: String, version: i32 },
    /// The stored contribution does not decode.
    Undecodable { dossier_id: String, reason: String },
    /// The stored version is beyond the log's.
    Ahead {
        dossier_id: String,
        applied: i32,
        log: i32,
    },
    /// A row for a dossier without any event in the log.
    Unknown { dossier_id: String, applied: i32 },
}

/// A cell of `stats_rollup` whose value is not the sum of the recomputed contributions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellDifference {
    pub rollup: u8,
    pub grain: Grain,
    pub period: NaiveDate,
    /// In [`stats::Dimension::ALL`] order; `""` outside the rollup.
    pub dims: [String; 6],
    pub metric: String,
    pub expected: i128,
    pub found: i128,
}

/// What verification found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// The snapshot's head position.
    pub position: i64,
    pub events: u64,
    pub dossiers: u64,
    pub behind: Vec<Behind>,
    /// Dossiers whose apply keeps failing (see [`Failing`]).
    pub failing: Vec<Failing>,
    pub dossier_differences: Vec<DossierDifference>,
    /// The first differing cells (up to the limit asked for), by rollup, grain, period, slice.
    pub cell_differences: Vec<CellDifference>,
    /// All differing cells, listed or not.
    pub cell_differences_total: u64,
}

impl VerifyReport {
    /// No difference: the live tables are exactly what the log gives up to the versions they
    /// claim (some dossiers may still be [`VerifyReport::behind`]).
    pub fn is_consistent(&self) -> bool {
        self.dossier_differences.is_empty() && self.cell_differences_total == 0
    }

    /// Consistent, nothing failing and nothing behind: the figures are the log's, up to
    /// `position`.
    pub fn is_exact(&self) -> bool {
        self.is_consistent() && self.failing.is_empty() && self.behind.is_empty()
    }

    /// What `projection verify` exits 0 on: consistent, no dossier failing, and nothing behind
    /// unless `allow_lag` (lag is the consumer catching up; a failing dossier is not).
    pub fn passes(&self, allow_lag: bool) -> bool {
        self.is_consistent() && self.failing.is_empty() && (allow_lag || self.behind.is_empty())
    }
}

impl fmt::Display for Behind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.applied == 0 {
            write!(
                f,
                "behind      dossier {}: not applied (log at version {})",
                self.dossier_id, self.log
            )
        } else {
            write!(
                f,
                "behind      dossier {}: applied up to version {}, log at {}",
                self.dossier_id, self.applied, self.log
            )
        }
    }
}

impl fmt::Display for DossierDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DossierDifference::Contribution {
                dossier_id,
                version,
            } => write!(
                f,
                "difference  projection_contributions dossier {dossier_id}: stored contribution \
                 differs from its events up to version {version}"
            ),
            DossierDifference::Undecodable { dossier_id, reason } => write!(
                f,
                "difference  projection_contributions dossier {dossier_id}: undecodable ({reason})"
            ),
            DossierDifference::Ahead {
                dossier_id,
                applied,
                log,
            } => write!(
                f,
                "difference  projection_contributions dossier {dossier_id}: version {applied} \
                 stored, the log has {log}"
            ),
            DossierDifference::Unknown {
                dossier_id,
                applied,
            } => write!(
                f,
                "difference  projection_contributions dossier {dossier_id}: version {applied} \
                 stored, the log has no such dossier"
            ),
        }
    }
}

impl fmt::Display for CellDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slice: Vec<String> = stats::Dimension::ALL
            .iter()
            .zip(&self.dims)
            .filter(|(_, v)| !v.is_empty())
            .map(|(d, v)| format!("{d}={v}"))
            .collect();
        write!(
            f,
            "difference  stats_rollup rollup={} grain={} period={} [{}] {}: expected {}, found {}",
            self.rollup,
            self.grain.code(),
            self.period,
            slice.join(" "),
            self.metric,
            self.expected,
            self.found
        )
    }
}

impl fmt::Display for VerifyReport {
    /// One line per finding, then a summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.dossier_differences {
            writeln!(f, "{d}")?;
        }
        for c in &self.cell_differences {
            writeln!(f, "{c}")?;
        }
        let unlisted = self.cell_differences_total - self.cell_differences.len() as u64;
        if unlisted > 0 {
            writeln!(f, "difference  … and {unlisted} more cells")?;
        }
        for b in &self.behind {
            writeln!(f, "{b}")?;
        }
        for d in &self.failing {
            writeln!(f, "{d}")?;
        }
        write!(
            f,
            "verified {} events of {} dossiers up to position {}: {} dossier differences, {} cell \
             differences, {} dossiers behind, {} dossiers failing",
            self.events,
            self.dossiers,
            self.position,
            self.dossier_differences.len(),
            self.cell_differences_total,
            self.behind.len(),
            self.failing.len()
        )
    }
}

/// Recomputes every figure from the log and compares (see the module docs). Lists at most
/// `max_cells` differing cells (all are counted).
pub async fn verify(pool: &PgPool, max_cells: usize) -> Result<VerifyReport, VerifyError> {
    let mut reader = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *reader)
        .await?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *reader)
        .await?;
    let head: i64 = sqlx::query_scalar("SELECT position FROM log_head")
        .fetch_one(&mut *reader)
        .await?;

    // The expected cells, on a second connection that sees the same snapshot.
    let mut expected = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *expected)
        .await?;
    // Snapshot ids look like `00000003-0000001B-1`; SET takes no parameters, so check it is
    // one before it enters the SQL text.
    if snapshot.is_empty() || !snapshot.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(VerifyError::Corrupt(format!(
            "unexpected snapshot id {snapshot:?}"
        )));
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET TRANSACTION SNAPSHOT '{snapshot}'"
    )))
    .execute(&mut *expected)
    .await?;
    for sql in [
        "CREATE TEMPORARY TABLE verify_daily \
           (level text NOT NULL, agency text NOT NULL, sector text NOT NULL, \
            procedure text NOT NULL, channel text NOT NULL, applicant_type text NOT NULL, \
            day date NOT NULL, metric text NOT NULL, value numeric NOT NULL, \
            PRIMARY KEY (level, agency, sector, procedure, channel, applicant_type, day, metric)) \
           ON COMMIT DROP",
        "CREATE TEMPORARY TABLE verify_expected \
           (LIKE stats_rollup INCLUDING DEFAULTS) ON COMMIT DROP",
        "ALTER TABLE verify_expected ADD PRIMARY KEY \
           (rollup, grain, period, level, agency, sector, procedure, channel, applicant_type, \
            metric)",
    ] {
        sqlx::query(sql).execute(&mut *expected).await?;
    }

    let mut report = VerifyReport {
        position: head,
        ..VerifyReport::default()
    };
    let mut cells: BTreeMap<(Slice, NaiveDate, Metric), i128> = BTreeMap::new();
    {
        // The log's reader of whole dossiers, on the snapshot's connection; their stored rows
        // are looked up a batch at a time on the second connection (the same snapshot).
        let everything = RoutingFilter::default();
        let mut dossiers = eventlog::dossiers_up_to::<EventBody>(&mut reader, head, &everything);
        let mut batch: Vec<DossierEvents<EventBody>> = Vec::with_capacity(DOSSIERS_PER_LOOKUP);
        while let Some(dossier) = dossiers.try_next().await.map_err(read_error)? {
            batch.push(dossier);
            if batch.len() >= DOSSIERS_PER_LOOKUP {
                check_dossiers(&mut expected, &batch, &mut report, &mut cells).await?;
                batch.clear();
                if cells.len() >= CELLS_IN_MEMORY {
                    flush(&mut expected, &mut cells).await?;
                }
            }
        }
        check_dossiers(&mut expected, &batch, &mut report, &mut cells).await?;
    }
    flush(&mut expected, &mut cells).await?;
    expand(&mut expected).await?;

    let unknown = sqlx::query(
        "SELECT dossier_id, version FROM projection_contributions c \
         WHERE (version > 0 OR contribution IS NOT NULL) \
           AND NOT EXISTS (SELECT 1 FROM events e \
                           WHERE e.dossier_id = c.dossier_id AND e.position <= $1) \
         ORDER BY dossier_id",
    )
    .bind(head)
    .fetch_all(&mut *reader)
    .await?;
    for row in unknown {
        report.dossier_differences.push(DossierDifference::Unknown {
            dossier_id: row.try_get("dossier_id")?,
            applied: row.try_get("version")?,
        });
    }
    let failing = sqlx::query(
        "SELECT dossier_id, attempts, first_failed_at, last_failed_at, last_error \
         FROM projection_failures ORDER BY dossier_id",
    )
    .fetch_all(&mut *reader)
    .await?;
    for row in failing {
        report.failing.push(Failing {
            dossier_id: row.try_get("dossier_id")?,
            attempts: row.try_get("attempts")?,
            first_failed_at: row.try_get("first_failed_at")?,
            last_failed_at: row.try_get("last_failed_at")?,
            last_error: row.try_get("last_error")?,
        });
    }
    reader.rollback().await?;

    compare_cells(&mut expected, &mut report, max_cells).await?;
    expected.rollback().await?;
    Ok(report)
}

/// One dossier's events as read, with its stored row.
struct Dossier {
    id: String,
    has_row: bool,
    applied: i32,
    /// The stored contribution's JSON text.
    stored: Option<String>,
    events: Vec<(i32, domain::Event)>,
}

impl Dossier {
    /// Compares the stored row with the log, records findings, and adds the contribution the
    /// row claims (recomputed from the log) to the expected cells.
    fn check(
        self,
        report: &mut VerifyReport,
        cells: &mut BTreeMap<(Slice, NaiveDate, Metric), i128>,
    ) -> Result<(), VerifyError> {
        report.dossiers += 1;
        let log = self.events.last().map_or(0, |(v, _)| *v);
        if self.applied > log {
            report.dossier_differences.push(DossierDifference::Ahead {
                dossier_id: self.id.clone(),
                applied: self.applied,
                log,
            });
        } else if self.applied < log {
            report.behind.push(Behind {
                dossier_id: self.id.clone(),
                applied: if self.has_row { self.applied } else { 0 },
                log,
            });
        }
        let prefix: Vec<domain::Event> = self
            .events
            .into_iter()
            .filter(|(v, _)| *v <= self.applied)
            .map(|(_, e)| e)
            .collect();
        let recomputed = if prefix.is_empty() {
            None
        } else {
            stats::contribution(&prefix)
        };
        let stored: Result<Option<Contribution>, String> = self
            .stored
            .map(|text| serde_json::from_str(&text))
            .transpose()
            .map_err(|e| e.to_string());
        match stored {
            Ok(stored) if stored == recomputed => {}
            Ok(_) => report
                .dossier_differences
                .push(DossierDifference::Contribution {
                    dossier_id: self.id.clone(),
                    version: self.applied,
                }),
            Err(reason) => report
                .dossier_differences
                .push(DossierDifference::Undecodable {
                    dossier_id: self.id.clone(),
                    reason,
                }),
        }
        if let Some(c) = recomputed {
            for ((day, metric), delta) in c.deltas {
                let v = cells.entry((c.slice.clone(), day, metric)).or_insert(0);
                *v = v.checked_add(delta).ok_or_else(|| {
                    VerifyError::Overflow(format!("{day} {metric} (dossier {})", self.id))
                })?;
            }
        }
        Ok(())
    }
}

/// Checks each of `dossiers` against its stored row (looked up on `conn`, in the snapshot) and
/// adds what the rows claim to the expected cells.
async fn check_dossiers(
    conn: &mut PgConnection,
    dossiers: &[DossierEvents<EventBody>],
    report: &mut VerifyReport,
    cells: &mut BTreeMap<(Slice, NaiveDate, Metric), i128>,
) -> Result<(), VerifyError> {
    if dossiers.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = dossiers.iter().map(|d| d.dossier_id.as_str()).collect();
    let rows = sqlx::query(
        "SELECT dossier_id, version, contribution::text AS contribution \
         FROM projection_contributions WHERE dossier_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut stored: HashMap<String, (i32, Option<String>)> = HashMap::with_capacity(rows.len());
    for row in &rows {
        stored.insert(
            row.try_get("dossier_id")?,
            (row.try_get("version")?, row.try_get("contribution")?),
        );
    }
    for d in dossiers {
        let row = stored.remove(&d.dossier_id);
        let events = d
            .events
            .iter()
            .map(|e| Ok((e.version, decode(e, &d.dossier_id)?)))
            .collect::<Result<Vec<_>, VerifyError>>()?;
        report.events += d.events.len() as u64;
        let dossier = Dossier {
            id: d.dossier_id.clone(),
            has_row: row.is_some(),
            applied: row.as_ref().map_or(0, |(v, _)| *v),
            stored: row.and_then(|(_, c)| c),
            events,
        };
        dossier.check(report, cells)?;
    }
    Ok(())
}

/// A stored event as a domain event, by the one decoder ([`domain::Event::from_row`]).
fn decode(e: &EventBody, dossier_id: &str) -> Result<domain::Event, VerifyError> {
    domain::Event::from_row(&e.event_type, e.occurred_at, &e.payload).map_err(|err| {
        VerifyError::Corrupt(format!(
            "event {} of dossier {dossier_id}: {err}",
            e.version
        ))
    })
}

fn read_error(e: ReadError) -> VerifyError {
    match e {
        ReadError::Unavailable(e) => VerifyError::Database(e),
        ReadError::Corrupt { position, reason } => {
            VerifyError::Corrupt(format!("event at position {position}: {reason}"))
        }
    }
}

/// Adds the day sums in memory to `verify_daily` (in `numeric`), and empties them.
async fn flush(
    conn: &mut PgConnection,
    cells: &mut BTreeMap<(Slice, NaiveDate, Metric), i128>,
) -> Result<(), sqlx::Error> {
    const CHUNK: usize = 10_000;
    let taken: Vec<_> = std::mem::take(cells).into_iter().collect();
    for chunk in taken.chunks(CHUNK) {
        let mut dims: [Vec<&str>; 6] = std::array::from_fn(|_| Vec::with_capacity(chunk.len()));
        let mut days = Vec::with_capacity(chunk.len());
        let mut metrics = Vec::with_capacity(chunk.len());
        let mut values = Vec::with_capacity(chunk.len());
        for ((slice, day, metric), value) in chunk {
            for (i, d) in stats::Dimension::ALL.into_iter().enumerate() {
                dims[i].push(d.value(slice));
            }
            days.push(*day);
            metrics.push(metric.as_str());
            values.push(value.to_string());
        }
        let [d0, d1, d2, d3, d4, d5] = dims;
        sqlx::query(
            "INSERT INTO verify_daily \
               (level, agency, sector, procedure, channel, applicant_type, day, metric, value) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], \
                                  $6::text[], $7::date[], $8::text[], $9::numeric[]) \
             ON CONFLICT (level, agency, sector, procedure, channel, applicant_type, day, metric) \
             DO UPDATE SET value = verify_daily.value + EXCLUDED.value",
        )
        .bind(d0)
        .bind(d1)
        .bind(d2)
        .bind(d3)
        .bind(d4)
        .bind(d5)
        .bind(days)
        .bind(metrics)
        .bind(values)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Fills `verify_expected` from `verify_daily`: every rollup and grain, summed in `numeric` by
/// PostgreSQL, without [`crate::rollup::rollup_cells`]. A dimension outside a rollup is `''`; a
/// period is the first day of its month or year (`date_trunc`).
async fn expand(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let rollups: Vec<i16> = rollup::ROLLUPS.iter().map(|r| i16::from(*r)).collect();
    sqlx::query(
        "INSERT INTO verify_expected \
           (rollup, grain, period, level, agency, sector, procedure, channel, applicant_type, \
            metric, value) \
         SELECT r.rollup, g.grain, \
                CASE g.grain \
                    WHEN 'd' THEN d.day \
                    WHEN 'm' THEN date_trunc('month', d.day)::date \
                    ELSE date_trunc('year', d.day)::date \
                END, \
                CASE WHEN r.rollup & 1 <> 0 THEN d.level ELSE '' END, \
                CASE WHEN r.rollup & 2 <> 0 THEN d.agency ELSE '' END, \
                CASE WHEN r.rollup & 4 <> 0 THEN d.sector ELSE '' END, \
                CASE WHEN r.rollup & 8 <> 0 THEN d.procedure ELSE '' END, \
                CASE WHEN r.rollup & 16 <> 0 THEN d.channel ELSE '' END, \
                CASE WHEN r.rollup & 32 <> 0 THEN d.applicant_type ELSE '' END, \
                d.metric, SUM(d.value) \
         FROM verify_daily d \
         CROSS JOIN UNNEST($1::smallint[]) AS r (rollup) \
         CROSS JOIN (VALUES ('d'), ('m'), ('y')) AS g (grain) \
         GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 \
         HAVING SUM(d.value) <> 0",
    )
    .bind(rollups)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Lists the cells where the expected and the live table differ (a missing cell is 0).
async fn compare_cells(
    conn: &mut PgConnection,
    report: &mut VerifyReport,
    max_cells: usize,
) -> Result<(), VerifyError> {
    let mut rows = sqlx::query(
        "SELECT rollup, grain, period, level, agency, sector, procedure, channel, applicant_type, \
                metric, COALESCE(e.value, 0)::text AS expected, \
                COALESCE(l.value, 0)::text AS found \
         FROM verify_expected e \
         FULL JOIN stats_rollup l \
           USING (rollup, grain, period, level, agency, sector, procedure, channel, \
                  applicant_type, metric) \
         WHERE COALESCE(e.value, 0) <> COALESCE(l.value, 0) \
         ORDER BY rollup DESC, grain, period, level, agency, sector, procedure, channel, \
                  applicant_type, metric",
    )
    .fetch(conn);
    while let Some(row) = rows.try_next().await? {
        report.cell_differences_total += 1;
        if report.cell_differences.len() >= max_cells {
            continue;
        }
        let rollup: i16 = row.try_get("rollup")?;
        let grain: String = row.try_get("grain")?;
        let dims = [
            "level",
            "agency",
            "sector",
            "procedure",
            "channel",
            "applicant_type",
        ]
        .map(|c| row.try_get::<String, _>(c));
        let [a, b, c, d, e, g] = dims;
        report.cell_differences.push(CellDifference {
            rollup: u8::try_from(rollup).unwrap_or(u8::MAX),
            grain: Grain::parse(&grain).unwrap_or(Grain::Day),
            period: row.try_get("period")?,
            dims: [a?, b?, c?, d?, e?, g?],
            metric: row.try_get("metric")?,
            expected: numeric(&row, "expected")?,
            found: numeric(&row, "found")?,
        });
    }
    Ok(())
}

/// A `numeric` integer read as text.
fn numeric(row: &PgRow, column: &str) -> Result<i128, VerifyError> {
    let text: String = row.try_get(column)?;
    rollup::parse_sum(&text).ok_or_else(|| {
        VerifyError::Corrupt(format!(
            "stats_rollup holds {text}, not an integer within i128"
        ))
    })
}
