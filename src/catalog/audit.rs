//! The audit log: append-only (triggers refuse UPDATE and DELETE) and hash-chained, so that an
//! edit or a deletion by someone who got past the triggers (file access, a superuser) is found
//! by `verify_audit`, and a cut or rewritten tail by comparing with a head anchored in the
//! regions (`executor::anchor`).
//!
//! Each row's hash covers the previous row's hash and the row's fields, each length-prefixed.
//! Rows written before issue 8 have no role, reason or source IP and keep their hash (format 1);
//! a row with any of them (every row written now) uses format 2, which adds its seq and those
//! fields, so setting them to NULL changes the hash too.
//!
//! With an audit key (`[audit] key-file`/`key-env`, kept outside the catalog), the hash of a new
//! row is HMAC-SHA256 with that key over the same bytes, and the row records the key's id
//! (`key_id`); without one, or for rows written before, it is plain SHA-256 and `key_id` is NULL.
//! Whoever can write the catalog but does not hold the key can no longer recompute a keyed
//! chain, and a row hashed without a key after a keyed one is reported: that is how a rewritten
//! tail would have to look.

use super::{BeginWrite, Catalog, CatalogError, Pool, on_pool};
use crate::audit::Actor;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use sqlx::Row;

type HmacSha256 = hmac::Hmac<Sha256>;

/// The key that HMACs audit hashes, and its id (recorded with every row it hashed). `Debug`
/// shows the id only.
#[derive(Clone)]
pub struct AuditKey {
    key: crate::secret::Secret,
    id: String,
}

impl AuditKey {
    /// The shortest key accepted, in bytes.
    pub const MIN_LEN: usize = 32;

    /// The key as configured (its text, trimmed, as bytes). Its id is the first 16 hex digits
    /// of HMAC-SHA256(key, "lifeboat-audit-key-id"): it names the key without revealing it.
    pub fn new(key: crate::secret::Secret) -> AuditKey {
        let mut mac = HmacSha256::new_from_slice(key.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"lifeboat-audit-key-id");
        let id = hex::encode(mac.finalize().into_bytes())[..16].to_string();
        AuditKey { key, id }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn mac(&self, bytes: &[u8]) -> String {
        let mut mac = HmacSha256::new_from_slice(self.key.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    }
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({})", self.id)
    }
}

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
            role: actor.role.as_str(),
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
    /// The row is hashed without a key, after the keyed row `keyed`: a writer without the audit
    /// key, or a row rewritten by someone who could not compute a keyed hash.
    Unkeyed {
        seq: i64,
        keyed: i64,
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
            AuditProblem::Unkeyed {
                seq,
                keyed,
                action,
                at,
            } => write!(
                f,
                "seq {seq} ({action} at {at}) is hashed without the audit key, but seq {keyed} before \
                 it is keyed: it was rewritten, or written by a lifeboat whose config has no [audit] key"
            ),
        }
    }
}

/// Why keyed rows could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyProblem {
    /// Rows from `seq` on are keyed (with key `key_id`) and no audit key is configured.
    Missing { seq: i64, key_id: String },
    /// Row `seq` names key `key_id`; the configured key is `ours`.
    Wrong {
        seq: i64,
        key_id: String,
        ours: String,
    },
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::Missing { seq, key_id } => write!(
                f,
                "seq {seq} and later entries are keyed (audit key id {key_id}) and no audit key is \
                 configured, so they cannot be checked: set [audit] key-file or key-env to the key \
                 they were written with"
            ),
            KeyProblem::Wrong { seq, key_id, ours } => write!(
                f,
                "seq {seq} is keyed with audit key id {key_id}, but the configured [audit] key is \
                 key id {ours}: configure the key the log was written with (if it is, the entry's \
                 key id was rewritten)"
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
    /// Keyed rows that could not be checked (no key, or another key), the first of them.
    pub key_problem: Option<KeyProblem>,
    /// Rows hashed with a key.
    pub keyed: u64,
}

impl AuditVerification {
    pub fn intact(&self) -> bool {
        self.problems.is_empty() && !matches!(self.anchor, Some(None)) && self.key_problem.is_none()
    }
}

/// Length-prefixed, so fields cannot be shifted into each other.
fn part(h: &mut Vec<u8>, s: &str) {
    h.extend_from_slice(&(s.len() as u64).to_be_bytes());
    h.extend_from_slice(s.as_bytes());
}

/// A nullable field: NULL and the empty string hash differently.
fn optional(h: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => h.push(0u8),
        Some(s) => {
            h.push(1u8);
            part(h, s);
        }
    }
}

/// The hash of a row whose `at` is already the stored text.
fn entry_hash(
    prev: &str,
    seq: i64,
    at: &str,
    e: &AuditEntry<'_>,
    key: Option<&AuditKey>,
) -> String {
    entry_hash_parts(
        key,
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

/// SHA-256 of the row's canonical bytes, or HMAC-SHA256 of the same bytes with `key`.
#[allow(clippy::too_many_arguments)]
fn entry_hash_parts(
    key: Option<&AuditKey>,
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
    let mut h = Vec::with_capacity(256);
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
    match key {
        Some(k) => k.mac(&h),
        None => hex::encode(Sha256::digest(&h)),
    }
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
        let key = self.audit_key.as_deref();
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
            let hash = entry_hash(&prev, seq, &at, e, key);
            sqlx::query(
                "INSERT INTO audit_log (seq, at, actor, role, action, tenant_id, reason, source_ip, \
                 detail, outcome, prev_hash, hash, key_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
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
            .bind(key.map(AuditKey::id))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(())
        })
    }

    /// Appends an entry by `actor`, in the role it carries, with no reason or source IP.
    pub async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        tenant: Option<&str>,
        detail: &str,
        outcome: &str,
        at: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        self.audit_entry(&AuditEntry {
            actor: &actor.name,
            role: actor.role.as_str(),
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
    /// every gap left by deleted rows, every row that does not follow the one before, every row
    /// hashed without the key after a keyed one, and the head. Keyed rows are checked with the
    /// catalog's audit key; without it (or with another key) `key_problem` says so. With
    /// `expect_head` (a head recorded earlier), also whether a row still has it: a chain whose
    /// tail was cut is intact in itself, but no longer holds the old head.
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
            key_problem: None,
            keyed: 0,
        };
        fn report(v: &mut AuditVerification, p: AuditProblem) {
            if v.problems.len() < PROBLEMS_KEPT {
                v.problems.push(p);
            } else {
                v.more_problems += 1;
            }
        }
        let ours = self.audit_key.as_deref();
        // The first keyed row: no row after it may be hashed without the key.
        let mut first_keyed: Option<i64> = None;
        on_pool!(self, pool => {
            let mut rows = sqlx::query(
                "SELECT seq, at, actor, role, action, tenant_id, reason, source_ip, detail, outcome, \
                 prev_hash, hash, key_id FROM audit_log ORDER BY seq",
            )
            .fetch(pool);
            while let Some(r) = rows.try_next().await? {
                let seq: i64 = r.get("seq");
                let at: String = r.get("at");
                let action: String = r.get("action");
                let prev_hash: String = r.get("prev_hash");
                let hash: String = r.get("hash");
                let key_id: Option<String> = r.get("key_id");
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
                // How the row says it was hashed, and whether that can be checked here.
                let key = match (&key_id, ours) {
                    (None, _) => {
                        if let Some(keyed) = first_keyed {
                            report(&mut v, AuditProblem::Unkeyed {
                                seq,
                                keyed,
                                action: action.clone(),
                                at: at.clone(),
                            });
                        }
                        Some(None)
                    }
                    (Some(id), Some(k)) if id == k.id() => Some(Some(k)),
                    (Some(id), _) => {
                        if v.key_problem.is_none() {
                            v.key_problem = Some(match ours {
                                None => KeyProblem::Missing { seq, key_id: id.clone() },
                                Some(k) => KeyProblem::Wrong {
                                    seq,
                                    key_id: id.clone(),
                                    ours: k.id().to_string(),
                                },
                            });
                        }
                        None
                    }
                };
                if key_id.is_some() {
                    first_keyed.get_or_insert(seq);
                    v.keyed += 1;
                }
                if let Some(key) = key {
                    let expect = entry_hash_parts(
                        key,
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

    /// The newest row's seq and hash (0 and `GENESIS` for an empty log).
    pub async fn audit_head(&self) -> Result<(i64, String), CatalogError> {
        on_pool!(self, pool => {
            let last: Option<(i64, String)> =
                sqlx::query_as("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")
                    .fetch_optional(pool)
                    .await?;
            Ok(last.unwrap_or((0, GENESIS.to_string())))
        })
    }

    /// The key id row `seq` was hashed with (`None`: plain SHA-256, or no such row).
    pub async fn audit_key_id_at(&self, seq: i64) -> Result<Option<String>, CatalogError> {
        on_pool!(self, pool => {
            let id: Option<(Option<String>,)> =
                sqlx::query_as("SELECT key_id FROM audit_log WHERE seq = $1")
                    .bind(seq)
                    .fetch_optional(pool)
                    .await?;
            Ok(id.and_then(|(k,)| k))
        })
    }

    /// The stored hash of row `seq` (`GENESIS` for 0), `None` when there is no such row.
    pub async fn audit_hash_at(&self, seq: i64) -> Result<Option<String>, CatalogError> {
        if seq == 0 {
            return Ok(Some(GENESIS.to_string()));
        }
        on_pool!(self, pool => {
            let hash: Option<(String,)> =
                sqlx::query_as("SELECT hash FROM audit_log WHERE seq = $1")
                    .bind(seq)
                    .fetch_optional(pool)
                    .await?;
            Ok(hash.map(|(h,)| h))
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
                    &Actor::service("serve"),
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
        let h = |e: &AuditEntry<'_>, seq| entry_hash(GENESIS, seq, "t", e, None);
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

    fn key(text: &str) -> AuditKey {
        AuditKey::new(crate::secret::Secret::new(text.to_string()))
    }

    /// Rewrites rows `from..` of the chain as someone with write access to the catalog file but
    /// not the key would: `detail` of row `from` changed, every hash from there recomputed with
    /// plain SHA-256 and linked, and `key_id` set to `key_id`.
    async fn rewrite_chain(cat: &Catalog, from: i64, key_id: Option<&str>) {
        let pool = sqlite(cat);
        for t in ["audit_log_no_update", "audit_log_no_delete"] {
            sqlx::query(sqlx::AssertSqlSafe(format!("DROP TRIGGER IF EXISTS {t}")))
                .execute(pool)
                .await
                .unwrap();
        }
        let rows = sqlx::query(
            "SELECT seq, at, actor, role, action, tenant_id, reason, source_ip, detail, outcome, \
             prev_hash FROM audit_log WHERE seq >= $1 ORDER BY seq",
        )
        .bind(from)
        .fetch_all(pool)
        .await
        .unwrap();
        let mut prev: String = rows[0].get("prev_hash");
        for r in rows {
            let seq: i64 = r.get("seq");
            let detail: String = if seq == from {
                "nothing happened".into()
            } else {
                r.get("detail")
            };
            let hash = entry_hash_parts(
                None,
                &prev,
                seq,
                r.get::<String, _>("at").as_str(),
                r.get::<String, _>("actor").as_str(),
                r.get::<Option<String>, _>("role").as_deref(),
                r.get::<String, _>("action").as_str(),
                r.get::<Option<String>, _>("tenant_id").as_deref(),
                r.get::<Option<String>, _>("reason").as_deref(),
                r.get::<Option<String>, _>("source_ip").as_deref(),
                &detail,
                r.get::<String, _>("outcome").as_str(),
            );
            sqlx::query(
                "UPDATE audit_log SET detail = $1, prev_hash = $2, hash = $3, key_id = $4 WHERE seq = $5",
            )
            .bind(&detail)
            .bind(&prev)
            .bind(&hash)
            .bind(key_id)
            .bind(seq)
            .execute(pool)
            .await
            .unwrap();
            prev = hash;
        }
    }

    async fn append(cat: &Catalog, n: usize) {
        let actor = Actor::cli_from(None, Some("alice"));
        for i in 0..n {
            let detail = format!("n={i}");
            cat.audit_entry(&AuditEntry {
                tenant: Some("acme"),
                reason: Some("T-1"),
                detail: &detail,
                ..AuditEntry::by(&actor, "tenant.hold", Utc::now())
            })
            .await
            .unwrap();
        }
    }

    /// Rows before the key (plain SHA-256) and after it (HMAC) form one chain that verifies;
    /// recomputing the chain from a keyed row on, without the key, is found however the
    /// rewritten rows name their key.
    #[tokio::test]
    async fn a_keyed_chain_cannot_be_recomputed_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = sqlite_catalog(&dir).await;
        append(&cat, 2).await;
        let k = key("an audit key of at least thirty-two bytes");
        cat.set_audit_key(Some(k.clone()));
        append(&cat, 3).await;
        let v = cat.verify_audit(None).await.unwrap();
        intact(5, &v);
        assert_eq!(v.keyed, 3);
        let ids: Vec<Option<String>> =
            sqlx::query_scalar("SELECT key_id FROM audit_log ORDER BY seq")
                .fetch_all(sqlite(&cat))
                .await
                .unwrap();
        let id = Some(k.id().to_string());
        assert_eq!(ids, [None, None, id.clone(), id.clone(), id]);
        assert_eq!(k.id().len(), 16);
        assert!(!format!("{k:?}").contains("thirty"), "{k:?}");

        // Rewritten as unkeyed rows: each is named, after the first keyed row.
        rewrite_chain(&cat, 4, None).await;
        let v = cat.verify_audit(None).await.unwrap();
        assert!(
            matches!(
                v.problems[..],
                [
                    AuditProblem::Unkeyed {
                        seq: 4,
                        keyed: 3,
                        ..
                    },
                    AuditProblem::Unkeyed {
                        seq: 5,
                        keyed: 3,
                        ..
                    }
                ]
            ),
            "{v:?}"
        );
        assert!(
            v.problems[0]
                .to_string()
                .contains("hashed without the audit key")
        );
        // Rewritten still naming the key: the hashes do not match.
        rewrite_chain(&cat, 4, Some(k.id())).await;
        let v = cat.verify_audit(None).await.unwrap();
        assert!(
            matches!(
                v.problems[..],
                [
                    AuditProblem::Edited { seq: 4, .. },
                    AuditProblem::Edited { seq: 5, .. }
                ]
            ),
            "{v:?}"
        );
        // The whole chain rewritten unkeyed verifies in itself: only an anchor shows it.
        rewrite_chain(&cat, 1, None).await;
        let v = cat.verify_audit(None).await.unwrap();
        intact(5, &v);
        assert_eq!(v.keyed, 0);
    }

    /// Keyed rows cannot be checked without their key, nor with another one: said once, with
    /// the first such row; the chain's links are still checked.
    #[tokio::test]
    async fn keyed_rows_need_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut cat = sqlite_catalog(&dir).await;
        let k = key("an audit key of at least thirty-two bytes");
        cat.set_audit_key(Some(k.clone()));
        append(&cat, 3).await;
        cat.set_audit_key(None);
        let v = cat.verify_audit(None).await.unwrap();
        assert_eq!(
            v.key_problem,
            Some(KeyProblem::Missing {
                seq: 1,
                key_id: k.id().to_string()
            })
        );
        assert!(v.problems.is_empty() && !v.intact(), "{v:?}");
        assert!(
            v.key_problem
                .as_ref()
                .unwrap()
                .to_string()
                .contains("[audit] key-file or key-env"),
            "{v:?}"
        );
        let other = key("another audit key, also long enough");
        cat.set_audit_key(Some(other.clone()));
        let v = cat.verify_audit(None).await.unwrap();
        assert_eq!(
            v.key_problem,
            Some(KeyProblem::Wrong {
                seq: 1,
                key_id: k.id().to_string(),
                ours: other.id().to_string()
            })
        );
        assert!(!v.intact());
        cat.set_audit_key(Some(k));
        intact(3, &cat.verify_audit(None).await.unwrap());
        assert_eq!(cat.audit_head().await.unwrap().0, 3);
        assert_eq!(
            cat.audit_hash_at(3).await.unwrap(),
            Some(cat.audit_head().await.unwrap().1)
        );
        assert_eq!(cat.audit_hash_at(4).await.unwrap(), None);
        assert_eq!(
            cat.audit_hash_at(0).await.unwrap().as_deref(),
            Some(GENESIS)
        );
    }
}
