//! Who is acting, for the audit trail, and the audit commands' time bounds. The log itself (the
//! hash chain, its verification and listing) is `catalog::audit`.

use crate::config::ApiRole;
use chrono::{DateTime, Utc};

/// The role of a person at the command line (who can read the config and its secrets).
pub const OPERATOR: &str = "operator";
/// The role of the daemon acting on its own (schedules, discovery).
pub const SERVICE: &str = "service";

/// The role an actor acts in, as the audit log records it. Carried by the `Actor`, so the role
/// is said where the actor is made, never guessed from its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A person at the command line.
    Operator,
    /// The daemon or a job acting on its own.
    Service,
    /// An API token's role.
    Api(ApiRole),
}

impl Role {
    /// The text stored in the audit log (and hashed): `operator`, `service`, or the token's role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Operator => OPERATOR,
            Role::Service => SERVICE,
            Role::Api(r) => r.as_str(),
        }
    }

    /// The role of a stored text (`as_str` read back).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            OPERATOR => Some(Role::Operator),
            SERVICE => Some(Role::Service),
            _ => ApiRole::parse(s).map(Role::Api),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Who an audit entry names: `cli:alice` (role `operator`), `serve` (role `service`), API
/// tokens with their roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub name: String,
    pub role: Role,
    /// Where an API caller connected from; `None` on the command line and for the daemon.
    pub source_ip: Option<String>,
}

impl Actor {
    /// The person at the command line, as `cli:<user>` from `$SUDO_USER` (the person behind
    /// `sudo`) or else `$USER`. The environment says who it is; nothing proves it, so the
    /// value is only accepted when it looks like a user name, and the actor is plain `cli`
    /// otherwise.
    pub fn cli() -> Actor {
        let var = |name| std::env::var(name).ok();
        Actor::cli_from(var("SUDO_USER").as_deref(), var("USER").as_deref())
    }

    /// `cli()` with the environment passed in.
    pub fn cli_from(sudo_user: Option<&str>, user: Option<&str>) -> Actor {
        let user = sudo_user.filter(|u| !u.is_empty()).or(user);
        let name = match user {
            Some(u) if is_user_name(u) => format!("cli:{u}"),
            _ => "cli".to_string(),
        };
        Actor {
            name,
            role: Role::Operator,
            source_ip: None,
        }
    }

    /// A process acting on its own, such as `serve`.
    pub fn service(name: &str) -> Actor {
        Actor {
            name: name.to_string(),
            role: Role::Service,
            source_ip: None,
        }
    }

    /// A backup job's own steps (its tenant key, its record): the service's, whoever started
    /// the job, under the name these entries always had.
    pub fn backup_job() -> Actor {
        Actor::service("lifeboat")
    }
}

/// 1 to 64 characters of a-z, 0-9, `.`, `_` and `-`: a user name that cannot forge another
/// field or line of the log.
fn is_user_name(u: &str) -> bool {
    (1..=64).contains(&u.len())
        && u.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// An audit command's time bound: an RFC 3339 time, or a duration back from `now` (`7d`,
/// `12h`, as durations are written in the config).
pub fn parse_time_bound(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    const VALID: &str = "expected an RFC 3339 time such as 2026-08-01T00:00:00Z, or a duration back from now such as 7d or 12h";
    if let Ok(t) = DateTime::parse_from_rfc3339(s.trim()) {
        return Ok(t.to_utc());
    }
    let back = crate::config::parse_duration(s).ok_or_else(|| VALID.to_string())?;
    chrono::Duration::from_std(back)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| format!("{s} back from now is before any time this log can hold; {VALID}"))
}

/// `s` with control characters escaped, so that a reason or a detail cannot forge lines or
/// terminal escapes in `audit list`.
pub fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_actors() {
        let cases: &[(Option<&str>, Option<&str>, &str)] = &[
            (None, Some("alice"), "cli:alice"),
            (Some("bob"), Some("root"), "cli:bob"),
            (Some(""), Some("alice"), "cli:alice"),
            (None, None, "cli"),
            (None, Some("j.doe_2-x"), "cli:j.doe_2-x"),
            (None, Some("Alice"), "cli"),
            (None, Some("a b"), "cli"),
            (None, Some("eve\nforged"), "cli"),
            (None, Some("x:y"), "cli"),
            (None, Some(""), "cli"),
            (
                None,
                Some(&"a".repeat(64)),
                &*format!("cli:{}", "a".repeat(64)),
            ),
            (None, Some(&"a".repeat(65)), "cli"),
            // A sudo user that is not a user name is not replaced by the account sudo ran as.
            (Some("bad user"), Some("root"), "cli"),
        ];
        for (sudo, user, want) in cases {
            let a = Actor::cli_from(*sudo, *user);
            assert_eq!(
                (a.name.as_str(), a.role),
                (*want, Role::Operator),
                "{sudo:?} {user:?}"
            );
        }
    }

    #[test]
    fn time_bounds() {
        let now = DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .to_utc();
        let ok: &[(&str, &str)] = &[
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00"),
            ("2026-01-01T02:00:00+02:00", "2026-01-01T00:00:00+00:00"),
            ("7d", "2026-03-03T12:00:00+00:00"),
            ("12h", "2026-03-10T00:00:00+00:00"),
            ("90m", "2026-03-10T10:30:00+00:00"),
        ];
        for (s, want) in ok {
            assert_eq!(parse_time_bound(s, now).unwrap().to_rfc3339(), *want, "{s}");
        }
        for s in ["yesterday", "", "0s", "-7d", "2026-01-01", "7 days ago"] {
            let e = parse_time_bound(s, now).unwrap_err();
            assert!(e.contains("RFC 3339") && e.contains("7d"), "{s}: {e}");
        }
        assert!(parse_time_bound("100000000y", now).is_err());
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\nb\u{1b}[2Jc\td"), "a\\nb\\u{1b}[2Jc\\td");
        assert_eq!(printable("ticket #42 — ok"), "ticket #42 — ok");
    }
}
