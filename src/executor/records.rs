//! Lifecycle records in the regions (invariant 9): every legal hold placed or lifted,
//! termination, reinstatement, purge start and purge (the tombstone) is written as one small
//! JSON record to every region, at `<prefix>/v1/lifecycle/<tenant>/<TIME-EVENT-RAND>.json`
//! (`domain::lifecycle`), so that `catalog rebuild` restores it.
//!
//! The catalog records the change and its record in one transaction; the record is then written
//! to every region and read back. A region that does not answer gets it later: the record stays
//! queued in the catalog (`lifecycle_record_copies` says which regions hold it) and `catch_up`
//! (`lifeboat replicate`, the start of `lifeboat backup`, and `serve`'s catch-up loop) writes it.
//! The change itself is never refused for an unreachable region: a legal hold must be placeable
//! during an outage, and the catalog already enforces it.
//!
//! Records live outside `tenants/`: a purge deletes everything under the tenant's prefix and
//! leaves its records, the tombstone among them. Reasons are encrypted to the master recipients.

use super::{Context, Error};
use crate::catalog::{RecordRow, TenantRow};
use crate::domain::lifecycle::{self, Event, MAX_RECORD_BYTES, Record};
use crate::storage::{Region, StorageError};
use crate::tenant::TenantId;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// A new record of `event` for tenant `t`, by this process's actor, with `reason` encrypted to
/// the master recipients. Callers fill in the event's own fields, then `row` it.
pub fn make(
    ctx: &Context,
    t: &TenantRow,
    event: Event,
    at: DateTime<Utc>,
    reason: Option<&str>,
) -> Result<Record, Error> {
    let mut r = Record::new(
        t.id.as_str(),
        event,
        Utc::now(),
        at,
        &ctx.actor.name,
        &t.tier,
        &t.engine,
    );
    r.reason_age = reason
        .filter(|r| !r.is_empty())
        .map(|reason| encrypt_reason(ctx, reason))
        .transpose()?;
    Ok(r)
}

/// The record as the catalog keeps it, with its name.
pub fn row(r: &Record) -> RecordRow {
    let rand = uuid::Uuid::new_v4().simple().to_string();
    RecordRow {
        tenant_id: r.tenant.clone(),
        name: r.name(&rand[..8]),
        recorded_at: r.recorded,
        body: serde_json::to_string_pretty(r).expect("a record serializes"),
    }
}

fn encrypt_reason(ctx: &Context, reason: &str) -> Result<String, Error> {
    let cipher = crate::crypto::encrypt_bytes(reason.as_bytes(), &ctx.master_recipients())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(cipher))
}

/// Reads a reason back with the master identity.
pub fn decrypt_reason(master: &age::x25519::Identity, reason_age: &str) -> Result<String, String> {
    let cipher = base64::engine::general_purpose::STANDARD
        .decode(reason_age)
        .map_err(|e| e.to_string())?;
    let plain = crate::crypto::decrypt_bytes(&cipher, master, "a lifecycle record's reason")
        .map_err(|e| e.to_string())?;
    String::from_utf8(plain).map_err(|e| e.to_string())
}

/// The hex SHA-256 of a deletion certificate's JSON.
pub fn certificate_digest(json: &str) -> String {
    hex::encode(Sha256::digest(json.as_bytes()))
}

/// Writes one record to `region` and reads it back.
pub(super) async fn write(region: &Region, row: &RecordRow) -> Result<(), Error> {
    let tenant = TenantId::parse(&row.tenant_id).map_err(|e| Error::Failed(e.to_string()))?;
    let key = region.layout.lifecycle_record(&tenant, &row.name);
    region
        .store
        .put(&key, Bytes::from(row.body.clone()))
        .await?;
    let back = region.get_small(&key, MAX_RECORD_BYTES).await?;
    if back != row.body.as_bytes() {
        return Err(Error::Verify(format!(
            "region {}: {key} reads back other than what was written",
            region.name
        )));
    }
    Ok(())
}

/// Writes records just made (and committed with their change) to every region. Returns a
/// warning per region that did not take them; those stay queued for the catch-up.
pub async fn publish(ctx: &Context, rows: &[RecordRow]) -> Result<Vec<String>, Error> {
    let mut warnings = Vec::new();
    for region in &ctx.regions {
        for row in rows {
            if let Err(e) = write(region, row).await {
                warnings.push(format!(
                    "region {}: lifecycle record {} of tenant {} not written ({e}); it stays queued in the \
                     catalog and `lifeboat replicate` (or serve's catch-up) writes it once the region answers",
                    region.name, row.name, row.tenant_id
                ));
                break;
            }
            ctx.catalog
                .record_written(row, &region.name, Utc::now())
                .await?;
        }
    }
    Ok(warnings)
}

#[derive(Debug)]
pub struct RecordCatchUp {
    pub tenant: String,
    pub name: String,
    pub region: String,
    pub result: Result<(), Error>,
}

/// Writes every record a region misses, oldest first, from the catalog; stops trying a region at
/// its first failure (it is probably down). First snapshots the state of tenants whose state
/// predates the records (`backfill`), so they are written too.
pub async fn catch_up(ctx: &Context) -> Result<Vec<RecordCatchUp>, Error> {
    backfill(ctx).await?;
    let mut done = Vec::new();
    for region in &ctx.regions {
        for row in ctx.catalog.records_missing_in(&region.name).await? {
            let result = write(region, &row).await;
            if result.is_ok() {
                ctx.catalog
                    .record_written(&row, &region.name, Utc::now())
                    .await?;
            }
            let failed = result.is_err();
            done.push(RecordCatchUp {
                tenant: row.tenant_id.clone(),
                name: row.name.clone(),
                region: region.name.clone(),
                result,
            });
            if failed {
                break;
            }
        }
    }
    Ok(done)
}

/// Records a `state` snapshot for every tenant that is terminated, purged or held in the catalog
/// and has no record yet (a state from before lifecycle records): written once, after which its
/// changes are recorded one by one. Returns the tenants snapshotted.
pub async fn backfill(ctx: &Context) -> Result<Vec<String>, Error> {
    let mut done = Vec::new();
    for t in ctx.catalog.tenants_without_records().await? {
        let now = Utc::now();
        let mut r = make(
            ctx,
            &t,
            Event::State,
            t.purged_at.unwrap_or(now),
            t.hold_reason.as_deref().filter(|_| t.legal_hold),
        )?;
        r.state = Some(t.state.to_string());
        r.legal_hold = Some(t.legal_hold);
        r.terminated_at = t.terminated_at;
        r.purge_started_at = t.purge_started_at;
        r.key_shredded_at = t.key_shredded_at;
        if t.state == crate::catalog::TenantState::Purged {
            r.certificate_sha256 = ctx
                .catalog
                .certificate(&t.id)
                .await?
                .map(|json| certificate_digest(&json));
        }
        if ctx.catalog.backfill_record(&t, &row(&r)).await? {
            tracing::info!(tenant = %t.id, state = %t.state, hold = t.legal_hold, "lifecycle state from before lifecycle records recorded");
            done.push(t.id.to_string());
        }
    }
    Ok(done)
}

/// A record read from a region.
#[derive(Debug, Clone)]
pub struct Found {
    pub name: String,
    pub record: Record,
    pub body: String,
}

/// What a region holds: each tenant's records, oldest first, and the objects under the prefix
/// that are not valid records (with why).
#[derive(Debug, Default)]
pub struct RegionRecords {
    pub tenants: BTreeMap<String, Vec<Found>>,
    pub invalid: Vec<String>,
}

impl RegionRecords {
    /// Each tenant's state as its records say.
    pub fn states(&self) -> BTreeMap<&str, lifecycle::State> {
        self.tenants
            .iter()
            .map(|(t, found)| {
                (
                    t.as_str(),
                    lifecycle::replay(found.iter().map(|f| &f.record)),
                )
            })
            .collect()
    }
}

/// Reads every lifecycle record of `region`. Fails only when the region cannot be listed or read.
pub async fn read_region(region: &Region) -> Result<RegionRecords, StorageError> {
    let prefix = region.layout.lifecycle_prefix();
    let mut listed = region.store.list(&prefix).await?;
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out = RegionRecords::default();
    for o in listed {
        let Some((tenant, name)) = o
            .key
            .strip_prefix(&prefix)
            .and_then(|rest| rest.split_once('/'))
        else {
            out.invalid.push(format!("{}: not a record key", o.key));
            continue;
        };
        if TenantId::parse(tenant).is_err() || lifecycle::parse_name(name).is_none() {
            // A temporary file of an interrupted write, or something else: not a record.
            out.invalid.push(format!("{}: not a record name", o.key));
            continue;
        }
        let body = match region.get_small(&o.key, MAX_RECORD_BYTES).await {
            Ok(b) => b,
            Err(e @ StorageError::TooLarge { .. }) => {
                out.invalid.push(e.to_string());
                continue;
            }
            Err(e) => return Err(e),
        };
        match Record::parse(tenant, name, &body) {
            Ok(record) => out
                .tenants
                .entry(tenant.to_string())
                .or_default()
                .push(Found {
                    name: name.to_string(),
                    record,
                    body: String::from_utf8_lossy(&body).into_owned(),
                }),
            Err(why) => out.invalid.push(format!("{}: {why}", o.key)),
        }
    }
    Ok(out)
}
