//! The agency structure of a date, read plainly from README's wording ("Two-tier government and
//! merged provinces"), without `stats::structure`: a dossier keeps the agency and level that
//! received it; asked in the structure of a date D, an agency merged into, renamed to or
//! dissolved into a successor on or before D counts under that successor (chains followed), at
//! the successor's level at D (its latest level change on or before D, else the level it was
//! declared with, else the level recorded in the event). Biểu mẫu 3 leaves out a level abolished
//! by the date asked when that level has no figure.
//!
//! The model test describes its structure once and gives it both to the service (published) and
//! to these functions, so a misreading would have to be made twice, differently, to go unseen.

use chrono::NaiveDate;
use domain::Level;

/// One fact of the structure, as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reform {
    /// An agency and the level it has until a level change.
    Declared { agency: String, level: Level },
    /// From `from`, `agency`'s history counts under `successor` (a merge, a rename, or a
    /// dissolution that names who takes over).
    Successor {
        agency: String,
        from: NaiveDate,
        successor: String,
    },
    /// From `from`, `agency` is at `level`.
    LevelChanged {
        agency: String,
        from: NaiveDate,
        level: Level,
    },
    /// From `from`, `level` no longer exists.
    LevelAbolished { level: Level, from: NaiveDate },
}

/// Where a dossier received by `agency` at `level` counts in the structure of `date`; `None`
/// (the structure of its time): where it was received.
pub fn counted_under(
    reforms: &[Reform],
    level: Level,
    agency: &str,
    date: Option<NaiveDate>,
) -> (Level, String) {
    let Some(date) = date else {
        return (level, agency.to_owned());
    };
    let mut current = agency.to_owned();
    // A chain visits each agency at most once (the structure has no cycle); the bound only
    // stops a broken test structure from looping.
    for _ in 0..=reforms.len() {
        let successor = reforms
            .iter()
            .filter_map(|r| match r {
                Reform::Successor {
                    agency,
                    from,
                    successor,
                } if *agency == current && *from <= date => Some((*from, successor)),
                _ => None,
            })
            .max_by_key(|(from, _)| *from);
        match successor {
            Some((_, next)) => current = next.clone(),
            None => break,
        }
    }
    let changed = reforms
        .iter()
        .filter_map(|r| match r {
            Reform::LevelChanged {
                agency,
                from,
                level,
            } if *agency == current && *from <= date => Some((*from, *level)),
            _ => None,
        })
        .max_by_key(|(from, _)| *from)
        .map(|(_, l)| l);
    let declared = reforms.iter().find_map(|r| match r {
        Reform::Declared { agency, level } if *agency == current => Some(*level),
        _ => None,
    });
    (changed.or(declared).unwrap_or(level), current)
}

/// Whether `level` still exists on `date`.
pub fn level_exists(reforms: &[Reform], level: Level, date: NaiveDate) -> bool {
    !reforms.iter().any(
        |r| matches!(r, Reform::LevelAbolished { level: l, from } if *l == level && *from <= date),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2025, m, day).unwrap()
    }

    #[test]
    fn chains_are_followed_only_from_their_dates_and_take_the_successors_level() {
        let reforms = vec![
            Reform::Declared {
                agency: "A".into(),
                level: Level::District,
            },
            Reform::Declared {
                agency: "B".into(),
                level: Level::District,
            },
            Reform::Declared {
                agency: "C".into(),
                level: Level::Commune,
            },
            Reform::Successor {
                agency: "A".into(),
                from: d(3, 1),
                successor: "B".into(),
            },
            Reform::Successor {
                agency: "B".into(),
                from: d(7, 1),
                successor: "C".into(),
            },
            Reform::LevelChanged {
                agency: "C".into(),
                from: d(9, 1),
                level: Level::Province,
            },
            Reform::LevelAbolished {
                level: Level::District,
                from: d(7, 1),
            },
        ];
        let at = |date| counted_under(&reforms, Level::District, "A", date);
        assert_eq!(at(None), (Level::District, "A".to_owned()));
        assert_eq!(at(Some(d(2, 28))), (Level::District, "A".to_owned()));
        assert_eq!(at(Some(d(3, 1))), (Level::District, "B".to_owned()));
        assert_eq!(at(Some(d(7, 1))), (Level::Commune, "C".to_owned()));
        assert_eq!(at(Some(d(9, 1))), (Level::Province, "C".to_owned()));
        // Unknown to the structure: as recorded.
        assert_eq!(
            counted_under(&reforms, Level::Commune, "Z", Some(d(9, 1))),
            (Level::Commune, "Z".to_owned())
        );
        assert!(level_exists(&reforms, Level::District, d(6, 30)));
        assert!(!level_exists(&reforms, Level::District, d(7, 1)));
        assert!(level_exists(&reforms, Level::Commune, d(7, 1)));
    }
}
