//! Lifecycle records: what the catalog knows about a tenant's lifecycle (legal holds,
//! terminations, reinstatements, purges), as small append-only records kept in every region, so
//! that a catalog rebuilt from the regions keeps every promise (invariant 9).
//!
//! One record per event, named `TIME-EVENT-RAND.json` (TIME is `YYYYMMDDTHHMMSS.ffffffZ`, so
//! names sort by time). Replaying a tenant's records in name order gives its state. Pure: no
//! I/O, no clock.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

/// The `format` of a record.
pub const FORMAT: &str = "lifeboat-lifecycle-record/1";
/// A record is far smaller; anything larger is not one.
pub const MAX_RECORD_BYTES: usize = 64 << 10;
/// The time at the start of a record's name.
const NAME_TIME: &str = "%Y%m%dT%H%M%S%.6fZ";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Event {
    /// A legal hold was placed.
    Hold,
    /// A legal hold was lifted.
    Unhold,
    /// The tenant was terminated at `at` (its deletion window runs from then).
    Terminate,
    /// A terminated tenant was made active again.
    Reinstate,
    /// A purge began (keys are shredded next).
    PurgeStart,
    /// The tombstone: the tenant was purged at `at`; nothing of it is left in any region.
    Purged,
    /// The whole state as the catalog had it, written once for a tenant whose state predates
    /// lifecycle records.
    State,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Hold => "hold",
            Event::Unhold => "unhold",
            Event::Terminate => "terminate",
            Event::Reinstate => "reinstate",
            Event::PurgeStart => "purge-start",
            Event::Purged => "purged",
            Event::State => "state",
        }
    }

    fn parse(s: &str) -> Option<Event> {
        [
            Event::Hold,
            Event::Unhold,
            Event::Terminate,
            Event::Reinstate,
            Event::PurgeStart,
            Event::Purged,
            Event::State,
        ]
        .into_iter()
        .find(|e| e.as_str() == s)
    }
}

/// What one record holds: ids, times, the actor, the tier and engine. Never tenant data, and
/// never a reason in plaintext: reasons are free text that may name people (counsel, a
/// customer's erasure request), so `reason-age` is the reason encrypted to the master
/// recipients (base64 of an age file), readable only with a master identity. Unknown fields are
/// ignored, not refused: a record a later version writes must still be read by a rebuild, or a
/// hold would be lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Record {
    pub format: String,
    pub tenant: String,
    pub event: Event,
    /// When the record was made (the time in its name).
    pub recorded: DateTime<Utc>,
    /// When the event took effect: the termination time (which may be earlier than `recorded`),
    /// the hold, the purge's completion.
    pub at: DateTime<Utc>,
    /// Who did it, as the audit log names them (`cli:alice`, `serve`).
    pub actor: String,
    pub tier: String,
    pub engine: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_age: Option<String>,
    /// `state` records: `active`, `terminated` or `purged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// `state` records: whether a legal hold was in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub legal_hold: Option<bool>,
    /// `purged` and `state` records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminated_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_shredded_at: Option<DateTime<Utc>>,
    /// `purged` records: the SHA-256 of the deletion certificate's JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_sha256: Option<String>,
}

impl Record {
    /// A record of `event` for `tenant`, made at `recorded` (kept to the microsecond, as in its
    /// name); the optional fields empty.
    pub fn new(
        tenant: &str,
        event: Event,
        recorded: DateTime<Utc>,
        at: DateTime<Utc>,
        actor: &str,
        tier: &str,
        engine: &str,
    ) -> Record {
        Record {
            format: FORMAT.to_string(),
            tenant: tenant.to_string(),
            event,
            recorded: recorded.trunc_subsecs(6),
            at,
            actor: actor.to_string(),
            tier: tier.to_string(),
            engine: engine.to_string(),
            reason_age: None,
            state: None,
            legal_hold: None,
            terminated_at: None,
            purge_started_at: None,
            key_shredded_at: None,
            certificate_sha256: None,
        }
    }

    /// The record's object name; `rand` (8 hex digits) keeps two records of one microsecond apart.
    pub fn name(&self, rand: &str) -> String {
        format!(
            "{}-{}-{rand}.json",
            self.recorded.format(NAME_TIME),
            self.event.as_str()
        )
    }

    /// Parses a record's body, checking it against its tenant and name.
    pub fn parse(tenant: &str, name: &str, body: &[u8]) -> Result<Record, String> {
        let r: Record = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        if r.format != FORMAT {
            return Err(format!("format {:?}, expected {FORMAT:?}", r.format));
        }
        let (time, event) = parse_name(name).ok_or("not a record name")?;
        if r.tenant != tenant || r.event != event || r.recorded != time {
            return Err(format!(
                "it holds a {} record of tenant {} made at {}, which its name does not",
                r.event.as_str(),
                r.tenant,
                r.recorded.format(NAME_TIME)
            ));
        }
        Ok(r)
    }
}

/// `TIME-EVENT-RAND.json`: (time, event); `None` for any other name.
pub fn parse_name(name: &str) -> Option<(DateTime<Utc>, Event)> {
    let rest = name.strip_suffix(".json")?;
    let (time, rest) = rest.split_at_checked(23)?;
    let (event, rand) = rest.strip_prefix('-')?.rsplit_once('-')?;
    let ok = rand.len() == 8 && rand.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return None;
    }
    let time = NaiveDateTime::parse_from_str(time, NAME_TIME)
        .ok()?
        .and_utc();
    Some((time, Event::parse(event)?))
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Lifecycle {
    #[default]
    Active,
    Terminated {
        at: DateTime<Utc>,
    },
    Purged {
        at: DateTime<Utc>,
        terminated_at: Option<DateTime<Utc>>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub since: DateTime<Utc>,
    pub by: String,
    /// The reason, encrypted (see `Record::reason_age`).
    pub reason_age: Option<String>,
}

/// A tenant's state, as its records say.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    pub lifecycle: Lifecycle,
    pub hold: Option<Hold>,
    pub purge_started_at: Option<DateTime<Utc>>,
    pub key_shredded_at: Option<DateTime<Utc>>,
    pub certificate_sha256: Option<String>,
    /// Tier and engine of the newest record.
    pub tier: String,
    pub engine: String,
    /// Records that changed nothing, and why (an event after the tombstone).
    pub ignored: Vec<String>,
}

impl State {
    pub fn is_purged(&self) -> bool {
        matches!(self.lifecycle, Lifecycle::Purged { .. })
    }
}

/// Replays one tenant's records, oldest first (callers sort by name). A purge is final: events
/// after the tombstone are ignored (and listed), except a `state` record.
pub fn replay<'a>(records: impl IntoIterator<Item = &'a Record>) -> State {
    let mut s = State::default();
    for r in records {
        s.tier.clone_from(&r.tier);
        s.engine.clone_from(&r.engine);
        if s.is_purged() && r.event != Event::State {
            s.ignored.push(format!(
                "{} record of {} after the tombstone",
                r.event.as_str(),
                r.recorded.to_rfc3339()
            ));
            continue;
        }
        match r.event {
            Event::Hold => {
                s.hold = Some(Hold {
                    since: r.at,
                    by: r.actor.clone(),
                    reason_age: r.reason_age.clone(),
                })
            }
            Event::Unhold => s.hold = None,
            Event::Terminate => s.lifecycle = Lifecycle::Terminated { at: r.at },
            Event::Reinstate => {
                s.lifecycle = Lifecycle::Active;
                s.purge_started_at = None;
            }
            Event::PurgeStart => {
                s.purge_started_at.get_or_insert(r.at);
            }
            Event::Purged => {
                let terminated_at = match s.lifecycle {
                    Lifecycle::Terminated { at } => Some(at),
                    _ => None,
                };
                s.lifecycle = Lifecycle::Purged {
                    at: r.at,
                    terminated_at: r.terminated_at.or(terminated_at),
                };
                s.hold = None;
                s.purge_started_at = r.purge_started_at.or(s.purge_started_at);
                s.key_shredded_at = r.key_shredded_at;
                s.certificate_sha256.clone_from(&r.certificate_sha256);
            }
            Event::State => {
                s.lifecycle = match (r.state.as_deref(), r.terminated_at) {
                    (Some("purged"), t) => Lifecycle::Purged {
                        at: r.at,
                        terminated_at: t,
                    },
                    (Some("terminated"), Some(at)) => Lifecycle::Terminated { at },
                    _ => Lifecycle::Active,
                };
                s.hold = r.legal_hold.unwrap_or(false).then(|| Hold {
                    since: r.at,
                    by: r.actor.clone(),
                    reason_age: r.reason_age.clone(),
                });
                s.purge_started_at = r.purge_started_at;
                s.key_shredded_at = r.key_shredded_at;
                s.certificate_sha256.clone_from(&r.certificate_sha256);
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn rec(event: Event, recorded: &str, at: &str) -> Record {
        Record::new(
            "shop",
            event,
            t(recorded),
            t(at),
            "cli:alice",
            "paid",
            "sqlite",
        )
    }

    #[test]
    fn names_sort_by_time_and_parse_back() {
        let r = rec(
            Event::PurgeStart,
            "2026-03-01T10:00:00.123456789Z",
            "2026-03-01T10:00:00Z",
        );
        let name = r.name("0a1b2c3d");
        assert_eq!(name, "20260301T100000.123456Z-purge-start-0a1b2c3d.json");
        assert_eq!(
            parse_name(&name),
            Some((t("2026-03-01T10:00:00.123456Z"), Event::PurgeStart))
        );
        let earlier = rec(
            Event::Hold,
            "2026-02-28T23:59:59.999999Z",
            "2026-02-28T00:00:00Z",
        );
        assert!(earlier.name("ffffffff") < name);
        for bad in [
            "20260301T100000.123456Z-purge-start-0a1b2c3d.json.tmp",
            "20260301T100000Z-hold-0a1b2c3d.json",
            "20260301T100000.123456Z-nothing-0a1b2c3d.json",
            "20260301T100000.123456Z-hold-0a1b2c3g.json",
            "20260301T100000.123456Z-hold.json",
            ".lifeboat-tmp-x-20260301T100000.123456Z-hold-0a1b2c3d.json",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_record_must_be_the_one_its_name_says() {
        let mut r = rec(Event::Hold, "2026-03-01T10:00:00Z", "2026-03-01T10:00:00Z");
        let name = r.name("00000000");
        let body = serde_json::to_vec(&r).unwrap();
        assert_eq!(Record::parse("shop", &name, &body), Ok(r.clone()));
        assert!(Record::parse("blog", &name, &body).is_err());
        r.event = Event::Unhold;
        let body = serde_json::to_vec(&r).unwrap();
        assert!(Record::parse("shop", &name, &body).is_err());
        assert!(Record::parse("shop", &name, b"{\"format\": 1}").is_err());
    }

    #[test]
    fn replaying_gives_the_state() {
        let hold = rec(Event::Hold, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        let term = rec(
            Event::Terminate,
            "2026-01-02T00:00:00Z",
            "2025-12-01T00:00:00Z",
        );
        let unhold = rec(
            Event::Unhold,
            "2026-01-03T00:00:00Z",
            "2026-01-03T00:00:00Z",
        );
        let reinstate = rec(
            Event::Reinstate,
            "2026-01-04T00:00:00Z",
            "2026-01-04T00:00:00Z",
        );
        let start = rec(
            Event::PurgeStart,
            "2026-04-01T00:00:00Z",
            "2026-04-01T00:00:00Z",
        );
        let mut purged = rec(
            Event::Purged,
            "2026-04-01T00:05:00Z",
            "2026-04-01T00:05:00Z",
        );
        purged.certificate_sha256 = Some("ab".repeat(32));
        let late_hold = rec(Event::Hold, "2026-05-01T00:00:00Z", "2026-05-01T00:00:00Z");

        let s = replay([&hold, &term]);
        assert_eq!(
            s.lifecycle,
            Lifecycle::Terminated {
                at: t("2025-12-01T00:00:00Z")
            }
        );
        assert_eq!(s.hold.as_ref().map(|h| h.by.as_str()), Some("cli:alice"));
        let s = replay([&hold, &term, &unhold, &reinstate]);
        assert_eq!((s.lifecycle, s.hold), (Lifecycle::Active, None));

        let s = replay([&term, &start, &purged, &late_hold]);
        assert_eq!(
            s.lifecycle,
            Lifecycle::Purged {
                at: t("2026-04-01T00:05:00Z"),
                terminated_at: Some(t("2025-12-01T00:00:00Z"))
            }
        );
        assert_eq!(s.purge_started_at, Some(t("2026-04-01T00:00:00Z")));
        assert_eq!(s.certificate_sha256, Some("ab".repeat(32)));
        assert!(s.hold.is_none(), "a purge is final");
        assert_eq!(s.ignored.len(), 1, "{:?}", s.ignored);

        // A purge interrupted after it began: the next run resumes it.
        let s = replay([&term, &start]);
        assert!(!s.is_purged() && s.purge_started_at.is_some());
    }

    #[test]
    fn a_state_record_sets_everything() {
        let hold = rec(Event::Hold, "2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        let mut state = rec(Event::State, "2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z");
        state.state = Some("terminated".into());
        state.terminated_at = Some(t("2026-01-15T00:00:00Z"));
        state.legal_hold = Some(false);
        let s = replay([&hold, &state]);
        assert_eq!(
            (s.lifecycle, s.hold),
            (
                Lifecycle::Terminated {
                    at: t("2026-01-15T00:00:00Z")
                },
                None
            )
        );
        state.state = Some("purged".into());
        let s = replay([&state]);
        assert!(s.is_purged());
    }
}
