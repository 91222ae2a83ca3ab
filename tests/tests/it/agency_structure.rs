//! The agency structure changed by an administrator over gRPC (`AgencyStructureService`):
//! only administrator tokens publish (an auditor and a counter are refused, nothing recorded);
//! every fault is refused naming the request's field (an undeclared successor, a circle, a date
//! out of range, a malformed date or code, an unspecified kind, a contradiction with a recorded
//! entry — the last FAILED_PRECONDITION with its reason), all or nothing; a publication is
//! recorded with the token's name and is idempotent; and the change is visible at once in the
//! statistics asked with `structure_at`, from the date it takes effect on, and in
//! `GetAgencyStructure`.

use std::time::Duration;

use api::v1 as pb;
use testkit::{TestDb, TestNats};
use tests::lifecycle::{Stack, error_reason};
use tests::projection::RunningProjection;
use tests::{
    ADMIN, AUDITOR, COUNTER_DISTRICT, COUNTER_DISTRICT_2, DISTRICT_AGENCY, DISTRICT_AGENCY_2,
    PROVINCE_AGENCY, RunningRelay, assert_details_agree, authed, local, receive_request,
};
use tonic::{Code, Status};

const WAIT: Duration = Duration::from_secs(60);

fn declared(code: &str, level: pb::Level) -> pb::AgencyDeclaration {
    pb::AgencyDeclaration {
        code: code.to_owned(),
        name: format!("Cơ quan {code}"),
        level: level as i32,
    }
}

fn merged(agency: &str, from: &str, successor: &str) -> pb::AgencyChange {
    pb::AgencyChange {
        agency: agency.to_owned(),
        from: from.to_owned(),
        kind: pb::AgencyChangeKind::Merged as i32,
        successor: successor.to_owned(),
        level: pb::Level::Unspecified as i32,
        source: "Nghị quyết mẫu".to_owned(),
    }
}

/// The two districts and the province declared; the second district merged into the first
/// from 15 May 2024.
fn merger() -> pb::PublishAgencyStructureRequest {
    pb::PublishAgencyStructureRequest {
        agencies: vec![
            declared(PROVINCE_AGENCY, pb::Level::Province),
            declared(DISTRICT_AGENCY, pb::Level::District),
            declared(DISTRICT_AGENCY_2, pb::Level::District),
        ],
        changes: vec![merged(DISTRICT_AGENCY_2, "2024-05-15", DISTRICT_AGENCY)],
        levels_abolished: vec![],
    }
}

/// The field violations of a refusal.
fn fields(status: &Status) -> Vec<String> {
    assert_details_agree(status);
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_changes_the_structure_over_grpc_and_statistics_follow_it() {
    let db = TestDb::new().await;
    let log = eventlog::EventLog::from_pool(db.pool.clone());
    let stack = Stack::start(log.clone()).await;
    let nats = TestNats::new().await;
    let mut relay = RunningRelay::start(log.clone(), &nats.url, &nats.stream, &nats.prefix).await;
    let projection = RunningProjection::start(
        log.clone(),
        &nats.url,
        &nats.stream,
        &nats.prefix,
        "agencies",
    )
    .await;

    // One dossier received by each district in April 2024.
    let mut intake = stack.intake_client().await;
    for (id, token, agency) in [
        ("HS-AS-1", COUNTER_DISTRICT, DISTRICT_AGENCY),
        ("HS-AS-2", COUNTER_DISTRICT_2, DISTRICT_AGENCY_2),
    ] {
        let mut r = receive_request(id, local(2024, 4, 10, 9, 0));
        r.profile.as_mut().unwrap().agency_code = agency.to_owned();
        intake
            .receive_dossier(authed(token, r))
            .await
            .expect("received");
    }
    relay.wait_published(log.head().await.unwrap(), WAIT).await;
    projection.wait_caught_up(WAIT).await;

    let mut stats = projection.client().await;
    let by_agency = |structure_at: &str| {
        let mut stats = stats.clone();
        let request = pb::GetIndicatorsRequest {
            from: "2024-04-01".into(),
            to: "2024-05-01".into(),
            group_by: vec![pb::Dimension::Agency as i32],
            structure_at: structure_at.to_owned(),
            ..Default::default()
        };
        async move {
            let answer = stats
                .get_indicators(authed(AUDITOR, request))
                .await
                .expect("GetIndicators")
                .into_inner();
            answer
                .groups
                .iter()
                .map(|g| {
                    (
                        g.key[0].value.clone(),
                        g.indicators.as_ref().unwrap().received,
                    )
                })
                .collect::<Vec<_>>()
        }
    };
    let apart = vec![
        (DISTRICT_AGENCY.to_owned(), 1),
        (DISTRICT_AGENCY_2.to_owned(), 1),
    ];
    assert_eq!(
        by_agency("2024-06-01").await,
        apart,
        "no structure yet: as received"
    );

    let mut admin = projection.structure_client().await;
    let recorded =
        |admin: &mut api::v1::agency_structure_service_client::AgencyStructureServiceClient<_>| {
            let mut admin = admin.clone();
            async move {
                admin
                    .get_agency_structure(authed(
                        AUDITOR,
                        pb::GetAgencyStructureRequest {
                            at: "2024-06-01".into(),
                        },
                    ))
                    .await
                    .expect("GetAgencyStructure")
                    .into_inner()
                    .entries
                    .len()
            }
        };

    // Auditors and counters may not change it; nothing is recorded.
    for token in [AUDITOR, COUNTER_DISTRICT] {
        let status = admin
            .publish_agency_structure(authed(token, merger()))
            .await
            .expect_err("not an administrator");
        assert_eq!(status.code(), Code::PermissionDenied, "{token}: {status:?}");
        assert!(status.message().contains("administrator"), "{status:?}");
    }
    assert_eq!(recorded(&mut admin).await, 0);

    // Every fault names its field; nothing is recorded.
    let invalid = |mutate: &dyn Fn(&mut pb::PublishAgencyStructureRequest)| {
        let mut r = merger();
        mutate(&mut r);
        r
    };
    let cases: Vec<(&str, pb::PublishAgencyStructureRequest, &str)> = vec![
        (
            "undeclared successor",
            invalid(&|r| r.changes[0].successor = "000.99.99.H40".into()),
            "changes[0].successor",
        ),
        (
            "date out of range",
            invalid(&|r| r.changes[0].from = "2101-01-01".into()),
            "changes[0].from",
        ),
        (
            "malformed date",
            invalid(&|r| r.changes[0].from = "2024-13-01".into()),
            "changes[0].from",
        ),
        (
            "unspecified kind",
            invalid(&|r| r.changes[0].kind = pb::AgencyChangeKind::Unspecified as i32),
            "changes[0].kind",
        ),
        (
            "merge without successor",
            invalid(&|r| r.changes[0].successor = String::new()),
            "changes[0].successor",
        ),
        (
            "level on a merge",
            invalid(&|r| r.changes[0].level = pb::Level::Commune as i32),
            "changes[0].level",
        ),
        (
            "malformed agency code",
            invalid(&|r| r.agencies[1].code = "huyện 12".into()),
            "agencies[1].code",
        ),
        (
            "unspecified level",
            invalid(&|r| r.agencies[0].level = pb::Level::Unspecified as i32),
            "agencies[0].level",
        ),
        (
            "empty name",
            invalid(&|r| r.agencies[2].name = " ".into()),
            "agencies[2].name",
        ),
        (
            "a circle of successors",
            invalid(&|r| {
                r.changes
                    .push(merged(DISTRICT_AGENCY, "2024-06-01", DISTRICT_AGENCY_2))
            }),
            "changes[1].successor",
        ),
        (
            "two different entries about the same thing",
            invalid(&|r| {
                r.agencies
                    .push(declared(DISTRICT_AGENCY, pb::Level::Commune))
            }),
            "agencies[3]",
        ),
        (
            "no entry",
            pb::PublishAgencyStructureRequest::default(),
            "agencies",
        ),
    ];
    for (what, request, field) in cases {
        let status = admin
            .publish_agency_structure(authed(ADMIN, request))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert_eq!(fields(&status), [field], "{what}: {status:?}");
    }
    assert_eq!(recorded(&mut admin).await, 0, "all or nothing");

    // Published by the administrator: recorded with the token's name, visible at once.
    let answer = admin
        .publish_agency_structure(authed(ADMIN, merger()))
        .await
        .expect("published")
        .into_inner();
    assert_eq!((answer.added, answer.unchanged), (4, 0));
    let again = admin
        .publish_agency_structure(authed(ADMIN, merger()))
        .await
        .expect("published again")
        .into_inner();
    assert_eq!((again.added, again.unchanged), (0, 4), "idempotent");
    assert_eq!(
        by_agency("2024-06-01").await,
        vec![(DISTRICT_AGENCY.to_owned(), 2)],
        "merged from 15 May"
    );
    assert_eq!(
        by_agency("2024-05-14").await,
        apart,
        "before the merge: apart"
    );
    assert_eq!(by_agency("").await, apart, "the structure of their time");
    let structure = admin
        .get_agency_structure(authed(
            COUNTER_DISTRICT,
            pb::GetAgencyStructureRequest {
                at: "2024-06-01".into(),
            },
        ))
        .await
        .expect("GetAgencyStructure")
        .into_inner();
    assert_eq!(structure.at, "2024-06-01");
    let second = structure
        .agencies
        .iter()
        .find(|a| a.declared.as_ref().unwrap().code == DISTRICT_AGENCY_2)
        .expect("declared");
    assert_eq!(
        (second.counted_under.as_str(), second.level),
        (DISTRICT_AGENCY, pb::Level::District as i32)
    );
    assert_eq!(structure.entries.len(), 4);
    assert!(
        structure
            .entries
            .iter()
            .all(|e| e.recorded_by == "catalogue admin" && e.recorded_at.is_some()),
        "{structure:?}"
    );

    // A contradiction with what is recorded: FAILED_PRECONDITION with its reason and field.
    let status = admin
        .publish_agency_structure(authed(
            ADMIN,
            pb::PublishAgencyStructureRequest {
                changes: vec![merged(DISTRICT_AGENCY_2, "2024-05-15", PROVINCE_AGENCY)],
                ..Default::default()
            },
        ))
        .await
        .expect_err("an entry is never rewritten");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(
        error_reason(&status).as_deref(),
        Some(projection::structure_service::RECORDED_DIFFERENTLY)
    );
    assert_eq!(fields(&status), ["changes[0]"], "{status:?}");

    // A correction is a later change: the district level abolished and the first district
    // made a commune from 1 July; the forms then show no empty district row.
    let reform = pb::PublishAgencyStructureRequest {
        changes: vec![pb::AgencyChange {
            agency: DISTRICT_AGENCY.to_owned(),
            from: "2024-07-01".into(),
            kind: pb::AgencyChangeKind::Level as i32,
            successor: String::new(),
            level: pb::Level::Commune as i32,
            source: String::new(),
        }],
        levels_abolished: vec![pb::LevelAbolition {
            level: pb::Level::District as i32,
            from: "2024-07-01".into(),
            source: "Luật Tổ chức chính quyền địa phương 2025 (mẫu)".into(),
        }],
        ..Default::default()
    };
    admin
        .publish_agency_structure(authed(ADMIN, reform))
        .await
        .expect("the reform is published");
    let report = stats
        .get_report(authed(
            AUDITOR,
            pb::GetReportRequest {
                form: pb::ReportForm::BieuMau3Section3 as i32,
                from: "2024-04-01".into(),
                to: "2024-05-01".into(),
                structure_at: "2024-07-01".into(),
                ..Default::default()
            },
        ))
        .await
        .expect("Biểu mẫu 3")
        .into_inner();
    let levels: Vec<String> = report
        .rows
        .iter()
        .map(|r| match &r.cells[1].value {
            Some(pb::cell::Value::Text(t)) => t.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(levels, ["province", "commune"]);
    projection.stop().await;
    relay.stop().await;
}
