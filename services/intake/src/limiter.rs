//! The citizen lookup's rate limits: fixed one-minute windows per client address and per
//! dossier, in memory, bounded. Pure apart from the injectable clock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use writepath::Clock;

/// The lookup's limits (README "Limits").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupLimits {
    /// Lookups one client address may make per minute (a citizen needs one; a household behind
    /// one NAT a few; a kiosk more).
    pub per_client_per_minute: u32,
    /// Lookups of one dossier per minute, whatever the client: guessing a 100-bit secret is
    /// hopeless anyway; this stops hammering one dossier from many addresses.
    pub per_dossier_per_minute: u32,
    /// At most this many addresses and dossiers are tracked in one window; past it, lookups
    /// from new ones are refused until the window ends (memory stays bounded under a flood).
    pub max_tracked: usize,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            per_client_per_minute: 30,
            per_dossier_per_minute: 10,
            max_tracked: 100_000,
        }
    }
}

/// Which limit refused a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    Client,
    Dossier,
    Tracking,
}

#[derive(Debug, Default)]
struct Window {
    minute: i64,
    clients: HashMap<String, u32>,
    dossiers: HashMap<String, u32>,
}

#[derive(Debug, Clone)]
pub struct Limiter {
    limits: LookupLimits,
    clock: Arc<dyn Clock>,
    window: Arc<Mutex<Window>>,
}

impl Limiter {
    pub fn new(limits: LookupLimits, clock: Arc<dyn Clock>) -> Limiter {
        Limiter {
            limits,
            clock,
            window: Arc::default(),
        }
    }

    /// Counts one lookup of `dossier` by `client`, or says which limit it exceeds (a refused
    /// lookup is not counted).
    pub fn admit(&self, client: &str, dossier: &str) -> Result<(), Exceeded> {
        let minute = self.clock.now().timestamp().div_euclid(60);
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.minute != minute {
            *w = Window {
                minute,
                ..Window::default()
            };
        }
        let c = w.clients.get(client).copied().unwrap_or(0);
        let d = w.dossiers.get(dossier).copied().unwrap_or(0);
        if c >= self.limits.per_client_per_minute {
            return Err(Exceeded::Client);
        }
        if d >= self.limits.per_dossier_per_minute {
            return Err(Exceeded::Dossier);
        }
        let full = |m: &HashMap<String, u32>, k: &str| {
            m.len() >= self.limits.max_tracked && !m.contains_key(k)
        };
        if full(&w.clients, client) || full(&w.dossiers, dossier) {
            return Err(Exceeded::Tracking);
        }
        w.clients.insert(client.to_owned(), c + 1);
        w.dossiers.insert(dossier.to_owned(), d + 1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};

    #[derive(Debug)]
    struct Fixed(Mutex<DateTime<Utc>>);
    impl Clock for Fixed {
        fn now(&self) -> DateTime<Utc> {
            *self.0.lock().unwrap()
        }
    }

    #[test]
    fn limits_per_client_and_dossier_reset_each_minute_and_stay_bounded() {
        let clock = Arc::new(Fixed(Mutex::new(
            Utc.with_ymd_and_hms(2026, 3, 2, 8, 0, 5).unwrap(),
        )));
        let limiter = Limiter::new(
            LookupLimits {
                per_client_per_minute: 3,
                per_dossier_per_minute: 2,
                max_tracked: 4,
            },
            clock.clone(),
        );
        assert_eq!(limiter.admit("ip1", "D1"), Ok(()));
        assert_eq!(limiter.admit("ip2", "D1"), Ok(()));
        assert_eq!(limiter.admit("ip3", "D1"), Err(Exceeded::Dossier));
        assert_eq!(limiter.admit("ip1", "D2"), Ok(()));
        assert_eq!(limiter.admit("ip1", "D3"), Ok(()));
        assert_eq!(limiter.admit("ip1", "D4"), Err(Exceeded::Client));
        assert_eq!(limiter.admit("ip4", "D4"), Ok(()));
        assert_eq!(limiter.admit("ip5", "D5"), Err(Exceeded::Tracking));
        *clock.0.lock().unwrap() = Utc.with_ymd_and_hms(2026, 3, 2, 8, 1, 0).unwrap();
        assert_eq!(limiter.admit("ip1", "D1"), Ok(()));
        assert_eq!(limiter.admit("ip5", "D5"), Ok(()));
    }
}
