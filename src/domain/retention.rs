//! The retention planner: for each backup of a tenant, keep or delete, with the rules that
//! decided it. Pure: `now` is a parameter, nothing is read or deleted here.
//!
//! Policy rules (any one keeps a backup): keep-last N; the newest backup of each of the last N
//! days, ISO weeks, months and years that have backups (as restic's `forget --keep-*`); all capped
//! by max-age. Then min-keep keeps the newest N whatever their age.
//!
//! Safety rails hold whatever the policy says: a tenant under legal hold loses nothing; the
//! newest verified backup of an active tenant is kept; a backup not yet verified in every region
//! is kept until the tenant's deletion window has ended. When the window has ended (and there is
//! no hold), everything is deleted: that is the purge.

use crate::config::RetentionPolicy;
use chrono::{DateTime, Datelike, Utc};
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

impl TenantFacts {
    /// When the deletion window of a terminated tenant ends (`None`: active, or never).
    pub fn window_ends_at(&self) -> Option<DateTime<Utc>> {
        match self.lifecycle {
            Lifecycle::Terminated { at } => chrono::Duration::from_std(self.deletion_window)
                .ok()
                .and_then(|w| at.checked_add_signed(w)),
            Lifecycle::Active => None,
        }
    }

    /// Whether the deletion window of a terminated tenant has ended at `now`.
    pub fn window_ended(&self, now: DateTime<Utc>) -> bool {
        self.window_ends_at().is_some_and(|end| now >= end)
    }

    /// The tenant must be purged now: window ended and no legal hold.
    pub fn purge_due(&self, now: DateTime<Utc>) -> bool {
        self.window_ended(now) && !self.legal_hold
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub backup_id: String,
    pub recovery_point: DateTime<Utc>,
    pub keep: bool,
    pub reasons: Vec<String>,
}

type Bucket = fn(DateTime<Utc>) -> (i32, u32);

fn day(t: DateTime<Utc>) -> (i32, u32) {
    (t.year(), t.ordinal())
}
fn week(t: DateTime<Utc>) -> (i32, u32) {
    let w = t.iso_week();
    (w.year(), w.week())
}
fn month(t: DateTime<Utc>) -> (i32, u32) {
    (t.year(), t.month())
}
fn year(t: DateTime<Utc>) -> (i32, u32) {
    (t.year(), 0)
}

/// Plans retention for one tenant. `backups` may be in any order; decisions come newest first.
pub fn plan(tenant: &TenantFacts, backups: &[BackupFact], now: DateTime<Utc>) -> Vec<Decision> {
    let mut order: Vec<&BackupFact> = backups.iter().collect();
    // Newest first; ids (UUIDv7) break ties deterministically.
    order.sort_by(|a, b| {
        b.recovery_point
            .cmp(&a.recovery_point)
            .then(b.id.cmp(&a.id))
    });
    let p = &tenant.policy;

    if tenant.purge_due(now) {
        return order
            .iter()
            .map(|b| Decision {
                backup_id: b.id.clone(),
                recovery_point: b.recovery_point,
                keep: false,
                reasons: vec!["the tenant's deletion window has ended: purge".into()],
            })
            .collect();
    }

    // Policy rules.
    let mut policy: Vec<Vec<String>> = vec![Vec::new(); order.len()];
    for (rank, reasons) in policy.iter_mut().enumerate().take(p.keep_last as usize) {
        reasons.push(format!("keep-last {} (#{})", p.keep_last, rank + 1));
    }
    let calendars: [(&str, u32, Bucket); 4] = [
        ("keep-daily", p.keep_daily, day),
        ("keep-weekly", p.keep_weekly, week),
        ("keep-monthly", p.keep_monthly, month),
        ("keep-yearly", p.keep_yearly, year),
    ];
    for (name, n, bucket) in calendars {
        let mut seen: Vec<(i32, u32)> = Vec::new();
        for (i, b) in order.iter().enumerate() {
            if seen.len() >= n as usize {
                break;
            }
            let k = bucket(b.recovery_point);
            if !seen.contains(&k) {
                seen.push(k);
                policy[i].push(format!("{name} {n} ({}-{})", k.0, k.1));
            }
        }
    }
    let max_age = chrono::Duration::from_std(p.max_age).unwrap_or(chrono::Duration::MAX);
    let newest_verified = order.iter().position(|b| b.verified_everywhere);

    let mut out = Vec::with_capacity(order.len());
    for (i, b) in order.iter().enumerate() {
        let too_old = now - b.recovery_point > max_age;
        let mut keep: Vec<String> = if too_old {
            Vec::new()
        } else {
            std::mem::take(&mut policy[i])
        };
        if (i as u32) < p.min_keep {
            keep.push(format!("min-keep {} (#{})", p.min_keep, i + 1));
        }
        if tenant.legal_hold {
            keep.push("tenant is under legal hold".into());
        }
        if tenant.lifecycle == Lifecycle::Active && newest_verified == Some(i) {
            keep.push("newest verified backup of an active tenant".into());
        }
        if !b.verified_everywhere {
            keep.push("not yet verified in every region".into());
        }
        let keep_it = !keep.is_empty();
        let reasons = if keep_it {
            keep
        } else if too_old {
            vec![format!(
                "older than max-age {}",
                super::objectives::fmt_duration(p.max_age)
            )]
        } else {
            vec![format!(
                "kept by no rule (keep-last {}, daily {}, weekly {}, monthly {}, yearly {})",
                p.keep_last, p.keep_daily, p.keep_weekly, p.keep_monthly, p.keep_yearly
            )]
        };
        out.push(Decision {
            backup_id: b.id.clone(),
            recovery_point: b.recovery_point,
            keep: keep_it,
            reasons,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc()
    }
    fn days(n: i64) -> chrono::Duration {
        chrono::Duration::days(n)
    }
    fn policy(keep_last: u32, max_age_days: u64) -> RetentionPolicy {
        RetentionPolicy {
            keep_last,
            max_age: Duration::from_secs(max_age_days * 86400),
            keep_daily: 0,
            keep_weekly: 0,
            keep_monthly: 0,
            keep_yearly: 0,
            min_keep: 1,
        }
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
    fn facts(lifecycle: Lifecycle, hold: bool, policy: RetentionPolicy) -> TenantFacts {
        TenantFacts {
            lifecycle,
            legal_hold: hold,
            policy,
            deletion_window: Duration::from_secs(90 * 86400),
        }
    }
    fn kept(d: &[Decision]) -> usize {
        d.iter().filter(|d| d.keep).count()
    }

    #[test]
    fn table_of_cases() {
        let now = t0();
        let calendar = RetentionPolicy {
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            ..policy(3, 400)
        };
        let active = Lifecycle::Active;
        let cases: Vec<(&str, TenantFacts, Vec<BackupFact>, usize)> = vec![
            (
                "seed policy keeps 24",
                facts(active, false, policy(24, 120)),
                daily(now, 40, &[]),
                24,
            ),
            (
                "max-age trims keep-last",
                facts(active, false, policy(24, 10)),
                daily(now, 40, &[]),
                11,
            ),
            (
                "unverified kept",
                facts(active, false, policy(3, 120)),
                daily(now, 10, &[7]),
                4,
            ),
            (
                "legal hold keeps all",
                facts(active, true, policy(1, 1)),
                daily(now, 10, &[]),
                10,
            ),
            (
                "newest verified kept past max-age",
                facts(active, false, policy(24, 120)),
                daily(now - days(200), 3, &[]),
                1,
            ),
            (
                "min-keep keeps the newest past max-age",
                facts(
                    active,
                    false,
                    RetentionPolicy {
                        min_keep: 3,
                        ..policy(24, 120)
                    },
                ),
                daily(now - days(200), 5, &[]),
                3,
            ),
            (
                "newest verified is kept even when the newer ones are unverified",
                facts(active, false, policy(1, 1)),
                daily(now - days(30), 6, &[0, 1]),
                3,
            ),
            // 200 dailies up to Thu 2026-01-01: 7 days; weeks W01 and 2025-W52 are among them, so
            // 4 weeks add Dec 21 and Dec 14; 6 months add Nov 30, Oct 31, Sep 30, Aug 31 (Jan 1 and
            // Dec 31 are dailies); the 3 keep-last are dailies.
            (
                "calendar buckets",
                facts(active, false, calendar),
                daily(now, 200, &[]),
                7 + 2 + 4,
            ),
            (
                "terminated within window keeps policy",
                facts(
                    Lifecycle::Terminated { at: now - days(10) },
                    false,
                    policy(24, 120),
                ),
                daily(now, 30, &[]),
                24,
            ),
            (
                "terminated past window deletes all, even unverified",
                facts(
                    Lifecycle::Terminated { at: now - days(91) },
                    false,
                    policy(24, 120),
                ),
                daily(now - days(91), 30, &[0, 1]),
                0,
            ),
            (
                "hold beats the deletion window",
                facts(
                    Lifecycle::Terminated { at: now - days(91) },
                    true,
                    policy(24, 120),
                ),
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

    /// An independent oracle for the calendar rules: which recovery points a policy keeps.
    fn oracle(
        p: &RetentionPolicy,
        points: &[DateTime<Utc>],
        now: DateTime<Utc>,
    ) -> BTreeSet<DateTime<Utc>> {
        let mut sorted: Vec<DateTime<Utc>> = points.to_vec();
        sorted.sort_by(|a, b| b.cmp(a));
        let mut keep = BTreeSet::new();
        keep.extend(sorted.iter().take(p.keep_last as usize));
        let fmt = |f: &str, n: u32| -> BTreeSet<DateTime<Utc>> {
            let mut seen = Vec::new();
            let mut out = BTreeSet::new();
            for t in &sorted {
                let k = t.format(f).to_string();
                if seen.len() < n as usize && !seen.contains(&k) {
                    seen.push(k);
                    out.insert(*t);
                }
            }
            out
        };
        keep.extend(fmt("%Y-%j", p.keep_daily));
        keep.extend(fmt("%G-%V", p.keep_weekly));
        keep.extend(fmt("%Y-%m", p.keep_monthly));
        keep.extend(fmt("%Y", p.keep_yearly));
        let max_age = chrono::Duration::from_std(p.max_age).unwrap();
        keep.retain(|t| now - *t <= max_age);
        keep.extend(sorted.iter().take(p.min_keep as usize));
        keep
    }

    #[test]
    fn one_year_of_daily_backups_keeps_the_policy_every_day() {
        let seed = RetentionPolicy {
            keep_daily: 7,
            keep_weekly: 5,
            keep_monthly: 12,
            ..policy(24, 120)
        };
        for p in [policy(24, 120), seed] {
            let tenant = facts(Lifecycle::Active, false, p);
            let mut backups: Vec<BackupFact> = Vec::new();
            for day in 0..365 {
                let now = t0() + days(day) + chrono::Duration::hours(3);
                backups.push(BackupFact {
                    id: format!("b{day:04}"),
                    recovery_point: now,
                    verified_everywhere: true,
                });
                let points: Vec<_> = backups.iter().map(|b| b.recovery_point).collect();
                let d = plan(&tenant, &backups, now);
                backups.retain(|b| d.iter().any(|x| x.backup_id == b.id && x.keep));
                let got: BTreeSet<_> = backups.iter().map(|b| b.recovery_point).collect();
                let want = oracle(&p, &points, now);
                assert_eq!(got, want, "day {day}, policy {p:?}");
                if p.keep_daily == 0 {
                    assert_eq!(backups.len(), (day + 1).min(24) as usize, "day {day}");
                }
                // Idempotent: planning again deletes nothing more.
                assert_eq!(
                    kept(&plan(&tenant, &backups, now)),
                    backups.len(),
                    "day {day}"
                );
            }
        }
    }

    fn arb_policy() -> impl Strategy<Value = RetentionPolicy> {
        (
            0u32..30,
            1u64..400,
            0u32..10,
            0u32..6,
            0u32..13,
            0u32..3,
            1u32..4,
        )
            .prop_map(|(keep_last, age, d, w, m, y, min_keep)| RetentionPolicy {
                keep_last,
                max_age: Duration::from_secs(age * 86400),
                keep_daily: d,
                keep_weekly: w,
                keep_monthly: m,
                keep_yearly: y,
                min_keep,
            })
    }

    fn arb_backups() -> impl Strategy<Value = Vec<BackupFact>> {
        prop::collection::vec((0i64..600 * 24, any::<bool>()), 0..60).prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (hours_ago, verified))| BackupFact {
                    id: format!("b{i:03}"),
                    recovery_point: t0() - chrono::Duration::hours(hours_ago),
                    verified_everywhere: verified,
                })
                .collect()
        })
    }

    fn arb_tenant() -> impl Strategy<Value = TenantFacts> {
        (arb_policy(), any::<bool>(), prop::option::of(0i64..200)).prop_map(
            |(policy, hold, terminated_days_ago)| TenantFacts {
                lifecycle: match terminated_days_ago {
                    None => Lifecycle::Active,
                    Some(d) => Lifecycle::Terminated { at: t0() - days(d) },
                },
                legal_hold: hold,
                policy,
                deletion_window: Duration::from_secs(90 * 86400),
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn invariants_hold(tenant in arb_tenant(), backups in arb_backups()) {
            let now = t0();
            let d = plan(&tenant, &backups, now);
            prop_assert_eq!(d.len(), backups.len());
            let decision = |id: &str| d.iter().find(|x| x.backup_id == id).unwrap();
            if tenant.legal_hold {
                prop_assert!(d.iter().all(|x| x.keep), "legal hold keeps everything");
            }
            if tenant.lifecycle == Lifecycle::Active
                && let Some(newest) = backups
                    .iter()
                    .filter(|b| b.verified_everywhere)
                    .max_by(|a, b| a.recovery_point.cmp(&b.recovery_point).then(a.id.cmp(&b.id)))
            {
                prop_assert!(decision(&newest.id).keep, "newest verified backup of an active tenant is kept");
            }
            if !tenant.window_ended(now) {
                for b in backups.iter().filter(|b| !b.verified_everywhere) {
                    prop_assert!(decision(&b.id).keep, "an unverified backup is kept until the window ends");
                }
            }
            // Idempotent: planning again after applying deletes nothing more.
            let kept: Vec<BackupFact> = backups.iter().filter(|b| decision(&b.id).keep).cloned().collect();
            let again = plan(&tenant, &kept, now);
            prop_assert!(again.iter().all(|x| x.keep), "second plan deletes more: {:?}", again);
        }
    }
}
