//! The rollups answer exactly what the plain day sums answer, for random contributions and
//! random queries across month and year edges.

use chrono::{Datelike, NaiveDate};
use domain::{AgencyCode, ApplicantType, Channel, Level, ProcedureCode, SectorCode};
use projection::{rollup, store};
use stats::{Aggregates, Dimension, Query, SliceFilter};

use crate::support::{
    AGENCIES, PROCEDURES, Rng, SECTORS, migrated_db, normal, random_contribution, random_day,
};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

fn random_query(rng: &mut Rng) -> Query {
    // Periods from empty to multi-year, starting and ending anywhere, often on edges.
    let edge_or_any = |rng: &mut Rng| {
        let d = random_day(rng, date(2022, 9, 1), date(2025, 6, 1));
        match rng.below(4) {
            0 => d.with_day0(0).unwrap(),
            1 => d.with_ordinal0(0).unwrap(),
            _ => d,
        }
    };
    let a = edge_or_any(rng);
    let b = edge_or_any(rng);
    let (from, to) = if a <= b { (a, b) } else { (b, a) };
    let mut filter = SliceFilter::default();
    if rng.chance(25) {
        filter.level = Some(*rng.pick(Level::ALL));
    }
    if rng.chance(25) {
        let agency = if rng.chance(10) {
            "unknown"
        } else {
            *rng.pick(&AGENCIES)
        };
        filter.agency = Some(AgencyCode::parse(agency).unwrap());
    }
    if rng.chance(20) {
        filter.sector = Some(SectorCode::parse(*rng.pick(&SECTORS)).unwrap());
    }
    if rng.chance(10) {
        filter.procedure = Some(ProcedureCode::parse(*rng.pick(&PROCEDURES)).unwrap());
    }
    if rng.chance(10) {
        filter.channel = Some(*rng.pick(Channel::ALL));
    }
    if rng.chance(10) {
        filter.applicant_type = Some(*rng.pick(ApplicantType::ALL));
    }
    let mut group_by: Vec<Dimension> = Dimension::ALL
        .into_iter()
        .filter(|_| rng.chance(20))
        .collect();
    // Any order of the grouping dimensions.
    for i in (1..group_by.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        group_by.swap(i, j);
    }
    Query {
        from,
        to,
        filter,
        group_by,
    }
}

#[tokio::test]
async fn rollups_answer_like_the_plain_sums_for_random_contributions_and_queries() {
    let seed = std::env::var("ROLLUP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2024);
    eprintln!("seed {seed} (ROLLUP_SEED reproduces)");
    let mut rng = Rng::new(seed);
    let (db, _log) = migrated_db().await;
    let mut model = Aggregates::new();

    // Dossiers applied in a few transactions, some later changed (old → new), as apply does.
    let mut contributions = Vec::new();
    for batch in 0..8 {
        let mut tx = db.pool.begin().await.unwrap();
        for _ in 0..40 {
            let new = random_contribution(&mut rng, date(2022, 10, 1), date(2025, 4, 1));
            let diff = stats::diff(None, Some(&new));
            store::add_diff(&mut tx, &diff).await.unwrap();
            model.apply(&diff);
            contributions.push(new);
        }
        // Change some earlier dossiers: the diff has negative deltas.
        for _ in 0..10 {
            let i = rng.below(contributions.len() as u64) as usize;
            let old = contributions[i].clone();
            let new = random_contribution(&mut rng, date(2022, 10, 1), date(2025, 4, 1));
            let diff = stats::diff(Some(&old), Some(&new));
            store::add_diff(&mut tx, &diff).await.unwrap();
            model.apply(&diff);
            contributions[i] = new;
        }
        tx.commit().await.unwrap();
        eprintln!("batch {batch} applied");
    }

    let mut compared = 0;
    let mut non_empty = 0;
    for i in 0..400 {
        let query = random_query(&mut rng);
        let expected = normal(model.query(&query));
        let fast = store::query(&db.pool, &query).await.unwrap();
        assert_eq!(fast, expected, "query {i}: {query:?}");
        let reference = store::query_reference(&db.pool, &query).await.unwrap();
        assert_eq!(reference, expected, "reference, query {i}: {query:?}");
        compared += 1;
        if expected
            .values()
            .any(|t| !t.flows.is_empty() || !t.at_end.is_empty())
        {
            non_empty += 1;
        }
    }
    // The comparison is worth something only if most answers hold figures.
    assert!(
        non_empty * 2 > compared,
        "{non_empty} of {compared} answers hold figures"
    );
}

/// Applies `n` random new dossiers' contributions (received in `[from, to)`) in one
/// transaction, as `apply` adds their diffs.
async fn apply_random(
    pool: &sqlx::PgPool,
    rng: &mut Rng,
    n: usize,
    from: NaiveDate,
    to: NaiveDate,
) {
    let mut tx = pool.begin().await.unwrap();
    for _ in 0..n {
        let c = random_contribution(rng, from, to);
        store::add_diff(&mut tx, &stats::diff(None, Some(&c)))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_year_of_province_wide_figures_reads_a_constant_number_of_rows() {
    let (db, _log) = migrated_db().await;
    let mut rng = Rng::new(7);
    apply_random(&db.pool, &mut rng, 200, date(2015, 1, 1), date(2025, 1, 1)).await;
    // What the rollup {} holds for a year: flows from one year row; stocks from the years
    // before and one day. Ten years of history, still a few hundred rows at most.
    let query = Query {
        from: date(2024, 1, 1),
        to: date(2025, 1, 1),
        filter: SliceFilter::default(),
        group_by: vec![],
    };
    assert_eq!(rollup::rollup_for(&query), 0);
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stats_rollup WHERE rollup = 0 AND \
         ((grain = 'y' AND period <= '2025-01-01') OR (grain = 'd' AND period = '2025-01-01') \
          OR (grain = 'd' AND period = '2024-01-01'))",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(
        rows <= (11 + 2) * stats::Metric::ALL.len() as i64,
        "{rows} rows"
    );
    let answer = store::query(&db.pool, &query).await.unwrap();
    assert_eq!(
        answer,
        store::query_reference(&db.pool, &query).await.unwrap()
    );
    assert!(answer[&Vec::<String>::new()].flow(stats::Metric::Received) > 0);
}

/// Migration 30002 on a deployment that has figures in 30001's `stats_daily`: the rollups then
/// answer what the day figures gave.
#[tokio::test]
async fn migration_30002_carries_the_day_figures_over_into_every_rollup() {
    let db = testkit::TestDb::new().await;
    let log = eventlog::EventLog::from_pool(db.pool.clone());
    log.migrate().await.unwrap();
    let mut first = sqlx::migrate!("./migrations");
    first.set_ignore_missing(true);
    first.migrations = first
        .migrations
        .iter()
        .filter(|m| m.version == 30001)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    first.run(&db.pool).await.unwrap();

    let mut rng = Rng::new(30002);
    let mut model = Aggregates::new();
    for _ in 0..150 {
        let c = random_contribution(&mut rng, date(2022, 10, 1), date(2025, 4, 1));
        for ((day, metric), delta) in &c.deltas {
            sqlx::query(
                "INSERT INTO stats_daily \
                   (day, level, agency, sector, procedure, channel, applicant_type, metric, value) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (level, agency, sector, procedure, channel, applicant_type, day, \
                              metric) DO UPDATE SET value = stats_daily.value + EXCLUDED.value",
            )
            .bind(day)
            .bind(c.slice.level.as_str())
            .bind(c.slice.agency.as_str())
            .bind(c.slice.sector.as_str())
            .bind(c.slice.procedure.as_str())
            .bind(c.slice.channel.as_str())
            .bind(c.slice.applicant_type.as_str())
            .bind(metric.as_str())
            .bind(i64::try_from(*delta).unwrap())
            .execute(&db.pool)
            .await
            .unwrap();
        }
        model.add_contribution(&c);
    }

    store::migrate(&db.pool).await.unwrap();
    for i in 0..100 {
        let query = random_query(&mut rng);
        let expected = normal(model.query(&query));
        assert_eq!(
            store::query(&db.pool, &query).await.unwrap(),
            expected,
            "query {i}: {query:?}"
        );
    }
    let old: Option<String> = sqlx::query_scalar("SELECT to_regclass('stats_daily')::text")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(old, None, "stats_daily is dropped");
}

/// Migration 30003 on a deployment with `bigint` figures in `stats_rollup`: every value,
/// `i64::MAX` included, converts exactly to `numeric`, queries answer what they answered, and
/// the failures table is there.
#[tokio::test]
async fn migration_30003_converts_the_figures_exactly() {
    let db = testkit::TestDb::new().await;
    let log = eventlog::EventLog::from_pool(db.pool.clone());
    log.migrate().await.unwrap();
    let mut before = sqlx::migrate!("./migrations");
    before.set_ignore_missing(true);
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 30003)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&db.pool).await.unwrap();

    let mut rng = Rng::new(30003);
    let mut model = Aggregates::new();
    let contributions: Vec<_> = (0..120)
        .map(|_| random_contribution(&mut rng, date(2022, 10, 1), date(2025, 4, 1)))
        .collect();
    for c in &contributions {
        model.add_contribution(c);
    }
    let cells = rollup::rollup_cells(model.cells());
    for (cell, value) in &cells {
        sqlx::query(
            "INSERT INTO stats_rollup (rollup, grain, period, level, agency, sector, procedure, \
                                       channel, applicant_type, metric, value) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(i16::from(cell.rollup))
        .bind(cell.grain.code())
        .bind(cell.period)
        .bind(cell.dims[0])
        .bind(cell.dims[1])
        .bind(cell.dims[2])
        .bind(cell.dims[3])
        .bind(cell.dims[4])
        .bind(cell.dims[5])
        .bind(cell.metric.as_str())
        .bind(i64::try_from(*value).unwrap())
        .execute(&db.pool)
        .await
        .unwrap();
    }
    // The largest value `bigint` held: a cell of a metric no contribution above uses.
    sqlx::query(
        "INSERT INTO stats_rollup (rollup, grain, period, level, agency, sector, procedure, \
                                   channel, applicant_type, metric, value) \
         VALUES (0, 'y', '2019-01-01', '', '', '', '', '', '', 'payment_amount_online_vnd', $1)",
    )
    .bind(i64::MAX)
    .execute(&db.pool)
    .await
    .unwrap();

    store::migrate(&db.pool).await.unwrap();
    let kind: String = sqlx::query_scalar(
        "SELECT data_type FROM information_schema.columns \
         WHERE table_name = 'stats_rollup' AND column_name = 'value'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(kind, "numeric");
    for i in 0..60 {
        let query = random_query(&mut rng);
        let expected = normal(model.query(&query));
        assert_eq!(
            store::query(&db.pool, &query).await.unwrap(),
            expected,
            "query {i}: {query:?}"
        );
    }
    let old = Query {
        from: date(2019, 1, 1),
        to: date(2020, 1, 1),
        filter: SliceFilter::default(),
        group_by: Vec::new(),
    };
    let answer = store::query(&db.pool, &old).await.unwrap();
    assert_eq!(
        answer[&Vec::<String>::new()].flow(stats::Metric::PaymentAmountOnlineVnd),
        i128::from(i64::MAX)
    );
    assert_eq!(store::failing_dossiers(&db.pool).await.unwrap(), 0);
}

/// Migration 30010 on a deployment with figures in the long `stats_rollup`: every cell is
/// carried over exactly into `stats_slice` and `stats_cells` (the view `stats_rollup` shows
/// the same rows, a value beyond `i64` included), and queries answer what the figures say.
#[tokio::test]
async fn migration_30010_carries_the_figures_over_exactly() {
    let db = testkit::TestDb::new().await;
    let log = eventlog::EventLog::from_pool(db.pool.clone());
    log.migrate().await.unwrap();
    let mut before = sqlx::migrate!("./migrations");
    before.set_ignore_missing(true);
    before.migrations = before
        .migrations
        .iter()
        .filter(|m| m.version < 30010)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    before.run(&db.pool).await.unwrap();

    let mut rng = Rng::new(30010);
    let mut model = Aggregates::new();
    for _ in 0..150 {
        model.add_contribution(&random_contribution(
            &mut rng,
            date(2022, 10, 1),
            date(2025, 4, 1),
        ));
    }
    let cells = rollup::rollup_cells(model.cells());
    let mut expected: Vec<String> = Vec::new();
    let huge = i128::from(i64::MAX) * 1000 + 7;
    let mut old = sqlx::QueryBuilder::new(
        "INSERT INTO stats_rollup (rollup, grain, period, level, agency, sector, procedure, \
                                   channel, applicant_type, metric, value) ",
    );
    let rows: Vec<(i16, String, NaiveDate, [String; 6], String, String)> = cells
        .iter()
        .map(|(c, v)| {
            (
                i16::from(c.rollup),
                c.grain.code().to_owned(),
                c.period,
                c.dims.map(str::to_owned),
                c.metric.as_str().to_owned(),
                v.to_string(),
            )
        })
        .chain([(
            0,
            "y".to_owned(),
            date(2019, 1, 1),
            Default::default(),
            "payment_amount_online_vnd".to_owned(),
            huge.to_string(),
        )])
        .collect();
    for (r, g, p, d, m, v) in &rows {
        expected.push(format!("{r}|{g}|{p}|{}|{m}|{v}", d.join("|")));
    }
    for chunk in rows.chunks(2000) {
        old.reset();
        old.push_values(chunk, |mut b, (r, g, p, d, m, v)| {
            b.push_bind(*r).push_bind(g).push_bind(*p);
            for x in d {
                b.push_bind(x);
            }
            b.push_bind(m).push_bind(v).push_unseparated("::numeric");
        });
        old.build().execute(&db.pool).await.unwrap();
    }
    // A cell at zero (apply leaves them): carried as nothing, the figures unchanged.
    sqlx::query(
        "INSERT INTO stats_rollup VALUES (1, 'd', '2023-05-05', 'district', '', '', '', '', '', \
           'received', 0)",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    store::migrate(&db.pool).await.unwrap();
    let mut found: Vec<String> = sqlx::query_scalar(
        "SELECT concat_ws('|', rollup, grain, period, level, agency, sector, procedure, channel, \
           applicant_type, metric, value) FROM stats_rollup",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    found.sort();
    expected.sort();
    assert_eq!(found.len(), expected.len());
    assert!(found == expected, "the long view differs from the old rows");
    let wide: i64 = sqlx::query_scalar("SELECT count(*) FROM stats_cells")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        (wide as usize) < expected.len(),
        "one wide row per slice, grain and period: {wide} rows for {} figures",
        expected.len()
    );
    for i in 0..60 {
        let query = random_query(&mut rng);
        assert_eq!(
            store::query(&db.pool, &query).await.unwrap(),
            normal(model.query(&query)),
            "query {i}: {query:?}"
        );
    }
    // The new storage takes applies after the migration.
    let c = random_contribution(&mut rng, date(2024, 1, 1), date(2024, 12, 1));
    model.add_contribution(&c);
    let mut tx = db.pool.begin().await.unwrap();
    store::add_diff(&mut tx, &stats::diff(None, Some(&c)))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for i in 0..20 {
        let query = random_query(&mut rng);
        assert_eq!(
            store::query(&db.pool, &query).await.unwrap(),
            normal(model.query(&query)),
            "after an apply, query {i}: {query:?}"
        );
    }
}

/// Slices that were never seen (an agency, a sector or a combination no dossier has) answer
/// empty: no group, or the one empty group of an ungrouped query, and no error.
#[tokio::test]
async fn a_query_for_slices_that_do_not_exist_answers_empty() {
    let (db, _log) = migrated_db().await;
    let mut rng = Rng::new(7);
    apply_random(&db.pool, &mut rng, 30, date(2024, 1, 1), date(2024, 12, 1)).await;
    let year = |filter: SliceFilter, group_by: Vec<Dimension>| Query {
        from: date(2024, 1, 1),
        to: date(2025, 1, 1),
        filter,
        group_by,
    };
    let nowhere = SliceFilter {
        agency: Some(AgencyCode::parse("NO-SUCH-AGENCY").unwrap()),
        ..SliceFilter::default()
    };
    let ungrouped = store::query(&db.pool, &year(nowhere.clone(), vec![]))
        .await
        .unwrap();
    assert_eq!(ungrouped.len(), 1);
    assert!(ungrouped[&Vec::<String>::new()].flows.is_empty());
    assert!(ungrouped[&Vec::<String>::new()].at_end.is_empty());
    let grouped = store::query(&db.pool, &year(nowhere, vec![Dimension::Sector]))
        .await
        .unwrap();
    assert!(grouped.is_empty(), "{grouped:?}");
    // Each value exists, the combination does not (a procedure of another sector).
    let mismatched = SliceFilter {
        sector: Some(SectorCode::parse(SECTORS[0]).unwrap()),
        procedure: Some(ProcedureCode::parse("9.999").unwrap()),
        ..SliceFilter::default()
    };
    let grouped = store::query(&db.pool, &year(mismatched, vec![Dimension::Agency]))
        .await
        .unwrap();
    assert!(grouped.is_empty(), "{grouped:?}");
}
