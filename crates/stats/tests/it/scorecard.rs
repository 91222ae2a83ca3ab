//! The 766 index in points (Decision 766/QĐ-TTg, 23 June 2022; columns and maxima as the
//! national portal publishes them: CKMB 18, TDGQ 20, CLGQ 12, TTTT 10, MDHL 18, MDSH 22). The
//! sub-indicators are those of `deploy/config/scorecard-766.toml`, as other provincial
//! systems compute them (shared/DOMAIN.md, "The 766 index in points": unconfirmed).

use std::collections::BTreeMap;

use stats::scorecard::{Column, ColumnScore, Rule, ScoringConfig, SubScore, score, scorecard};
use stats::{Metric, Rate, Totals};

use crate::support::*;

fn shipped() -> ScoringConfig {
    let config: ScoringConfig =
        toml::from_str(include_str!("../../../../deploy/config/scorecard-766.toml"))
            .expect("deploy/config/scorecard-766.toml parses");
    config.validate().expect("and is valid");
    config
}

fn totals(flows: &[(Metric, i128)], at_end: &[(Metric, i128)]) -> Totals {
    Totals {
        from: date(2025, 7, 1),
        to: date(2025, 10, 1),
        flows: flows.iter().copied().collect(),
        at_start: BTreeMap::new(),
        at_end: at_end.iter().copied().collect(),
    }
}

fn quarter() -> Totals {
    totals(
        &[
            (Metric::Received, 10),
            (Metric::ReceivedOnline, 4),
            (Metric::ReceivedAllDigitized, 8),
            (Metric::ReceivedReused, 7),
            (Metric::Resolved, 5),
            (Metric::Resolved766InTime, 4),
            (Metric::ResolvedResultDigitized, 4),
            (Metric::ResolvedProcessingMinutes, 600),
            (Metric::ReceivedWithFee, 4),
            (Metric::ReceivedWithFeePaidOnline, 2),
            (Metric::RatedVerySatisfied, 5),
            (Metric::RatedSatisfied, 4),
            (Metric::RatedUnsatisfied, 1),
        ],
        &[(Metric::Pending, 5), (Metric::Pending766WithinTime, 4)],
    )
}

fn points(p: i64, n: i64, d: i64) -> SubScore {
    SubScore::Points {
        points: p,
        rate: Rate::new(n, d),
    }
}

/// Each sub-indicator of the shipped scoring, with the rule its comment cites.
#[test]
fn every_sub_indicator_of_the_shipped_scoring() {
    let card = scorecard(&shipped(), &quarter()).expect("a version in force");
    let got: BTreeMap<&str, SubScore> = card
        .subs
        .iter()
        .map(|(s, score)| (s.id.as_str(), score.clone()))
        .collect();
    let not_computed = |id: &str| matches!(got[id], SubScore::NotComputed { .. });
    for (id, expected) in [
        // 20 × (4 in time + 4 within time) / (5 resolved + 5 pending).
        ("tdgq_progress", points(1600, 8, 10)),
        // 40 % online < 50 %: half of 6.
        ("clgq_online_submission", points(300, 4, 10)),
        // 50 % paid online ≥ 30 %: 6.
        ("tttt_paid_online", points(600, 2, 4)),
        // 90 % satisfied ≥ 90 % (unconfirmed): 6.
        ("mdhl_satisfaction", points(600, 9, 10)),
        // 6 × 80 % electronic results.
        ("mdsh_results_digitized", points(480, 4, 5)),
        // 80 % digitized ≥ 80 %: 4; 70 % reuse < 80 %: 0.
        ("mdsh_dossiers_digitized", points(400, 8, 10)),
        ("mdsh_data_reuse", points(0, 7, 10)),
    ] {
        assert_eq!(got[id], expected, "{id}");
    }
    for id in [
        "ckmb_transparency",
        "clgq_procedures_online",
        "clgq_online_procedures_used",
        "tttt_procedures_with_payment",
        "tttt_payable_on_portal",
        "mdhl_other",
        "mdsh_other",
    ] {
        assert!(not_computed(id), "{id} needs outside data: not computed");
    }
    let columns: BTreeMap<Column, ColumnScore> = card.columns.into_iter().collect();
    let col = |points, computed_max, max| ColumnScore {
        points,
        computed_max,
        max,
    };
    assert_eq!(columns[&Column::Ckmb], col(None, 0, 1800));
    assert_eq!(columns[&Column::Tdgq], col(Some(1600), 2000, 2000));
    assert_eq!(columns[&Column::Clgq], col(Some(300), 600, 1200));
    assert_eq!(columns[&Column::Tttt], col(Some(600), 600, 1000));
    assert_eq!(columns[&Column::Mdhl], col(Some(600), 600, 1800));
    assert_eq!(columns[&Column::Mdsh], col(Some(880), 1200, 2200));
    assert_eq!(card.total, col(Some(3980), 5000, 10000));
    assert_eq!(card.processing_time.mean_hours(), Some(2.0));
}

/// A rate with no denominator is "no dossiers", never 0 points; a column with nothing
/// computed has no points.
#[test]
fn nothing_to_judge_is_not_zero() {
    let card = scorecard(&shipped(), &totals(&[], &[])).unwrap();
    for (s, score) in &card.subs {
        match &s.rule {
            Rule::NotComputed { .. } => {
                assert!(matches!(score, SubScore::NotComputed { .. }), "{}", s.id);
            }
            _ => assert_eq!(
                *score,
                SubScore::NoDossiers {
                    rate: Rate::new(0, 0)
                },
                "{}",
                s.id
            ),
        }
    }
    assert!(card.columns.iter().all(|(_, c)| c.points.is_none()));
    assert_eq!(card.total.points, None);
    assert_eq!(card.processing_time.mean_hours(), None);
}

/// Proportional points are exact hundredths, half rounded up: Quảng Trị H1 2023's 151,606 of
/// 152,243 (99.58 %) as progress gives 20 × 0.995816… = 19.916… → 19.92.
#[test]
fn proportional_points_round_half_up_in_hundredths() {
    let config = shipped();
    let version = config.in_force(date(2025, 1, 1)).unwrap();
    let tdgq = version
        .indicators
        .iter()
        .find(|s| s.id == "tdgq_progress")
        .unwrap();
    let t = totals(
        &[
            (Metric::Resolved, 152_243),
            (Metric::Resolved766InTime, 151_606),
        ],
        &[],
    );
    assert_eq!(score(tdgq, &t), points(1992, 151_606, 152_243));
    // 1/8 of 20 = 2.5 exactly; 1/3 of 20 = 6.666… → 6.67.
    for (n, d, p) in [
        (1, 8, 250),
        (1, 3, 667),
        (2, 3, 1333),
        (0, 7, 0),
        (7, 7, 2000),
    ] {
        let t = totals(
            &[(Metric::Resolved, d), (Metric::Resolved766InTime, n)],
            &[],
        );
        assert_eq!(score(tdgq, &t), points(p, n as i64, d as i64), "{n}/{d}");
    }
}

/// The version in force on the period's last day applies: a new rule from a date does not
/// change the scores of earlier periods.
#[test]
fn the_version_in_force_on_the_last_day_applies() {
    let mut config = shipped();
    let mut newer = config.versions[0].clone();
    newer.effective_from = date(2025, 9, 1);
    for s in &mut newer.indicators {
        if s.id == "clgq_online_submission" {
            s.rule = Rule::Proportional {
                measure: stats::scorecard::Measure::OnlineSubmission,
            };
        }
    }
    config.versions.push(newer);
    config.validate().unwrap();
    let online = |card: &stats::scorecard::Scorecard| {
        card.subs
            .iter()
            .find(|(s, _)| s.id == "clgq_online_submission")
            .map(|(_, score)| score.clone())
            .unwrap()
    };
    // Q3 2025 ends after 1 September: 6 × 40 % = 2.40.
    let card = scorecard(&config, &quarter()).unwrap();
    assert_eq!(card.version_from, date(2025, 9, 1));
    assert_eq!(online(&card), points(240, 4, 10));
    // July alone: the first version, half of 6.
    let mut july = quarter();
    july.to = date(2025, 8, 1);
    let card = scorecard(&config, &july).unwrap();
    assert_eq!(card.version_from, date(2022, 6, 23));
    assert_eq!(online(&card), points(300, 4, 10));
    // Before any version: no scorecard.
    let mut early = quarter();
    early.from = date(2022, 1, 1);
    early.to = date(2022, 2, 1);
    assert!(scorecard(&config, &early).is_none());
}

#[test]
fn invalid_scorings_are_refused_with_their_reason() {
    let broken = |edit: &dyn Fn(&mut ScoringConfig)| {
        let mut c = shipped();
        edit(&mut c);
        c.validate().unwrap_err().message
    };
    let e = broken(&|c| c.versions[0].indicators[1].max_points = 19.0);
    assert!(e.contains("TDGQ add up to 19.00 points, not 20"), "{e}");
    let e = broken(&|c| c.versions[0].indicators[2].id = "tdgq_progress".to_owned());
    assert!(e.contains("repeated"), "{e}");
    let e = broken(&|c| c.versions[0].indicators[1].max_points = 20.001);
    assert!(e.contains("two decimals"), "{e}");
    let e = broken(&|c| {
        c.versions[0].indicators[4].rule = Rule::Threshold {
            measure: stats::scorecard::Measure::OnlineSubmission,
            at_percent: 150.0,
            below_points: 0.0,
        }
    });
    assert!(e.contains("at_percent"), "{e}");
    let e = broken(&|c| {
        let v = c.versions[0].clone();
        c.versions.push(v);
    });
    assert!(e.contains("same date"), "{e}");
}

/// The processing time comes from the events: reception to resolution, business times.
#[test]
fn processing_minutes_run_from_reception_to_resolution() {
    let mut life = received(vn(2025, 7, 7, 9, 0), false, None);
    life.act(vn(2025, 7, 8, 10, 30), resolve());
    let c = life.contribution();
    assert_eq!(
        c.get(date(2025, 7, 8), Metric::ResolvedProcessingMinutes),
        1530
    );
    let open = received(vn(2025, 7, 7, 9, 0), false, None);
    assert!(
        open.contribution()
            .deltas
            .keys()
            .all(|(_, m)| *m != Metric::ResolvedProcessingMinutes)
    );
}
