//! The agency structure of a chosen date: two agencies merged into one from 1 July 2025 (the
//! two-tier reform; shared/DOMAIN.md "Two-tier local government"). Counted under the structure
//! of their time or under the successors of a date, the province's totals are the same; the
//! per-agency and per-level rows differ as the merge says.

use std::collections::BTreeMap;

use domain::Level;
use stats::{
    AgencyStructure, Aggregates, Dimension, GroupKey, InStructure, Query, SliceFilter,
    StructureError, StructureFile, Totals, indicators,
};

use crate::support::*;

const A1: &str = "000.31.12.H40";
const A2: &str = "000.32.12.H40";
const MERGED: &str = "000.40.12.H40";

/// A1 and A2 (communes) merged into MERGED, and the district HOME dissolved into it, from
/// 2025-07-01; the district level abolished then.
fn structure() -> AgencyStructure {
    let file: StructureFile = toml::from_str(
        r#"
        [[agency]]
        code = "000.31.12.H40"
        name = "A1"
        level = "commune"
        [[agency]]
        code = "000.32.12.H40"
        name = "A2"
        level = "commune"
        [[agency]]
        code = "000.40.12.H40"
        name = "A merged"
        level = "commune"
        [[agency]]
        code = "000.00.12.H40"
        name = "district"
        level = "district"
        [[change]]
        agency = "000.31.12.H40"
        from = "2025-07-01"
        kind = "merged"
        successor = "000.40.12.H40"
        [[change]]
        agency = "000.32.12.H40"
        from = "2025-07-01"
        kind = "merged"
        successor = "000.40.12.H40"
        [[change]]
        agency = "000.00.12.H40"
        from = "2025-07-01"
        kind = "dissolved"
        successor = "000.40.12.H40"
        [[level_abolished]]
        level = "district"
        from = "2025-07-01"
        "#,
    )
    .expect("the structure parses");
    AgencyStructure::new(&file.entries()).expect("a valid structure")
}

fn at(code: &str, level: Level) -> domain::Profile {
    let mut p = profile();
    p.agency = agency(code);
    p.level = level;
    p
}

/// Dossiers of A1, A2 and the district before the merge, and of MERGED after it; resolved
/// early, late, or still pending.
fn lives() -> Vec<Life> {
    let mut lives = Vec::new();
    for (code, level, day) in [
        (A1, Level::Commune, 3),
        (A1, Level::Commune, 4),
        (A2, Level::Commune, 5),
        (HOME, Level::District, 6),
    ] {
        let mut life = received_as(vn(2025, 3, day, 9, 0), at(code, level), false, None);
        life.act(vn(2025, 3, day + 1, 9, 0), resolve());
        lives.push(life);
    }
    let mut late = received_as(vn(2025, 6, 2, 9, 0), at(A2, Level::Commune), false, None);
    late.act(vn(2025, 7, 15, 9, 0), resolve());
    lives.push(late);
    lives.push(received_as(
        vn(2025, 6, 20, 9, 0),
        at(A1, Level::Commune),
        false,
        None,
    ));
    let mut after = received_as(
        vn(2025, 8, 4, 9, 0),
        at(MERGED, Level::Commune),
        false,
        None,
    );
    after.act(vn(2025, 8, 5, 9, 0), resolve());
    lives.push(after);
    lives.push(received_as(
        vn(2025, 9, 1, 9, 0),
        at(OTHER, Level::Province),
        false,
        None,
    ));
    lives
}

fn aggregates(lives: &[Life]) -> Aggregates {
    let mut a = Aggregates::new();
    for life in lives {
        a.add_contribution(&life.contribution());
    }
    a
}

fn query(group_by: Vec<Dimension>, filter: SliceFilter) -> Query {
    Query {
        from: date(2025, 1, 1),
        to: date(2026, 1, 1),
        filter,
        group_by,
    }
}

/// The answer to `q` in the structure of `date` (relabelled at query time).
fn in_structure(a: &Aggregates, q: &Query, date: chrono::NaiveDate) -> BTreeMap<GroupKey, Totals> {
    let s = structure();
    let view = InStructure {
        structure: &s,
        date,
    };
    view.regroup(q, &a.query(&view.stored_query(q)))
}

fn sum(groups: &BTreeMap<GroupKey, Totals>, q: &Query) -> Totals {
    let mut all = Totals::empty(q.from, q.to);
    for t in groups.values() {
        all.merge(t);
    }
    all
}

fn key(values: &[&str]) -> GroupKey {
    values.iter().map(|v| (*v).to_owned()).collect()
}

#[test]
fn the_province_totals_are_the_same_in_either_structure() {
    let a = aggregates(&lives());
    for group_by in [
        vec![],
        vec![Dimension::Agency],
        vec![Dimension::Level],
        vec![Dimension::Sector, Dimension::Agency],
    ] {
        let q = query(group_by.clone(), SliceFilter::default());
        let of_their_time = a.query(&q);
        for date in [date(2025, 6, 30), date(2025, 7, 1), date(2026, 1, 1)] {
            let regrouped = in_structure(&a, &q, date);
            assert_eq!(
                sum(&regrouped, &q),
                sum(&of_their_time, &q),
                "{group_by:?} at {date}"
            );
            assert_eq!(
                indicators(&sum(&regrouped, &q)),
                indicators(&sum(&of_their_time, &q))
            );
        }
        // Before the reform the structure of the date is the structure of their time.
        assert_eq!(in_structure(&a, &q, date(2025, 6, 30)), of_their_time);
    }
}

#[test]
fn per_agency_and_level_rows_follow_the_merge() {
    let a = aggregates(&lives());
    let q = query(vec![Dimension::Agency], SliceFilter::default());
    let received = |groups: &BTreeMap<GroupKey, Totals>| -> Vec<(String, i64)> {
        groups
            .iter()
            .map(|(k, t)| (k[0].clone(), indicators(t).received.total))
            .collect()
    };
    // Structure of their time: each agency as recorded.
    assert_eq!(
        received(&a.query(&q)),
        vec![
            (OTHER.to_owned(), 1),
            (HOME.to_owned(), 1),
            (A1.to_owned(), 3),
            (A2.to_owned(), 2),
            (MERGED.to_owned(), 1),
        ]
    );
    // Today's structure: A1, A2 and the district's history under the merged commune.
    let today = in_structure(&a, &q, date(2026, 1, 1));
    assert_eq!(
        received(&today),
        vec![(OTHER.to_owned(), 1), (MERGED.to_owned(), 7)]
    );
    let merged = &today[&key(&[MERGED])];
    let i = indicators(merged);
    assert_eq!((i.resolved.total, i.resolved.late), (6, 1));
    assert_eq!(i.pending.total, 1);

    // By level: the district's row is gone in today's structure (its history is a commune's).
    let by_level = query(vec![Dimension::Level], SliceFilter::default());
    let levels = |groups: &BTreeMap<GroupKey, Totals>| -> Vec<String> {
        groups.keys().map(|k| k[0].clone()).collect()
    };
    assert_eq!(
        levels(&a.query(&by_level)),
        ["commune", "district", "province"]
    );
    assert_eq!(
        levels(&in_structure(&a, &by_level, date(2025, 7, 1))),
        ["commune", "province"]
    );
}

#[test]
fn a_filter_on_the_successor_counts_its_predecessors() {
    let a = aggregates(&lives());
    let filter = SliceFilter {
        agency: Some(agency(MERGED)),
        ..SliceFilter::default()
    };
    let q = query(vec![], filter);
    assert_eq!(indicators(&a.query(&q)[&key(&[])]).received.total, 1);
    let today = in_structure(&a, &q, date(2025, 7, 1));
    assert_eq!(indicators(&today[&key(&[])]).received.total, 7);
    // A predecessor no longer exists in that structure: nothing counts under it.
    let gone = query(
        vec![],
        SliceFilter {
            agency: Some(agency(A1)),
            ..SliceFilter::default()
        },
    );
    let answer = in_structure(&a, &gone, date(2025, 7, 1));
    assert_eq!(indicators(&answer[&key(&[])]).received.total, 0);
    // A district filter in today's structure finds nothing; in March's, the district's own.
    let district = query(
        vec![],
        SliceFilter {
            level: Some(Level::District),
            ..SliceFilter::default()
        },
    );
    let received = |d| {
        indicators(&in_structure(&a, &district, d)[&key(&[])])
            .received
            .total
    };
    assert_eq!(received(date(2025, 7, 1)), 0);
    assert_eq!(received(date(2025, 3, 31)), 1);
}

#[test]
fn invalid_structures_are_refused_with_their_reason() {
    let parse = |text: &str| {
        let file: StructureFile = toml::from_str(text).expect("parses");
        AgencyStructure::new(&file.entries())
    };
    let decl =
        |code: &str| format!("[[agency]]\ncode = \"{code}\"\nname = \"x\"\nlevel = \"commune\"\n");
    // An undeclared successor.
    let e = parse(&format!(
        "{}[[change]]\nagency = \"{A1}\"\nfrom = \"2025-07-01\"\nkind = \"merged\"\nsuccessor = \"{A2}\"\n",
        decl(A1)
    ))
    .unwrap_err();
    assert!(matches!(e, StructureError::BadChange { .. }), "{e}");
    // A merge without successor.
    let e = parse(&format!(
        "{}[[change]]\nagency = \"{A1}\"\nfrom = \"2025-07-01\"\nkind = \"merged\"\n",
        decl(A1)
    ))
    .unwrap_err();
    assert!(e.to_string().contains("names its successor"), "{e}");
    // A cycle through two renames.
    let e = parse(&format!(
        "{}{}[[change]]\nagency = \"{A1}\"\nfrom = \"2025-07-01\"\nkind = \"renamed\"\nsuccessor = \"{A2}\"\n\
         [[change]]\nagency = \"{A2}\"\nfrom = \"2025-08-01\"\nkind = \"renamed\"\nsuccessor = \"{A1}\"\n",
        decl(A1),
        decl(A2)
    ))
    .unwrap_err();
    assert!(
        matches!(&e, StructureError::Cycle { agencies, date: d }
            if *d == date(2025, 8, 1) && agencies.len() == 2),
        "{e}"
    );
    // The same entry twice with different content.
    let file: StructureFile = toml::from_str(&decl(A1)).unwrap();
    let mut entries = file.entries();
    let mut other = entries[0].clone();
    if let stats::StructureEntry::Agency(a) = &mut other {
        a.level = Level::Province;
    }
    entries.push(entries[0].clone());
    assert!(
        AgencyStructure::new(&entries).is_ok(),
        "an identical repeat is one entry"
    );
    entries.push(other);
    assert!(matches!(
        AgencyStructure::new(&entries),
        Err(StructureError::Contradiction(_))
    ));
}

#[test]
fn chains_of_changes_and_level_changes_follow_the_date() {
    let file: StructureFile = toml::from_str(&format!(
        r#"
        [[agency]]
        code = "{A1}"
        name = "A1"
        level = "district"
        [[agency]]
        code = "{A2}"
        name = "A2"
        level = "district"
        [[agency]]
        code = "{MERGED}"
        name = "M"
        level = "commune"
        [[change]]
        agency = "{A1}"
        from = "2025-03-01"
        kind = "renamed"
        successor = "{A2}"
        [[change]]
        agency = "{A2}"
        from = "2025-07-01"
        kind = "merged"
        successor = "{MERGED}"
        [[change]]
        agency = "{MERGED}"
        from = "2026-01-01"
        kind = "level"
        level = "province"
        "#
    ))
    .unwrap();
    let s = AgencyStructure::new(&file.entries()).unwrap();
    let at = |d| {
        let (level, a) = s.successor_at(Level::District, &agency(A1), d);
        (level, a.as_str().to_owned())
    };
    assert_eq!(at(date(2025, 2, 28)), (Level::District, A1.to_owned()));
    assert_eq!(at(date(2025, 3, 1)), (Level::District, A2.to_owned()));
    assert_eq!(at(date(2025, 7, 1)), (Level::Commune, MERGED.to_owned()));
    assert_eq!(at(date(2026, 1, 1)), (Level::Province, MERGED.to_owned()));
    // An agency the structure does not know keeps its code and recorded level.
    assert_eq!(
        s.successor_at(Level::Commune, &agency(OTHER), date(2026, 1, 1)),
        (Level::Commune, agency(OTHER))
    );
}

#[test]
fn the_shipped_example_is_a_valid_structure() {
    let file: StructureFile = toml::from_str(include_str!(
        "../../../../deploy/config/agency-structure.toml"
    ))
    .expect("deploy/config/agency-structure.toml parses");
    let s = AgencyStructure::new(&file.entries()).expect("and is valid");
    assert!(!s.level_in_use(Level::District, date(2025, 7, 1)));
    assert!(s.level_in_use(Level::District, date(2025, 6, 30)));
}

#[test]
fn refusals_name_the_entry_and_the_field_at_fault() {
    let refused = |text: &str| {
        let file: StructureFile = toml::from_str(text).expect("parses");
        AgencyStructure::new(&file.entries()).unwrap_err()
    };
    let decl = |code: &str, name: &str| {
        format!("[[agency]]\ncode = \"{code}\"\nname = \"{name}\"\nlevel = \"commune\"\n")
    };
    let change = |agency: &str, from: &str, kind: &str, rest: &str| {
        format!("[[change]]\nagency = \"{agency}\"\nfrom = \"{from}\"\nkind = \"{kind}\"\n{rest}")
    };
    let field_of = |e: &StructureError| match e {
        StructureError::BadChange { field, .. } | StructureError::BadEntry { field, .. } => *field,
        other => panic!("not a field's fault: {other}"),
    };
    // An undeclared successor: the successor field.
    let e = refused(&format!(
        "{}{}",
        decl(A1, "a"),
        change(
            A1,
            "2025-07-01",
            "merged",
            &format!("successor = \"{A2}\"\n")
        )
    ));
    assert_eq!(field_of(&e), "successor", "{e}");
    // A date outside the supported years: the from field.
    let e = refused(&format!(
        "{}{}{}",
        decl(A1, "a"),
        decl(A2, "b"),
        change(
            A1,
            "1989-12-31",
            "merged",
            &format!("successor = \"{A2}\"\n")
        )
    ));
    assert_eq!(field_of(&e), "from", "{e}");
    assert!(e.to_string().contains("1990 to 2100"), "{e}");
    let e = refused("[[level_abolished]]\nlevel = \"district\"\nfrom = \"2101-01-01\"\n");
    assert_eq!(field_of(&e), "from", "{e}");
    // A merge that also names a level: the level field.
    let e = refused(&format!(
        "{}{}{}",
        decl(A1, "a"),
        decl(A2, "b"),
        change(
            A1,
            "2025-07-01",
            "merged",
            &format!("successor = \"{A2}\"\nlevel = \"province\"\n")
        )
    ));
    assert_eq!(field_of(&e), "level", "{e}");
    // A level change without its level.
    let e = refused(&format!(
        "{}{}",
        decl(A1, "a"),
        change(A1, "2025-07-01", "level", "")
    ));
    assert_eq!(field_of(&e), "level", "{e}");
    // A level change of an agency after its merge would take its history back: refused;
    // a correction naming a new successor is a later change, accepted.
    let merged_then = |rest: &str| {
        format!(
            "{}{}{}{}{rest}",
            decl(A1, "a"),
            decl(A2, "b"),
            decl(MERGED, "m"),
            change(
                A1,
                "2025-07-01",
                "merged",
                &format!("successor = \"{A2}\"\n")
            ),
        )
    };
    let e = refused(&merged_then(&change(
        A1,
        "2025-08-01",
        "level",
        "level = \"province\"\n",
    )));
    assert_eq!(field_of(&e), "kind", "{e}");
    let corrected: StructureFile = toml::from_str(&merged_then(&change(
        A1,
        "2025-08-01",
        "merged",
        &format!("successor = \"{MERGED}\"\n"),
    )))
    .unwrap();
    let s = AgencyStructure::new(&corrected.entries()).expect("a correction is a later change");
    assert_eq!(
        s.successor_at(Level::Commune, &agency(A1), date(2025, 8, 1))
            .1,
        agency(MERGED)
    );
    // An empty name.
    let e = refused(&decl(A1, " "));
    assert_eq!(field_of(&e), "name", "{e}");
    // A circle of three from the date of its last link: every agency on it is named, and an
    // agency leading into it (MERGED → A1) is not.
    let e = refused(&format!(
        "{}{}{}{}{}{}{}{}",
        decl(A1, "a"),
        decl(A2, "b"),
        decl(MERGED, "m"),
        decl(HOME, "h"),
        change(
            A1,
            "2025-07-01",
            "renamed",
            &format!("successor = \"{A2}\"\n")
        ),
        change(
            A2,
            "2025-07-01",
            "merged",
            &format!("successor = \"{HOME}\"\n")
        ),
        change(
            HOME,
            "2025-09-01",
            "merged",
            &format!("successor = \"{A1}\"\n")
        ),
        change(
            MERGED,
            "2025-01-01",
            "merged",
            &format!("successor = \"{A1}\"\n")
        ),
    ));
    match &e {
        StructureError::Cycle { agencies, date: at } => {
            assert_eq!(*at, date(2025, 9, 1));
            let mut on: Vec<&str> = agencies.iter().map(|a| a.as_str()).collect();
            on.sort_unstable();
            let mut expected = vec![A1, A2, HOME];
            expected.sort_unstable();
            assert_eq!(on, expected, "{e}");
        }
        other => panic!("{other}"),
    }
}
