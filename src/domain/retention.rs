//! The retention planner: for each backup of a tenant, keep or delete, with the rules that
//! decided it. Pure: `now` is a parameter, nothing is read or deleted here.
//!
//! Policy rules (any one keeps a backup): keep-last N; the newest backup of each of the last N
//! days, ISO weeks, months and years that have backups (as restic's `forget --keep-*`); all capped
//! by max-age. Then min-keep keeps the newest N whatever their age.
//!
//! Safety rails hold whatever the policy says: a tenant under legal hold loses nothing; the
//! newest verified scheduled backup of an active tenant is kept (the newest verified backup of
//! any origin when it has no verified scheduled one); a backup not yet verified in every region
//! is kept until the tenant's deletion window has ended. When the window has ended (and there is
//! no hold), everything is deleted: that is the purge.
//!
//! Backups a customer asked for (`Origin::Requested`) are a class of their own: the policy rules
//! and their ranks see scheduled backups only, so requested ones never count toward a rule nor
//! push a scheduled one out of it. A requested backup is kept until the link issued with its
//! request expires plus the grace (`[api] requested-backup-grace`); that link also keeps a
//! scheduled backup it points to (a request that served the schedule's queued job) until it
//! expires. Links issued later do not extend anything, so no backup can be pinned for ever.

use crate::config::RetentionPolicy;
use chrono::{DateTime, Datelike, Utc};
use std::time::Duration;

/// Why a backup exists: the tier's schedule (and every backup an operator makes), or a
/// customer's request through the API that did not serve the schedule's queued job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Origin {
    #[default]
    Scheduled,
    Requested,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Scheduled => "scheduled",
            Origin::Requested => "requested",
        }
    }

    /// The catalog's and the manifest's spelling; anything else is `None`.
    pub fn parse(s: &str) -> Option<Origin> {
        [Origin::Scheduled, Origin::Requested]
            .into_iter()
            .find(|o| o.as_str() == s)
    }
}

#[derive(Debug, Clone)]
pub struct BackupFact {
    pub id: String,
    pub recovery_point: DateTime<Utc>,
    /// Verified by checksum in every configured region.
    pub verified_everywhere: bool,
    pub origin: Origin,
    /// When the download link issued with the customer's request for this backup expires
    /// (`None`: there is none, e.g. a scheduled backup, or a catalog rebuilt from the regions).
    pub request_link_until: Option<DateTime<Utc>>,
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
    /// How long a requested backup outlives the link of its request.
    pub requested_grace: Duration,
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
    pub origin: Origin,
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

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
                origin: b.origin,
                keep: false,
                reasons: vec!["the tenant's deletion window has ended: purge".into()],
            })
            .collect();
    }

    // Policy rules, over the scheduled backups alone: `scheduled[rank]` is an index in `order`.
    let scheduled: Vec<usize> = (0..order.len())
        .filter(|&i| order[i].origin == Origin::Scheduled)
        .collect();
    let mut policy: Vec<Vec<String>> = vec![Vec::new(); order.len()];
    for (rank, &i) in scheduled.iter().enumerate().take(p.keep_last as usize) {
        policy[i].push(format!("keep-last {} (#{})", p.keep_last, rank + 1));
    }
    let calendars: [(&str, u32, Bucket); 4] = [
        ("keep-daily", p.keep_daily, day),
        ("keep-weekly", p.keep_weekly, week),
        ("keep-monthly", p.keep_monthly, month),
        ("keep-yearly", p.keep_yearly, year),
    ];
    for (name, n, bucket) in calendars {
        let mut seen: Vec<(i32, u32)> = Vec::new();
        for &i in &scheduled {
            if seen.len() >= n as usize {
                break;
            }
            let k = bucket(order[i].recovery_point);
            if !seen.contains(&k) {
                seen.push(k);
                policy[i].push(format!("{name} {n} ({}-{})", k.0, k.1));
            }
        }
    }
    for (rank, &i) in scheduled.iter().enumerate().take(p.min_keep as usize) {
        policy[i].push(format!("min-keep {} (#{})", p.min_keep, rank + 1));
    }
    let max_age = chrono::Duration::from_std(p.max_age).unwrap_or(chrono::Duration::MAX);
    let grace = chrono::Duration::from_std(tenant.requested_grace).unwrap_or(chrono::Duration::MAX);
    let newest_verified = scheduled
        .iter()
        .copied()
        .find(|&i| order[i].verified_everywhere)
        .or_else(|| order.iter().position(|b| b.verified_everywhere));

    let mut out = Vec::with_capacity(order.len());
    for (i, b) in order.iter().enumerate() {
        let (mut keep, delete) = match b.origin {
            Origin::Scheduled => {
                let too_old = now - b.recovery_point > max_age;
                // min-keep holds whatever the age; the other rules are capped by max-age.
                let mut keep = std::mem::take(&mut policy[i]);
                if too_old {
                    keep.retain(|r| r.starts_with("min-keep"));
                }
                if let Some(until) = b.request_link_until.filter(|u| *u > now) {
                    keep.push(format!(
                        "link of a customer's request live until {}",
                        at(until)
                    ));
                }
                let delete = if too_old {
                    format!(
                        "older than max-age {}",
                        super::objectives::fmt_duration(p.max_age)
                    )
                } else {
                    format!(
                        "kept by no rule (keep-last {}, daily {}, weekly {}, monthly {}, yearly {})",
                        p.keep_last, p.keep_daily, p.keep_weekly, p.keep_monthly, p.keep_yearly
                    )
                };
                (keep, delete)
            }
            Origin::Requested => {
                let link = b.request_link_until;
                let until = link
                    .unwrap_or(b.recovery_point)
                    .checked_add_signed(grace)
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                let g = super::objectives::fmt_duration(tenant.requested_grace);
                let keep = match link {
                    _ if now >= until => Vec::new(),
                    Some(l) if l > now => vec![format!(
                        "requested: link live until {} (then {g} of grace)",
                        at(l)
                    )],
                    Some(l) => vec![format!(
                        "requested: link expired at {}, grace {g} until {}",
                        at(l),
                        at(until)
                    )],
                    None => vec![format!("requested: no link, grace {g} until {}", at(until))],
                };
                let delete = match link {
                    Some(l) => format!(
                        "requested: link expired at {} and its grace {g} ended at {}",
                        at(l),
                        at(until)
                    ),
                    None => format!("requested: no link, grace {g} ended at {}", at(until)),
                };
                (keep, delete)
            }
        };
        if tenant.legal_hold {
            keep.push("tenant is under legal hold".into());
        }
        if tenant.lifecycle == Lifecycle::Active && newest_verified == Some(i) {
            keep.push(match b.origin {
                Origin::Scheduled => "newest verified backup of an active tenant".into(),
                Origin::Requested => {
                    "newest verified backup of an active tenant (it has no verified scheduled one)"
                        .into()
                }
            });
        }
        if !b.verified_everywhere {
            keep.push("not yet verified in every region".into());
        }
        let keep_it = !keep.is_empty();
        out.push(Decision {
            backup_id: b.id.clone(),
            recovery_point: b.recovery_point,
            origin: b.origin,
            keep: keep_it,
            reasons: if keep_it { keep } else { vec![delete] },
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
                origin: Origin::Scheduled,
                request_link_until: None,
            })
            .collect()
    }
    /// `n` backups a customer asked for, one a minute before `now`, the newest first, each with
    /// its request's link expiring `link` after it was made.
    fn requested(now: DateTime<Utc>, n: i64, link: chrono::Duration) -> Vec<BackupFact> {
        (0..n)
            .map(|i| BackupFact {
                id: format!("r{:04}", 10_000 - i),
                recovery_point: now - chrono::Duration::minutes(i),
                verified_everywhere: true,
                origin: Origin::Requested,
                request_link_until: Some(now - chrono::Duration::minutes(i) + link),
            })
            .collect()
    }
    const GRACE: Duration = Duration::from_secs(86400);
    fn facts(lifecycle: Lifecycle, hold: bool, policy: RetentionPolicy) -> TenantFacts {
        TenantFacts {
            lifecycle,
            legal_hold: hold,
            policy,
            deletion_window: Duration::from_secs(90 * 86400),
            requested_grace: GRACE,
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

    /// Issue 18 #3: thirty backups a customer asked for within minutes leave the three
    /// scheduled ones where keep-last put them, and are kept while their links live.
    #[test]
    fn requested_backups_never_count_toward_the_policy() {
        let now = t0();
        let tenant = facts(Lifecycle::Active, false, policy(24, 120));
        let mut backups = daily(now - days(1), 3, &[]);
        backups.extend(requested(now, 30, chrono::Duration::hours(1)));
        let d = plan(&tenant, &backups, now);
        assert_eq!(kept(&d), 33, "{d:#?}");
        for (rank, x) in d
            .iter()
            .filter(|x| x.origin == Origin::Scheduled)
            .enumerate()
        {
            assert_eq!(
                x.reasons[0],
                format!("keep-last 24 (#{})", rank + 1),
                "{x:?}"
            );
        }
        for x in d.iter().filter(|x| x.origin == Origin::Requested) {
            assert!(
                x.reasons[0].starts_with("requested: link live until"),
                "{x:?}"
            );
        }
        // Only requested backups: none displaces a scheduled one, and the newest verified one
        // is kept by the rail when there is no scheduled one.
        let only = requested(now - days(10), 3, chrono::Duration::hours(1));
        let d = plan(&tenant, &only, now);
        assert_eq!(kept(&d), 1, "{d:#?}");
        assert!(d[0].keep && d[0].reasons[0].contains("no verified scheduled one"));
    }

    /// A requested backup goes once its link expired and the grace ended; within the grace it
    /// stays; without a link its recovery point starts the grace; a hold keeps it, a purge takes it.
    #[test]
    fn requested_backups_live_until_their_link_expires_plus_the_grace() {
        let now = t0();
        let hour = chrono::Duration::hours(1);
        let h = chrono::Duration::hours;
        let base = daily(now, 2, &[]);
        let cases: Vec<(&str, Option<chrono::Duration>, chrono::Duration, bool, &str)> = vec![
            // (name, link expiry relative to now, recovery point age, kept, reason prefix)
            (
                "link live",
                Some(hour),
                hour,
                true,
                "requested: link live until",
            ),
            (
                "in grace",
                Some(-hour),
                h(2),
                true,
                "requested: link expired at",
            ),
            (
                "grace over",
                Some(h(-25)),
                h(26),
                false,
                "requested: link expired at",
            ),
            (
                "no link, in grace",
                None,
                h(23),
                true,
                "requested: no link, grace 1d until",
            ),
            (
                "no link, grace over",
                None,
                h(25),
                false,
                "requested: no link, grace 1d ended",
            ),
        ];
        for (name, link, age, keep, reason) in cases {
            let mut backups = base.clone();
            backups.push(BackupFact {
                id: "r0001".into(),
                recovery_point: now - age,
                verified_everywhere: true,
                origin: Origin::Requested,
                request_link_until: link.map(|l| now + l),
            });
            let d = plan(
                &facts(Lifecycle::Active, false, policy(24, 120)),
                &backups,
                now,
            );
            let r = d.iter().find(|x| x.backup_id == "r0001").unwrap();
            assert_eq!(r.keep, keep, "{name}: {r:?}");
            assert!(r.reasons[0].starts_with(reason), "{name}: {r:?}");
            assert_eq!(kept(&d), 2 + usize::from(keep), "{name}");
            let held = plan(
                &facts(Lifecycle::Active, true, policy(24, 120)),
                &backups,
                now,
            );
            assert!(
                held.iter().all(|x| x.keep),
                "{name}: a hold keeps everything"
            );
            let gone = Lifecycle::Terminated { at: now - days(91) };
            let purged = plan(&facts(gone, false, policy(24, 120)), &backups, now);
            assert!(
                purged.iter().all(|x| !x.keep),
                "{name}: a purge takes everything"
            );
        }
        // The link of a request that served the schedule keeps that scheduled backup past
        // keep-last until it expires.
        let mut backups = daily(now, 5, &[]);
        backups[4].request_link_until = Some(now + hour);
        let d = plan(
            &facts(Lifecycle::Active, false, policy(2, 120)),
            &backups,
            now,
        );
        assert_eq!(kept(&d), 3, "{d:#?}");
        assert!(d[4].reasons[0].starts_with("link of a customer's request live until"));
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
                    origin: Origin::Scheduled,
                    request_link_until: None,
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

    /// Backups of either origin; a requested one's link expires from 7 days before to 7 days
    /// after now, or it has none.
    fn arb_backups() -> impl Strategy<Value = Vec<BackupFact>> {
        prop::collection::vec(
            (
                0i64..600 * 24,
                any::<bool>(),
                prop::option::weighted(0.3, prop::option::of(-7 * 24i64..7 * 24)),
            ),
            0..60,
        )
        .prop_map(|v| {
            v.into_iter()
                .enumerate()
                .map(|(i, (hours_ago, verified, request))| BackupFact {
                    id: format!("b{i:03}"),
                    recovery_point: t0() - chrono::Duration::hours(hours_ago),
                    verified_everywhere: verified,
                    origin: if request.is_some() {
                        Origin::Requested
                    } else {
                        Origin::Scheduled
                    },
                    request_link_until: request
                        .flatten()
                        .map(|h| t0() + chrono::Duration::hours(h)),
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
                requested_grace: GRACE,
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
            let newest_verified = |origin: Option<Origin>| {
                backups
                    .iter()
                    .filter(|b| b.verified_everywhere && origin.is_none_or(|o| b.origin == o))
                    .max_by(|a, b| a.recovery_point.cmp(&b.recovery_point).then(a.id.cmp(&b.id)))
            };
            if tenant.lifecycle == Lifecycle::Active
                && let Some(newest) = newest_verified(Some(Origin::Scheduled)).or_else(|| newest_verified(None))
            {
                prop_assert!(decision(&newest.id).keep, "newest verified (scheduled) backup of an active tenant is kept");
            }
            // Requested backups are invisible to the scheduled ones: planning without them
            // decides every scheduled backup the same way, for the same reasons.
            let alone: Vec<BackupFact> = backups.iter().filter(|b| b.origin == Origin::Scheduled).cloned().collect();
            for x in plan(&tenant, &alone, now) {
                prop_assert_eq!(decision(&x.backup_id), &x, "a requested backup changed a scheduled one's fate");
            }
            // A requested backup lives until its link's expiry plus the grace (or the purge).
            if !tenant.purge_due(now) {
                for b in backups.iter().filter(|b| b.origin == Origin::Requested) {
                    let until = b.request_link_until.unwrap_or(b.recovery_point) + chrono::Duration::from_std(GRACE).unwrap();
                    if now < until {
                        prop_assert!(decision(&b.id).keep, "requested backup deleted before {until}");
                    }
                }
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
