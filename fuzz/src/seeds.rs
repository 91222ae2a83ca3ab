//! The seed corpora, written by code from the shapes the tests use: valid requests, so that
//! fuzzing starts deep in the parsers and the rules rather than at the protobuf framing.

use api::v1 as pb;
use chrono::{DateTime, Utc};
use prost::Message;

use crate::fixtures::{AGENCY, DOSSIER, OTHER_AGENCY, local};

/// `(file name, bytes)` for each seed of `target`.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let seeds: Vec<(&str, Vec<u8>)> = match target {
        "intake" => vec![
            ("receive_dossier", rpc(0, &receive())),
            ("receive_dossier_by_code", rpc(0, &{
                // Only the procedure code: the catalogue fills the rest.
                let mut r = receive();
                let p = r.profile.as_mut().expect("profile");
                p.online_level = pb::OnlineServiceLevel::Unspecified as i32;
                p.sector_code = String::new();
                r.statutory_time = None;
                r
            })),
            (
                "record_digitized_components",
                rpc(
                    1,
                    &pb::RecordDigitizedComponentsRequest {
                        event_id: id(2),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: Some(1),
                        digitized: vec!["don-de-nghi".into()],
                        reused: vec!["cccd".into()],
                    },
                ),
            ),
            (
                "refuse_at_counter",
                rpc(
                    2,
                    &pb::RefuseAtCounterRequest {
                        event_id: id(3),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        profile: Some(profile()),
                        reason: "Hồ sơ không thuộc thẩm quyền".into(),
                    },
                ),
            ),
        ],
        "processing" => vec![
            (
                "transfer",
                rpc(
                    0,
                    &pb::TransferRequest {
                        event_id: id(4),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        to_agency: OTHER_AGENCY.into(),
                        mode: pb::TransferMode::Electronic as i32,
                    },
                ),
            ),
            (
                "request_supplement",
                rpc(
                    1,
                    &pb::RequestSupplementRequest {
                        event_id: id(5),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        reason: "Thiếu bản vẽ".into(),
                    },
                ),
            ),
            (
                "receive_supplement",
                rpc(
                    2,
                    &pb::ReceiveSupplementRequest {
                        event_id: id(6),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                    },
                ),
            ),
            (
                "resolve",
                rpc(
                    3,
                    &pb::ResolveRequest {
                        event_id: id(7),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        outcome: pb::Outcome::Approved as i32,
                        deciding_agency: AGENCY.into(),
                    },
                ),
            ),
            (
                "stop_processing",
                rpc(
                    4,
                    &pb::StopProcessingRequest {
                        event_id: id(8),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        reason: "Cơ quan tạm dừng".into(),
                    },
                ),
            ),
            (
                "withdraw",
                rpc(
                    5,
                    &pb::WithdrawRequest {
                        event_id: id(9),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        reason: "Công dân rút hồ sơ".into(),
                    },
                ),
            ),
            (
                "request_financial_obligation",
                rpc(
                    6,
                    &pb::RequestFinancialObligationRequest {
                        event_id: id(30),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        reason: "Nộp tiền sử dụng đất".into(),
                    },
                ),
            ),
            (
                "fulfil_financial_obligation",
                rpc(
                    7,
                    &pb::FulfilFinancialObligationRequest {
                        event_id: id(31),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                    },
                ),
            ),
        ],
        "payment" => vec![
            (
                "assess_fee",
                rpc(
                    0,
                    &pb::AssessFeeRequest {
                        event_id: id(10),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        amount_vnd: 150_000,
                        kind: pb::FeeKind::Fee as i32,
                    },
                ),
            ),
            (
                "record_payment",
                rpc(
                    1,
                    &pb::RecordPaymentRequest {
                        event_id: id(11),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        amount_vnd: 150_000,
                        channel: pb::PaymentChannel::NationalPlatform as i32,
                        transaction_id: "DVCQG-2024-000123".into(),
                    },
                ),
            ),
        ],
        "results" => vec![
            ("attach_result", rpc(0, &attach_result())),
            (
                "return_result",
                rpc(
                    1,
                    &pb::ReturnResultRequest {
                        event_id: id(13),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        method: pb::ReturnMethod::Counter as i32,
                    },
                ),
            ),
            (
                "issue_apology",
                rpc(
                    2,
                    &pb::IssueApologyRequest {
                        event_id: id(14),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        reason: "Chậm do thẩm định".into(),
                        new_appointment: ts(local(2024, 3, 29, 9, 0)),
                        signer: "Phó Giám đốc".into(),
                        delivery: pb::ApologyDelivery::PortalAccount as i32,
                    },
                ),
            ),
            (
                "record_rating",
                rpc(
                    3,
                    &pb::RecordRatingRequest {
                        event_id: id(15),
                        dossier_id: DOSSIER.into(),
                        occurred_at: at(),
                        expected_version: None,
                        rating: pb::Rating::VerySatisfied as i32,
                    },
                ),
            ),
        ],
        "import_history" => vec![
            ("lifecycle", lifecycle().encode_to_vec()),
            (
                "refused_at_intake",
                pb::ImportBatch {
                    batch_seq: 2,
                    events: vec![event(
                        30,
                        local(2024, 3, 4, 9, 0),
                        pb::event::Body::RefusedAtIntake(pb::RefusedAtIntake {
                            profile: Some(profile()),
                            reason: "Sai thẩm quyền".into(),
                        }),
                    )],
                }
                .encode_to_vec(),
            ),
        ],
        "stats_http" => vec![
            ("period", b"from=2024-01-01&to=2024-04-01".to_vec()),
            (
                "filtered_grouped",
                format!(
                    "from=2024-01-01&to=2025-01-01&level=district&agency_code={AGENCY}&\
                     sector_code=land&procedure_code=1.004227&channel=online&\
                     applicant_type=citizen&group_by=agency,sector"
                )
                .into_bytes(),
            ),
            (
                "as_recorded_at_csv",
                b"from=2024-01-01&to=2024-02-01&as_recorded_at=2024-03-01T00%3A00%3A00%2B07%3A00&format=csv"
                    .to_vec(),
            ),
        ],
        "stats_grpc" => vec![
            (
                "get_indicators",
                rpc(
                    0,
                    &pb::GetIndicatorsRequest {
                        from: "2024-01-01".into(),
                        to: "2024-07-01".into(),
                        level: pb::Level::District as i32,
                        agency_code: AGENCY.into(),
                        group_by: vec![pb::Dimension::Sector as i32, pb::Dimension::Channel as i32],
                        as_recorded_at: ts(local(2024, 7, 2, 0, 0)),
                        ..Default::default()
                    },
                ),
            ),
            (
                "get_report",
                rpc(
                    1,
                    &pb::GetReportRequest {
                        form: pb::ReportForm::Ii06a as i32,
                        from: "2024-01-01".into(),
                        to: "2024-04-01".into(),
                        group_by: vec![pb::Dimension::Agency as i32],
                        ..Default::default()
                    },
                ),
            ),
            (
                "get_report_scorecard",
                rpc(
                    1,
                    &pb::GetReportRequest {
                        form: pb::ReportForm::Scorecard766 as i32,
                        from: "2024-01-01".into(),
                        to: "2025-01-01".into(),
                        sector_code: "land".into(),
                        ..Default::default()
                    },
                ),
            ),
        ],
        "replay" => vec![
            (
                "stream_events",
                rpc(
                    0,
                    &pb::StreamEventsRequest {
                        after_position: 10,
                        to_position: Some(1000),
                        recorded_from: ts(local(2024, 1, 1, 0, 0)),
                        recorded_to: ts(local(2024, 6, 1, 0, 0)),
                        dossier_id: DOSSIER.into(),
                        agency_code: AGENCY.into(),
                        level: pb::Level::District as i32,
                        sector_code: "land".into(),
                        event_types: vec!["received".into(), "resolved".into()],
                        occurred_from: ts(local(2024, 1, 1, 0, 0)),
                        occurred_to: ts(local(2024, 6, 1, 0, 0)),
                        follow: false,
                    },
                ),
            ),
            (
                "get_timeline",
                rpc(
                    1,
                    &pb::GetTimelineRequest {
                        dossier_id: DOSSIER.into(),
                    },
                ),
            ),
        ],
        _ => vec![],
    };
    seeds
        .into_iter()
        .map(|(name, bytes)| (name.to_owned(), bytes))
        .collect()
}

/// The choice of RPC, then the request.
fn rpc(choice: u8, request: &impl Message) -> Vec<u8> {
    let mut bytes = vec![choice];
    request.encode(&mut bytes).expect("a Vec grows");
    bytes
}

fn id(n: u128) -> String {
    uuid::Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0000 | n).to_string()
}

fn ts(t: DateTime<Utc>) -> Option<api::Timestamp> {
    Some(svc::status::to_timestamp(t))
}

/// After every fixture dossier's events, before the fixed clock.
fn at() -> Option<api::Timestamp> {
    ts(local(2024, 3, 20, 9, 30))
}

fn profile() -> pb::Profile {
    svc::convert::pb_profile(&crate::fixtures::profile())
}

fn receive() -> pb::ReceiveDossierRequest {
    pb::ReceiveDossierRequest {
        event_id: id(1),
        dossier_id: DOSSIER.into(),
        occurred_at: at(),
        profile: Some(profile()),
        statutory_time: Some(pb::StatutoryTime {
            unit: Some(pb::statutory_time::Unit::WorkingDays(3)),
        }),
        fee_required: true,
        components: vec!["don-de-nghi".into(), "ban-ve".into()],
        applicant: None,
        return_method: 0,
    }
}

fn attach_result() -> pb::AttachResultRequest {
    pb::AttachResultRequest {
        event_id: id(12),
        dossier_id: DOSSIER.into(),
        occurred_at: at(),
        expected_version: None,
        document_ref: "GCN-2024-000123".into(),
        sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
    }
}

fn event(n: u128, occurred_at: DateTime<Utc>, body: pb::event::Body) -> pb::Event {
    pb::Event {
        event_id: id(n),
        dossier_id: DOSSIER.into(),
        occurred_at: ts(occurred_at),
        recorded_at: None,
        position: 0,
        version: 0,
        body: Some(body),
    }
}

/// One dossier from reception to rating, as a migration tool sends it.
fn lifecycle() -> pb::ImportBatch {
    use pb::event::Body;
    let r = receive();
    pb::ImportBatch {
        batch_seq: 1,
        events: vec![
            event(
                20,
                local(2024, 3, 4, 9, 0),
                Body::Received(pb::Received {
                    profile: r.profile,
                    statutory_time: r.statutory_time,
                    fee_required: true,
                    components: r.components,
                    due_at: ts(local(2024, 3, 7, 9, 0)),
                    procedure: None,
                    applicant: None,
                    applicant_data: 0,
                    return_method: 0,
                }),
            ),
            event(
                21,
                local(2024, 3, 4, 10, 0),
                Body::ComponentsDigitized(pb::ComponentsDigitized {
                    digitized: vec!["don-de-nghi".into()],
                    reused: vec![],
                }),
            ),
            event(
                22,
                local(2024, 3, 4, 11, 0),
                Body::FeeAssessed(pb::FeeAssessed {
                    amount_vnd: 150_000,
                    kind: pb::FeeKind::Fee as i32,
                }),
            ),
            event(
                23,
                local(2024, 3, 4, 14, 0),
                Body::Paid(pb::Paid {
                    amount_vnd: 150_000,
                    channel: pb::PaymentChannel::Counter as i32,
                    transaction_id: "QT-0001".into(),
                }),
            ),
            event(
                24,
                local(2024, 3, 5, 9, 0),
                Body::SupplementRequested(pb::SupplementRequested {
                    reason: "Thiếu bản vẽ".into(),
                    closes_at: None,
                }),
            ),
            event(
                25,
                local(2024, 3, 6, 9, 0),
                Body::SupplementReceived(pb::SupplementReceived::default()),
            ),
            event(
                26,
                local(2024, 3, 7, 15, 0),
                Body::Resolved(pb::Resolved {
                    outcome: pb::Outcome::Approved as i32,
                    deciding_agency: AGENCY.into(),
                    ..Default::default()
                }),
            ),
            event(
                27,
                local(2024, 3, 7, 16, 0),
                Body::ResultDigitized(pb::ResultDigitized {
                    document_ref: "GCN-2024-000123".into(),
                    sha256: attach_result().sha256,
                }),
            ),
            event(
                28,
                local(2024, 3, 8, 9, 0),
                Body::ResultReturned(pb::ResultReturned {
                    method: pb::ReturnMethod::Counter as i32,
                }),
            ),
            event(
                29,
                local(2024, 3, 8, 9, 5),
                Body::SatisfactionRated(pb::SatisfactionRated {
                    rating: pb::Rating::Satisfied as i32,
                }),
            ),
        ],
    }
}
