//! The audit log: append-only (triggers refuse UPDATE and DELETE) and hash-chained, so that an
//! edit or a deletion by someone who got past the triggers (file access, a superuser) is found
//! by `verify_audit`, and a truncated tail by comparing with a head anchored elsewhere.
//!
//! Each row's hash covers the previous row's hash and the row's fields, each length-prefixed.
//! Rows written before issue 8 have no role, reason or source IP and keep their hash (format 1);
//! a row with any of them (every row written now) uses format 2, which adds its seq and those
//! fields, so setting them to NULL changes the hash too.

use super::{BeginWrite, Catalog, CatalogError, Pool, on_pool};
use crate::audit::Actor;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::Row;

/// The `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// `audit list` returns at most this many rows.
pub const LIST_MAX: u32 = 10_000;

/// Problems reported by `verify_audit` beyond this many are only counted.
const PROBLEMS_KEPT: usize = 100;

/// One entry to append.
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    /// `cli:alice`, `serve`, a token's name.
    pub actor: &'a str,
    /// `operator`, `service`, a token's role.
    pub role: &'a str,
    /// `tenant.terminate`, `restore.side`, … (a dotted verb).
    pub action: &'a str,
    pub tenant: Option<&'a str>,
    /// Why, with the ticket, as the person acting gave it.
    pub reason: Option<&'a str>,
    /// Where an API request came from.
    pub source_ip: Option<&'a str>,
    pub detail: &'a str,
    /// `ok`, `failed`, `cap`, …
    pub outcome: &'a str,
    pub at: DateTime<Utc>,
}

impl<'a> AuditEntry<'a> {
    /// An entry by `actor` with outcome `ok` and nothing else set; fill the rest with struct
    /// update syntax.
    pub fn by(actor: &'a Actor, action: &'a str, at: DateTime<Utc>) -> Self {
        AuditEntry {
            actor: &actor.name,
            role: &actor.role,
            action,
            tenant: None,
            reason: None,
            source_ip: actor.source_ip.as_deref(),
            detail: "",
            outcome: "ok",
            at,
        }
    }
}

/// A stored entry, as `audit list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AuditRow {
    pub seq: i64,
    /// RFC 3339, as stored (and hashed).
    pub at: String,
    pub actor: String,
    pub role: Option<String>,
    pub action: String,
    pub tenant: Option<String>,
    pub outcome: String,
    pub reason: Option<String>,
    pub source_ip: Option<String>,
    pub detail: String,
    pub hash: String,
}

/// What `audit list` selects; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    pub tenant: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub action: Option<&'a str>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// At most this many rows (1 to `LIST_MAX`), newest first.
    pub limit: u32,
}

/// What is wrong with a row of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditProblem {
    /// The row's content does not hash to its stored hash: it was edited.
    Edited {
        seq: i64,
        action: String,
        at: String,
    },
    /// Rows are missing before `seq`: the log jumps from `after` (0: its start) to `seq`.
    Gap { seq: i64, after: i64 },
    /// The row's `prev_hash` is not the stored hash of the row before it (`after`): that row
    /// was rewritten whole, or rows were taken out or put in between them.
    Unlinked {
        seq: i64,
        after: i64,
        action: String,
        at: String,
    },
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuditProblem::Edited { seq, action, at } => write!(
                f,
                "seq {seq} ({action} at {at}) was edited: its hash does not match its content"
            ),
            AuditProblem::Gap { seq, after: 0 } => write!(
                f,
                "rows were deleted before seq {seq}: the log starts at seq {seq}, not 1"
            ),
            AuditProblem::Gap { seq, after } => write!(
                f,
                "rows were deleted before seq {seq}: the log jumps from seq {after} to seq {seq}"
            ),
            AuditProblem::Unlinked {
                seq,
                after,
                action,
                at,
            } => write!(
                f,
                "seq {seq} ({action} at {at}) does not follow seq {after}: its prev_hash is not that \
                 row's hash (seq {after} was rewritten, or rows were deleted or inserted between them)"
            ),
        }
    }
}

/// The outcome of `verify_audit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditVerification {
    pub entries: u64,
    /// The last row's seq (0 for an empty log) and stored hash (`GENESIS` for an empty log):
    /// record it elsewhere, and pass it back later as the expected head.
    pub head_seq: i64,
    pub head: String,
    /// The first problems found, in log order (at most 100), and how many more there were.
    pub problems: Vec<AuditProblem>,
    pub more_problems: u64,
    /// With an expected head: the seq of the row that has it (0 for `GENESIS`), `None` when no
    /// row has it (the log was truncated or rewritten after the head was recorded).
    pub anchor: Option<Option<i64>>,
}

impl AuditVerification {
    pub fn intact(&self) -> bool {
        self.problems.is_empty() && !matches!(self.anchor, Some(None))
    }
}

/// Length-prefixed, so fields cannot be shifted into each other.
fn part(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_be_bytes());
    h.update(s.as_bytes());
}

/// A nullable field: NULL and the empty string hash differently.
fn optional(h: &mut Sha256, s: Option<&str>) {
    match s {
        None => h.update([0u8]),
        Some(s) => {
            h.update([1u8]);
            part(h, s);
        }
    }
}

/// The hash of a row whose `at` is already the stored text.
fn entry_hash(prev: &str, seq: i64, at: &str, e: &AuditEntry<'_>) -> String {
    entry_hash_parts(
        prev,
        seq,
        at,
        e.actor,
        Some(e.role),
        e.action,
        e.tenant,
        e.reason,
        e.source_ip,
        e.detail,
        e.outcome,
    )
}

#[allow(clippy::too_many_arguments)]
fn entry_hash_parts(
    prev: &str,
    seq: i64,
    at: &str,
    actor: &str,
    role: Option<&str>,
    action: &str,
    tenant: Option<&str>,
    reason: Option<&str>,
    source_ip: Option<&str>,
    detail: &str,
    outcome: &str,
) -> String {
    let mut h = Sha256::new();
    for p in [
        prev,
        at,
        actor,
        action,
        tenant.unwrap_or(""),
        detail,
        outcome,
    ] {
        part(&mut h, p);
    }
    // Format 1 (rows written before these fields existed) stops here.
    if role.is_some() || reason.is_some() || source_ip.is_some() {
        part(&mut h, "lifeboat-audit-v2");
        part(&mut h, &seq.to_string());
        optional(&mut h, role);
        optional(&mut h, reason);
        optional(&mut h, source_ip);
    }
    hex::encode(h.finalize())
}

/// Stored times: RFC 3339 in UTC with microseconds, so that text order is time order.
fn at_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

impl Catalog {
    /// Appends `e` to the log. Writers queue (SQLite: an IMMEDIATE transaction; PostgreSQL: a
    /// table lock that readers pass), so the chain never forks, and each row's seq is the one
    /// after the last: a seq missing later is a deleted row.
    pub async fn audit_entry(&self, e: &AuditEntry<'_>) -> Result<(), CatalogError> {
        let shared = self.is_shared();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            if shared {
                sqlx::query("LOCK TABLE audit_log IN EXCLUSIVE MODE")
                    .execute(&mut *tx)
                    .await?;
            }
            let last: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(&mut *tx)
                    .await?;
            let (seq, prev) = last.map_or((1, GENESIS.to_string()), |(s, h)| (s + 1, h));
            let at = at_text(e.at);
            let hash = entry_hash(&prev, seq, &at, e);
            sqlx::query(
                "INSERT INTO audit_log (seq, at, actor, role, action, tenant_id, reason, source_ip, \
                 detail, outcome, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(seq)
            .bind(&at)
            .bind(e.actor)
            .bind(e.role)
            .bind(e.action)
            .bind(e.tenant)
            .bind(e.reason)
            .bind(e.source_ip)
            .bind(e.detail)
            .bind(e.outcome)
            .bind(&prev)
            .bind(&hash)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Appends an entry with no reason or source IP; the role is `operator` for the command
    /// line's actors (`cli`, `cli:…`) and `service` for the others (`serve`, `lifeboat`).
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        tenant: Option<&str>,
        detail: &str,
        outcome: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let role = if actor == "cli" || actor.starts_with("cli:") {
            crate::audit::OPERATOR
        } else {
            crate::audit::SERVICE
        };
        self.audit_entry(&AuditEntry {
            actor,
            role,
            action,
            tenant,
            reason: None,
            source_ip: None,
            detail,
            outcome,
            at,
        })
        .await
    }

    /// Walks the whole chain (streamed, in seq order) and reports every row that was edited,
    /// every gap left by deleted rows, every row that does not follow the one before, and the
    /// head. With `expect_head` (a head recorded earlier), also whether a row still has it: a
    /// chain whose tail was cut is intact in itself, but no longer holds the old head.
    pub async fn verify_audit(
        &self,
        expect_head: Option<&str>,
    ) -> Result<AuditVerification, CatalogError> {
        let mut v = AuditVerification {
            entries: 0,
            head_seq: 0,
            head: GENESIS.to_string(),
            problems: Vec::new(),
            more_problems: 0,
            anchor: expect_head.map(|h| (h == GENESIS).then_some(0)),
        };
        fn report(v: &mut AuditVerification, p: AuditProblem) {
            if v.problems.len() < PROBLEMS_KEPT {
                v.problems.push(p);
            } else {
                v.more_problems += 1;
            }
        }
        on_pool!(self, pool => {
            let mut rows = sqlx::query(
                "SELECT seq, at, actor, role, action, tenant_id, reason, source_ip, detail, outcome, \
                 prev_hash, hash FROM audit_log ORDER BY seq",
            )
            .fetch(pool);
            while let Some(r) = rows.try_next().await? {
                let seq: i64 = r.get("seq");
                let at: String = r.get("at");
                let action: String = r.get("action");
                let prev_hash: String = r.get("prev_hash");
                let hash: String = r.get("hash");
                let after = v.head_seq;
                if seq != after + 1 {
                    report(&mut v, AuditProblem::Gap { seq, after });
                } else if prev_hash != v.head {
                    report(&mut v, AuditProblem::Unlinked {
                        seq,
                        after,
                        action: action.clone(),
                        at: at.clone(),
                    });
                }
                let expect = entry_hash_parts(
                    &prev_hash,
                    seq,
                    &at,
                    r.get::<String, _>("actor").as_str(),
                    r.get::<Option<String>, _>("role").as_deref(),
                    &action,
                    r.get::<Option<String>, _>("tenant_id").as_deref(),
                    r.get::<Option<String>, _>("reason").as_deref(),
                    r.get::<Option<String>, _>("source_ip").as_deref(),
                    r.get::<String, _>("detail").as_str(),
                    r.get::<String, _>("outcome").as_str(),
                );
                if hash != expect {
                    report(&mut v, AuditProblem::Edited { seq, action, at });
                }
                if let Some(anchor) = &mut v.anchor
                    && anchor.is_none()
                    && expect_head == Some(hash.as_str())
                {
                    *anchor = Some(seq);
                }
                v.entries += 1;
                v.head_seq = seq;
                v.head = hash;
            }
            Ok(v)
        })
    }

    /// The entries `f` selects, newest (highest seq) first, at most `f.limit` (capped at
    /// `LIST_MAX`).
    pub async fn audit_list(&self, f: &AuditFilter<'_>) -> Result<Vec<AuditRow>, CatalogError> {
        let mut sql =
            "SELECT seq, at, actor, role, action, tenant_id, outcome, reason, source_ip, \
                       detail, hash FROM audit_log"
                .to_string();
        let mut binds: Vec<String> = Vec::new();
        let mut clauses: Vec<String> = Vec::new();
        let mut add = |clause: &str, value: String| {
            binds.push(value);
            clauses.push(format!("{clause} ${}", binds.len()));
        };
        if let Some(t) = f.tenant {
            add("tenant_id =", t.to_string());
        }
        if let Some(a) = f.actor {
            add("actor =", a.to_string());
        }
        if let Some(a) = f.action {
            add("action =", a.to_string());
        }
        if let Some(t) = f.since {
            add("at >=", at_text(t));
        }
        if let Some(t) = f.until {
            add("at <=", at_text(t));
        }
        if !clauses.is_empty() {
            sql += " WHERE ";
            sql += &clauses.join(" AND ");
        }
        sql += &format!(" ORDER BY seq DESC LIMIT {}", f.limit.clamp(1, LIST_MAX));
        on_pool!(self, pool => {
            // Only placeholders and a bounded integer are formatted into the text.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            for b in &binds {
                q = q.bind(b);
            }
            let rows = q.fetch_all(pool).await?;
            Ok(rows
                .iter()
                .map(|r| AuditRow {
                    seq: r.get("seq"),
                    at: r.get("at"),
                    actor: r.get("actor"),
                    role: r.get("role"),
                    action: r.get("action"),
                    tenant: r.get("tenant_id"),
                    outcome: r.get("outcome"),
                    reason: r.get("reason"),
                    source_ip: r.get("source_ip"),
                    detail: r.get("detail"),
                    hash: r.get("hash"),
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite_catalog(dir: &tempfile::TempDir) -> Catalog {
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        Catalog::open_with(&url, None).await.unwrap()
    }

    fn sqlite(cat: &Catalog) -> &sqlx::SqlitePool {
        match &cat.pool {
            Pool::Sqlite(p) => p,
            Pool::Postgres(_) => panic!("a SQLite catalog"),
        }
    }

    fn intact(entries: u64, v: &AuditVerification) {
        assert!(v.intact(), "{v:?}");
        assert_eq!((v.entries, v.head_seq), (entries, entries as i64), "{v:?}");
    }

    /// Regression: concurrent appends (parallel backups in `serve`) failed with "database is
    /// locked" when a deferred transaction upgraded from read to write.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_audit_appends_queue_and_keep_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let cat = std::sync::Arc::new(sqlite_catalog(&dir).await);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let cat = cat.clone();
            tasks.spawn(async move {
                cat.audit(
                    "serve",
                    "backup",
                    Some("t"),
                    &format!("n={i}"),
                    "ok",
                    Utc::now(),
                )
                .await
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap().unwrap();
        }
        intact(40, &cat.verify_audit(None).await.unwrap());
    }

    /// Rows as the version before issue 8 wrote them: no role, reason or source IP, and the
    /// hash of those seven fields. They verify, and so does a chain that goes on with new rows.
    #[tokio::test]
    async fn rows_of_the_old_format_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let cat = sqlite_catalog(&dir).await;
        let mut prev = GENESIS.to_string();
        for (i, tenant) in [Some("acme"), None, Some("blog")].into_iter().enumerate() {
            let at = "2025-01-0".to_string() + &(i + 1).to_string() + "T00:00:00.000000Z";
            let detail = format!("reason: n={i}");
            // The old hash, written out here as it was, not through the code under test.
            let mut h = Sha256::new();
            for p in [
                prev.as_str(),
                &at,
                "cli",
                "tenant.hold",
                tenant.unwrap_or(""),
                &detail,
                "ok",
            ] {
                h.update((p.len() as u64).to_be_bytes());
                h.update(p.as_bytes());
            }
            let hash = hex::encode(h.finalize());
            sqlx::query(
                "INSERT INTO audit_log (at, actor, action, tenant_id, detail, outcome, prev_hash, hash) \
                 VALUES ($1, 'cli', 'tenant.hold', $2, $3, 'ok', $4, $5)",
            )
            .bind(&at)
            .bind(tenant)
            .bind(&detail)
            .bind(&prev)
            .bind(&hash)
            .execute(sqlite(&cat))
            .await
            .unwrap();
            prev = hash;
        }
        intact(3, &cat.verify_audit(None).await.unwrap());
        let old_head = prev;

        let actor = Actor::cli_from(None, Some("alice"));
        cat.audit_entry(&AuditEntry {
            tenant: Some("acme"),
            reason: Some("TICKET-1"),
            ..AuditEntry::by(&actor, "tenant.unhold", Utc::now())
        })
        .await
        .unwrap();
        let v = cat.verify_audit(Some(&old_head)).await.unwrap();
        intact(4, &v);
        assert_eq!(v.anchor, Some(Some(3)));
        let rows = cat
            .audit_list(&AuditFilter {
                limit: 10,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(
            rows.iter()
                .map(|r| (r.seq, r.role.as_deref(), r.reason.as_deref()))
                .collect::<Vec<_>>(),
            [
                (4, Some("operator"), Some("TICKET-1")),
                (3, None, None),
                (2, None, None),
                (1, None, None)
            ]
        );
        assert_eq!(rows[0].actor, "cli:alice");

        // Nulling a new row's fields makes it look like the old format: its hash says no.
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(sqlite(&cat))
            .await
            .unwrap();
        sqlx::query("UPDATE audit_log SET role = NULL, reason = NULL WHERE seq = 4")
            .execute(sqlite(&cat))
            .await
            .unwrap();
        let v = cat.verify_audit(None).await.unwrap();
        assert!(
            matches!(v.problems[..], [AuditProblem::Edited { seq: 4, .. }]),
            "{v:?}"
        );
    }

    /// The hash covers each new field, and a NULL differs from an empty value.
    #[test]
    fn the_new_fields_are_hashed() {
        let actor = Actor::cli_from(None, Some("alice"));
        let at = Utc::now();
        let base = AuditEntry {
            reason: Some("r"),
            source_ip: Some("192.0.2.1"),
            ..AuditEntry::by(&actor, "tenant.hold", at)
        };
        let h = |e: &AuditEntry<'_>, seq| entry_hash(GENESIS, seq, "t", e);
        let reference = h(&base, 1);
        let variants = [
            h(&base, 2),
            h(
                &AuditEntry {
                    role: "service",
                    ..base.clone()
                },
                1,
            ),
            h(
                &AuditEntry {
                    reason: Some(""),
                    ..base.clone()
                },
                1,
            ),
            h(
                &AuditEntry {
                    reason: None,
                    ..base.clone()
                },
                1,
            ),
            h(
                &AuditEntry {
                    source_ip: Some("192.0.2.2"),
                    ..base.clone()
                },
                1,
            ),
            h(
                &AuditEntry {
                    source_ip: None,
                    ..base.clone()
                },
                1,
            ),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(v, &reference, "variant {i}");
        }
    }

    #[tokio::test]
    async fn edits_deletions_and_a_cut_tail_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let cat = sqlite_catalog(&dir).await;
        let actor = Actor::cli_from(None, Some("alice"));
        for i in 0..6 {
            let detail = format!("n={i}");
            cat.audit_entry(&AuditEntry {
                tenant: Some("acme"),
                detail: &detail,
                ..AuditEntry::by(&actor, "backup", Utc::now())
            })
            .await
            .unwrap();
        }
        let v = cat.verify_audit(None).await.unwrap();
        intact(6, &v);
        let head = v.head.clone();
        // The triggers refuse edits; an attacker with file access drops them first.
        assert!(
            sqlx::query("UPDATE audit_log SET detail = 'x' WHERE seq = 2")
                .execute(sqlite(&cat))
                .await
                .is_err()
        );
        for t in ["audit_log_no_update", "audit_log_no_delete"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER {t}")))
                .execute(sqlite(&cat))
                .await
                .unwrap();
        }
        sqlx::query("UPDATE audit_log SET detail = 'x' WHERE seq = 2")
            .execute(sqlite(&cat))
            .await
            .unwrap();
        sqlx::query("DELETE FROM audit_log WHERE seq = 4")
            .execute(sqlite(&cat))
            .await
            .unwrap();
        let v = cat.verify_audit(Some(&head)).await.unwrap();
        assert!(
            matches!(
                v.problems[..],
                [
                    AuditProblem::Edited { seq: 2, .. },
                    AuditProblem::Gap { seq: 5, after: 3 }
                ]
            ),
            "{v:?}"
        );
        assert_eq!(v.anchor, Some(Some(6)), "the head is still there");
        assert_eq!(
            v.problems[1].to_string(),
            "rows were deleted before seq 5: the log jumps from seq 3 to seq 5"
        );

        // Cutting the tail leaves a chain that verifies, without the anchored head.
        sqlx::query("DELETE FROM audit_log WHERE seq >= 4")
            .execute(sqlite(&cat))
            .await
            .unwrap();
        let v = cat.verify_audit(Some(&head)).await.unwrap();
        assert_eq!(v.problems.len(), 1, "only the edit: {v:?}");
        assert_eq!((v.entries, v.anchor), (3, Some(None)));
        assert!(!v.intact());
    }
}
