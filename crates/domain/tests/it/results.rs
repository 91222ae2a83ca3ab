//! After the decision: the digitized result, its return, the applicant's rating.

use calendar::Timeliness;
use chrono::{DateTime, Utc};
use domain::{Action, DossierEvent, Event, Rating, Refusal, ReturnMethod};

use crate::support::*;

fn t(h: u32) -> DateTime<Utc> {
    vn(2024, 3, 6, h, 0)
}
fn decided() -> Vec<Event> {
    vec![received(), resolved(t(9), Timeliness::Early)]
}
fn attach(sha256: &str) -> Action {
    Action::AttachResult {
        document_ref: text("QD-123/2024"),
        sha256: sha256.to_owned(),
    }
}
fn attached() -> DossierEvent {
    DossierEvent::ResultDigitized {
        document_ref: text("QD-123/2024"),
        sha256: SHA.to_owned(),
    }
}
fn returned() -> Event {
    ev(
        t(11),
        DossierEvent::ResultReturned {
            method: ReturnMethod::Post,
        },
    )
}

mod attach_result {
    use super::*;

    #[test]
    fn after_resolution() {
        let state = given(decided())
            .when(cmd(t(10), attach(SHA)))
            .then(attached());
        assert!(state.result_digitized);
        // Even after the result was returned.
        let mut history = decided();
        history.push(returned());
        given(history)
            .when(cmd(t(12), attach(SHA)))
            .then(attached());
    }

    #[test]
    fn not_before_resolution() {
        given([received()])
            .when(cmd(t(10), attach(SHA)))
            .then(Refusal::NotResolved);
        given(decided())
            .when(cmd(t(8), attach(SHA)))
            .then(Refusal::BeforePreviousStep {
                step: "the resolution",
                at: t(9),
            });
    }

    #[test]
    fn once() {
        let mut history = decided();
        history.push(ev(t(10), attached()));
        given(history)
            .when(cmd(t(11), attach(SHA)))
            .then(Refusal::ResultAlreadyDigitized);
    }

    #[test]
    fn the_digest_is_64_lower_case_hex_characters() {
        let upper = SHA.to_uppercase();
        let short = &SHA[..63];
        let long = format!("{SHA}0");
        let not_hex = format!("{}g", &SHA[..63]);
        for bad in [upper.as_str(), short, long.as_str(), not_hex.as_str(), ""] {
            given(decided())
                .when(cmd(t(10), attach(bad)))
                .then(Refusal::InvalidDigest);
        }
    }
}

mod return_result {
    use super::*;

    #[test]
    fn after_resolution() {
        let at = t(11);
        let state = given(decided())
            .when(cmd(
                at,
                Action::ReturnResult {
                    method: ReturnMethod::Online,
                },
            ))
            .then(DossierEvent::ResultReturned {
                method: ReturnMethod::Online,
            });
        assert_eq!(state.returned_at, Some(at));
        assert_eq!(state.return_method, Some(ReturnMethod::Online));
        assert_eq!(state.portal_status(), Some(10));
    }

    #[test]
    fn not_before_resolution() {
        given([received()])
            .when(cmd(
                t(11),
                Action::ReturnResult {
                    method: ReturnMethod::Counter,
                },
            ))
            .then(Refusal::NotResolved);
        given(decided())
            .when(cmd(
                t(8),
                Action::ReturnResult {
                    method: ReturnMethod::Counter,
                },
            ))
            .then(Refusal::BeforePreviousStep {
                step: "the resolution",
                at: t(9),
            });
    }

    #[test]
    fn once() {
        let mut history = decided();
        history.push(returned());
        given(history)
            .when(cmd(
                t(12),
                Action::ReturnResult {
                    method: ReturnMethod::Counter,
                },
            ))
            .then(Refusal::AlreadyReturned);
    }
}

mod rate {
    use super::*;

    #[test]
    fn after_the_result_was_returned() {
        let mut history = decided();
        history.push(returned());
        let state = given(history)
            .when(cmd(
                t(12),
                Action::Rate {
                    rating: Rating::VerySatisfied,
                },
            ))
            .then(DossierEvent::SatisfactionRated {
                rating: Rating::VerySatisfied,
            });
        assert_eq!(state.rating, Some(Rating::VerySatisfied));
    }

    #[test]
    fn not_before_the_result_was_returned() {
        given(decided())
            .when(cmd(
                t(12),
                Action::Rate {
                    rating: Rating::Satisfied,
                },
            ))
            .then(Refusal::NotReturned);
        given([received()])
            .when(cmd(
                t(12),
                Action::Rate {
                    rating: Rating::Satisfied,
                },
            ))
            .then(Refusal::NotReturned);
        let mut history = decided();
        history.push(returned());
        given(history)
            .when(cmd(
                t(10),
                Action::Rate {
                    rating: Rating::Satisfied,
                },
            ))
            .then(Refusal::BeforePreviousStep {
                step: "the return of the result",
                at: t(11),
            });
    }

    #[test]
    fn once() {
        let mut history = decided();
        history.push(returned());
        history.push(ev(
            t(12),
            DossierEvent::SatisfactionRated {
                rating: Rating::Unsatisfied,
            },
        ));
        given(history)
            .when(cmd(
                t(13),
                Action::Rate {
                    rating: Rating::Satisfied,
                },
            ))
            .then(Refusal::AlreadyRated);
    }
}
