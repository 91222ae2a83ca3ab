//! The read side's bounds, shared by gRPC and HTTP: admission control, a deadline, a bound on
//! the size of an answer, and errors that speak of reads.
//!
//! - Admission: at most `max_live_queries` queries on the aggregates (and dossier statuses) and
//!   `max_as_recorded_queries` "as recorded at" queries (each a scan of the log) run at once;
//!   one more is refused at once with [`ReadError::Busy`] (RESOURCE_EXHAUSTED / 429 with a retry
//!   delay) instead of queueing until the pool times out.
//! - Connections: the queries run on their own pool, as large as the two admission limits
//!   together, opened lazily and released when idle, whose sessions carry
//!   `statement_timeout` = `query_timeout_secs`; a connection is pinged before use only after
//!   [`PING_AFTER_IDLE`] idle. Queries thus never take a connection from the
//!   consumer, and PostgreSQL itself stops a query past its deadline ([`ReadError::Deadline`]).
//! - Size: an answer of more than `max_groups` groups is refused ([`ReadError::TooManyGroups`]),
//!   telling the caller to narrow the query; it is never cut.
//!
//! Only [`crate::service`] and [`crate::http`] turn a [`ReadError`] into a transport's status.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use stats::Query;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::answers::{self, IndicatorsAnswer};
use crate::forms::{Form, FormContext, Table};
use crate::scope::{ScopeError, Source};
use crate::store::QueryError;
use chrono::NaiveDate;
use stats::scorecard::ScoringConfig;
use stats::{AgencyStructure, InStructure};

/// A connection of the read pool idle at least this long is pinged before a query uses it.
pub use svc::config::PING_AFTER_IDLE;

/// The bounds of the statistics queries (gRPC and HTTP alike), `[projection.limits]`. A query
/// beyond a bound is refused with a status naming it, never cut silently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLimits {
    /// The longest period `[from, to)`, in days (INVALID_ARGUMENT on `to`).
    pub max_period_days: u32,
    /// The most grouping dimensions in one query (INVALID_ARGUMENT on `group_by`).
    pub max_group_by: u32,
    /// The most groups (rows) in one answer (INVALID_ARGUMENT, reason `too_many_groups`).
    pub max_groups: u32,
    /// How long one query may run, in seconds (PostgreSQL `statement_timeout` and the
    /// service's own timer; DEADLINE_EXCEEDED, reason `query_timeout`).
    pub query_timeout_secs: u32,
    /// Queries on the live aggregates (and dossier statuses) running at once; one more is
    /// refused at once (RESOURCE_EXHAUSTED, reason `too_many_queries`, RetryInfo).
    pub max_live_queries: u32,
    /// `as_recorded_at` queries (a scan of the log) running at once; same refusal.
    pub max_as_recorded_queries: u32,
    /// A query asked in the agency structure of a date (`structure_at`) reads the stored
    /// figures grouped also by recorded agency and level, then relabels them: at most this many
    /// stored groups (INVALID_ARGUMENT, reason `too_many_groups`, on `group_by`).
    pub max_stored_groups: u32,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_period_days: 366 * 20,
            max_group_by: 3,
            max_groups: 2000,
            query_timeout_secs: 15,
            max_live_queries: 4,
            max_as_recorded_queries: 1,
            max_stored_groups: 50_000,
        }
    }
}

/// How long a client refused by admission control should wait before trying again.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

/// PostgreSQL's SQLSTATE for a statement cancelled by `statement_timeout`.
const QUERY_CANCELED: &str = "57014";

/// Why a statistics read gave no answer, each saying how the caller should react.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A malformed field or a bound of the request: fix the request.
    #[error(transparent)]
    Invalid(#[from] ScopeError),
    /// The answer would hold more groups than allowed: narrow the filter, the period or the
    /// grouping.
    #[error(
        "the answer would hold {groups} groups, more than the limit of {limit}: narrow the filter \
         or group by fewer dimensions"
    )]
    TooManyGroups { groups: usize, limit: u32 },
    /// As many queries of this kind as allowed are running: retry after [`RETRY_DELAY`].
    #[error("{limit} {kind} queries are already running, the limit: retry in a moment")]
    Busy { kind: &'static str, limit: u32 },
    /// The query ran past the deadline: ask a shorter period or fewer groups.
    #[error(
        "the query did not finish within {secs} s: ask a shorter period, a narrower filter or \
         fewer groups"
    )]
    Deadline { secs: u32 },
    /// `as_recorded_at` asked with a token that is not an auditor's.
    #[error("as_recorded_at is for auditor tokens: it recomputes the figures from the log")]
    AuditorsOnly,
    /// PostgreSQL could not be reached: retry later.
    #[error("the statistics database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// A fault of ours (a corrupt row): nothing the caller can do.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<QueryError> for ReadError {
    fn from(e: QueryError) -> Self {
        match e {
            QueryError::Database(e) => ReadError::from(e),
            e => ReadError::Internal(e.to_string()),
        }
    }
}

impl From<crate::structure::StructureStoreError> for ReadError {
    fn from(e: crate::structure::StructureStoreError) -> Self {
        match e {
            crate::structure::StructureStoreError::Database(e) => ReadError::from(e),
            e => ReadError::Internal(e.to_string()),
        }
    }
}

impl From<answers::ReportError> for ReadError {
    fn from(e: answers::ReportError) -> Self {
        match e {
            answers::ReportError::Scope(e) => ReadError::Invalid(e),
            answers::ReportError::Query(e) => ReadError::from(e),
            answers::ReportError::Read(e) => e,
        }
    }
}

impl From<sqlx::Error> for ReadError {
    fn from(e: sqlx::Error) -> Self {
        let canceled = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c == QUERY_CANCELED);
        if canceled {
            // Only statement_timeout cancels our statements; its value is the deadline.
            ReadError::Deadline { secs: 0 }
        } else {
            ReadError::Unavailable(e)
        }
    }
}

impl ReadError {
    /// The stable `google.rpc.ErrorInfo` reason (also the HTTP error's `code`).
    pub fn reason(&self) -> &'static str {
        match self {
            ReadError::Invalid(_) => "invalid_argument",
            ReadError::TooManyGroups { .. } => "too_many_groups",
            ReadError::Busy { .. } => "too_many_queries",
            ReadError::Deadline { .. } => "query_timeout",
            ReadError::AuditorsOnly => "as_recorded_at_auditors_only",
            ReadError::Unavailable(_) => "unavailable",
            ReadError::Internal(_) => "internal",
        }
    }

    /// The message a caller sees: what was wrong and what to do; never SQL or internals.
    pub fn public_message(&self) -> String {
        match self {
            ReadError::Invalid(e) => e.message.clone(),
            ReadError::Unavailable(e) => {
                tracing::warn!(error = %e, "statistics query failed");
                "the statistics database is unavailable; retry later".to_owned()
            }
            ReadError::Internal(e) => {
                tracing::error!(error = %e, "statistics query failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// The request field the error is about, if one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ReadError::Invalid(e) => Some(&e.field),
            ReadError::TooManyGroups { .. } => Some("group_by"),
            ReadError::AuditorsOnly => Some("as_recorded_at"),
            _ => None,
        }
    }
}

impl From<ReadError> for Status {
    fn from(e: ReadError) -> Self {
        let code = match &e {
            ReadError::Invalid(_) | ReadError::TooManyGroups { .. } => Code::InvalidArgument,
            ReadError::Busy { .. } => Code::ResourceExhausted,
            ReadError::Deadline { .. } => Code::DeadlineExceeded,
            ReadError::AuditorsOnly => Code::PermissionDenied,
            ReadError::Unavailable(_) => Code::Unavailable,
            ReadError::Internal(_) => Code::Internal,
        };
        if let ReadError::Invalid(e) = e {
            return svc::status::invalid_field(&e.field, e.message);
        }
        let message = e.public_message();
        let mut details = ErrorDetails::new();
        let mut metadata = HashMap::new();
        match &e {
            ReadError::TooManyGroups { groups, limit } => {
                metadata.insert("groups".to_owned(), groups.to_string());
                metadata.insert("limit".to_owned(), limit.to_string());
            }
            ReadError::Busy { kind, limit } => {
                metadata.insert("kind".to_owned(), (*kind).to_owned());
                metadata.insert("limit".to_owned(), limit.to_string());
                details.set_retry_info(Some(RETRY_DELAY));
            }
            ReadError::Deadline { secs } => {
                metadata.insert("timeout_secs".to_owned(), secs.to_string());
            }
            _ => {}
        }
        details.set_error_info(e.reason(), svc::status::ERROR_DOMAIN, metadata);
        if let Some(field) = e.field() {
            details.add_bad_request_violation(field, message.clone());
        }
        let message = match e.field() {
            Some(field) => format!("{field}: {message}"),
            None => message,
        };
        Status::with_error_details(code, message, details)
    }
}

/// The queries refused by a bound, by reason, since start: the values behind
/// `motcua_stats_queries_rejected_total{reason}` (the wiring registers them).
#[derive(Debug, Default)]
pub struct Rejections {
    pub too_many_queries: AtomicU64,
    pub too_many_groups: AtomicU64,
    pub query_timeout: AtomicU64,
}

impl Rejections {
    /// `(reason, count)` for each reason.
    pub fn counts(&self) -> [(&'static str, u64); 3] {
        [
            (
                "too_many_queries",
                self.too_many_queries.load(Ordering::Relaxed),
            ),
            (
                "too_many_groups",
                self.too_many_groups.load(Ordering::Relaxed),
            ),
            ("query_timeout", self.query_timeout.load(Ordering::Relaxed)),
        ]
    }

    fn count(&self, e: &ReadError) {
        let counter = match e {
            ReadError::Busy { .. } => &self.too_many_queries,
            ReadError::TooManyGroups { .. } => &self.too_many_groups,
            ReadError::Deadline { .. } => &self.query_timeout,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// The statistics reads with their bounds; cheap to clone (one per transport).
#[derive(Debug, Clone)]
pub struct Reader {
    pool: PgPool,
    limits: QueryLimits,
    targets: stats::Targets,
    live: Arc<Semaphore>,
    as_recorded: Arc<Semaphore>,
    rejections: Arc<Rejections>,
    scoring: Arc<ScoringConfig>,
}

impl Reader {
    /// The reader over the database `pool` connects to, with its own bounded pool (opened
    /// lazily: building it makes no connection).
    pub fn new(pool: &PgPool, limits: QueryLimits, targets: stats::Targets) -> Reader {
        let timeout_ms = u64::from(limits.query_timeout_secs.max(1)) * 1000;
        let options = (*pool.connect_options())
            .clone()
            .options([("statement_timeout", timeout_ms)]);
        let size = limits
            .max_live_queries
            .saturating_add(limits.max_as_recorded_queries)
            .max(1);
        // A query is one round trip (`store::query`); pinging every connection taken from the
        // pool would be a second (see `svc::config::ping_after_idle`).
        let read_pool = svc::config::ping_after_idle(
            PgPoolOptions::new()
                .max_connections(size)
                .min_connections(0)
                .idle_timeout(Duration::from_secs(60))
                .acquire_timeout(Duration::from_millis(timeout_ms)),
        )
        .connect_lazy_with(options);
        Reader {
            pool: read_pool,
            limits,
            targets,
            live: Arc::new(Semaphore::new(limits.max_live_queries as usize)),
            as_recorded: Arc::new(Semaphore::new(limits.max_as_recorded_queries as usize)),
            rejections: Arc::default(),
            scoring: Arc::new(crate::scoring::shipped()),
        }
    }

    /// The reader scoring the 766 index with `scoring` (default: the shipped
    /// `deploy/config/scorecard-766.toml`).
    pub fn with_scoring(self, scoring: Arc<ScoringConfig>) -> Reader {
        Reader { scoring, ..self }
    }

    /// The recorded agency structure when `structure_at` asks for one.
    async fn structure(
        &self,
        structure_at: Option<NaiveDate>,
    ) -> Result<Option<(AgencyStructure, NaiveDate)>, ReadError> {
        match structure_at {
            None => Ok(None),
            Some(date) => Ok(Some((crate::structure::load(&self.pool).await?, date))),
        }
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    /// The refusals so far, shared by every clone.
    pub fn rejections(&self) -> Arc<Rejections> {
        self.rejections.clone()
    }

    /// A permit to run one query from `source`, or [`ReadError::Busy`] at once.
    pub fn admit(&self, source: Source) -> Result<OwnedSemaphorePermit, ReadError> {
        let (semaphore, kind, limit) = match source {
            Source::Live => (&self.live, "live", self.limits.max_live_queries),
            Source::AsRecordedAt(_) => (
                &self.as_recorded,
                "as_recorded_at",
                self.limits.max_as_recorded_queries,
            ),
        };
        semaphore
            .clone()
            .try_acquire_owned()
            .map_err(|_| ReadError::Busy { kind, limit })
    }

    /// Runs `read` admitted and within the deadline; counts the refusals.
    async fn bounded<T>(
        &self,
        source: Source,
        read: impl Future<Output = Result<T, ReadError>>,
    ) -> Result<T, ReadError> {
        let answer = async {
            let _permit = self.admit(source)?;
            let secs = self.limits.query_timeout_secs.max(1);
            match tokio::time::timeout(Duration::from_secs(u64::from(secs)), read).await {
                Ok(Err(ReadError::Deadline { .. })) | Err(_) => Err(ReadError::Deadline { secs }),
                Ok(answer) => answer,
            }
        }
        .await;
        if let Err(e) = &answer {
            self.rejections.count(e);
        }
        answer
    }

    fn check_groups(&self, groups: usize) -> Result<(), ReadError> {
        if groups > self.limits.max_groups as usize {
            return Err(ReadError::TooManyGroups {
                groups,
                limit: self.limits.max_groups,
            });
        }
        Ok(())
    }

    /// The indicators of `query` from `source` ([`answers::indicators_of`]), bounded.
    pub async fn indicators(
        &self,
        query: &Query,
        source: Source,
        structure_at: Option<NaiveDate>,
    ) -> Result<IndicatorsAnswer, ReadError> {
        self.bounded(source, async {
            let structure = self.structure(structure_at).await?;
            let view = structure.as_ref().map(|(structure, date)| InStructure {
                structure,
                date: *date,
            });
            let groups = crate::figures::figures_in(
                &self.pool,
                query,
                source,
                view,
                self.limits.max_stored_groups,
            )
            .await?;
            self.check_groups(groups.len())?;
            let mut answer = answers::indicators_of(query, &groups, &self.targets);
            if source == Source::Live {
                // Dossiers whose apply fails are missing from the live figures: say how many.
                let failing = crate::store::failing_dossiers(&self.pool).await?;
                answer.dossiers_not_counted = u64::try_from(failing).unwrap_or(0);
            }
            Ok(answer)
        })
        .await
    }

    /// `form` for `query` from `source` ([`answers::report_figures`]), bounded.
    pub async fn report(
        &self,
        form: Form,
        query: &Query,
        source: Source,
        structure_at: Option<NaiveDate>,
    ) -> Result<Table, ReadError> {
        self.bounded(source, async {
            // Biểu mẫu 3 leaves out an abolished level's empty row: it needs the structure of
            // the date asked (or of the period's last day) even without `structure_at`.
            let structure = if form == Form::BieuMau3Section3 || structure_at.is_some() {
                Some(crate::structure::load(&self.pool).await?)
            } else {
                None
            };
            let view = structure
                .as_ref()
                .zip(structure_at)
                .map(|(structure, date)| InStructure { structure, date });
            let (query, groups) = answers::report_figures(
                &self.pool,
                form,
                query,
                source,
                view,
                self.limits.max_stored_groups,
            )
            .await?;
            self.check_groups(groups.len())?;
            let as_of = structure_at.unwrap_or_else(|| query.to.pred_opt().unwrap_or(query.to));
            let context = FormContext {
                scoring: &self.scoring,
                levels_in_use: &|level| {
                    structure
                        .as_ref()
                        .is_none_or(|s| s.level_in_use(level, as_of))
                },
            };
            Ok(crate::forms::fill_with(form, &query, &groups, &context))
        })
        .await
    }

    /// [`answers::dossier`], admitted as a live query.
    pub async fn dossier(&self, dossier_id: &str) -> Result<Option<domain::Dossier>, ReadError> {
        self.bounded(Source::Live, async {
            Ok(answers::dossier(&self.pool, dossier_id).await?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;

    fn reader(live: u32, as_recorded: u32) -> Reader {
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        Reader::new(
            &pool,
            QueryLimits {
                max_live_queries: live,
                max_as_recorded_queries: as_recorded,
                ..QueryLimits::default()
            },
            stats::Targets::default(),
        )
    }

    #[tokio::test]
    async fn admission_refuses_beyond_each_limit_and_frees_on_drop() {
        let r = reader(2, 1);
        let live = [
            r.admit(Source::Live).unwrap(),
            r.admit(Source::Live).unwrap(),
        ];
        let busy = r.admit(Source::Live).unwrap_err();
        assert!(
            matches!(
                busy,
                ReadError::Busy {
                    kind: "live",
                    limit: 2
                }
            ),
            "{busy:?}"
        );
        // The other kind has its own permits.
        let at = Source::AsRecordedAt(Utc::now());
        let held = r.admit(at).unwrap();
        assert!(matches!(
            r.admit(at),
            Err(ReadError::Busy {
                kind: "as_recorded_at",
                ..
            })
        ));
        drop(live);
        drop(held);
        assert!(r.admit(Source::Live).is_ok());
        assert!(r.admit(at).is_ok());
    }

    #[tokio::test]
    async fn the_query_sessions_carry_the_deadline_and_the_pool_its_size() {
        let db = testkit::TestDb::new().await;
        let r = Reader::new(
            &db.pool,
            QueryLimits {
                query_timeout_secs: 7,
                max_live_queries: 3,
                max_as_recorded_queries: 2,
                ..QueryLimits::default()
            },
            stats::Targets::default(),
        );
        let timeout: String = sqlx::query_scalar("SHOW statement_timeout")
            .fetch_one(&r.pool)
            .await
            .unwrap();
        assert_eq!(timeout, "7s");
        assert_eq!(r.pool.options().get_max_connections(), 5);
    }

    #[test]
    fn statuses_carry_the_reason_the_field_and_a_retry_delay() {
        let busy = Status::from(ReadError::Busy {
            kind: "live",
            limit: 8,
        });
        assert_eq!(busy.code(), Code::ResourceExhausted);
        assert_eq!(
            busy.get_details_error_info().unwrap().reason,
            "too_many_queries"
        );
        assert_eq!(
            busy.get_details_retry_info().unwrap().retry_delay,
            Some(RETRY_DELAY)
        );
        assert!(!busy.message().contains("written"), "{busy:?}");

        let groups = Status::from(ReadError::TooManyGroups {
            groups: 9000,
            limit: 3000,
        });
        assert_eq!(groups.code(), Code::InvalidArgument);
        assert_eq!(
            groups.get_details_bad_request().unwrap().field_violations[0].field,
            "group_by"
        );
        assert_eq!(
            groups.get_details_error_info().unwrap().reason,
            "too_many_groups"
        );
        assert!(groups.message().starts_with("group_by: "), "{groups:?}");

        let late = Status::from(ReadError::Deadline { secs: 15 });
        assert_eq!(late.code(), Code::DeadlineExceeded);
        assert_eq!(
            late.get_details_error_info().unwrap().reason,
            "query_timeout"
        );

        let down = Status::from(ReadError::Unavailable(sqlx::Error::PoolTimedOut));
        assert_eq!(down.code(), Code::Unavailable);
        for s in [&down, &Status::from(ReadError::Internal("x".into()))] {
            assert!(!s.message().contains("written"), "{s:?}");
            assert!(!s.message().contains("event_id"), "{s:?}");
        }
    }
}
