//! Refused requests in the audit log, with a bound: the first refusal of a kind (source address,
//! actor, code) in a minute is written as it happens; the rest of that minute are counted and
//! written as one summary entry when the minute ends. At most `ITEMIZED_PER_MINUTE` kinds are
//! written out per minute server-wide; refusals beyond are counted into one overflow summary. So
//! a flood, from one address or from many, adds a bounded number of rows a minute.
//!
//! The planner (`RefusalLog`) is pure: it is given the time and says what to write.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One summary window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Kinds written out per window, server-wide; beyond, refusals go to the overflow count.
pub const ITEMIZED_PER_MINUTE: usize = 600;

/// What is refused: who asked (as far as known), from where, and the error code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Kind {
    pub ip: IpAddr,
    /// `anonymous`, or the caller as the audit log names it…
    pub actor: String,
    /// …and its role (`none` when anonymous).
    pub role: &'static str,
    /// The audit action (`api.denied`, `download.link`).
    pub action: &'static str,
    pub code: &'static str,
}

/// An audit entry to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// This refusal, as it happened.
    One,
    /// `count` more refusals of `kind` in the minute after its first (itemized) one.
    Summary { kind: Kind, count: u64 },
    /// `count` refusals of `kinds` other kinds that were not itemized in a window.
    Overflow { count: u64, kinds: u64 },
}

#[derive(Debug)]
struct Window {
    start: Instant,
    more: u64,
}

/// Counts refusals per kind and window; see the module comment.
#[derive(Debug)]
pub struct RefusalLog {
    windows: HashMap<Kind, Window>,
    /// The global window: when it started, kinds itemized in it, refusals and kinds overflowed.
    minute: Instant,
    itemized: usize,
    overflow: (u64, u64),
    overflow_kinds: std::collections::HashSet<Kind>,
}

impl RefusalLog {
    pub fn new(now: Instant) -> RefusalLog {
        RefusalLog {
            windows: HashMap::new(),
            minute: now,
            itemized: 0,
            overflow: (0, 0),
            overflow_kinds: Default::default(),
        }
    }

    /// A refusal of `kind` at `now`: the entries to write (the summaries of windows it closed,
    /// then `One` if this refusal is itemized).
    pub fn refuse(&mut self, kind: Kind, now: Instant) -> Vec<Entry> {
        let mut out = self.tick(now);
        if let Some(w) = self.windows.get_mut(&kind) {
            w.more += 1;
            return out;
        }
        if self.itemized >= ITEMIZED_PER_MINUTE {
            self.overflow.0 += 1;
            // The set of overflowed kinds is bounded by what one window can receive; count
            // distinct kinds only while it is small, then keep counting refusals.
            if self.overflow_kinds.len() < 10 * ITEMIZED_PER_MINUTE
                && self.overflow_kinds.insert(kind)
            {
                self.overflow.1 += 1;
            }
            return out;
        }
        self.itemized += 1;
        self.windows.insert(
            kind,
            Window {
                start: now,
                more: 0,
            },
        );
        out.push(Entry::One);
        out
    }

    /// Closes the windows that ended by `now`: their summaries, to write.
    pub fn tick(&mut self, now: Instant) -> Vec<Entry> {
        let mut out = Vec::new();
        let ended = |start: Instant| now.saturating_duration_since(start) >= WINDOW;
        let mut closed: Vec<Kind> = self
            .windows
            .iter()
            .filter(|(_, w)| ended(w.start))
            .map(|(k, _)| k.clone())
            .collect();
        // Oldest first, so the log reads in order.
        closed.sort_by_key(|k| self.windows[k].start);
        for kind in closed {
            if let Some(w) = self.windows.remove(&kind)
                && w.more > 0
            {
                out.push(Entry::Summary {
                    kind,
                    count: w.more,
                });
            }
        }
        if ended(self.minute) {
            if self.overflow.0 > 0 {
                out.push(Entry::Overflow {
                    count: self.overflow.0,
                    kinds: self.overflow.1,
                });
            }
            self.minute = now;
            self.itemized = 0;
            self.overflow = (0, 0);
            self.overflow_kinds.clear();
        }
        out
    }

    /// Everything still counted, at shutdown: every window started by `now`, so a tick a
    /// window later closes them all.
    pub fn flush(&mut self, now: Instant) -> Vec<Entry> {
        self.tick(now + WINDOW)
    }

    pub fn len(&self) -> usize {
        self.windows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(ip: &str, code: &'static str) -> Kind {
        Kind {
            ip: ip.parse().unwrap(),
            actor: "anonymous".into(),
            role: "none",
            action: "api.denied",
            code,
        }
    }

    #[test]
    fn the_first_of_a_kind_is_written_and_the_rest_summarised_when_the_minute_ends() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(t0);
        let a = kind("10.0.0.1", "unauthenticated");
        assert_eq!(log.refuse(a.clone(), t0), vec![Entry::One]);
        for i in 1..=50 {
            assert_eq!(log.refuse(a.clone(), t0 + Duration::from_millis(i)), vec![]);
        }
        // Another code, or another address, is its own kind.
        let b = kind("10.0.0.1", "token_revoked");
        assert_eq!(log.refuse(b.clone(), t0), vec![Entry::One]);
        assert_eq!(log.tick(t0 + Duration::from_secs(59)), vec![]);
        assert_eq!(
            log.tick(t0 + WINDOW),
            vec![Entry::Summary {
                kind: a.clone(),
                count: 50
            }],
            "b had nothing more: no summary"
        );
        assert!(log.is_empty());
        // A new minute: written again.
        assert_eq!(log.refuse(a, t0 + WINDOW), vec![Entry::One]);
    }

    #[test]
    fn a_flood_from_many_addresses_is_bounded() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(t0);
        let mut written = 0;
        for i in 0..100_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let k = Kind {
                ip,
                actor: "anonymous".into(),
                role: "none",
                action: "api.denied",
                code: "unauthenticated",
            };
            written += log.refuse(k, t0).len();
        }
        assert_eq!(written, ITEMIZED_PER_MINUTE);
        let closing = log.tick(t0 + WINDOW);
        assert_eq!(
            closing,
            vec![Entry::Overflow {
                count: 100_000 - ITEMIZED_PER_MINUTE as u64,
                kinds: 10 * ITEMIZED_PER_MINUTE as u64,
            }]
        );
        assert!(log.is_empty());
    }

    #[test]
    fn flush_writes_what_is_still_counted() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(t0);
        let a = kind("10.0.0.1", "rate_limited");
        log.refuse(a.clone(), t0 + Duration::from_secs(30));
        log.refuse(a.clone(), t0 + Duration::from_secs(31));
        let now = t0 + Duration::from_secs(31);
        assert_eq!(log.flush(now), vec![Entry::Summary { kind: a, count: 1 }]);
    }
}
