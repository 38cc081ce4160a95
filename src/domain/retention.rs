//! The retention planner: for each backup of a tenant, keep or delete, with the rules that
//! decided it. Pure: `now` is a parameter, nothing is read or deleted here.
//!
//! Safety rails hold whatever the policy says: a tenant under legal hold loses nothing; the
//! newest verified backup of an active tenant is kept; a backup not yet verified in every region
//! is kept unless the tenant's deletion window has ended.

use crate::config::RetentionPolicy;
use chrono::{DateTime, Utc};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct BackupFact {
    pub id: String,
    pub recovery_point: DateTime<Utc>,
    /// Verified by checksum in every configured region.
    pub verified_everywhere: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Active,
    Terminated { at: DateTime<Utc> },
}

#[derive(Debug, Clone)]
pub struct TenantFacts {
    pub lifecycle: Lifecycle,
    pub legal_hold: bool,
    pub policy: RetentionPolicy,
    pub deletion_window: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub backup_id: String,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// Plans retention for one tenant. `backups` may be in any order.
pub fn plan(tenant: &TenantFacts, backups: &[BackupFact], now: DateTime<Utc>) -> Vec<Decision> {
    let mut order: Vec<&BackupFact> = backups.iter().collect();
    // Newest first; ids (UUIDv7) break ties deterministically.
    order.sort_by(|a, b| {
        b.recovery_point
            .cmp(&a.recovery_point)
            .then(b.id.cmp(&a.id))
    });
    let newest_verified = order
        .iter()
        .find(|b| b.verified_everywhere)
        .map(|b| b.id.clone());
    let window_over = match tenant.lifecycle {
        Lifecycle::Terminated { at } => now >= at + tenant.deletion_window,
        Lifecycle::Active => false,
    };
    let max_age =
        chrono::Duration::from_std(tenant.policy.max_age).unwrap_or(chrono::Duration::MAX);

    let mut out = Vec::with_capacity(order.len());
    for (rank, b) in order.iter().enumerate() {
        let mut keep_reasons = Vec::new();
        let mut delete_reasons = Vec::new();
        if tenant.legal_hold {
            keep_reasons.push("tenant is under legal hold".to_string());
        }
        if window_over {
            delete_reasons.push("tenant's deletion window has ended".to_string());
        } else {
            if tenant.lifecycle == Lifecycle::Active
                && newest_verified.as_deref() == Some(b.id.as_str())
            {
                keep_reasons.push("newest verified backup of an active tenant".to_string());
            }
            if !b.verified_everywhere {
                keep_reasons.push("not yet verified in every region".to_string());
            }
            let age = now - b.recovery_point;
            if (rank as u32) < tenant.policy.keep_last {
                if age <= max_age {
                    keep_reasons.push(format!(
                        "keep-last {} (#{})",
                        tenant.policy.keep_last,
                        rank + 1
                    ));
                } else {
                    delete_reasons.push(format!(
                        "older than max-age {}",
                        crate::domain::objectives::fmt_duration(tenant.policy.max_age)
                    ));
                }
            } else {
                delete_reasons.push(format!("beyond keep-last {}", tenant.policy.keep_last));
            }
        }
        let keep = !keep_reasons.is_empty();
        out.push(Decision {
            backup_id: b.id.clone(),
            keep,
            reasons: if keep { keep_reasons } else { delete_reasons },
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc()
    }
    fn days(n: i64) -> chrono::Duration {
        chrono::Duration::days(n)
    }
    /// One backup a day for `n` days before `now`, the newest first; all verified unless listed.
    fn daily(now: DateTime<Utc>, n: i64, unverified: &[i64]) -> Vec<BackupFact> {
        (0..n)
            .map(|i| BackupFact {
                id: format!("b{:04}", 10_000 - i),
                recovery_point: now - days(i),
                verified_everywhere: !unverified.contains(&i),
            })
            .collect()
    }
    fn facts(lifecycle: Lifecycle, hold: bool, keep_last: u32, max_age_days: u64) -> TenantFacts {
        TenantFacts {
            lifecycle,
            legal_hold: hold,
            policy: RetentionPolicy {
                keep_last,
                max_age: Duration::from_secs(max_age_days * 86400),
            },
            deletion_window: Duration::from_secs(90 * 86400),
        }
    }
    fn kept(d: &[Decision]) -> usize {
        d.iter().filter(|d| d.keep).count()
    }

    #[test]
    fn table_of_cases() {
        let now = t0();
        // (name, tenant, backups, expected kept count)
        let cases: Vec<(&str, TenantFacts, Vec<BackupFact>, usize)> = vec![
            (
                "seed policy keeps 24",
                facts(Lifecycle::Active, false, 24, 120),
                daily(now, 40, &[]),
                24,
            ),
            (
                "max-age trims keep-last",
                facts(Lifecycle::Active, false, 24, 10),
                daily(now, 40, &[]),
                11,
            ),
            (
                "unverified kept",
                facts(Lifecycle::Active, false, 3, 120),
                daily(now, 10, &[7]),
                4,
            ),
            (
                "legal hold keeps all",
                facts(Lifecycle::Active, true, 1, 1),
                daily(now, 10, &[]),
                10,
            ),
            (
                "newest verified kept past max-age",
                facts(Lifecycle::Active, false, 24, 120),
                daily(now - days(200), 3, &[]),
                1,
            ),
            (
                "terminated within window keeps policy",
                facts(Lifecycle::Terminated { at: now - days(10) }, false, 24, 120),
                daily(now, 30, &[]),
                24,
            ),
            (
                "terminated past window deletes all, even unverified",
                facts(Lifecycle::Terminated { at: now - days(91) }, false, 24, 120),
                daily(now - days(91), 30, &[0, 1]),
                0,
            ),
            (
                "hold beats the deletion window",
                facts(Lifecycle::Terminated { at: now - days(91) }, true, 24, 120),
                daily(now - days(91), 5, &[]),
                5,
            ),
        ];
        for (name, tenant, backups, expect) in cases {
            let d = plan(&tenant, &backups, now);
            assert_eq!(d.len(), backups.len(), "{name}");
            assert_eq!(kept(&d), expect, "{name}: {d:#?}");
            assert!(
                d.iter().all(|d| !d.reasons.is_empty()),
                "{name}: every decision has a reason"
            );
        }
    }

    #[test]
    fn one_year_of_daily_backups_keeps_the_policy_every_day() {
        let tenant = facts(Lifecycle::Active, false, 24, 120);
        let mut backups: Vec<BackupFact> = Vec::new();
        for day in 0..365 {
            let now = t0() + days(day);
            backups.push(BackupFact {
                id: format!("b{day:04}"),
                recovery_point: now,
                verified_everywhere: true,
            });
            let d = plan(&tenant, &backups, now);
            backups.retain(|b| d.iter().any(|x| x.backup_id == b.id && x.keep));
            let expect = (day + 1).min(24) as usize;
            assert_eq!(backups.len(), expect, "day {day}");
            assert!(
                backups.iter().any(|b| b.id == format!("b{day:04}")),
                "day {day}: newest kept"
            );
            // Idempotent: planning again deletes nothing more.
            assert_eq!(
                kept(&plan(&tenant, &backups, now)),
                backups.len(),
                "day {day}"
            );
        }
    }
}
