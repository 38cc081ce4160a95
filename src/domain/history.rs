//! A tenant's backup history, summed up for the schedule planner.
//!
//! The catalog keeps one `Summary` per tenant and recomputes it from the tenant's latest attempts
//! on every change of one of its backups, so a planning pass reads one row per tenant instead of
//! the history of the whole fleet.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// Completed backups whose durations give the expectation (their median).
pub const DURATIONS: usize = 5;
/// Attempts a summary is computed from: enough for the median and the failures since the last
/// success (the newest completed backup is always read too).
pub const ATTEMPTS: u32 = 8;

/// One backup attempt as the summary sees it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub recovery_point: Option<DateTime<Utc>>,
}

/// What the history says about one tenant.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Summary {
    pub newest_recovery_point: Option<DateTime<Utc>>,
    /// The median duration of the latest completed backups.
    pub expected_duration: Option<Duration>,
    /// Failed attempts since the newest completed one (counted over the latest `ATTEMPTS`), and
    /// when the last of them ended.
    pub failures: u32,
    pub last_failure: Option<DateTime<Utc>>,
    pub running: bool,
}

/// Sums up one tenant's attempts, oldest first.
pub fn summarize<'a>(attempts: impl IntoIterator<Item = &'a Attempt>) -> Summary {
    let mut s = Summary::default();
    let mut durations = Vec::new();
    for a in attempts {
        match a.status.as_str() {
            "completed" => {
                if a.recovery_point > s.newest_recovery_point {
                    s.newest_recovery_point = a.recovery_point;
                }
                s.failures = 0;
                s.last_failure = None;
                if let Some(end) = a.finished_at {
                    durations.push((end - a.started_at).to_std().unwrap_or_default());
                }
            }
            "failed" => {
                s.failures += 1;
                s.last_failure = a.finished_at.or(Some(a.started_at));
            }
            _ => s.running = true,
        }
    }
    let mut recent = durations.split_off(durations.len().saturating_sub(DURATIONS));
    recent.sort();
    s.expected_duration = recent.get(recent.len() / 2).copied();
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn attempt(status: &str, start_min: i64, secs: i64) -> Attempt {
        let start = Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap()
            + chrono::Duration::minutes(start_min);
        Attempt {
            status: status.into(),
            started_at: start,
            finished_at: (status != "running").then(|| start + chrono::Duration::seconds(secs)),
            recovery_point: (status == "completed").then_some(start),
        }
    }

    #[test]
    fn newest_point_median_duration_and_failures_since_the_last_success() {
        let a = [
            attempt("completed", 0, 100),
            attempt("completed", 10, 300),
            attempt("completed", 20, 200),
            attempt("failed", 30, 5),
            attempt("failed", 40, 5),
        ];
        let s = summarize(&a);
        assert_eq!(s.newest_recovery_point, a[2].recovery_point);
        assert_eq!(s.expected_duration, Some(Duration::from_secs(200)));
        assert_eq!((s.failures, s.last_failure), (2, a[4].finished_at));
        assert!(!s.running);
    }

    #[test]
    fn a_success_resets_failures_and_a_running_attempt_shows() {
        let b = [
            attempt("failed", 0, 5),
            attempt("completed", 10, 60),
            attempt("running", 20, 0),
        ];
        let s = summarize(&b);
        assert_eq!((s.failures, s.running), (0, true));
        assert_eq!(s.expected_duration, Some(Duration::from_secs(60)));
    }

    #[test]
    fn the_median_is_of_the_latest_five_durations() {
        // Seven successes: 1000 s twice, then 10..50 s; the old slow ones no longer count.
        let mut a = vec![attempt("completed", 0, 1000), attempt("completed", 1, 1000)];
        a.extend((0..5).map(|i| attempt("completed", 10 + i, 10 * (i + 1))));
        assert_eq!(
            summarize(&a).expected_duration,
            Some(Duration::from_secs(30))
        );
        assert_eq!(summarize(&[]), Summary::default());
    }
}
