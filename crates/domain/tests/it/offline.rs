//! Counters that were offline: a resolution dated before the due time arrives after the deadline
//! watcher marked the dossier late. The resolve path withdraws the mark in the same decision
//! (`late_withdrawn`), exactly once; a resolution really after the due time leaves it.

use calendar::Timeliness;
use domain::{DossierEvent, Refusal};

use crate::support::*;

fn marked_late() -> Vec<domain::Event> {
    vec![received(), ev(due(), DossierEvent::Late { due_at: due() })]
}

fn resolved_event(timeliness: Timeliness) -> DossierEvent {
    DossierEvent::Resolved {
        outcome: domain::Outcome::Approved,
        deciding_agency: agency(HOME),
        due_at: due(),
        timeliness,
    }
}

#[test]
fn a_resolution_dated_before_the_due_time_withdraws_the_mark() {
    for (at, timeliness) in [
        (vn(2024, 3, 6, 15, 0), Timeliness::Early),
        (vn(2024, 3, 7, 8, 0), Timeliness::OnTime),
        (due(), Timeliness::OnTime),
    ] {
        let state = given(marked_late()).when(cmd(at, resolve())).then(vec![
            resolved_event(timeliness),
            DossierEvent::LateWithdrawn {
                due_at: due(),
                timeliness,
            },
        ]);
        assert!(!state.late_marked);
        assert!(state.late_withdrawn);
        assert_eq!(state.resolution.map(|r| r.timeliness), Some(timeliness));
        // Both events carry the resolution's business time.
        assert_eq!(
            domain::event_time(
                &cmd(at, resolve()),
                &DossierEvent::LateWithdrawn {
                    due_at: due(),
                    timeliness
                }
            ),
            at
        );
    }
}

#[test]
fn a_late_resolution_leaves_the_mark() {
    let state = given(marked_late())
        .when(cmd(vn(2024, 3, 7, 9, 1), resolve()))
        .then(resolved_event(Timeliness::Late));
    assert!(state.late_marked);
    assert!(!state.late_withdrawn);
}

#[test]
fn without_a_mark_nothing_is_withdrawn() {
    given([received()])
        .when(cmd(vn(2024, 3, 6, 15, 0), resolve()))
        .then(resolved_event(Timeliness::Early));
}

#[test]
fn exactly_once_the_dossier_is_then_resolved() {
    let mut history = marked_late();
    history.push(ev(vn(2024, 3, 6, 15, 0), resolved_event(Timeliness::Early)));
    history.push(ev(
        vn(2024, 3, 6, 15, 0),
        DossierEvent::LateWithdrawn {
            due_at: due(),
            timeliness: Timeliness::Early,
        },
    ));
    given(history.clone())
        .when(cmd(vn(2024, 3, 8, 9, 0), resolve()))
        .then(Refusal::AlreadyResolved);
    given(history)
        .when(cmd(vn(2024, 3, 8, 9, 0), domain::Action::MarkLate))
        .then(Refusal::AlreadyResolved);
}
