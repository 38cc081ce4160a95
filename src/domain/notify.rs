//! Notifications, planned: the event kinds, which sink wants which event, the retry schedule,
//! and which deliveries are due now. Pure: the delivery worker gathers the open events and their
//! attempts from the catalog, asks `plan`, sends what it says and records the outcomes.
//!
//! Order: a sink gets a tenant's events in the order they were written (`seq`); an event waits
//! until every earlier one of the same tenant is delivered to that sink or given up. Events
//! without a tenant (a region, retention, the audit log) form one queue of their own. A sink
//! that is down holds back only its own queues, never another sink's.

use chrono::{DateTime, Utc};
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// What happened. The names are the `type` of the payload and what `events = [...]` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// A restore ended well (on the side: restored; over live: swapped in).
    RestoreFinished,
    /// A restore failed.
    RestoreFailed,
    /// A backup a customer asked for is complete (the link itself is never sent).
    BackupReady,
    /// A tenant's scheduled backups failed `FAILING_AFTER` times in a row.
    BackupFailing,
    /// A tenant is past its tier's RPO objective.
    RpoBreached,
    /// A drill run ended with a tier that failed its objectives or checks.
    DrillFailed,
    /// A tenant was purged; carries the deletion certificate's SHA-256.
    PurgeCompleted,
    /// A region stopped answering.
    RegionUnreachable,
    /// A region that did not answer answers again.
    RegionBack,
    /// A retention run stopped before deleting anything: it would have exceeded a cap.
    RetentionCapped,
    /// `audit verify` found the log edited, cut or not following its anchors.
    AuditFailed,
    /// `lifeboat notify test SINK`.
    Test,
}

impl EventKind {
    pub const ALL: [EventKind; 12] = [
        EventKind::RestoreFinished,
        EventKind::RestoreFailed,
        EventKind::BackupReady,
        EventKind::BackupFailing,
        EventKind::RpoBreached,
        EventKind::DrillFailed,
        EventKind::PurgeCompleted,
        EventKind::RegionUnreachable,
        EventKind::RegionBack,
        EventKind::RetentionCapped,
        EventKind::AuditFailed,
        EventKind::Test,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RestoreFinished => "restore.finished",
            EventKind::RestoreFailed => "restore.failed",
            EventKind::BackupReady => "backup.ready",
            EventKind::BackupFailing => "backup.failing",
            EventKind::RpoBreached => "rpo.breached",
            EventKind::DrillFailed => "drill.failed",
            EventKind::PurgeCompleted => "purge.completed",
            EventKind::RegionUnreachable => "region.unreachable",
            EventKind::RegionBack => "region.back",
            EventKind::RetentionCapped => "retention.capped",
            EventKind::AuditFailed => "audit.failed",
            EventKind::Test => "test",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The names, for error messages.
    pub fn names() -> String {
        EventKind::ALL.map(|k| k.as_str()).join(", ")
    }
}

/// Consecutive failed scheduled backups of a tenant that make a `backup.failing` event (once
/// per streak: when the count reaches it).
pub const FAILING_AFTER: u32 = 3;

/// Whether a tenant is past its RPO objective: its newest recovery point is older than `rpo`.
/// A tenant with none yet is not judged here (its failing backups are `backup.failing`).
pub fn rpo_breached(newest: Option<DateTime<Utc>>, rpo: Duration, now: DateTime<Utc>) -> bool {
    newest.is_some_and(|p| (now - p).to_std().is_ok_and(|age| age > rpo))
}

/// Which events a sink wants. An empty `events` list means every kind; `tenants`/`tiers`, when
/// set, keep only events of those tenants/tiers (events without a tenant pass them: a region,
/// retention or the audit log concerns every tenant).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkFilter {
    pub events: BTreeSet<EventKind>,
    pub tenants: Option<BTreeSet<String>>,
    pub tiers: Option<BTreeSet<String>>,
}

impl SinkFilter {
    pub fn wants(&self, kind: EventKind, tenant: Option<&str>, tier: Option<&str>) -> bool {
        if kind == EventKind::Test {
            return false; // `notify test` sends straight to the sink it names
        }
        if !self.events.is_empty() && !self.events.contains(&kind) {
            return false;
        }
        let Some(tenant) = tenant else {
            return true;
        };
        let tenant_ok = self.tenants.as_ref().is_none_or(|t| t.contains(tenant));
        let tier_ok = self
            .tiers
            .as_ref()
            .is_none_or(|t| tier.is_some_and(|tier| t.contains(tier)));
        tenant_ok && tier_ok
    }
}

/// The wait after the `attempt`th failed attempt (1-based): 1 s, 2 s, 4 s … doubling, at most
/// 5 minutes. No jitter: one worker sends, so retries do not stampede a receiver.
pub fn backoff(attempt: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(300);
    let exp = attempt.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX)
}

/// An event waiting to be settled, as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenEvent {
    pub seq: i64,
    pub id: String,
    pub kind: EventKind,
    pub tenant: Option<String>,
    pub tier: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Where one event stands with one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Tried `attempts` times; next try at `next_at`.
    Pending {
        attempts: u32,
        next_at: DateTime<Utc>,
    },
    Delivered,
    GivenUp,
}

impl DeliveryState {
    pub fn finished(self) -> bool {
        !matches!(self, DeliveryState::Pending { .. })
    }
}

/// A sink as the planner sees it.
#[derive(Debug, Clone)]
pub struct SinkPlan<'a> {
    pub name: &'a str,
    pub filter: &'a SinkFilter,
    /// How long after the event the sink is still tried.
    pub deadline: Duration,
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (event id, sink): send now.
    pub send: Vec<(String, String)>,
    /// (event id, sink): past the sink's deadline, never delivered: stop trying.
    pub give_up: Vec<(String, String)>,
    /// Events every sink that wants them has finished (after `give_up` is applied).
    pub settled: Vec<String>,
}

/// Plans one round. `events` are the open events in `seq` order; `deliveries` what was recorded
/// per (event id, sink) (absent: never tried).
pub fn plan(
    events: &[OpenEvent],
    deliveries: &HashMap<(String, String), DeliveryState>,
    sinks: &[SinkPlan<'_>],
    now: DateTime<Utc>,
) -> Plan {
    let mut out = Plan::default();
    let mut given_up: BTreeSet<(String, String)> = BTreeSet::new();
    for sink in sinks {
        // The queues (tenants, or `None` for fleet events) whose head is waiting.
        let mut blocked: BTreeSet<Option<&str>> = BTreeSet::new();
        for e in events {
            let queue = e.tenant.as_deref();
            if blocked.contains(&queue)
                || !sink
                    .filter
                    .wants(e.kind, e.tenant.as_deref(), e.tier.as_deref())
            {
                continue;
            }
            let key = (e.id.clone(), sink.name.to_string());
            let state = deliveries.get(&key).copied();
            if state.is_some_and(DeliveryState::finished) {
                continue;
            }
            let expired =
                e.created_at + chrono::Duration::from_std(sink.deadline).unwrap_or_default() <= now;
            if expired {
                given_up.insert(key.clone());
                out.give_up.push(key);
                continue; // the next event of this queue may go now
            }
            blocked.insert(queue);
            let due = match state {
                Some(DeliveryState::Pending { next_at, .. }) => next_at <= now,
                _ => true,
            };
            if due {
                out.send.push(key);
            }
        }
    }
    for e in events {
        let done = sinks.iter().all(|s| {
            let key = (e.id.clone(), s.name.to_string());
            !s.filter
                .wants(e.kind, e.tenant.as_deref(), e.tier.as_deref())
                || given_up.contains(&key)
                || deliveries.get(&key).is_some_and(|d| d.finished())
        });
        if done {
            out.settled.push(e.id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn event(seq: i64, tenant: Option<&str>, created: i64) -> OpenEvent {
        OpenEvent {
            seq,
            id: format!("e{seq}"),
            kind: EventKind::RestoreFinished,
            tenant: tenant.map(str::to_string),
            tier: Some("paid".into()),
            created_at: at(created),
        }
    }

    #[test]
    fn kinds_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("restore.done"), None);
    }

    #[test]
    fn filters() {
        let all = SinkFilter::default();
        let some = SinkFilter {
            events: [EventKind::PurgeCompleted].into(),
            tenants: Some(["acme".to_string()].into()),
            tiers: None,
        };
        let tiers = SinkFilter {
            tiers: Some(["paid".to_string()].into()),
            ..SinkFilter::default()
        };
        for (f, kind, tenant, tier, want) in [
            (
                &all,
                EventKind::RestoreFailed,
                Some("x"),
                Some("free"),
                true,
            ),
            (&all, EventKind::Test, None, None, false),
            (&some, EventKind::PurgeCompleted, Some("acme"), None, true),
            (&some, EventKind::PurgeCompleted, Some("other"), None, false),
            (&some, EventKind::RestoreFailed, Some("acme"), None, false),
            (&tiers, EventKind::RegionUnreachable, None, None, true),
            (
                &tiers,
                EventKind::RestoreFailed,
                Some("a"),
                Some("free"),
                false,
            ),
            (
                &tiers,
                EventKind::RestoreFailed,
                Some("a"),
                Some("paid"),
                true,
            ),
            (&tiers, EventKind::RestoreFailed, Some("a"), None, false),
        ] {
            assert_eq!(
                f.wants(kind, tenant, tier),
                want,
                "{f:?} {kind:?} {tenant:?}"
            );
        }
    }

    #[test]
    fn rpo_breach() {
        let h = Duration::from_secs(3600);
        assert!(!rpo_breached(None, h, at(0)));
        assert!(!rpo_breached(Some(at(0)), h, at(3600)));
        assert!(rpo_breached(Some(at(0)), h, at(3601)));
        assert!(
            !rpo_breached(Some(at(10)), h, at(0)),
            "a point in the future"
        );
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=12).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX).as_secs(), 300);
    }

    #[test]
    fn a_pending_event_holds_back_its_tenant_only() {
        let f = SinkFilter::default();
        let sinks = [SinkPlan {
            name: "ops",
            filter: &f,
            deadline: Duration::from_secs(3600),
        }];
        let events = [
            event(1, Some("a"), 0),
            event(2, Some("a"), 1),
            event(3, Some("b"), 2),
        ];
        let mut d = HashMap::new();
        d.insert(
            ("e1".to_string(), "ops".to_string()),
            DeliveryState::Pending {
                attempts: 1,
                next_at: at(100),
            },
        );
        let p = plan(&events, &d, &sinks, at(10));
        assert_eq!(p.send, [("e3".to_string(), "ops".to_string())]);
        // Past the deadline, e1 is given up and e2 goes in the same round.
        let p = plan(&events, &d, &sinks, at(3600));
        assert_eq!(p.give_up, [("e1".to_string(), "ops".to_string())]);
        assert_eq!(p.send[0], ("e2".to_string(), "ops".to_string()));
        assert_eq!(p.settled, ["e1".to_string()]);
    }

    fn arb_state() -> impl Strategy<Value = Option<DeliveryState>> {
        prop_oneof![
            Just(None),
            Just(Some(DeliveryState::Delivered)),
            Just(Some(DeliveryState::GivenUp)),
            (1u32..6, 0i64..200).prop_map(|(attempts, n)| Some(DeliveryState::Pending {
                attempts,
                next_at: at(n)
            })),
        ]
    }

    proptest! {
        /// Whatever the recorded state: at most one event per (sink, tenant) is sent, never one
        /// after a pending earlier one of its queue, never one finished; an event is settled only
        /// when every sink wanting it is finished with it.
        #[test]
        fn plans_keep_order_and_never_resend(
            rows in proptest::collection::vec((0usize..3, 0i64..200, arb_state(), arb_state()), 0..24),
            now in 0i64..400,
        ) {
            let f = SinkFilter::default();
            let only_a = SinkFilter { tenants: Some(["a".to_string()].into()), ..SinkFilter::default() };
            let sinks = [
                SinkPlan { name: "one", filter: &f, deadline: Duration::from_secs(150) },
                SinkPlan { name: "two", filter: &only_a, deadline: Duration::from_secs(300) },
            ];
            let tenants = [Some("a"), Some("b"), None];
            let mut events = Vec::new();
            let mut d = HashMap::new();
            for (i, (t, created, s1, s2)) in rows.iter().enumerate() {
                let e = event(i as i64, tenants[*t], *created);
                if let Some(s) = s1 { d.insert((e.id.clone(), "one".to_string()), *s); }
                if let Some(s) = s2 { d.insert((e.id.clone(), "two".to_string()), *s); }
                events.push(e);
            }
            let p = plan(&events, &d, &sinks, at(now));
            let finished = |id: &str, sink: &str| {
                let k = (id.to_string(), sink.to_string());
                d.get(&k).is_some_and(|s| s.finished()) || p.give_up.contains(&k)
            };
            let mut seen = BTreeSet::new();
            for (id, sink) in &p.send {
                let e = events.iter().find(|e| &e.id == id).unwrap();
                prop_assert!(!finished(id, sink));
                prop_assert!(seen.insert((sink.clone(), e.tenant.clone())), "two of one queue");
                let s = sinks.iter().find(|s| s.name == sink).unwrap();
                for earlier in events.iter().filter(|x| x.seq < e.seq && x.tenant == e.tenant) {
                    if s.filter.wants(earlier.kind, earlier.tenant.as_deref(), earlier.tier.as_deref()) {
                        prop_assert!(finished(&earlier.id, sink), "{} sent before {}", id, earlier.id);
                    }
                }
            }
            for (id, _) in &p.give_up {
                let e = events.iter().find(|e| &e.id == id).unwrap();
                prop_assert!(e.created_at + chrono::Duration::seconds(150) <= at(now));
            }
            for e in &events {
                let all = sinks.iter().all(|s| {
                    !s.filter.wants(e.kind, e.tenant.as_deref(), e.tier.as_deref()) || finished(&e.id, s.name)
                });
                prop_assert_eq!(p.settled.contains(&e.id), all);
            }
        }
    }
}
