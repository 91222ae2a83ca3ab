//! The answers the statistics API gives, independent of the transport: gRPC
//! ([`crate::service`]) and HTTP ([`crate::http`]) both render these, so they cannot disagree.

use std::collections::BTreeMap;

use sqlx::PgPool;
use stats::{Dimension, GroupKey, Indicators, Query, Rate, TargetCheck, Targets, Totals};

use crate::figures::figures_in;
use crate::forms::{self, Form};
use crate::scope::{ScopeError, Source};
use crate::store::QueryError;

/// Indicators over the whole filter and per group, each with S14.
#[derive(Debug, Clone)]
pub struct IndicatorsAnswer {
    pub from: chrono::NaiveDate,
    pub to: chrono::NaiveDate,
    pub total: Indicators,
    pub targets: Vec<TargetCheck>,
    pub groups: Vec<GroupAnswer>,
    /// Live figures: dossiers the projection failed to apply so far, not counted (any slice).
    pub dossiers_not_counted: u64,
}

#[derive(Debug, Clone)]
pub struct GroupAnswer {
    /// One entry per grouping dimension, in the request's order.
    pub key: Vec<(Dimension, String)>,
    pub indicators: Indicators,
    pub targets: Vec<TargetCheck>,
    /// S5: resolved late in this group / resolved late in all groups.
    pub late_share: Rate,
}

/// Indicators (S14 against `targets`, S5 per group) of the figures of `query`.
pub fn indicators_of(
    query: &Query,
    groups: &BTreeMap<GroupKey, Totals>,
    targets: &Targets,
) -> IndicatorsAnswer {
    let all = forms::merged(query, groups);
    let total = stats::indicators(&all);
    let shares = stats::late_shares(groups);
    let groups = if query.group_by.is_empty() {
        Vec::new()
    } else {
        groups
            .iter()
            .map(|(key, t)| {
                let indicators = stats::indicators(t);
                GroupAnswer {
                    key: query.group_by.iter().copied().zip(key.clone()).collect(),
                    indicators,
                    targets: stats::targets(&indicators, targets),
                    late_share: shares
                        .get(key)
                        .copied()
                        .unwrap_or(Rate::new(0, total.resolved.late)),
                }
            })
            .collect()
    };
    IndicatorsAnswer {
        from: query.from,
        to: query.to,
        total,
        targets: stats::targets(&total, targets),
        groups,
        dossiers_not_counted: 0,
    }
}

/// The query `form` runs for `query` (whose `group_by` is what the request asked; only II.06a
/// accepts one) and its figures; [`forms::fill`] makes the table.
pub async fn report_figures(
    pool: &PgPool,
    form: Form,
    query: &Query,
    source: Source,
    view: Option<stats::InStructure<'_>>,
    max_stored_groups: u32,
) -> Result<(Query, BTreeMap<GroupKey, Totals>), ReportError> {
    if !form.groups() && !query.group_by.is_empty() {
        return Err(ReportError::Scope(ScopeError::new(
            "group_by",
            format!("the form {} has fixed rows", form.slug()),
        )));
    }
    let query = Query {
        group_by: form.query_group_by(&query.group_by),
        ..query.clone()
    };
    let groups = figures_in(pool, &query, source, view, max_stored_groups).await?;
    Ok((query, groups))
}

/// Why a report has no figures: the request asks what the form cannot give, or the read failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Scope(ScopeError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error(transparent)]
    Read(#[from] crate::read::ReadError),
}

/// The dossier folded from every event in the log; `None` when the log has none.
pub async fn dossier(
    pool: &PgPool,
    dossier_id: &str,
) -> Result<Option<domain::Dossier>, QueryError> {
    let mut conn = pool.acquire().await?;
    let stored = eventlog::load_dossier_on(&mut conn, dossier_id)
        .await
        .map_err(|e| match e {
            eventlog::ReadError::Unavailable(e) => QueryError::Database(e),
            other => QueryError::Corrupt(format!("dossier {dossier_id}: {other}")),
        })?;
    if stored.is_empty() {
        return Ok(None);
    }
    writepath::fold(&stored)
        .map(Some)
        .map_err(|e| QueryError::Corrupt(format!("dossier {dossier_id}: {e}")))
}

/// The indicator table of an answer: a row per group and a total row (only the total when the
/// query groups by nothing); counts and rates of S1–S13 with S5, in the columns of the forms'
/// wording. Amounts (VND) are left to the JSON and gRPC answers.
pub fn indicators_table(answer: &IndicatorsAnswer, group_by: &[Dimension]) -> forms::Table {
    use forms::{Cell, column, group};
    let mut columns: Vec<forms::Column> = group_by
        .iter()
        .map(|d| column(d.as_str(), forms::dimension_label(*d)))
        .collect();
    columns.extend(
        INDICATOR_COLUMNS
            .iter()
            .map(|(id, label, _)| column(id, label)),
    );
    let row = |key: Vec<Cell>, i: &Indicators, late_share: Rate| {
        let mut cells = key;
        cells.extend(
            INDICATOR_COLUMNS
                .iter()
                .map(|(_, _, value)| value(i, late_share)),
        );
        cells
    };
    let mut rows: Vec<Vec<Cell>> = answer
        .groups
        .iter()
        .map(|g| {
            let key = g.key.iter().map(|(_, v)| Cell::Text(v.clone())).collect();
            row(key, &g.indicators, g.late_share)
        })
        .collect();
    let grouped = !group_by.is_empty();
    let total_key = (0..group_by.len())
        .map(|i| Cell::Text(if i == 0 { forms::TOTAL_KEY } else { "" }.to_owned()))
        .collect();
    let late = answer.total.resolved.late;
    rows.push(row(total_key, &answer.total, Rate::new(late, late)));
    let column_groups = vec![
        group(&columns, "received", "carried_over", "Tiếp nhận (S1)"),
        group(
            &columns,
            "resolved",
            "on_time_rate",
            "Đã giải quyết (S2, S3)",
        ),
        group(
            &columns,
            "pending",
            "pending_overdue",
            "Đang giải quyết (S4)",
        ),
    ];
    forms::Table {
        form: None,
        title: "Chỉ số giải quyết thủ tục hành chính (S1–S13)",
        unit: "Đơn vị tính: hồ sơ; tỷ lệ: %",
        key_columns: group_by.len(),
        columns,
        column_groups,
        rows,
        total_row: if grouped {
            forms::TotalRow::Sum
        } else {
            forms::TotalRow::None
        },
    }
}

type IndicatorValue = fn(&Indicators, Rate) -> forms::Cell;

/// The indicator table's columns: id, heading, value (of a group's indicators and S5 share).
const INDICATOR_COLUMNS: [(&str, &str, IndicatorValue); 25] = {
    use forms::Cell::{Count, Rate as R};
    [
        ("received", "Tổng số", |i, _| Count(i.received.total)),
        ("received_online", "Trực tuyến", |i, _| {
            Count(i.received.online)
        }),
        ("received_direct", "Trực tiếp", |i, _| {
            Count(i.received.direct)
        }),
        ("received_postal", "Qua dịch vụ bưu chính", |i, _| {
            Count(i.received.postal)
        }),
        ("carried_over", "Từ kỳ trước chuyển qua", |i, _| {
            Count(i.received.carried_over)
        }),
        ("resolved", "Tổng số", |i, _| Count(i.resolved.total)),
        ("resolved_early", "Trước hạn", |i, _| {
            Count(i.resolved.early)
        }),
        ("resolved_on_time", "Đúng hạn", |i, _| {
            Count(i.resolved.on_time)
        }),
        ("resolved_late", "Quá hạn", |i, _| Count(i.resolved.late)),
        ("on_time_rate", "Tỷ lệ đúng hạn", |i, _| {
            R(i.on_time_rate)
        }),
        ("pending", "Tổng số", |i, _| Count(i.pending.total)),
        ("pending_within_time", "Trong hạn", |i, _| {
            Count(i.pending.within_time)
        }),
        ("pending_overdue", "Quá hạn", |i, _| {
            Count(i.pending.overdue)
        }),
        ("late_share", "Tỷ trọng hồ sơ quá hạn (S5)", |_, s| R(s)),
        ("ended", "Rút hoặc dừng giải quyết", |i, _| {
            Count(i.ended.total)
        }),
        ("refused_at_intake", "Từ chối tiếp nhận", |i, _| {
            Count(i.refused_at_intake)
        }),
        (
            "apology_rate",
            "Tỷ lệ xin lỗi hồ sơ quá hạn (S6)",
            |i, _| R(i.apology_rate),
        ),
        (
            "components_digitized",
            "Tỷ lệ số hóa thành phần hồ sơ (S7)",
            |i, _| R(i.components_digitized),
        ),
        (
            "results_digitized",
            "Tỷ lệ số hóa kết quả (S8)",
            |i, _| R(i.results_digitized),
        ),
        (
            "data_reuse",
            "Tỷ lệ tái sử dụng dữ liệu (S9)",
            |i, _| R(i.data_reuse),
        ),
        (
            "online",
            "Tỷ lệ hồ sơ trực tuyến (S10)",
            |i, _| R(i.online.all),
        ),
        (
            "online_payment",
            "Tỷ lệ thanh toán trực tuyến (S11)",
            |i, _| R(i.payment.rate),
        ),
        (
            "payment_transactions",
            "Số giao dịch thanh toán",
            |i, _| Count(i.payment.transactions),
        ),
        ("satisfaction", "Tỷ lệ hài lòng (S12)", |i, _| {
            R(i.satisfaction.rate)
        }),
        (
            "electronic_transfer",
            "Tỷ lệ luân chuyển điện tử (S13)",
            |i, _| R(i.electronic_transfer),
        ),
    ]
};
