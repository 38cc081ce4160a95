//! The schedule planner: which tenants are due for a backup now, and in what order.
//!
//! Pure: facts and `now` in, due jobs with their reasons out.
//! - A tier's cron says when its tenants are due. Each tenant is shifted by a fixed offset inside
//!   the tier's spread window, derived from its id, so a fleet does not start in the same second
//!   and a tenant keeps its slot from one pass to the next.
//! - The RPO guard: a tenant whose newest recovery point plus the expected backup duration would
//!   pass its RPO is due now, whatever the cron says.
//! - However many cron slots passed since the newest recovery point (downtime), a tenant gets one
//!   job: due is a state, not a count.
//! - Order: least slack first (slack = RPO deadline − now − expected duration), then higher tier
//!   priority, then tenant id, so the order is total and repeatable.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::time::Duration;

/// What the planner needs to know about one tenant.
#[derive(Debug, Clone)]
pub struct TenantFacts<'a> {
    pub tenant: &'a str,
    pub tier: &'a str,
    pub cron: &'a cron::Schedule,
    /// The tier's spread window: offsets are in `[0, spread)`.
    pub spread: Duration,
    pub priority: u32,
    pub rpo: Duration,
    /// The newest recovery point of a completed backup, if any.
    pub newest_recovery_point: Option<DateTime<Utc>>,
    /// How long a backup of this tenant is expected to take (from its history).
    pub expected_duration: Duration,
    /// No new job before this instant (a retry's backoff), if set.
    pub not_before: Option<DateTime<Utc>>,
    /// A job for this tenant is queued or running already.
    pub in_flight: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Never backed up.
    First,
    /// The cron slot at this instant (offset included) passed since the newest recovery point.
    Scheduled { slot: DateTime<Utc> },
    /// Waiting for the next slot would pass the RPO.
    RpoGuard,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueJob {
    pub tenant: String,
    pub tier: String,
    pub reason: Reason,
    /// When the RPO is breached without a new backup (`None` for a first backup).
    pub deadline: Option<DateTime<Utc>>,
    /// Seconds of slack (negative: already late even if started now).
    pub slack_secs: i64,
    pub priority: u32,
}

/// First retry delay after a failed backup; it doubles per consecutive failure up to `RETRY_MAX`.
pub const RETRY_BASE: Duration = Duration::from_secs(60);
pub const RETRY_MAX: Duration = Duration::from_secs(3600);

/// When a tenant whose last `failures` attempts failed (the last at `last_failure`) may be tried
/// again: exponential backoff plus up to 20 % jitter. The jitter comes from the tenant id and the
/// attempt number, so it is repeatable and many tenants failing together do not retry together.
pub fn retry_not_before(
    tenant: &str,
    failures: u32,
    last_failure: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if failures == 0 {
        return None;
    }
    let exp = RETRY_BASE.saturating_mul(1u32 << (failures - 1).min(16));
    let delay = exp.min(RETRY_MAX);
    let seed = Sha256::digest(format!("{tenant}/{failures}").as_bytes());
    let permille = u64::from(u16::from_be_bytes([seed[0], seed[1]])) % 200;
    let jitter = delay.mul_f64(permille as f64 / 1000.0);
    Some(last_failure + chrono(delay + jitter))
}

/// A tenant's fixed offset inside its tier's spread window.
pub fn offset(tenant: &str, spread: Duration) -> Duration {
    let secs = spread.as_secs();
    if secs == 0 {
        return Duration::ZERO;
    }
    let digest = Sha256::digest(tenant.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    Duration::from_secs(n % secs)
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The first slot (cron time + offset) strictly after `after`.
fn next_slot(
    cron: &cron::Schedule,
    offset: Duration,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let base = after - chrono(offset);
    cron.after(&base).next().map(|t| t + chrono(offset))
}

/// One planning pass: the due jobs, least slack first.
pub fn plan(tenants: &[TenantFacts<'_>], now: DateTime<Utc>) -> Vec<DueJob> {
    let mut due: Vec<DueJob> = tenants
        .iter()
        .filter(|t| !t.in_flight && t.not_before.is_none_or(|nb| nb <= now))
        .filter_map(|t| {
            let (reason, deadline) = match t.newest_recovery_point {
                None => (Reason::First, None),
                Some(rp) => {
                    let deadline = rp + chrono(t.rpo);
                    let slot = next_slot(t.cron, offset(t.tenant, t.spread), rp);
                    if let Some(slot) = slot.filter(|s| *s <= now) {
                        (Reason::Scheduled { slot }, Some(deadline))
                    } else if now + chrono(t.expected_duration) >= deadline {
                        (Reason::RpoGuard, Some(deadline))
                    } else {
                        return None;
                    }
                }
            };
            // A tenant never backed up is as urgent as one at its deadline now.
            let slack = deadline.unwrap_or(now) - now - chrono(t.expected_duration);
            Some(DueJob {
                tenant: t.tenant.to_string(),
                tier: t.tier.to_string(),
                reason,
                deadline,
                slack_secs: slack.num_seconds(),
                priority: t.priority,
            })
        })
        .collect();
    due.sort_by(|a, b| {
        a.slack_secs
            .cmp(&b.slack_secs)
            .then(b.priority.cmp(&a.priority))
            .then(a.tenant.cmp(&b.tenant))
    });
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, h, m, 0).unwrap()
    }

    fn every_4h() -> cron::Schedule {
        crate::config::parse_cron("0 */4 * * *").unwrap()
    }

    const HOUR: Duration = Duration::from_secs(3600);

    fn facts<'a>(
        tenant: &'a str,
        cron: &'a cron::Schedule,
        newest: Option<DateTime<Utc>>,
    ) -> TenantFacts<'a> {
        TenantFacts {
            tenant,
            tier: "paid",
            cron,
            spread: Duration::ZERO,
            priority: 10,
            rpo: 12 * HOUR,
            newest_recovery_point: newest,
            expected_duration: Duration::from_secs(600),
            not_before: None,
            in_flight: false,
        }
    }

    #[test]
    fn cron_slots_with_a_deterministic_spread() {
        let cron = every_4h();
        // Slots at 00:00, 04:00, 08:00…; backed up at 04:10, so due again from the 08:00 slot.
        let t = facts("acme", &cron, Some(at(4, 10)));
        assert!(plan(std::slice::from_ref(&t), at(7, 59)).is_empty());
        let due = plan(std::slice::from_ref(&t), at(8, 0));
        assert_eq!(due[0].reason, Reason::Scheduled { slot: at(8, 0) });

        // With a spread window each tenant keeps its own offset, inside the window.
        let spread = HOUR;
        let mut offsets = std::collections::BTreeSet::new();
        for i in 0..200 {
            let o = offset(&format!("t{i}"), spread);
            assert!(o < spread);
            assert_eq!(o, offset(&format!("t{i}"), spread), "stable");
            offsets.insert(o.as_secs() / 60);
        }
        assert!(
            offsets.len() > 40,
            "200 tenants spread over many minutes: {offsets:?}"
        );
        let o = offset("acme", spread);
        let spread_t = TenantFacts {
            spread,
            // Backed up just after its 04:00 slot, so its next slot is 08:00 plus its offset.
            newest_recovery_point: Some(at(4, 1) + chrono(o)),
            ..t.clone()
        };
        let slot = at(8, 0) + chrono(o);
        assert!(
            plan(
                std::slice::from_ref(&spread_t),
                slot - chrono::Duration::seconds(1)
            )
            .is_empty()
        );
        assert_eq!(
            plan(std::slice::from_ref(&spread_t), slot)[0].reason,
            Reason::Scheduled { slot }
        );
    }

    #[test]
    fn rpo_guard_makes_a_tenant_due_before_its_slot() {
        // A daily cron cannot keep a 12 h RPO: the guard fires when waiting would breach it.
        let daily = crate::config::parse_cron("0 3 * * *").unwrap();
        let t = facts("acme", &daily, Some(at(3, 0)));
        // Deadline 15:00, expected 10 min: not due at 14:49, due at 14:50.
        assert!(plan(std::slice::from_ref(&t), at(14, 49)).is_empty());
        let due = plan(std::slice::from_ref(&t), at(14, 50));
        assert_eq!(due[0].reason, Reason::RpoGuard);
        assert_eq!(due[0].deadline, Some(at(15, 0)));
        assert_eq!(due[0].slack_secs, 0);
    }

    #[test]
    fn least_slack_first_then_priority_then_id() {
        let cron = every_4h();
        let mut late = facts("late", &cron, Some(at(0, 30)));
        late.rpo = 12 * HOUR; // deadline 12:30
        let mut early = facts("early", &cron, Some(at(0, 40)));
        early.rpo = 90 * HOUR;
        let paid = facts("paid-b", &cron, Some(at(0, 30)));
        let mut free = facts("free-a", &cron, Some(at(0, 30)));
        free.priority = 1;
        let never = facts("new", &cron, None);
        let due = plan(&[early, free, late, never, paid], at(8, 0));
        let order: Vec<&str> = due.iter().map(|d| d.tenant.as_str()).collect();
        // "new" has no deadline: slack −10 min; then the 12:30 deadlines, paid before free at
        // equal slack, then by id; the 90 h tenant last.
        assert_eq!(order, ["new", "late", "paid-b", "free-a", "early"]);
        assert_eq!(due[0].reason, Reason::First);
    }

    #[test]
    fn after_downtime_one_catch_up_job_not_one_per_missed_slot() {
        let cron = every_4h();
        // Down for two days: 12 slots missed, one job.
        let t = facts("acme", &cron, Some(at(4, 10) - chrono::Duration::days(2)));
        let due = plan(std::slice::from_ref(&t), at(8, 0));
        assert_eq!(due.len(), 1);
        assert!(due[0].slack_secs < 0, "already past its RPO");
        // Once that job is queued, no second one; after it succeeds, not due until the next slot.
        let queued = TenantFacts {
            in_flight: true,
            ..t.clone()
        };
        assert!(plan(std::slice::from_ref(&queued), at(8, 0)).is_empty());
        let done = TenantFacts {
            newest_recovery_point: Some(at(8, 5)),
            ..t
        };
        assert!(plan(std::slice::from_ref(&done), at(11, 59)).is_empty());
        assert_eq!(plan(std::slice::from_ref(&done), at(12, 0)).len(), 1);
    }

    #[test]
    fn retries_back_off_exponentially_with_bounded_jitter() {
        let t0 = at(8, 0);
        assert_eq!(retry_not_before("acme", 0, t0), None);
        let delays: Vec<i64> = (1..=9)
            .map(|n| (retry_not_before("acme", n, t0).unwrap() - t0).num_seconds())
            .collect();
        for (i, d) in delays.iter().enumerate() {
            let base = (60i64 << i).min(3600);
            assert!(
                *d >= base && *d < base + base / 5 + 1,
                "failure {}: {d}s",
                i + 1
            );
        }
        // Two tenants failing together do not retry at the same second.
        assert_ne!(
            retry_not_before("acme", 3, t0),
            retry_not_before("globex", 3, t0)
        );
    }

    #[test]
    fn a_retry_waits_for_its_backoff() {
        let cron = every_4h();
        let t = TenantFacts {
            not_before: Some(at(8, 30)),
            ..facts("acme", &cron, Some(at(4, 10)))
        };
        assert!(plan(std::slice::from_ref(&t), at(8, 29)).is_empty());
        assert_eq!(plan(std::slice::from_ref(&t), at(8, 30)).len(), 1);
    }
}
