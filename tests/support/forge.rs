//! What someone who can write the catalog file (but holds no audit key) does to the audit log:
//! rewrite an entry and recompute the plain SHA-256 chain after it. Used by `audit.rs` and
//! `attacks.rs` to show that `audit verify` finds it against the anchors in the regions.

use super::*;

/// The audit log's columns in the order the helpers here read and write them.
pub const COLS: &str = "seq, at, actor, role, action, tenant_id, reason, source_ip, detail, outcome, prev_hash, hash, key_id";

/// The plain SHA-256 hash of a row (format 2), computed here as a tool of someone who can write
/// the catalog would: `row` is `COLS` as text, NULL as "NULL".
pub fn plain_hash(prev: &str, row: &[String]) -> String {
    use sha2::{Digest, Sha256};
    fn part(h: &mut Vec<u8>, s: &str) {
        h.extend_from_slice(&(s.len() as u64).to_be_bytes());
        h.extend_from_slice(s.as_bytes());
    }
    let opt = |s: &str| (s != "NULL").then(|| s.to_string());
    let tenant = opt(&row[5]).unwrap_or_default();
    let mut h = Vec::new();
    for p in [prev, &row[1], &row[2], &row[4], &tenant, &row[8], &row[9]] {
        part(&mut h, p);
    }
    part(&mut h, "lifeboat-audit-v2");
    part(&mut h, &row[0]);
    for f in [&row[3], &row[6], &row[7]] {
        match opt(f) {
            None => h.push(0),
            Some(s) => {
                h.push(1);
                part(&mut h, &s);
            }
        }
    }
    hex::encode(Sha256::digest(&h))
}

pub fn sql_text(v: &str) -> String {
    if v == "NULL" {
        "NULL".into()
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

/// Rewrites the entries from seq `from` on as someone with write access to the catalog file but
/// not the audit key would: the detail of `from` changed, every hash from there recomputed with
/// plain SHA-256 and linked, and `key_id` set to `key_id` (NULL: hashed without a key).
pub fn rewrite_chain(inst: &Install, from: i64, key_id: Option<&str>) {
    let catalog = inst.path("catalog.db");
    sqlite_try(
        &catalog,
        "DROP TRIGGER IF EXISTS audit_log_no_update; DROP TRIGGER IF EXISTS audit_log_no_delete",
    )
    .unwrap();
    let rows = inst.catalog_query(&format!(
        "SELECT {COLS} FROM audit_log WHERE seq >= {from} ORDER BY seq"
    ));
    let mut prev = rows[0][10].clone();
    let mut sql = String::new();
    for mut row in rows {
        if row[0] == from.to_string() {
            row[8] = "nothing to see".into();
        }
        let hash = plain_hash(&prev, &row);
        sql += &format!(
            "UPDATE audit_log SET detail = {}, prev_hash = '{prev}', hash = '{hash}', key_id = {} WHERE seq = {};\n",
            sql_text(&row[8]),
            key_id.map_or("NULL".into(), |k| format!("'{k}'")),
            row[0]
        );
        prev = hash;
    }
    sqlite_try(&catalog, &sql).unwrap();
}
