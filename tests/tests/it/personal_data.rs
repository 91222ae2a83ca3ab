//! The applicant's personal data end to end: sealed at reception, read only by the holding
//! agency or a scoped token (every read logged), erased by destroying its key with the log and
//! its proofs still valid, nowhere in plaintext; and the citizen lookup.

use std::net::SocketAddr;

use api::v1 as pb;
use api::v1::applicant_service_client::ApplicantServiceClient;
use api::v1::citizen_lookup_service_client::CitizenLookupServiceClient;
use api::v1::intake_service_client::IntakeServiceClient;
use eventlog::EventLog;
use svc::{Principal, Role, Scope};
use tests::{COUNTER_DISTRICT, COUNTER_PROVINCE, authed, receive_request, test_tokens};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "test-erasure-admin";
const NAME: &str = "Nguyễn Thị Bí Mật";
const CCCD: &str = "079188004242";
const PHONE: &str = "0912777333";
const EMAIL: &str = "bi.mat.42@example.vn";

fn applicant() -> pb::Applicant {
    pb::Applicant {
        owner_name: NAME.into(),
        document: Some(pb::IdentityDocument {
            kind: pb::DocumentKind::Cccd as i32,
            number: CCCD.into(),
        }),
        phone: PHONE.into(),
        email: EMAIL.into(),
        address: "17 Đường Không Tên, Phường 9".into(),
        representative: None,
    }
}

/// Every text of every table of the database, as one string per row.
async fn every_row(pool: &sqlx::PgPool) -> Vec<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(table_name) FROM information_schema.tables
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut rows = Vec::new();
    for t in tables {
        let texts: Vec<String> =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT t::text FROM {t} t")))
                .fetch_all(pool)
                .await
                .unwrap();
        rows.extend(texts);
    }
    rows
}

fn assert_no_plaintext(haystack: &str, what: &str) {
    for needle in [NAME, CCCD, PHONE, EMAIL, "Không Tên"] {
        assert!(!haystack.contains(needle), "{what} holds personal data");
        let hexed = needle
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        assert!(
            !haystack.contains(&hexed),
            "{what} holds personal data in hex"
        );
    }
}

#[tokio::test]
async fn an_applicant_is_sealed_read_with_a_trace_erased_with_the_log_intact_and_looked_up() {
    let db = testkit::TestDb::new().await;
    let log = EventLog::from_pool(db.pool.clone());
    let mut tokens = test_tokens();
    tokens.insert(
        ADMIN,
        Principal {
            name: "erasure admin".into(),
            agency: None,
            level: None,
            role: Role::Auditor,
            scopes: vec![Scope::Erasure],
        },
    );
    let mut deps = svc::ServiceDeps::for_tests(log.clone(), tokens);
    deps.keyring = Some(personal::Keyring::generate("k1").unwrap());
    // A clock that does not move: the lookup's one-minute window cannot roll over mid-test.
    let clock = tests::processing::ManualClock::new(chrono::Utc::now());
    deps.clock = clock.clone();
    let app = intake::build_with_lookup(
        deps,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        intake::LookupLimits {
            per_client_per_minute: 1_000,
            per_dossier_per_minute: 4,
            max_tracked: 1_000,
        },
    )
    .await
    .unwrap();
    let addr = format!("http://{}", app.local_addr());
    let stop = CancellationToken::new();
    let task = tokio::spawn(app.run_until_stopped(stop.clone()));
    let mut intake = IntakeServiceClient::connect(addr.clone()).await.unwrap();
    let mut applicants = ApplicantServiceClient::connect(addr.clone()).await.unwrap();
    let mut lookup = CitizenLookupServiceClient::connect(addr).await.unwrap();

    // Reception with an applicant: a lookup secret; a retry answers the same one.
    let dossier = "H40.12-PII-0001";
    let mut req = receive_request(dossier, tests::local(2024, 4, 22, 9, 0));
    req.applicant = Some(applicant());
    req.return_method = pb::ReturnMethod::Post as i32;
    let first = intake
        .receive_dossier(authed(COUNTER_DISTRICT, req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.lookup_secret.len(), 24);
    let again = intake
        .receive_dossier(authed(COUNTER_DISTRICT, req.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.lookup_secret, first.lookup_secret);
    assert!(again.event.unwrap().duplicate);
    // The same event id with another applicant is another request.
    let mut changed = req.clone();
    changed.applicant.as_mut().unwrap().phone = "0912777334".into();
    let err = intake
        .receive_dossier(authed(COUNTER_DISTRICT, changed))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::AlreadyExists);
    // A malformed identity number is named, not echoed.
    let mut bad = receive_request("H40.12-PII-0002", tests::local(2024, 4, 22, 9, 0));
    bad.applicant = Some(applicant());
    bad.applicant
        .as_mut()
        .unwrap()
        .document
        .as_mut()
        .unwrap()
        .number = "07918800424".into();
    let err = intake
        .receive_dossier(authed(COUNTER_DISTRICT, bad))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("applicant.document.number"));
    assert!(!err.message().contains("07918800424"));

    // The holding agency reads it; another agency is refused and learns nothing.
    let get = pb::GetApplicantRequest {
        dossier_id: dossier.into(),
    };
    let read = applicants
        .get_applicant(authed(COUNTER_DISTRICT, get.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.applicant, Some(applicant()));
    let denied = applicants
        .get_applicant(authed(COUNTER_PROVINCE, get.clone()))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    assert_no_plaintext(&format!("{denied:?}"), "the refusal");

    // Nothing in plaintext anywhere the system wrote, before and after erasure.
    assert_no_plaintext(&every_row(&db.pool).await.join("\n"), "the database");

    // Erasure: only the erasure scope; then reads say erased.
    let erase = pb::EraseApplicantRequest {
        dossier_id: dossier.into(),
        reference: "YC-2026-001".into(),
    };
    assert_eq!(
        applicants
            .erase_applicant(authed(COUNTER_DISTRICT, erase.clone()))
            .await
            .unwrap_err()
            .code(),
        tonic::Code::PermissionDenied
    );
    let erased = applicants
        .erase_applicant(authed(ADMIN, erase.clone()))
        .await
        .unwrap()
        .into_inner();
    let twice = applicants
        .erase_applicant(authed(ADMIN, erase))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(erased.erased_at, twice.erased_at);
    let after = applicants
        .get_applicant(authed(COUNTER_DISTRICT, get))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(after.applicant, None);
    assert_eq!(after.erased_at, erased.erased_at);
    let rows = every_row(&db.pool).await.join("\n");
    assert_no_plaintext(&rows, "the database after erasure");

    // The access log: the read, the refusal, the erasure, the read after it.
    let log_rows = applicants
        .list_applicant_access(authed(
            tests::AUDITOR,
            pb::ListApplicantAccessRequest {
                dossier_id: dossier.into(),
                after_id: 0,
                limit: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .accesses;
    let outcomes: Vec<(&str, &str)> = log_rows
        .iter()
        .map(|a| (a.reader.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("district counter", "read"),
            ("province counter", "denied"),
            ("erasure admin", "erased"),
            ("district counter", "erased_data"),
        ]
    );

    // The log is untouched: the chain and every hash recompute from the stored ciphertext.
    match audit::verify::verify_database(log.pool(), None)
        .await
        .unwrap()
    {
        audit::verify::Outcome::Intact(_) => {}
        other => panic!("log no longer verifies after erasure: {other:?}"),
    }

    // Citizen lookup: right secret, wrong secret (same answer as an unknown dossier), limit.
    let ask = |secret: &str| pb::LookUpDossierRequest {
        dossier_id: dossier.into(),
        secret: secret.into(),
    };
    let found = lookup
        .look_up_dossier(ask(&first.lookup_secret.to_lowercase()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.status, 2);
    assert_eq!(found.due_at, first.due_at);
    assert!(!found.result_ready);
    assert_eq!(found.return_method, pb::ReturnMethod::Post as i32);
    let wrong = lookup
        .look_up_dossier(ask("0000-0000-0000-0000-0000"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::NotFound);
    let unknown = lookup
        .look_up_dossier(pb::LookUpDossierRequest {
            dossier_id: "H40.12-NONE".into(),
            secret: first.lookup_secret.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.message(), wrong.message());
    for _ in 0..2 {
        lookup
            .look_up_dossier(ask(&first.lookup_secret))
            .await
            .unwrap();
    }
    let limited = lookup
        .look_up_dossier(ask(&first.lookup_secret))
        .await
        .unwrap_err();
    assert_eq!(limited.code(), tonic::Code::ResourceExhausted);
    clock.set(chrono::Utc::now() + chrono::Duration::minutes(1));
    lookup
        .look_up_dossier(ask(&first.lookup_secret))
        .await
        .unwrap();

    stop.cancel();
    task.await.unwrap().unwrap();
}
