//! The Decision 766/QĐ-TTg index in points, as the national portal publishes it: six columns
//! (CKMB transparency 18, TDGQ progress 20, CLGQ online services 12, TTTT online payment 10,
//! MDHL satisfaction 18, MDSH digitization 22; total 100), each the sum of sub-indicators.
//!
//! The sub-indicators' formulas were not found in the official text (`shared/DOMAIN.md`, "The
//! 766 index in points"), so they are data: a [`ScoringConfig`] of versions by effective date
//! (`deploy/config/scorecard-766.toml`), each sub-indicator with its maximum, the rate it is
//! computed from (a [`Measure`] of the events) and its [`Rule`], marked confirmed or not. A
//! sub-indicator that needs data the events do not hold is [`SubScore::NotComputed`], never 0;
//! one whose rate has no denominator in the period is [`SubScore::NoDossiers`].
//!
//! Points are exact hundredths ([`Hundredths`]), computed in integers from the rate's counts
//! (half rounded up), so the same counts always give the same points.

use std::collections::BTreeSet;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::indicators::{Rate, indicators};
use crate::metric::Metric;
use crate::reports::on_time_progress;
use crate::totals::Totals;

/// Points in hundredths of a point (18.50 points = 1850).
pub type Hundredths = i64;

/// The six columns the national portal publishes, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Column {
    #[serde(rename = "CKMB")]
    Ckmb,
    #[serde(rename = "TDGQ")]
    Tdgq,
    #[serde(rename = "CLGQ")]
    Clgq,
    #[serde(rename = "TTTT")]
    Tttt,
    #[serde(rename = "MDHL")]
    Mdhl,
    #[serde(rename = "MDSH")]
    Mdsh,
}

impl Column {
    pub const ALL: [Column; 6] = [
        Column::Ckmb,
        Column::Tdgq,
        Column::Clgq,
        Column::Tttt,
        Column::Mdhl,
        Column::Mdsh,
    ];

    /// The portal's code (`CKMB`…).
    pub fn code(self) -> &'static str {
        match self {
            Column::Ckmb => "CKMB",
            Column::Tdgq => "TDGQ",
            Column::Clgq => "CLGQ",
            Column::Tttt => "TTTT",
            Column::Mdhl => "MDHL",
            Column::Mdsh => "MDSH",
        }
    }

    /// The column's maximum, in points, as the portal publishes it (total 100).
    pub fn max_points(self) -> i64 {
        match self {
            Column::Ckmb => 18,
            Column::Tdgq => 20,
            Column::Clgq => 12,
            Column::Tttt => 10,
            Column::Mdhl => 18,
            Column::Mdsh => 22,
        }
    }

    /// The portal's wording.
    pub fn label(self) -> &'static str {
        match self {
            Column::Ckmb => "Công khai, minh bạch",
            Column::Tdgq => "Tiến độ giải quyết",
            Column::Clgq => "Dịch vụ trực tuyến",
            Column::Tttt => "Thanh toán trực tuyến",
            Column::Mdhl => "Mức độ hài lòng",
            Column::Mdsh => "Số hóa hồ sơ",
        }
    }
}

/// A rate the events give, that a sub-indicator is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Measure {
    /// 766 item 2.1 ([`on_time_progress`]).
    OnTimeProgress,
    /// S10: received online / received.
    OnlineSubmission,
    /// S11: received with a fee and paid online / received with a fee.
    OnlinePayment,
    /// S8: resolved with a digitized result / resolved.
    ResultsDigitized,
    /// S7: received with every component digitized / received.
    ComponentsDigitized,
    /// S9: received with a reused component / received.
    DataReuse,
    /// S12: (very satisfied + satisfied) / ratings.
    Satisfaction,
}

impl Measure {
    /// The rate of `t`.
    pub fn rate(self, t: &Totals) -> Rate {
        let i = indicators(t);
        match self {
            Measure::OnTimeProgress => on_time_progress(t),
            Measure::OnlineSubmission => i.online.all,
            Measure::OnlinePayment => i.payment.rate,
            Measure::ResultsDigitized => i.results_digitized,
            Measure::ComponentsDigitized => i.components_digitized,
            Measure::DataReuse => i.data_reuse,
            Measure::Satisfaction => i.satisfaction.rate,
        }
    }
}

/// How a sub-indicator turns its rate into points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    /// `max × rate`.
    Proportional { measure: Measure },
    /// `max` when the rate reaches `at_percent` ([`Rate::at_least`], exact), else
    /// `below_points`.
    Threshold {
        measure: Measure,
        at_percent: f64,
        #[serde(default)]
        below_points: f64,
    },
    /// Needs data the events do not hold (named in `needs`): never scored, never 0.
    NotComputed { needs: String },
}

/// One sub-indicator of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubIndicator {
    /// Stable id (a column id of the form, a CSV header): `tdgq_progress`…
    pub id: String,
    pub column: Column,
    pub label: String,
    pub max_points: f64,
    #[serde(flatten)]
    pub rule: Rule,
    /// Whether the formula was found in an official text (else: as other systems compute it).
    pub confirmed: bool,
    /// Where the formula comes from.
    #[serde(default)]
    pub source: String,
}

/// The sub-indicators in force from a date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringVersion {
    pub effective_from: NaiveDate,
    #[serde(default)]
    pub source: String,
    #[serde(rename = "indicator")]
    pub indicators: Vec<SubIndicator>,
}

/// Every version of the scoring, by effective date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringConfig {
    #[serde(rename = "version")]
    pub versions: Vec<ScoringVersion>,
}

/// Why a scoring configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scorecard version from {version}: {message}")]
pub struct ScoringError {
    pub version: NaiveDate,
    pub message: String,
}

/// Points as hundredths, when given with at most two decimals.
fn hundredths(points: f64) -> Option<Hundredths> {
    let h = (points * 100.0).round();
    ((points * 100.0 - h).abs() < 1e-6 && h.is_finite() && h >= 0.0).then_some(h as i64)
}

impl ScoringConfig {
    /// Checks every version: dates distinct; ids distinct; maxima with at most two decimals;
    /// each column's sub-indicators summing to the column's maximum (total 100); thresholds
    /// within 0–100 % and their `below_points` within the maximum.
    pub fn validate(&self) -> Result<(), ScoringError> {
        let mut dates = BTreeSet::new();
        for v in &self.versions {
            let err = |message: String| ScoringError {
                version: v.effective_from,
                message,
            };
            if !dates.insert(v.effective_from) {
                return Err(err("two versions from the same date".to_owned()));
            }
            let mut ids = BTreeSet::new();
            for s in &v.indicators {
                if s.id.is_empty() || !ids.insert(s.id.as_str()) {
                    return Err(err(format!(
                        "sub-indicator id {:?} empty or repeated",
                        s.id
                    )));
                }
                let max = hundredths(s.max_points).ok_or_else(|| {
                    err(format!(
                        "{}: max_points must be ≥ 0 with at most two decimals",
                        s.id
                    ))
                })?;
                if let Rule::Threshold {
                    at_percent,
                    below_points,
                    ..
                } = s.rule
                {
                    if !(0.0..=100.0).contains(&at_percent) {
                        return Err(err(format!("{}: at_percent must be within 0–100", s.id)));
                    }
                    if hundredths(below_points).is_none_or(|b| b > max) {
                        return Err(err(format!(
                            "{}: below_points must be within 0 and max_points, two decimals",
                            s.id
                        )));
                    }
                }
            }
            for c in Column::ALL {
                let sum: Hundredths = v
                    .indicators
                    .iter()
                    .filter(|s| s.column == c)
                    .filter_map(|s| hundredths(s.max_points))
                    .sum();
                if sum != c.max_points() * 100 {
                    return Err(err(format!(
                        "the sub-indicators of {} add up to {:.2} points, not {}",
                        c.code(),
                        sum as f64 / 100.0,
                        c.max_points()
                    )));
                }
            }
        }
        if self.versions.is_empty() {
            return Err(ScoringError {
                version: NaiveDate::MIN,
                message: "no version".to_owned(),
            });
        }
        Ok(())
    }

    /// The version in force on `date` (the latest from a date `<= date`).
    pub fn in_force(&self, date: NaiveDate) -> Option<&ScoringVersion> {
        self.versions
            .iter()
            .filter(|v| v.effective_from <= date)
            .max_by_key(|v| v.effective_from)
    }
}

/// A sub-indicator's score.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SubScore {
    /// Computed from the events.
    Points { points: Hundredths, rate: Rate },
    /// Computable, but its rate has no denominator in the period (nothing to judge).
    NoDossiers { rate: Rate },
    /// Needs data outside the events.
    NotComputed { needs: String },
}

/// A column's (or the total's) score: the points of its computed sub-indicators, out of their
/// maxima, and the column's full maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ColumnScore {
    /// `None` when no sub-indicator of the column is computed (shown as not computed).
    pub points: Option<Hundredths>,
    /// The maxima of the computed sub-indicators.
    pub computed_max: Hundredths,
    /// The column's maximum.
    pub max: Hundredths,
}

/// The average processing time of the dossiers resolved in the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ProcessingTime {
    pub resolved: i64,
    /// Minutes from reception to resolution, summed.
    pub total_minutes: i128,
}

impl ProcessingTime {
    /// The mean in hours; `None` when nothing was resolved.
    pub fn mean_hours(&self) -> Option<f64> {
        (self.resolved != 0).then(|| self.total_minutes as f64 / 60.0 / self.resolved as f64)
    }
}

/// The scorecard of a period and a set of slices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scorecard {
    /// The version applied (in force on the period's last day).
    pub version_from: NaiveDate,
    pub subs: Vec<(SubIndicator, SubScore)>,
    pub columns: [(Column, ColumnScore); 6],
    pub total: ColumnScore,
    pub processing_time: ProcessingTime,
}

/// `max × n / d` in hundredths, half rounded up; `d > 0`.
fn proportional(max: Hundredths, rate: Rate) -> Hundredths {
    let (n, d) = (i128::from(rate.numerator), i128::from(rate.denominator));
    let v = (2 * i128::from(max) * n + d) / (2 * d);
    i64::try_from(v).unwrap_or(0)
}

/// A sub-indicator's score from the period's totals.
pub fn score(s: &SubIndicator, t: &Totals) -> SubScore {
    let max = hundredths(s.max_points).unwrap_or(0);
    let (rate, points) = match &s.rule {
        Rule::NotComputed { needs } => {
            return SubScore::NotComputed {
                needs: needs.clone(),
            };
        }
        Rule::Proportional { measure } => {
            let rate = measure.rate(t);
            (
                rate,
                (rate.denominator > 0).then(|| proportional(max, rate)),
            )
        }
        Rule::Threshold {
            measure,
            at_percent,
            below_points,
        } => {
            let rate = measure.rate(t);
            let below = hundredths(*below_points).unwrap_or(0);
            (
                rate,
                rate.at_least(*at_percent)
                    .map(|met| if met { max } else { below }),
            )
        }
    };
    match points {
        Some(points) => SubScore::Points { points, rate },
        None => SubScore::NoDossiers { rate },
    }
}

/// The scorecard of `t` with the version of `config` in force on the period's last day;
/// `None` when no version is in force then.
pub fn scorecard(config: &ScoringConfig, t: &Totals) -> Option<Scorecard> {
    let last_day = t.to.pred_opt().unwrap_or(t.to);
    let version = config.in_force(last_day)?;
    let subs: Vec<(SubIndicator, SubScore)> = version
        .indicators
        .iter()
        .map(|s| (s.clone(), score(s, t)))
        .collect();
    let column = |c: Option<Column>| {
        let mut out = ColumnScore {
            points: None,
            computed_max: 0,
            max: c.map_or(100, Column::max_points) * 100,
        };
        for (s, score) in subs.iter().filter(|(s, _)| c.is_none_or(|c| s.column == c)) {
            if let SubScore::Points { points, .. } = score {
                out.points = Some(out.points.unwrap_or(0) + points);
                out.computed_max += hundredths(s.max_points).unwrap_or(0);
            }
        }
        out
    };
    Some(Scorecard {
        version_from: version.effective_from,
        columns: Column::ALL.map(|c| (c, column(Some(c)))),
        total: column(None),
        processing_time: ProcessingTime {
            resolved: t.flow_count(Metric::Resolved),
            total_minutes: t.flow(Metric::ResolvedProcessingMinutes),
        },
        subs,
    })
}
