//! The refusal catalogue: stable codes, kinds for the services, readable messages.

use std::collections::BTreeSet;

use calendar::Timeliness;
use domain::{Phase, Refusal, RefusalKind};

use crate::support::*;

/// One of every variant. The match makes a new variant a compile error here until it is listed.
fn all() -> Vec<Refusal> {
    let all = vec![
        Refusal::UnknownDossier,
        Refusal::AlreadyExists,
        Refusal::NoComponents,
        Refusal::DuplicateComponent {
            component: comp("GT01"),
        },
        Refusal::DueBeforeReception {
            due_at: vn(2024, 3, 1, 9, 0),
            received_at: received_at(),
        },
        Refusal::NothingToRecord,
        Refusal::UnknownComponent {
            component: comp("GT09"),
        },
        Refusal::DigitizedAndReused {
            component: comp("GT02"),
        },
        Refusal::InvalidAmount { amount_vnd: -1 },
        Refusal::InvalidDigest,
        Refusal::Ended {
            phase: Phase::Withdrawn,
        },
        Refusal::BeforeReception {
            received_at: received_at(),
        },
        Refusal::BeforePreviousStep {
            step: "the resolution",
            at: due(),
        },
        Refusal::AlreadyDigitized,
        Refusal::TransferToSameAgency {
            agency: agency(HOME),
        },
        Refusal::AlreadyResolved,
        Refusal::SupplementAlreadyPending,
        Refusal::NoSupplementPending,
        Refusal::AwaitingSupplement,
        Refusal::AlreadyMarkedLate,
        Refusal::NotYetDue { due_at: due() },
        Refusal::ApologyAlreadyIssued,
        Refusal::ApologyNotNeeded {
            timeliness: Timeliness::OnTime,
        },
        Refusal::NewAppointmentTooEarly { due_at: due() },
        Refusal::NoFeeForProcedure,
        Refusal::NoFeeAssessed,
        Refusal::Overpayment {
            owed_vnd: 50_000,
            attempted_vnd: 60_000,
        },
        Refusal::TransactionIdReused {
            transaction_id: txn("TX-1"),
        },
        Refusal::NotResolved,
        Refusal::ResultAlreadyDigitized,
        Refusal::AlreadyReturned,
        Refusal::NotReturned,
        Refusal::AlreadyRated,
        Refusal::SupplementLimitReached {
            max: 1,
            catalogue_version: 3,
        },
        Refusal::SupplementDeadlinePassed { closes_at: due() },
        Refusal::NoClosingDeadline,
        Refusal::NotYetClosing { closes_at: due() },
        Refusal::ObligationAlreadyPending,
        Refusal::NoObligationPending,
        Refusal::AwaitingObligation,
    ];
    for refusal in &all {
        match refusal {
            Refusal::UnknownDossier
            | Refusal::AlreadyExists
            | Refusal::NoComponents
            | Refusal::DuplicateComponent { .. }
            | Refusal::DueBeforeReception { .. }
            | Refusal::NothingToRecord
            | Refusal::UnknownComponent { .. }
            | Refusal::DigitizedAndReused { .. }
            | Refusal::InvalidAmount { .. }
            | Refusal::InvalidDigest
            | Refusal::Ended { .. }
            | Refusal::BeforeReception { .. }
            | Refusal::BeforePreviousStep { .. }
            | Refusal::AlreadyDigitized
            | Refusal::TransferToSameAgency { .. }
            | Refusal::AlreadyResolved
            | Refusal::SupplementAlreadyPending
            | Refusal::NoSupplementPending
            | Refusal::AwaitingSupplement
            | Refusal::AlreadyMarkedLate
            | Refusal::NotYetDue { .. }
            | Refusal::ApologyAlreadyIssued
            | Refusal::ApologyNotNeeded { .. }
            | Refusal::NewAppointmentTooEarly { .. }
            | Refusal::NoFeeForProcedure
            | Refusal::NoFeeAssessed
            | Refusal::Overpayment { .. }
            | Refusal::TransactionIdReused { .. }
            | Refusal::NotResolved
            | Refusal::ResultAlreadyDigitized
            | Refusal::AlreadyReturned
            | Refusal::NotReturned
            | Refusal::AlreadyRated
            | Refusal::SupplementLimitReached { .. }
            | Refusal::SupplementDeadlinePassed { .. }
            | Refusal::NoClosingDeadline
            | Refusal::NotYetClosing { .. }
            | Refusal::ObligationAlreadyPending
            | Refusal::NoObligationPending
            | Refusal::AwaitingObligation => {}
        }
    }
    all
}

#[test]
fn codes_are_unique_snake_case() {
    let all = all();
    let codes: BTreeSet<_> = all.iter().map(Refusal::code).collect();
    assert_eq!(codes.len(), all.len(), "a code is used twice");
    for code in codes {
        assert!(
            !code.is_empty()
                && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                && !code.starts_with('_')
                && !code.ends_with('_'),
            "{code} is not snake_case"
        );
    }
    assert_eq!(Refusal::AlreadyResolved.code(), "already_resolved");
    assert_eq!(Refusal::UnknownDossier.code(), "unknown_dossier");
}

#[test]
fn kinds_tell_the_services_how_to_answer() {
    for refusal in all() {
        let expected = match refusal {
            Refusal::UnknownDossier => RefusalKind::NotFound,
            Refusal::AlreadyExists => RefusalKind::AlreadyExists,
            Refusal::NoComponents
            | Refusal::DuplicateComponent { .. }
            | Refusal::DueBeforeReception { .. }
            | Refusal::NothingToRecord
            | Refusal::UnknownComponent { .. }
            | Refusal::DigitizedAndReused { .. }
            | Refusal::InvalidAmount { .. }
            | Refusal::InvalidDigest => RefusalKind::InvalidArgument,
            _ => RefusalKind::FailedPrecondition,
        };
        assert_eq!(refusal.kind(), expected, "{refusal:?}");
    }
}

#[test]
fn messages_are_sentences() {
    for refusal in all() {
        let message = refusal.to_string();
        assert!(
            message.starts_with(|c: char| c.is_ascii_uppercase()),
            "{message}"
        );
        assert!(message.ends_with('.'), "{message}");
        assert!(
            !message.contains("Some(") && !message.contains('{'),
            "{message}"
        );
    }
}

#[test]
fn messages_show_local_times_and_the_data() {
    let before = Refusal::BeforeReception {
        received_at: received_at(),
    };
    assert_eq!(
        before.to_string(),
        "This step cannot happen before the dossier was received at 2024-03-04 09:00 (UTC+7)."
    );
    assert_eq!(
        Refusal::Overpayment {
            owed_vnd: 50_000,
            attempted_vnd: 60_000
        }
        .to_string(),
        "Only 50000 VND is outstanding; a payment of 60000 VND would overpay the dossier."
    );
    assert_eq!(
        Refusal::Ended {
            phase: Phase::Withdrawn
        }
        .to_string(),
        "The dossier has ended (withdrawn by the applicant); no further step can be recorded."
    );
    assert!(
        Refusal::ApologyNotNeeded {
            timeliness: Timeliness::OnTime
        }
        .to_string()
        .contains("resolved on time")
    );
}
