//! Scenario M: how long migration 30010 (`stats_rollup`'s long rows → the slice dictionary and
//! wide `stats_cells`) takes on an existing deployment's table, against rewriting the same table
//! raw (M0), in the same database.
//!
//! The old table is made from the new one: [`crate::query::load`] fills `stats_cells` for the
//! synthetic dossiers (what applying each of them would leave), and its long view
//! `stats_rollup` — one row per non-zero figure of a rollup, grain, period and slice, exactly the
//! rows the old table held for the same dossiers — is written into the old table, created by
//! the statements of migrations 30002 and 30003 themselves (with its primary key). Then the new tables are dropped
//! and the migration's own SQL (the file sqlx runs, in one transaction) carries the figures over.
//! A fingerprint of every figure (count, sum, and a sum weighted by a hash of each cell's
//! identity) is taken from the old table and from the view over the new one: they must be
//! equal, or the run fails.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sqlx::PgPool;

use crate::query;
use crate::synth::Catalog;

/// The migration measured, as sqlx runs it.
const MIGRATION_30010: &str =
    include_str!("../../../services/projection/migrations/30010_slices_and_wide_cells.sql");

/// The migrations that made the old table: 30002 created it, 30003 made its values `numeric`.
const MIGRATION_30002: &str =
    include_str!("../../../services/projection/migrations/30002_rollups.sql");
const MIGRATION_30003: &str =
    include_str!("../../../services/projection/migrations/30003_wide_sums_and_failures.sql");

/// The statement of a migration's SQL that starts with `start`, up to its `;`.
fn statement<'a>(sql: &'a str, start: &str) -> Result<&'a str> {
    let from = sql
        .find(start)
        .with_context(|| format!("no statement {start:?} in the migration"))?;
    let len = sql[from..]
        .find(";\n")
        .with_context(|| format!("the statement {start:?} does not end"))?;
    Ok(&sql[from..from + len])
}

/// Every figure of a long-form relation (the old table or the view over the new ones) in three
/// numbers: rows, the sum of the values, and their sum weighted by a hash of each row's
/// identity (a figure moved to another cell changes it).
fn fingerprint_sql(relation: &str) -> String {
    format!(
        "SELECT count(*)::bigint, coalesce(sum(value), 0)::text, \
         coalesce(sum(value * (hashtextextended(concat_ws('|', rollup, grain, period, level, \
           agency, sector, procedure, channel, applicant_type, metric), 0) % 1000003)), 0)::text \
         FROM {relation}"
    )
}

/// What M measured.
#[derive(Debug, Clone)]
pub struct Migrated {
    pub dossiers: u64,
    /// Rows of the old table (one per non-zero figure).
    pub old_rows: i64,
    /// The old table with its primary key.
    pub old_bytes: i64,
    /// Rows of `stats_cells` and entries of `stats_slice` after the migration.
    pub wide_rows: i64,
    pub slices: i64,
    /// `stats_cells` and `stats_slice` with their indexes, after the migration.
    pub new_bytes: i64,
    /// The migration (one transaction, committed).
    pub migration: Duration,
    /// M0: `CREATE TABLE … AS SELECT * FROM stats_rollup` (the old rows rewritten raw).
    pub baseline: Duration,
}

async fn bytes(pool: &PgPool, tables: &[&str]) -> Result<i64> {
    let mut total = 0;
    for t in tables {
        let n: i64 = sqlx::query_scalar("SELECT pg_total_relation_size($1::regclass)")
            .bind(*t)
            .fetch_one(pool)
            .await?;
        total += n;
    }
    Ok(total)
}

async fn fingerprint(pool: &PgPool, relation: &str) -> Result<(i64, String, String)> {
    Ok(
        sqlx::query_as(sqlx::AssertSqlSafe(fingerprint_sql(relation)))
            .fetch_one(pool)
            .await?,
    )
}

/// Runs M in `pool`'s database (the log's and the projection's migrations applied).
pub async fn run(pool: &PgPool, dossiers: u64, analyze: bool) -> Result<Migrated> {
    let catalog = Catalog::new();
    let loaded = query::load(
        pool,
        &catalog,
        dossiers,
        &projection::rollup::ROLLUPS,
        false,
    )
    .await?;
    eprintln!(
        "bench: M  loaded {} dossiers: {} figures in {} wide rows",
        loaded.dossiers, loaded.rollup_rows, loaded.wide_rows
    );
    // The baseline's per-dossier table is not needed here.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP TABLE {}",
        query::DOSSIER_TABLE
    )))
    .execute(pool)
    .await?;
    let expected = fingerprint(pool, "stats_rollup").await?;

    eprintln!("bench: M  writing the old long table");
    let t = Instant::now();
    sqlx::query("CREATE TABLE stats_rollup_long AS SELECT * FROM stats_rollup")
        .execute(pool)
        .await?;
    // The old table as its migrations made it; loaded without its key, which is then built
    // once as they defined it (same end state, faster).
    for sql in [
        "DROP VIEW stats_rollup",
        "DROP TABLE stats_cells, stats_slice",
        statement(MIGRATION_30002, "CREATE TABLE stats_rollup")?,
        statement(MIGRATION_30003, "ALTER TABLE stats_rollup")?,
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    let key: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'stats_rollup_pkey'",
    )
    .fetch_one(pool)
    .await?;
    for sql in [
        "ALTER TABLE stats_rollup DROP CONSTRAINT stats_rollup_pkey".to_owned(),
        "INSERT INTO stats_rollup SELECT rollup, grain, period, level, agency, sector, \
           procedure, channel, applicant_type, metric, value FROM stats_rollup_long"
            .to_owned(),
        "DROP TABLE stats_rollup_long".to_owned(),
        format!("ALTER TABLE stats_rollup ADD CONSTRAINT stats_rollup_pkey {key}"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?;
    }
    let old_bytes = bytes(pool, &["stats_rollup"]).await?;
    let before = fingerprint(pool, "stats_rollup").await?;
    if before != expected {
        bail!("the old table does not hold the loaded figures: {before:?}, expected {expected:?}");
    }
    eprintln!(
        "bench: M  old table: {} rows, {:.2} GiB, written in {:.1} s",
        before.0,
        old_bytes as f64 / (1u64 << 30) as f64,
        t.elapsed().as_secs_f64()
    );

    crate::settle(pool, analyze).await?;
    eprintln!("bench: M0 the old rows rewritten raw (CREATE TABLE AS SELECT *)");
    let t = Instant::now();
    sqlx::query("CREATE TABLE bench_rollup_copy AS SELECT * FROM stats_rollup")
        .execute(pool)
        .await?;
    let baseline = t.elapsed();
    sqlx::query("DROP TABLE bench_rollup_copy")
        .execute(pool)
        .await?;
    eprintln!("bench: M0 {:.2} s", baseline.as_secs_f64());

    crate::settle(pool, analyze).await?;
    eprintln!("bench: M  migration 30010 (one transaction)");
    let t = Instant::now();
    let mut tx = pool.begin().await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(MIGRATION_30010))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    let migration = t.elapsed();
    eprintln!("bench: M  {:.2} s", migration.as_secs_f64());

    let after = fingerprint(pool, "stats_rollup").await?;
    if after != expected {
        bail!("the migration changed the figures: {after:?}, expected {expected:?}");
    }
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM stats_cells), (SELECT count(*) FROM stats_slice)",
    )
    .fetch_one(pool)
    .await?;
    Ok(Migrated {
        dossiers,
        old_rows: before.0,
        old_bytes,
        wide_rows: counts.0,
        slices: counts.1,
        new_bytes: bytes(pool, &["stats_cells", "stats_slice"]).await?,
        migration,
        baseline,
    })
}

/// The report's section for M.
pub fn render(m: &Migrated) -> String {
    let gib = |b: i64| b as f64 / (1u64 << 30) as f64;
    let rate = |d: Duration| m.old_rows as f64 / d.as_secs_f64().max(1e-9);
    format!(
        "### M: migration 30010 on an existing table\n\n\
         The old `stats_rollup` of {} synthetic dossiers: {} rows (one per non-zero figure), \
         {:.2} GiB with its primary key. After the migration: {} wide rows of `stats_cells` and \
         {} slices, {:.2} GiB with their indexes; every figure the same (count, sum and a sum \
         weighted by a hash of each figure's cell, checked).\n\n\
         | scenario | rows | seconds | rows/s | ratio to M0 |\n\
         |---|---:|---:|---:|---:|\n\
         | **M** migration 30010 (one transaction: dictionary, `GROUP BY` pivot, keys, view) | {} | {:.2} | {:.0} | {:.2} |\n\
         | M0 baseline: `CREATE TABLE … AS SELECT * FROM stats_rollup` | {} | {:.2} | {:.0} | 1.00 |\n\n\
         The projection is stopped while it runs (it runs at the projection's start); the \
         rest of the system is not.\n\n",
        m.dossiers,
        m.old_rows,
        gib(m.old_bytes),
        m.wide_rows,
        m.slices,
        gib(m.new_bytes),
        m.old_rows,
        m.migration.as_secs_f64(),
        rate(m.migration),
        m.baseline.as_secs_f64() / m.migration.as_secs_f64().max(1e-9),
        m.old_rows,
        m.baseline.as_secs_f64(),
        rate(m.baseline),
    )
}
