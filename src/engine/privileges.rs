//! What a backup needs of a tenant's server, and what is missing: the shared vocabulary of the
//! per-engine checks (`postgres::privileges`, `mariadb::privileges`, `sqlite::privileges`).
//!
//! Each engine has a pure part (what its dump needs, what is missing from the facts the server
//! reported, the statement that grants it) and a thin probe that reads those facts with the
//! backup's own credentials. `executor::privileges` runs the probes over the fleet.

/// One thing a backup needs and does not have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What is missing, naming the object (`SELECT on table app.secrets`).
    pub what: String,
    /// The statement or action that fixes it.
    pub fix: String,
}

impl Finding {
    pub fn new(what: impl Into<String>, fix: impl Into<String>) -> Finding {
        Finding {
            what: what.into(),
            fix: fix.into(),
        }
    }
}

/// The outcome of checking one tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Everything the backup needs is there.
    Ok,
    /// The server answered; these are missing.
    Missing(Vec<Finding>),
    /// The server (or file) could not be reached or read at all.
    Unreachable(String),
}

impl Verdict {
    pub fn from_findings(findings: Vec<Finding>) -> Verdict {
        if findings.is_empty() {
            Verdict::Ok
        } else {
            Verdict::Missing(findings)
        }
    }
}

/// The first `MAJOR.MINOR` after `marker` in a tool's `--version` text (`pg_dump (PostgreSQL)
/// 15.20 (Debian …)` with `(PostgreSQL) `, `mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB`
/// with `Distrib `).
pub fn version_after(text: &str, marker: &str) -> Option<(u32, u32)> {
    let rest = &text[text.find(marker)? + marker.len()..];
    major_minor(rest)
}

/// `MAJOR.MINOR` at the start of `s` (`16.4`, `10.11.19-MariaDB…`, `17beta1` → minor 0).
pub fn major_minor(s: &str) -> Option<(u32, u32)> {
    let mut parts = s.trim_start().splitn(3, '.');
    let digits = |p: &str| -> Option<u32> {
        let d: String = p.chars().take_while(char::is_ascii_digit).collect();
        d.parse().ok()
    };
    let major = digits(parts.next()?)?;
    let minor = parts.next().and_then(digits).unwrap_or(0);
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_versions() {
        for (text, marker, want) in [
            (
                "pg_dump (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)",
                "(PostgreSQL) ",
                Some((15, 20)),
            ),
            (
                "pg_dump (PostgreSQL) 17beta1",
                "(PostgreSQL) ",
                Some((17, 0)),
            ),
            (
                "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, for debian-linux-gnu (x86_64)",
                "Distrib ",
                Some((10, 11)),
            ),
            (
                "mariadb-dump from 11.8.3-MariaDB, client 10.19 for debian-linux-gnu (x86_64)",
                "from ",
                Some((11, 8)),
            ),
            ("something else", "Distrib ", None),
        ] {
            assert_eq!(version_after(text, marker), want, "{text}");
        }
    }
}
