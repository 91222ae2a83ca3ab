//! Scenario Q: query latency of the pre-aggregated `stats_rollup` (`projection::store::query`)
//! against a naive `GROUP BY` over a per-dossier table, in the same database.
//!
//! Loading goes around the services, or 10 million dossiers would take hours: each synthetic
//! dossier ([`crate::synth`]) goes through `stats::contribution`, exactly as apply computes it;
//! the day deltas of all dossiers are summed per slice, day and metric, then expanded into every
//! rollup and grain of `stats_rollup` and written with `COPY`. This is what applying every dossier
//! once would leave in the table (and what a rebuild writes). The expansion here is a compact
//! re-implementation of `rollup::rollup_cells` (which would need tens of gigabytes at this size);
//! `--quick` checks the loaded table cell by cell against `rollup_cells`, and every run checks
//! each answer against the baseline's, which is computed from the per-dossier table with no
//! `stats` code at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use domain::{ApplicantType, Channel, Level, SectorCode};
use projection::rollup::{self, Grain, ROLLUPS};
use projection::store;
use sqlx::{PgPool, Row};
use stats::{Dimension, GroupKey, Metric, Query, SliceFilter, Totals};

use crate::synth::{self, Catalog};

/// The per-dossier table of the baseline.
pub const DOSSIER_TABLE: &str = "bench_dossiers";

/// Dossiers generated per chunk (half on each of two threads).
const CHUNK: u64 = 200_000;

/// Bit layout of a cell key: the six dimensions (each `index + 1`, 0 when outside the rollup),
/// the period (days since 2000-01-01) and the metric (index in `Metric::ALL`).
const FIELDS: [(Dimension, u32, u32); 6] = [
    (Dimension::Level, 54, 2),
    (Dimension::Agency, 45, 9),
    (Dimension::Sector, 38, 7),
    (Dimension::Procedure, 28, 10),
    (Dimension::Channel, 25, 3),
    (Dimension::ApplicantType, 22, 3),
];
const PERIOD_SHIFT: u32 = 6;

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2000, 1, 1).expect("a valid date")
}

fn period_bits(day: NaiveDate) -> u64 {
    let days = (day - epoch()).num_days();
    debug_assert!((0..1 << 16).contains(&days));
    (days as u64) << PERIOD_SHIFT
}

fn period_of(key: u64) -> NaiveDate {
    epoch() + chrono::Duration::days(((key >> PERIOD_SHIFT) & 0xffff) as i64)
}

fn field(key: u64, i: usize) -> usize {
    let (_, shift, bits) = FIELDS[i];
    ((key >> shift) & ((1 << bits) - 1)) as usize
}

fn metric_index(metric: Metric) -> u64 {
    Metric::ALL
        .iter()
        .position(|m| *m == metric)
        .expect("every metric is in ALL") as u64
}

/// The key bits of a dossier's slice (every dimension).
fn slice_bits(catalog: &Catalog, d: &synth::Dossier) -> u64 {
    let a = &catalog.agencies[d.agency];
    let values = [
        Level::ALL.iter().position(|l| *l == a.level).unwrap_or(0),
        d.agency,
        catalog.procedures[d.procedure].sector,
        d.procedure,
        Channel::ALL
            .iter()
            .position(|c| *c == d.channel)
            .unwrap_or(0),
        ApplicantType::ALL
            .iter()
            .position(|t| *t == d.applicant_type)
            .unwrap_or(0),
    ];
    FIELDS
        .iter()
        .zip(values)
        .fold(0, |k, ((_, shift, _), v)| k | ((v as u64 + 1) << shift))
}

/// The mask keeping the dimensions of `rollup`.
fn rollup_mask(rollup: u8) -> u64 {
    FIELDS
        .iter()
        .filter(|(d, _, _)| rollup & rollup::dimension_bit(*d) != 0)
        .fold(0, |m, (_, shift, bits)| m | (((1 << bits) - 1) << shift))
}

/// Sorts and sums equal keys, dropping zero sums.
fn merge(mut cells: Vec<(u64, i128)>) -> Vec<(u64, i128)> {
    cells.sort_unstable_by_key(|(k, _)| *k);
    let mut out: Vec<(u64, i128)> = Vec::with_capacity(cells.len());
    for (k, v) in cells {
        match out.last_mut() {
            Some((last, sum)) if *last == k => *sum += v,
            _ => {
                if out.last().is_some_and(|(_, sum)| *sum == 0) {
                    out.pop();
                }
                out.push((k, v));
            }
        }
    }
    if out.last().is_some_and(|(_, sum)| *sum == 0) {
        out.pop();
    }
    out
}

/// One chunk of generated dossiers: their day deltas (merged) and their baseline rows as `COPY`
/// text.
struct Chunk {
    deltas: Vec<(u64, i128)>,
    rows: String,
    contributions: Vec<stats::Contribution>,
    events: u64,
}

fn generate(catalog: &Catalog, from: u64, to: u64, keep: bool) -> Chunk {
    let mut deltas = Vec::with_capacity(((to - from) * 24) as usize);
    let mut rows = String::with_capacity(((to - from) * 130) as usize);
    let mut contributions = Vec::new();
    let mut events = 0u64;
    for n in from..to {
        let d = synth::dossier(catalog, n);
        events += d.events.len() as u64;
        let c = stats::contribution(&d.events).expect("a received dossier contributes");
        let base = slice_bits(catalog, &d);
        for ((day, metric), v) in &c.deltas {
            deltas.push((base | period_bits(*day) | metric_index(*metric), *v));
        }
        let a = &catalog.agencies[d.agency];
        let p = &catalog.procedures[d.procedure];
        let f = &d.facts;
        let opt = |day: Option<NaiveDate>| day.map_or_else(|| "\\N".to_owned(), |d| d.to_string());
        let _ = writeln!(
            rows,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            d.id,
            a.level.as_str(),
            a.code,
            catalog.sectors[p.sector],
            p.code,
            d.channel.as_str(),
            d.applicant_type.as_str(),
            f.received_day,
            f.due_day,
            opt(f.closed_day),
            opt(f.resolved.and(f.closed_day)),
            f.resolved.map_or("\\N", synth::timeliness_str),
            if f.ended { "t" } else { "f" },
        );
        if keep {
            contributions.push(c);
        }
    }
    Chunk {
        deltas: merge(deltas),
        rows,
        contributions,
        events,
    }
}

/// What loading measured.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub dossiers: u64,
    /// Non-zero cells of the all-dimension day grain (slice × day × metric).
    pub day_cells: u64,
    /// Non-zero figures of every rollup and grain (rows of the long view `stats_rollup`).
    pub rollup_rows: u64,
    /// Rows of `stats_cells` (one per slice, grain and period).
    pub wide_rows: u64,
    /// Entries of the dictionary `stats_slice`.
    pub slices: u64,
    /// Events of the generated dossiers (what the log would hold).
    pub events: u64,
    /// `stats_cells` and `stats_slice` with their indexes.
    pub rollup_bytes: i64,
    /// The rollups loaded (all of `rollup::ROLLUPS` unless `--rollups` said otherwise).
    pub rollups: Vec<u8>,
    pub dossier_bytes: i64,
    pub generate: Duration,
    pub load: Duration,
    /// Contributions, kept for `--quick`'s full check only.
    pub aggregates: Option<stats::Aggregates>,
}

/// Generates `dossiers`, loads `stats_rollup` and the per-dossier table, indexes, `ANALYZE`s.
pub async fn load(
    pool: &PgPool,
    catalog: &Catalog,
    dossiers: u64,
    rollups: &[u8],
    keep: bool,
) -> Result<Loaded> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {DOSSIER_TABLE} (
            dossier_id text NOT NULL, level text NOT NULL, agency text NOT NULL,
            sector text NOT NULL, procedure text NOT NULL, channel text NOT NULL,
            applicant_type text NOT NULL, received_day date NOT NULL, due_day date NOT NULL,
            closed_day date, resolved_day date, timeliness text, ended boolean NOT NULL)"
    )))
    .execute(pool)
    .await?;
    // Loaded without its indexes, which are then built once (same end state, faster).
    for sql in [
        "ALTER TABLE stats_cells DROP CONSTRAINT stats_cells_pkey",
        "DROP INDEX stats_cells_by_rollup",
    ] {
        sqlx::query(sql).execute(pool).await?;
    }

    let mut conn = pool.acquire().await?;
    let mut generate_time = Duration::ZERO;
    let mut load_time = Duration::ZERO;
    let mut all: Vec<(u64, i128)> = Vec::new();
    let mut events = 0u64;
    let mut aggregates = keep.then(stats::Aggregates::new);
    let mut from = 0;
    let started = Instant::now();
    while from < dossiers {
        let to = (from + CHUNK).min(dossiers);
        let t = Instant::now();
        let cat = catalog.clone();
        let chunks = tokio::task::spawn_blocking(move || {
            let mid = from + (to - from) / 2;
            std::thread::scope(|s| {
                let a = s.spawn(|| generate(&cat, from, mid, keep));
                let b = generate(&cat, mid, to, keep);
                [a.join().expect("generator thread"), b]
            })
        })
        .await?;
        generate_time += t.elapsed();
        let t = Instant::now();
        for chunk in chunks {
            let mut copy = conn
                .copy_in_raw(&format!("COPY {DOSSIER_TABLE} FROM STDIN"))
                .await?;
            copy.send(chunk.rows.into_bytes()).await?;
            copy.finish().await?;
            all.extend(chunk.deltas);
            events += chunk.events;
            if let Some(agg) = aggregates.as_mut() {
                for c in &chunk.contributions {
                    agg.add_contribution(c);
                }
            }
        }
        load_time += t.elapsed();
        from = to;
        eprintln!(
            "bench: Q  {to} of {dossiers} dossiers generated ({:.0} s)",
            started.elapsed().as_secs_f64()
        );
    }
    let t = Instant::now();
    let day = tokio::task::spawn_blocking(move || merge(all)).await?;
    generate_time += t.elapsed();
    let day_cells = day.len() as u64;
    eprintln!("bench: Q  {day_cells} non-zero slice × day × metric cells");

    let mut rollup_rows = 0u64;
    let mut wide_rows = 0u64;
    let mut slices = Slices::default();
    for rollup in ROLLUPS.into_iter().filter(|r| rollups.contains(r)) {
        for grain in Grain::ALL {
            let t = Instant::now();
            let mask = rollup_mask(rollup);
            let cells: Vec<(u64, i128)> = day
                .iter()
                .map(|(k, v)| {
                    let period = grain.period(period_of(*k));
                    ((k & mask) | period_bits(period) | (k & 0x3f), *v)
                })
                .collect();
            let cells = tokio::task::spawn_blocking(move || merge(cells)).await?;
            generate_time += t.elapsed();
            let t = Instant::now();
            rollup_rows += cells.len() as u64;
            wide_rows += copy_cells(&mut conn, &mut slices, rollup, grain, &cells).await?;
            load_time += t.elapsed();
        }
        eprintln!("bench: Q  rollup {rollup} loaded ({rollup_rows} rows so far)");
    }
    drop(day);
    let t = Instant::now();
    slices.copy(&mut conn, catalog).await?;
    load_time += t.elapsed();

    let t = Instant::now();
    eprintln!("bench: Q  building the cells' indexes and the baseline's");
    for sql in [
        "SET maintenance_work_mem = '1GB'".to_owned(),
        "ALTER TABLE stats_cells ADD CONSTRAINT stats_cells_pkey PRIMARY KEY \
           (slice, grain, period)"
            .to_owned(),
        "CREATE INDEX stats_cells_by_rollup ON stats_cells (rollup, grain, period, slice)"
            .to_owned(),
        format!("ALTER TABLE {DOSSIER_TABLE} ADD PRIMARY KEY (dossier_id)"),
        format!("CREATE INDEX ON {DOSSIER_TABLE} (received_day)"),
        format!("CREATE INDEX ON {DOSSIER_TABLE} (closed_day)"),
        format!("CREATE INDEX ON {DOSSIER_TABLE} (sector, received_day)"),
        format!("CREATE INDEX ON {DOSSIER_TABLE} (agency, received_day)"),
        "RESET maintenance_work_mem".to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut *conn)
            .await?;
    }
    load_time += t.elapsed();
    drop(conn);

    let sizes: (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT pg_total_relation_size('stats_cells') + pg_total_relation_size('stats_slice'), \
           pg_total_relation_size('{DOSSIER_TABLE}')"
    )))
    .fetch_one(pool)
    .await?;
    Ok(Loaded {
        dossiers,
        day_cells,
        rollup_rows,
        wide_rows,
        slices: slices.ids.len() as u64,
        events,
        rollup_bytes: sizes.0,
        rollups: rollups.to_vec(),
        dossier_bytes: sizes.1,
        generate: generate_time,
        load: load_time,
        aggregates,
    })
}

/// The slices of the loaded cells, numbered as `stats_slice` will hold them.
#[derive(Default)]
struct Slices {
    /// `(rollup, dimension bits of the cell key)` → id, from 1.
    ids: std::collections::HashMap<(u8, u64), i32>,
}

impl Slices {
    fn id(&mut self, rollup: u8, dims: u64) -> i32 {
        let next = self.ids.len() as i32 + 1;
        *self.ids.entry((rollup, dims)).or_insert(next)
    }

    /// Writes the dictionary with `COPY` (ids as numbered) and moves its id sequence past them.
    async fn copy(&self, conn: &mut sqlx::PgConnection, catalog: &Catalog) -> Result<()> {
        let mut sorted: Vec<(&(u8, u64), &i32)> = self.ids.iter().collect();
        sorted.sort_unstable_by_key(|(_, id)| **id);
        let mut buf = String::new();
        for ((rollup, k), id) in sorted {
            let _ = write!(buf, "{id}\t{rollup}");
            for i in 0..6 {
                let _ = write!(buf, "\t{}", name(catalog, *k, i));
            }
            buf.push('\n');
        }
        let mut copy = conn
            .copy_in_raw(
                "COPY stats_slice (id, rollup, level, agency, sector, procedure, channel, \
                 applicant_type) FROM STDIN",
            )
            .await?;
        copy.send(buf.into_bytes()).await?;
        copy.finish().await?;
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('stats_slice', 'id'), \
               (SELECT max(id) FROM stats_slice))",
        )
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// The value of dimension `i` in a cell key (`""` outside the rollup).
fn name(catalog: &Catalog, k: u64, i: usize) -> &str {
    let idx = field(k, i);
    if idx == 0 {
        return "";
    }
    let idx = idx - 1;
    match i {
        0 => Level::ALL[idx].as_str(),
        1 => catalog.agencies[idx].code.as_str(),
        2 => catalog.sectors[idx].as_str(),
        3 => catalog.procedures[idx].code.as_str(),
        4 => Channel::ALL[idx].as_str(),
        _ => ApplicantType::ALL[idx].as_str(),
    }
}

/// Writes one rollup and grain's cells (sorted by key: the metrics of a slice and period are
/// adjacent) to `stats_cells` with `COPY` as wide rows, a few megabytes at a time, in period
/// order then slice (as apply leaves them over time: a period's rows written together);
/// returns the rows written.
async fn copy_cells(
    conn: &mut sqlx::PgConnection,
    slices: &mut Slices,
    rollup: u8,
    grain: Grain,
    cells: &[(u64, i128)],
) -> Result<u64> {
    let dims_mask = FIELDS
        .iter()
        .fold(0u64, |m, (_, shift, bits)| m | (((1 << bits) - 1) << shift));
    let mut rows: Vec<(NaiveDate, i32, [i128; rollup::METRICS])> = Vec::new();
    let mut i = 0;
    while i < cells.len() {
        let row_key = cells[i].0 & !0x3f;
        let mut values = [0i128; rollup::METRICS];
        while i < cells.len() && cells[i].0 & !0x3f == row_key {
            values[(cells[i].0 & 0x3f) as usize] += cells[i].1;
            i += 1;
        }
        let id = slices.id(rollup, row_key & dims_mask);
        rows.push((period_of(row_key), id, values));
    }
    rows.sort_unstable_by_key(|(p, id, _)| (*p, *id));
    let mut copy = conn.copy_in_raw("COPY stats_cells FROM STDIN").await?;
    let mut buf = String::with_capacity(8 << 20);
    for (period, id, values) in &rows {
        let _ = write!(buf, "{id}\t{rollup}\t{}\t{period}", grain.code());
        for v in values {
            if *v == 0 {
                buf.push_str("\t\\N");
            } else {
                let _ = write!(buf, "\t{v}");
            }
        }
        buf.push('\n');
        if buf.len() >= 8 << 20 {
            copy.send(std::mem::take(&mut buf).into_bytes()).await?;
            buf.reserve(8 << 20);
        }
    }
    if !buf.is_empty() {
        copy.send(buf.into_bytes()).await?;
    }
    copy.finish().await?;
    Ok(rows.len() as u64)
}

/// `--quick` only: the whole table equals `rollup::rollup_cells` of the contributions, and
/// every question's answer equals `stats::Aggregates::query`.
pub async fn check_fully(
    pool: &PgPool,
    aggregates: &stats::Aggregates,
    questions: &[Question],
) -> Result<()> {
    let expected = rollup::rollup_cells(aggregates.cells());
    let rows = sqlx::query(
        "SELECT rollup, grain, period, level, agency, sector, procedure, channel, \
         applicant_type, metric, value::text AS value FROM stats_rollup",
    )
    .fetch_all(pool)
    .await?;
    let mut loaded: BTreeMap<(i16, String, NaiveDate, Vec<String>, String), i128> = BTreeMap::new();
    for row in rows {
        let dims = [
            "level",
            "agency",
            "sector",
            "procedure",
            "channel",
            "applicant_type",
        ]
        .iter()
        .map(|c| row.try_get::<String, _>(*c))
        .collect::<Result<Vec<_>, _>>()?;
        loaded.insert(
            (
                row.try_get("rollup")?,
                row.try_get("grain")?,
                row.try_get("period")?,
                dims,
                row.try_get("metric")?,
            ),
            row.try_get::<String, _>("value")?.parse::<i128>()?,
        );
    }
    let expected: BTreeMap<(i16, String, NaiveDate, Vec<String>, String), i128> = expected
        .into_iter()
        .map(|(c, v)| {
            (
                (
                    i16::from(c.rollup),
                    c.grain.code().to_owned(),
                    c.period,
                    c.dims.iter().map(|s| (*s).to_owned()).collect(),
                    c.metric.as_str().to_owned(),
                ),
                v,
            )
        })
        .collect();
    if loaded != expected {
        let missing = expected.keys().filter(|k| !loaded.contains_key(*k)).count();
        let extra = loaded.keys().filter(|k| !expected.contains_key(*k)).count();
        bail!(
            "the loaded stats_rollup differs from rollup::rollup_cells: {} rows loaded, {} expected, \
             {missing} missing, {extra} extra",
            loaded.len(),
            expected.len()
        );
    }
    for q in questions {
        let ours = store::query(pool, &q.query).await?;
        if ours != aggregates.query(&q.query) {
            bail!(
                "{}: store::query differs from stats::Aggregates::query",
                q.name
            );
        }
    }
    eprintln!(
        "bench: Q  check: {} rows equal rollup::rollup_cells; every answer equals stats::Aggregates",
        loaded.len()
    );
    Ok(())
}

/// One question asked both ways.
#[derive(Debug, Clone)]
pub struct Question {
    pub name: String,
    pub query: Query,
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
}

/// The questions: a year province-wide, the same by agency, the same for one sector, and an
/// uneven period (edge days and months).
pub fn questions() -> Vec<Question> {
    let year = |filter: SliceFilter, group_by: Vec<Dimension>| Query {
        from: date(2024, 1, 1),
        to: date(2025, 1, 1),
        filter,
        group_by,
    };
    let sector = SliceFilter {
        sector: Some(SectorCode::parse("sector-03").expect("valid sector")),
        ..SliceFilter::default()
    };
    vec![
        Question {
            name: "year 2024, province-wide".to_owned(),
            query: year(SliceFilter::default(), Vec::new()),
        },
        Question {
            name: "year 2024, by agency".to_owned(),
            query: year(SliceFilter::default(), vec![Dimension::Agency]),
        },
        Question {
            name: "year 2024, one sector".to_owned(),
            query: year(sector, Vec::new()),
        },
        Question {
            name: "2024-03-10 to 2024-09-20, province-wide".to_owned(),
            query: Query {
                from: date(2024, 3, 10),
                to: date(2024, 9, 20),
                filter: SliceFilter::default(),
                group_by: Vec::new(),
            },
        },
    ]
}

/// The figures both sides answer: received (all, direct, online, postal) and resolved (all,
/// early, on time, late) in the period; pending at its start and end; overdue at its end.
const FIGURES: usize = 11;

fn figures_of(t: &Totals) -> [i64; FIGURES] {
    [
        t.flow_count(Metric::Received),
        t.flow_count(Metric::ReceivedDirect),
        t.flow_count(Metric::ReceivedOnline),
        t.flow_count(Metric::ReceivedPostal),
        t.flow_count(Metric::Resolved),
        t.flow_count(Metric::ResolvedEarly),
        t.flow_count(Metric::ResolvedOnTime),
        t.flow_count(Metric::ResolvedLate),
        t.start_count(Metric::Pending),
        t.end_count(Metric::Pending),
        t.end_count(Metric::PendingOverdue),
    ]
}

/// The baseline: the same figures by `GROUP BY` and `FILTER` over one row per dossier.
fn baseline_sql(q: &Query) -> String {
    let group = q.group_by.first().map(|d| d.as_str());
    let received = "received_day >= $1 AND received_day < $2";
    let resolved = "resolved_day >= $1 AND resolved_day < $2";
    let pending =
        |at: &str| format!("received_day < {at} AND (closed_day IS NULL OR closed_day >= {at})");
    let mut sql = String::from("SELECT ");
    if let Some(g) = group {
        sql.push_str(&format!("{g} AS grp, "));
    } else {
        sql.push_str("'' AS grp, ");
    }
    sql.push_str(&format!(
        "count(*) FILTER (WHERE {received}), \
         count(*) FILTER (WHERE {received} AND channel = 'direct'), \
         count(*) FILTER (WHERE {received} AND channel = 'online'), \
         count(*) FILTER (WHERE {received} AND channel = 'postal'), \
         count(*) FILTER (WHERE {resolved}), \
         count(*) FILTER (WHERE {resolved} AND timeliness = 'early'), \
         count(*) FILTER (WHERE {resolved} AND timeliness = 'on_time'), \
         count(*) FILTER (WHERE {resolved} AND timeliness = 'late'), \
         count(*) FILTER (WHERE {}), \
         count(*) FILTER (WHERE {}), \
         count(*) FILTER (WHERE {} AND due_day < $2) \
         FROM {DOSSIER_TABLE} \
         WHERE received_day < $2 AND (received_day >= $1 OR closed_day IS NULL OR closed_day >= $1)",
        pending("$1"),
        pending("$2"),
        pending("$2"),
    ));
    if q.filter.sector.is_some() {
        sql.push_str(" AND sector = $3");
    }
    if let Some(g) = group {
        sql.push_str(&format!(" GROUP BY {g}"));
    }
    sql
}

async fn baseline(
    pool: &PgPool,
    q: &Query,
    sql: &str,
) -> Result<BTreeMap<GroupKey, [i64; FIGURES]>> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(q.from)
        .bind(q.to);
    if let Some(s) = &q.filter.sector {
        query = query.bind(s.as_str());
    }
    let rows = query.fetch_all(pool).await?;
    let mut out = BTreeMap::new();
    for row in rows {
        let grp: String = row.try_get(0)?;
        let mut figures = [0i64; FIGURES];
        for (i, f) in figures.iter_mut().enumerate() {
            *f = row.try_get(i + 1)?;
        }
        let key = if q.group_by.is_empty() {
            Vec::new()
        } else {
            vec![grp]
        };
        out.insert(key, figures);
    }
    Ok(out)
}

/// Both answers, without groups whose figures are all zero, must be equal.
fn agree(
    name: &str,
    ours: &BTreeMap<GroupKey, Totals>,
    theirs: &BTreeMap<GroupKey, [i64; FIGURES]>,
) -> Result<u64> {
    let ours: BTreeMap<&GroupKey, [i64; FIGURES]> = ours
        .iter()
        .map(|(k, t)| (k, figures_of(t)))
        .filter(|(_, f)| f.iter().any(|v| *v != 0))
        .collect();
    let theirs: BTreeMap<&GroupKey, [i64; FIGURES]> = theirs
        .iter()
        .map(|(k, f)| (k, *f))
        .filter(|(_, f)| f.iter().any(|v| *v != 0))
        .collect();
    if ours != theirs {
        let first = ours
            .iter()
            .find(|(k, f)| theirs.get(*k) != Some(*f))
            .map(|(k, f)| format!("{k:?}: ours {f:?}, baseline {:?}", theirs.get(*k)));
        bail!(
            "{name}: the projection and the baseline disagree ({} and {} groups); first: {first:?}",
            ours.len(),
            theirs.len()
        );
    }
    Ok(ours.values().map(|f| f[0]).sum::<i64>().max(0) as u64)
}

/// What one question measured.
#[derive(Debug, Clone)]
pub struct Measured {
    pub name: String,
    pub groups: usize,
    /// Received in the period, summed over groups: what the answer is about.
    pub received: u64,
    pub ours: Vec<Duration>,
    /// Ours without decoding: `store::query_text` sent and its rows received, not read.
    pub sql_only: Vec<Duration>,
    pub baseline: Vec<Duration>,
    /// `store::query_reference` (the day grain summed over all history), a few runs.
    pub reference: Vec<Duration>,
}

/// Asks each question `runs` times each way, interleaved; the baseline stops early once it has
/// spent `baseline_budget` on a question (it is reported with its count).
pub async fn measure(
    pool: &PgPool,
    questions: &[Question],
    runs: usize,
    baseline_budget: Duration,
    with_reference: bool,
) -> Result<Vec<Measured>> {
    let mut out = Vec::new();
    for q in questions {
        let sql = baseline_sql(&q.query);
        // Correctness first, and warm-up (not timed).
        let ours = store::query(pool, &q.query).await?;
        let theirs = baseline(pool, &q.query, &sql).await?;
        let received = agree(&q.name, &ours, &theirs)?;
        // The reference's check run is also its first timed run (at 10M dossiers one run takes
        // minutes: it sums the all-dimension day grain of the whole history).
        let mut reference_runs = Vec::new();
        let reference = if with_reference {
            let t = Instant::now();
            let answer = store::query_reference(pool, &q.query).await?;
            reference_runs.push(t.elapsed());
            answer
        } else {
            ours.clone()
        };
        if reference != ours {
            bail!(
                "{}: store::query differs from store::query_reference",
                q.name
            );
        }
        for _ in 0..3 {
            store::query(pool, &q.query).await?;
        }
        baseline(pool, &q.query, &sql).await?;

        let mut m = Measured {
            name: q.name.clone(),
            groups: ours.len(),
            received,
            ours: Vec::with_capacity(runs),
            sql_only: Vec::with_capacity(runs),
            baseline: Vec::with_capacity(runs),
            reference: reference_runs,
        };
        let mut spent = Duration::ZERO;
        for _ in 0..runs {
            let t = Instant::now();
            let answer = store::query(pool, &q.query).await?;
            m.ours.push(t.elapsed());
            std::hint::black_box(answer);
            let t = Instant::now();
            sqlx::raw_sql(sqlx::AssertSqlSafe(store::query_text(&q.query)))
                .execute(pool)
                .await?;
            m.sql_only.push(t.elapsed());
            if spent < baseline_budget {
                let t = Instant::now();
                let answer = baseline(pool, &q.query, &sql).await?;
                let e = t.elapsed();
                spent += e;
                m.baseline.push(e);
                std::hint::black_box(answer);
            }
        }
        // Up to 3 runs in all, and no more once they have taken the baseline's budget.
        while with_reference
            && m.reference.len() < 3
            && m.reference.iter().sum::<Duration>() < baseline_budget
        {
            let t = Instant::now();
            std::hint::black_box(store::query_reference(pool, &q.query).await?);
            m.reference.push(t.elapsed());
        }
        m.ours.sort_unstable();
        m.sql_only.sort_unstable();
        m.baseline.sort_unstable();
        m.reference.sort_unstable();
        eprintln!(
            "bench: Q  {}: ours p50 {:.2} ms p99 {:.2} ms ({} runs; its SQL alone p50 {:.2} ms p99 {:.2} ms); baseline p50 {:.1} ms p99 {:.1} ms ({} runs)",
            m.name,
            ms(pct(&m.ours, 50.0)),
            ms(pct(&m.ours, 99.0)),
            m.ours.len(),
            ms(pct(&m.sql_only, 50.0)),
            ms(pct(&m.sql_only, 99.0)),
            ms(pct(&m.baseline, 50.0)),
            ms(pct(&m.baseline, 99.0)),
            m.baseline.len(),
        );
        out.push(m);
    }
    Ok(out)
}

/// Nearest-rank percentile of sorted durations.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Above this many dossiers `store::query_reference` is not run: it sums the all-dimension day
/// grain of the whole history through the long view (about 30 s a question at 1M on a loaded
/// machine, minutes at 10M). Every answer is still checked against the baseline's.
pub const REFERENCE_MAX_DOSSIERS: u64 = 2_000_000;

/// Loads, checks and measures: scenario Q.
pub async fn run(
    pool: &PgPool,
    dossiers: u64,
    runs: usize,
    baseline_budget: Duration,
    rollups: &[u8],
    quick: bool,
) -> Result<(Loaded, Vec<Measured>)> {
    let questions = questions();
    for q in &questions {
        let needed = rollup::rollup_for(&q.query);
        if !rollups.contains(&needed) {
            bail!(
                "--rollups must include {needed}, which \"{}\" reads",
                q.name
            );
        }
    }
    let all = ROLLUPS.iter().all(|r| rollups.contains(r));
    let catalog = Catalog::new();
    let loaded = load(pool, &catalog, dossiers, rollups, quick && all)
        .await
        .context("loading the synthetic dossiers")?;
    eprintln!(
        "bench: Q  loaded {} dossiers: {} rollup rows ({:.1} GiB), per-dossier table {:.1} GiB; \
         generate {:.0} s, load {:.0} s",
        loaded.dossiers,
        loaded.rollup_rows,
        loaded.rollup_bytes as f64 / (1u64 << 30) as f64,
        loaded.dossier_bytes as f64 / (1u64 << 30) as f64,
        loaded.generate.as_secs_f64(),
        loaded.load.as_secs_f64()
    );
    crate::settle(pool, true).await?;
    if let Some(aggregates) = &loaded.aggregates {
        check_fully(pool, aggregates, &questions).await?;
    }
    // `query_reference` reads the all-dimension day grain.
    // Beyond `REFERENCE_MAX_DOSSIERS`, one run of the reference takes minutes per question.
    let with_reference =
        rollups.contains(&rollup::ALL_DIMENSIONS) && dossiers <= REFERENCE_MAX_DOSSIERS;
    let measured = measure(pool, &questions, runs, baseline_budget, with_reference).await?;
    Ok((loaded, measured))
}
