//! RPO and RTO arithmetic.

use chrono::{DateTime, Utc};
use std::time::Duration;

/// RPO achieved now: the age of the newest recovery point (`None`: no backup at all).
pub fn rpo_achieved(
    now: DateTime<Utc>,
    newest_recovery_point: Option<DateTime<Utc>>,
) -> Option<Duration> {
    newest_recovery_point.map(|rp| (now - rp).to_std().unwrap_or(Duration::ZERO))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed(String),
}

impl Verdict {
    pub fn is_met(&self) -> bool {
        matches!(self, Verdict::Met)
    }
}

/// Compares an achieved RPO with its objective.
pub fn rpo_verdict(achieved: Option<Duration>, objective: Duration) -> Verdict {
    match achieved {
        None => Verdict::Missed("no verified backup".into()),
        Some(a) if a <= objective => Verdict::Met,
        Some(a) => Verdict::Missed(format!(
            "newest recovery point is {} old, objective {}",
            fmt_duration(a),
            fmt_duration(objective)
        )),
    }
}

/// Compares a measured restore time with the RTO objective.
pub fn rto_verdict(measured: Duration, objective: Duration) -> Verdict {
    if measured <= objective {
        Verdict::Met
    } else {
        Verdict::Missed(format!(
            "restore took {}, objective {}",
            fmt_duration(measured),
            fmt_duration(objective)
        ))
    }
}

/// A short human duration: `850ms`, `42s`, `3m 10s`, `12h`, `4d 2h`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86400, s % 86400 / 3600, s % 3600 / 60, s % 60);
    let parts: Vec<String> = [(days, "d"), (hours, "h"), (mins, "m"), (secs, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .take(2)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpo_and_rto_verdicts() {
        let now = DateTime::parse_from_rfc3339("2026-11-23T12:00:00Z")
            .unwrap()
            .to_utc();
        let h = |n: u64| Duration::from_secs(n * 3600);
        let rp = |hours_ago: i64| Some(now - chrono::Duration::hours(hours_ago));
        let cases = [
            (rp(1), h(12), true),
            (rp(12), h(12), true),
            (rp(13), h(12), false),
            (rp(89), h(90), true),
            (None, h(90), false),
        ];
        for (newest, objective, met) in cases {
            let v = rpo_verdict(rpo_achieved(now, newest), objective);
            assert_eq!(v.is_met(), met, "{newest:?} vs {objective:?}: {v:?}");
        }
        assert!(rto_verdict(Duration::from_secs(30), h(1)).is_met());
        assert!(!rto_verdict(h(2), h(1)).is_met());
        assert_eq!(fmt_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(fmt_duration(Duration::from_secs(190)), "3m 10s");
        assert_eq!(fmt_duration(h(98)), "4d 2h");
    }
}
