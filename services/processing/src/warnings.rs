//! The early warning: dossiers that will be late unless someone acts.
//!
//! # What is on the list
//!
//! A dossier is **due soon** from `warn_from` — the latest instant that still leaves the warning
//! horizon (`processing.warning_horizon_minutes` of working time; by default the apology notice,
//! one day in the unit of `[processing] apology_notice`) before its due time in force
//! ([`domain::WarningHorizon::warn_from`]) — while it is running: received, not resolved,
//! withdrawn or stopped, not waiting for a supplement, and no apology issued. Being marked late
//! does not take it off: an overdue dossier with no apology is the most urgent of all. With the
//! default horizon `warn_from` is the apology deadline itself ([`domain::apology_deadline`], the
//! rule `decide` answers `on_time` with): at that instant an apology is still on time.
//!
//! A late mark withdrawn (`late_withdrawn`, an offline counter's resolution dated before the due
//! time) comes in the same append as that resolution, which closes the dossier: its warning is
//! withdrawn as `closed` and the read model's `late_marked` is false again.
//!
//! # How the watcher keeps it
//!
//! The deadline watcher's read model (`deadline_watch`) holds, per dossier, the receiving and
//! holding agency, the due time, the apology deadline and `warn_from`. After catching up, every
//! tick runs [`sync`], one transaction holding the read model's cursor row (so it sees the read
//! model exactly at one cursor, and two watchers never sync at once):
//!
//! 1. **withdraw** every warning whose dossier was closed, apologised for, paused, got another due
//!    time, moved to another holding agency, or whose deadlines were recomputed differently
//!    (calendar, apology notice or horizon changed): delete it from `deadline_warnings` and append a `withdrawn`
//!    change with the reason to the outbox;
//! 2. **raise** every running dossier with `warn_from <= now` and no warning: insert it and append a
//!    `raised` change.
//!
//! A warning is never withdrawn because the clock moved (only events and recomputed deadlines
//! withdraw), so two watchers whose clocks differ slightly never undo each other. A dossier whose
//! due time moved and is still due soon is withdrawn and raised again with the new due time.
//!
//! The list ([`list`]) is `deadline_warnings` as of the last sync, ordered by urgency: the due time,
//! then the dossier id. The outbox is published on NATS by [`crate::publish`].

use chrono::{DateTime, SecondsFormat, Utc};
use domain::AgencyCode;
use sqlx::PgPool;
use svc::{Principal, Role};

use crate::watcher::Deadlines;

/// The most warnings one page of [`list`] returns (`page_size` above it is refused).
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The page size when the request gives none.
pub const DEFAULT_PAGE_SIZE: u32 = 100;

/// A dossier that is due soon.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Warning {
    pub dossier_id: String,
    /// The agency that received the dossier (its statistics' and subjects' agency).
    pub agency: String,
    /// The agency holding it now (the receiving one unless transferred).
    pub holding_agency: String,
    /// The due time in force.
    pub due_at: DateTime<Utc>,
    /// The last instant at which an apology is on time.
    pub apology_deadline: DateTime<Utc>,
    /// From when the dossier is due soon.
    pub warn_from: DateTime<Utc>,
    /// When the watcher raised the warning (its clock).
    pub raised_at: DateTime<Utc>,
}

/// What one [`sync`] changed.
#[derive(Debug, Default)]
pub(crate) struct SyncReport {
    pub raised: Vec<String>,
    pub withdrawn: Vec<(String, &'static str)>,
}

/// The reasons a warning is withdrawn, as the outbox and the NATS messages spell them.
pub const WITHDRAW_REASONS: [&str; 6] = [
    "closed",
    "apologised",
    "paused",
    "due_time_moved",
    "transferred",
    "deadline_changed",
];

fn reason(text: &str) -> &'static str {
    WITHDRAW_REASONS
        .iter()
        .find(|r| **r == text)
        .copied()
        .unwrap_or("deadline_changed")
}

/// Withdraws and raises warnings to match the read model at the clock's `now` (see the module
/// documentation); each change goes to the outbox in the same transaction. Raises at most
/// `raise_page` per transaction and goes on until none is left.
pub(crate) async fn sync(
    pool: &PgPool,
    now: DateTime<Utc>,
    raise_page: i64,
) -> Result<SyncReport, sqlx::Error> {
    let mut report = SyncReport::default();
    let mut first = true;
    loop {
        let mut tx = pool.begin().await?;
        lock_read_model(&mut tx).await?;
        if std::mem::take(&mut first) {
            let withdrawn: Vec<(String, String)> = sqlx::query_as(
                "WITH gone AS ( \
                   DELETE FROM deadline_warnings w USING deadline_watch d \
                   WHERE d.dossier_id = w.dossier_id \
                     AND (d.closed OR d.apologised OR d.paused OR d.due_at <> w.due_at \
                          OR d.holding_agency <> w.holding_agency \
                          OR d.apology_deadline <> w.apology_deadline \
                          OR d.warn_from <> w.warn_from) \
                   RETURNING w.*, CASE WHEN d.closed THEN 'closed' \
                     WHEN d.apologised THEN 'apologised' WHEN d.paused THEN 'paused' \
                     WHEN d.due_at <> w.due_at THEN 'due_time_moved' \
                     WHEN d.holding_agency <> w.holding_agency THEN 'transferred' \
                     ELSE 'deadline_changed' END AS reason) \
                 INSERT INTO deadline_warning_outbox (kind, reason, dossier_id, agency, \
                   holding_agency, due_at, apology_deadline, warn_from, at) \
                 SELECT 'withdrawn', reason, dossier_id, agency, holding_agency, due_at, \
                   apology_deadline, warn_from, $1 FROM gone ORDER BY dossier_id \
                 RETURNING dossier_id, reason",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?;
            report.withdrawn = withdrawn
                .into_iter()
                .map(|(id, r)| (id, reason(&r)))
                .collect();
        }
        let raised: Vec<String> = sqlx::query_scalar(
            "WITH new AS ( \
               INSERT INTO deadline_warnings (dossier_id, agency, holding_agency, due_at, \
                 apology_deadline, warn_from, raised_at) \
               SELECT d.dossier_id, d.agency, d.holding_agency, d.due_at, d.apology_deadline, \
                 d.warn_from, $1 FROM deadline_watch d \
               WHERE d.warn_from <= $1 AND NOT d.paused AND NOT d.closed AND NOT d.apologised \
                 AND NOT EXISTS (SELECT 1 FROM deadline_warnings w \
                                 WHERE w.dossier_id = d.dossier_id) \
               ORDER BY d.due_at, d.dossier_id LIMIT $2 \
               RETURNING *) \
             INSERT INTO deadline_warning_outbox (kind, dossier_id, agency, holding_agency, \
               due_at, apology_deadline, warn_from, at) \
             SELECT 'raised', dossier_id, agency, holding_agency, due_at, apology_deadline, \
               warn_from, raised_at FROM new ORDER BY due_at, dossier_id \
             RETURNING dossier_id",
        )
        .bind(now)
        .bind(raise_page)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let full = i64::try_from(raised.len()).unwrap_or(i64::MAX) >= raise_page;
        report.raised.extend(raised);
        if !full {
            return Ok(report);
        }
    }
}

/// Takes the read model's cursor row: catch-up, recomputation and sync of every watcher
/// serialize on it.
async fn lock_read_model(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> sqlx::Result<()> {
    sqlx::query("SELECT position FROM deadline_watch_cursor WHERE singleton FOR UPDATE")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Recomputes the apology deadline and `warn_from` of every dossier that can still be warned
/// about (not closed, no apology) with this watcher's calendar, apology notice and horizon;
/// returns how many changed. Every watcher does it once, before its first tick: a changed
/// calendar, apology notice or horizon then takes effect for dossiers received before the
/// change too (their warnings are withdrawn as `deadline_changed`, and raised again if still due
/// soon).
pub(crate) async fn recompute_deadlines(
    pool: &PgPool,
    deadlines: Deadlines<'_>,
) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_read_model(&mut tx).await?;
    /// Dossier id, due time, stored apology deadline and warning start.
    type Row = (String, DateTime<Utc>, DateTime<Utc>, DateTime<Utc>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT dossier_id, due_at, apology_deadline, warn_from FROM deadline_watch \
         WHERE NOT closed AND NOT apologised",
    )
    .fetch_all(&mut *tx)
    .await?;
    let (mut ids, mut apology, mut warn) = (Vec::new(), Vec::new(), Vec::new());
    for (id, due_at, old_apology, old_warn) in rows {
        let (a, w) = deadlines.of(due_at);
        if (a, w) != (old_apology, old_warn) {
            ids.push(id);
            apology.push(a);
            warn.push(w);
        }
    }
    let changed = ids.len() as u64;
    if changed > 0 {
        sqlx::query(
            "UPDATE deadline_watch AS d SET apology_deadline = u.a, warn_from = u.w \
             FROM UNNEST($1::text[], $2::timestamptz[], $3::timestamptz[]) AS u(id, a, w) \
             WHERE d.dossier_id = u.id",
        )
        .bind(ids)
        .bind(apology)
        .bind(warn)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// A request for a page of the list, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// The caller's agency: only dossiers it received or holds (`None`: every agency).
    pub scope: Option<AgencyCode>,
    /// The agency asked for: dossiers it received or holds (`None`: every one in scope).
    pub agency: Option<AgencyCode>,
    pub page_size: u32,
    /// Where the previous page ended: `(due_at, dossier_id)` of its last warning.
    pub after: Option<(DateTime<Utc>, String)>,
}

/// Why a list request is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// A field is malformed or out of bounds: fix it (INVALID_ARGUMENT / 400).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The token may not read this list (PERMISSION_DENIED / 403).
    #[error("{0}")]
    Denied(String),
}

impl From<ListError> for tonic::Status {
    fn from(e: ListError) -> Self {
        match e {
            ListError::Invalid { field, message } => svc::status::invalid_field(field, message),
            ListError::Denied(message) => tonic::Status::permission_denied(message),
        }
    }
}

/// Validates a list request for `principal`: counters and auditors read (a token of one agency
/// only the dossiers its agency received or holds; a token of every agency all of them),
/// importers do not. `agency_code` (empty: every agency in scope), `page_size` (0: the default,
/// at most [`MAX_PAGE_SIZE`]) and `page_token` (empty: the first page) as the request sent them.
pub fn list_query(
    principal: &Principal,
    agency_code: &str,
    page_size: u32,
    page_token: &str,
) -> Result<ListQuery, ListError> {
    if principal.role == Role::Importer {
        return Err(ListError::Denied(
            "importer tokens may only import history".to_owned(),
        ));
    }
    if principal.role == Role::Admin {
        return Err(ListError::Denied(
            "administrator tokens change reference data, never read dossiers".to_owned(),
        ));
    }
    let agency = match agency_code {
        "" => None,
        code => Some(AgencyCode::parse(code).map_err(|e| ListError::Invalid {
            field: "agency_code",
            message: e.reason.to_string(),
        })?),
    };
    if let (Some(mine), Some(asked)) = (&principal.agency, &agency)
        && mine != asked
    {
        return Err(ListError::Denied(format!(
            "token of {mine} may list only the dossiers its agency received or holds, not {asked}'s"
        )));
    }
    let page_size = match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n if n > MAX_PAGE_SIZE => {
            return Err(ListError::Invalid {
                field: "page_size",
                message: format!("must be at most {MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE})"),
            });
        }
        n => n,
    };
    let after = match page_token {
        "" => None,
        token => Some(parse_page_token(token).ok_or_else(|| ListError::Invalid {
            field: "page_token",
            message: "is not a token this service returned as next_page_token".to_owned(),
        })?),
    };
    Ok(ListQuery {
        scope: principal.agency.clone(),
        agency,
        page_size,
        after,
    })
}

/// `<due_at, RFC 3339 with microseconds>/<dossier_id>`: opaque to clients.
fn page_token(w: &Warning) -> String {
    format!(
        "{}/{}",
        w.due_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        w.dossier_id
    )
}

fn parse_page_token(token: &str) -> Option<(DateTime<Utc>, String)> {
    let (at, id) = token.split_once('/')?;
    let at = DateTime::parse_from_rfc3339(at).ok()?.with_timezone(&Utc);
    domain::DossierId::parse(id).ok()?;
    Some((at, id.to_owned()))
}

/// One page of the list and the token of the next (`None`: this was the last).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub warnings: Vec<Warning>,
    pub next_page_token: Option<String>,
}

/// A page of the warnings raised and not withdrawn, most urgent first (due time, then dossier).
pub async fn list(pool: &PgPool, query: &ListQuery) -> Result<Page, sqlx::Error> {
    let (after_due, after_id) = query.after.clone().unzip();
    let mut warnings: Vec<Warning> = sqlx::query_as(
        "SELECT dossier_id, agency, holding_agency, due_at, apology_deadline, warn_from, raised_at \
         FROM deadline_warnings \
         WHERE ($1::text IS NULL OR agency = $1 OR holding_agency = $1) \
           AND ($2::text IS NULL OR agency = $2 OR holding_agency = $2) \
           AND ($3::timestamptz IS NULL OR (due_at, dossier_id) > ($3, $4)) \
         ORDER BY due_at, dossier_id LIMIT $5",
    )
    .bind(query.scope.as_ref().map(AgencyCode::as_str))
    .bind(query.agency.as_ref().map(AgencyCode::as_str))
    .bind(after_due)
    .bind(after_id)
    .bind(i64::from(query.page_size) + 1)
    .fetch_all(pool)
    .await?;
    let next_page_token = if warnings.len() > query.page_size as usize {
        warnings.truncate(query.page_size as usize);
        warnings.last().map(page_token)
    } else {
        None
    };
    Ok(Page {
        warnings,
        next_page_token,
    })
}

/// Why a read of the list failed, for both transports.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// No valid bearer token (UNAUTHENTICATED / 401).
    #[error("{0}")]
    Unauthenticated(String),
    #[error(transparent)]
    Refused(#[from] ListError),
    /// PostgreSQL could not answer: retry (UNAVAILABLE / 503).
    #[error("the database is unavailable; retry")]
    Unavailable(#[source] sqlx::Error),
}

impl From<ReadError> for tonic::Status {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Unauthenticated(m) => tonic::Status::unauthenticated(m),
            ReadError::Refused(e) => e.into(),
            ReadError::Unavailable(cause) => {
                tracing::warn!(error = %cause, "early warning list unavailable");
                tonic::Status::unavailable(ReadError::Unavailable(cause).to_string())
            }
        }
    }
}

/// The list as both transports answer it: authenticate, validate, read, convert to the proto
/// message (the HTTP answer is that message's JSON mapping). Cheap to clone.
#[derive(Debug, Clone)]
pub struct WarningList {
    pool: PgPool,
    tokens: std::sync::Arc<svc::Tokens>,
}

impl WarningList {
    pub fn new(pool: PgPool, tokens: std::sync::Arc<svc::Tokens>) -> WarningList {
        WarningList { pool, tokens }
    }

    /// Answers `request` for the caller of `metadata` (`authorization: Bearer …`).
    pub async fn answer(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        request: &api::v1::ListDueSoonRequest,
    ) -> Result<api::v1::ListDueSoonResponse, ReadError> {
        let principal = self
            .tokens
            .authenticate(metadata)
            .map_err(|s| ReadError::Unauthenticated(s.message().to_owned()))?;
        let query = list_query(
            &principal,
            &request.agency_code,
            request.page_size,
            &request.page_token,
        )?;
        let page = list(&self.pool, &query)
            .await
            .map_err(ReadError::Unavailable)?;
        Ok(api::v1::ListDueSoonResponse {
            warnings: page.warnings.iter().map(to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }
}

fn to_pb(w: &Warning) -> api::v1::DueSoon {
    use svc::status::to_timestamp;
    api::v1::DueSoon {
        dossier_id: w.dossier_id.clone(),
        agency_code: w.agency.clone(),
        holding_agency_code: w.holding_agency.clone(),
        due_at: Some(to_timestamp(w.due_at)),
        apology_deadline: Some(to_timestamp(w.apology_deadline)),
        warn_from: Some(to_timestamp(w.warn_from)),
        raised_at: Some(to_timestamp(w.raised_at)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(agency: Option<&str>, role: Role) -> Principal {
        Principal {
            name: "t".to_owned(),
            agency: agency.map(|a| AgencyCode::parse(a).unwrap()),
            level: None,
            role,
            scopes: Vec::new(),
        }
    }

    #[test]
    fn requests_are_checked_field_by_field() {
        let counter = principal(Some("000.00.12.H40"), Role::Counter);
        let auditor = principal(None, Role::Auditor);
        let q = list_query(&counter, "", 0, "").unwrap();
        assert_eq!(q.page_size, DEFAULT_PAGE_SIZE);
        assert_eq!(q.scope.unwrap().as_str(), "000.00.12.H40");
        assert!(list_query(&counter, "000.00.12.H40", MAX_PAGE_SIZE, "").is_ok());
        assert!(matches!(
            list_query(&counter, "000.00.13.H40", 0, ""),
            Err(ListError::Denied(_))
        ));
        assert!(list_query(&auditor, "000.00.13.H40", 0, "").is_ok());
        assert!(matches!(
            list_query(&principal(None, Role::Importer), "", 0, ""),
            Err(ListError::Denied(_))
        ));
        for (agency, size, token, field) in [
            ("bad agency", 0, "", "agency_code"),
            ("", MAX_PAGE_SIZE + 1, "", "page_size"),
            ("", 0, "nonsense", "page_token"),
            ("", 0, "2024-01-01T00:00:00Z/", "page_token"),
        ] {
            match list_query(&auditor, agency, size, token) {
                Err(ListError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{agency:?} {size} {token:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn page_tokens_round_trip() {
        let at = DateTime::parse_from_rfc3339("2024-05-02T02:00:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let w = Warning {
            dossier_id: "H40.22-241121-0001".to_owned(),
            agency: "A".to_owned(),
            holding_agency: "A".to_owned(),
            due_at: at,
            apology_deadline: at,
            warn_from: at,
            raised_at: at,
        };
        assert_eq!(
            parse_page_token(&page_token(&w)),
            Some((at, w.dossier_id.clone()))
        );
    }
}
