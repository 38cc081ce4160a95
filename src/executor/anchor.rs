//! Anchors of the audit log: its head (seq and hash) written to every region, where whoever can
//! write the catalog cannot change it. `lifeboat audit verify` compares the catalog with the
//! newest anchor of each region, so a tail cut off, or rows rewritten up to the anchored seq, are
//! found without a head recorded by hand.
//!
//! An anchor is a small JSON object at `<prefix>/v1/audit/anchors/EPOCH-SEQ-HASH16.json` (epoch
//! 6 digits, seq 20, the first 16 hex digits of the hash), outside `tenants/`, so no sweep,
//! retention, verify or rebuild lists it. The newest anchor is the one with the highest seq of
//! the highest epoch. An epoch ends only by `lifeboat audit anchor --restart` (after a catalog
//! was rebuilt or restored from a backup, on purpose): anchors are never deleted.
//!
//! `anchor_now` (serve, every `[audit] anchor-interval`, and `lifeboat audit anchor`) writes the
//! head only after the catalog was found to hold the newest anchor: a log whose anchored rows are
//! gone or changed is never anchored again in that epoch, so its tampering stays visible.

use super::{Context, Error};
use crate::storage::{Region, StorageError};
use chrono::{DateTime, Utc};

/// The `format` of an anchor object.
pub const FORMAT: &str = "lifeboat-audit-anchor/1";
/// An anchor object is far smaller; anything larger is not one.
const MAX_ANCHOR_BYTES: usize = 4096;

/// What an anchor object holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Anchor {
    pub format: String,
    pub epoch: u32,
    /// The anchored row's seq and stored hash (HMAC-SHA256 when the row is keyed).
    pub seq: i64,
    pub hash: String,
    /// The audit key the row was hashed with (`None`: plain SHA-256).
    pub key_id: Option<String>,
    pub written: DateTime<Utc>,
    /// On the first anchor of an epoch started by `audit anchor --restart`: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_reason: Option<String>,
}

/// The prefix of a region's anchors.
pub fn prefix(region: &Region) -> String {
    region.layout.audit_anchors_prefix()
}

/// The key of an anchor in `region`.
pub fn key(region: &Region, a: &Anchor) -> String {
    format!(
        "{}{:06}-{:020}-{}.json",
        prefix(region),
        a.epoch,
        a.seq,
        &a.hash[..16.min(a.hash.len())]
    )
}

/// `EPOCH-SEQ-HASH16.json` under the anchors prefix: (epoch, seq); `None` for any other key.
fn parse_name(prefix: &str, key: &str) -> Option<(u32, i64)> {
    let name = key.strip_prefix(prefix)?.strip_suffix(".json")?;
    let mut parts = name.split('-');
    let (epoch, seq, hash) = (parts.next()?, parts.next()?, parts.next()?);
    let ok = parts.next().is_none()
        && epoch.len() == 6
        && seq.len() == 20
        && hash.len() == 16
        && hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return None;
    }
    Some((epoch.parse().ok()?, seq.parse().ok()?))
}

/// What a region's newest anchor says about the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorState {
    /// The region could not be listed or read.
    Unreachable(String),
    /// No anchor of the newest epoch (none yet, or the region was down when it began).
    None,
    /// The object under an anchor's name is not an anchor, or not the one its name says.
    Corrupt { key: String, why: String },
    /// The catalog holds the anchored row with the anchored hash.
    Holds(Anchor),
    /// The catalog has no row at the anchored seq: its log ends at `head`.
    Cut { anchor: Anchor, head: i64 },
    /// The catalog's row at the anchored seq has another hash.
    Rewritten { anchor: Anchor, hash: String },
}

#[derive(Debug, Clone)]
pub struct RegionAnchor {
    pub region: String,
    pub state: AnchorState,
}

impl std::fmt::Display for RegionAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.region;
        let at = |a: &Anchor| a.written.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        match &self.state {
            AnchorState::Unreachable(e) => write!(f, "region {r} is unreachable: {e}"),
            AnchorState::None => write!(f, "region {r} holds no anchor of this epoch yet"),
            AnchorState::Corrupt { key, why } => {
                write!(f, "region {r}: anchor object {key} is not valid: {why}")
            }
            AnchorState::Holds(a) => write!(
                f,
                "region {r} anchored seq {} at {} (epoch {}): the log holds it",
                a.seq,
                at(a),
                a.epoch
            ),
            AnchorState::Cut { anchor: a, head } => write!(
                f,
                "region {r} anchored seq {} at {} (hash {}), but the log ends at seq {head}: \
                 entries were cut off after it was anchored",
                a.seq,
                at(a),
                a.hash
            ),
            AnchorState::Rewritten { anchor: a, hash } => write!(
                f,
                "region {r} anchored seq {} at {} with hash {}, but seq {} in the catalog has hash \
                 {hash}: the log was rewritten after it was anchored",
                a.seq,
                at(a),
                a.hash,
                a.seq
            ),
        }
    }
}

/// The newest anchor of every region, compared with the catalog.
#[derive(Debug, Clone)]
pub struct AnchorReport {
    /// The newest epoch any reachable region holds (0: no anchor anywhere).
    pub epoch: u32,
    /// One per configured region, primary first.
    pub regions: Vec<RegionAnchor>,
}

impl AnchorReport {
    /// Regions whose anchor the catalog does not hold, or whose anchor is not valid.
    pub fn broken(&self) -> impl Iterator<Item = &RegionAnchor> {
        self.regions.iter().filter(|r| {
            matches!(
                r.state,
                AnchorState::Corrupt { .. }
                    | AnchorState::Cut { .. }
                    | AnchorState::Rewritten { .. }
            )
        })
    }

    pub fn unreachable(&self) -> impl Iterator<Item = &RegionAnchor> {
        self.regions
            .iter()
            .filter(|r| matches!(r.state, AnchorState::Unreachable(_)))
    }
}

/// Every anchor name in `region`: (epoch, seq, key).
async fn list(region: &Region) -> Result<Vec<(u32, i64, String)>, StorageError> {
    let prefix = prefix(region);
    Ok(region
        .store
        .list(&prefix)
        .await?
        .into_iter()
        .filter_map(|o| parse_name(&prefix, &o.key).map(|(e, s)| (e, s, o.key)))
        .collect())
}

/// Reads the anchor at `key`, checking that it is the one its name says.
async fn read(region: &Region, key: &str, epoch: u32, seq: i64) -> Result<Anchor, AnchorState> {
    let bytes = region
        .get_small(key, MAX_ANCHOR_BYTES)
        .await
        .map_err(|e| match e {
            StorageError::TooLarge { .. } => AnchorState::Corrupt {
                key: key.to_string(),
                why: e.to_string(),
            },
            e => AnchorState::Unreachable(e.to_string()),
        })?;
    let corrupt = |why: String| AnchorState::Corrupt {
        key: key.to_string(),
        why,
    };
    let a: Anchor = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    if a.format != FORMAT {
        return Err(corrupt(format!(
            "format {:?}, expected {FORMAT:?}",
            a.format
        )));
    }
    if a.epoch != epoch || a.seq != seq || self::key(region, &a) != key {
        return Err(corrupt(format!(
            "it holds epoch {} seq {} hash {}, which its name does not",
            a.epoch, a.seq, a.hash
        )));
    }
    Ok(a)
}

/// Reads the newest anchor of every region and compares it with the catalog.
pub async fn check(ctx: &Context) -> Result<AnchorReport, Error> {
    let mut listed = Vec::new();
    for region in &ctx.regions {
        listed.push(list(region).await);
    }
    let epoch = listed
        .iter()
        .flatten()
        .flatten()
        .map(|(e, _, _)| *e)
        .max()
        .unwrap_or(0);
    let mut regions = Vec::new();
    for (region, names) in ctx.regions.iter().zip(listed) {
        let state = match names {
            Err(e) => AnchorState::Unreachable(e.to_string()),
            Ok(names) => {
                let newest = names
                    .into_iter()
                    .filter(|(e, _, _)| *e == epoch)
                    .max_by_key(|(_, s, _)| *s);
                match newest {
                    None => AnchorState::None,
                    Some((_, seq, key)) => match read(region, &key, epoch, seq).await {
                        Err(state) => state,
                        Ok(a) => match ctx.catalog.audit_hash_at(a.seq).await? {
                            Some(h) if h == a.hash => AnchorState::Holds(a),
                            Some(hash) => AnchorState::Rewritten { anchor: a, hash },
                            None => AnchorState::Cut {
                                head: ctx.catalog.audit_head().await?.0,
                                anchor: a,
                            },
                        },
                    },
                }
            }
        };
        regions.push(RegionAnchor {
            region: region.name.clone(),
            state,
        });
    }
    Ok(AnchorReport { epoch, regions })
}

/// What `anchor_now` did in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// A new anchor, at this key.
    New(String),
    /// The region's newest anchor is the head already (or newer: another worker anchored).
    Already,
    /// Not written: the region could not be reached; tried again next time.
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct AnchorRun {
    pub epoch: u32,
    /// The head anchored (0: the log is empty, nothing was written).
    pub seq: i64,
    pub regions: Vec<(String, Written)>,
}

/// Writes the log's head to every region whose newest anchor is older, once the catalog was found
/// to hold every region's newest anchor. Refused (nothing written) when it does not.
pub async fn anchor_now(ctx: &Context) -> Result<AnchorRun, Error> {
    let report = check(ctx).await?;
    refuse_broken(&report)?;
    let epoch = report.epoch.max(1);
    write_head(ctx, &report, epoch, None).await
}

fn refuse_broken(report: &AnchorReport) -> Result<(), Error> {
    let broken: Vec<String> = report.broken().map(|r| r.to_string()).collect();
    if broken.is_empty() {
        return Ok(());
    }
    Err(Error::Verify(format!(
        "{}; no new audit anchor is written until this is looked into (`lifeboat audit verify`; \
         after a catalog rebuilt or restored from a backup on purpose, `lifeboat audit anchor \
         --restart --reason …`)",
        broken.join("; ")
    )))
}

/// Writes the head (read now, after the check) in `epoch` to the regions that need it.
async fn write_head(
    ctx: &Context,
    report: &AnchorReport,
    epoch: u32,
    restart_reason: Option<&str>,
) -> Result<AnchorRun, Error> {
    let (seq, hash) = ctx.catalog.audit_head().await?;
    let mut run = AnchorRun {
        epoch,
        seq,
        regions: Vec::new(),
    };
    if seq == 0 {
        return Ok(run);
    }
    let key_id = ctx.catalog.audit_key_id_at(seq).await?;
    let anchor = Anchor {
        format: FORMAT.to_string(),
        epoch,
        seq,
        hash,
        key_id,
        written: Utc::now(),
        restart_reason: restart_reason.map(str::to_string),
    };
    let body = bytes::Bytes::from(serde_json::to_vec_pretty(&anchor).expect("serializable"));
    for (region, seen) in ctx.regions.iter().zip(&report.regions) {
        let current = match &seen.state {
            AnchorState::Holds(a) if a.epoch == epoch => Some(a.seq),
            _ => None,
        };
        let written = if current.is_some_and(|s| s >= seq) {
            Written::Already
        } else {
            let key = key(region, &anchor);
            match region.store.put(&key, body.clone()).await {
                Ok(()) => Written::New(key),
                Err(e) => Written::Failed(e.to_string()),
            }
        };
        run.regions.push((region.name.clone(), written));
    }
    Ok(run)
}

/// Starts a new epoch with the log's head, after the catalog was rebuilt or restored from a
/// backup on purpose: the anchors of earlier epochs stay where they are, and are no longer
/// compared. Every region must answer, so that the new epoch is the newest everywhere. Audited
/// (`audit.anchor-restart`, with the reason and what the newest anchors said).
pub async fn restart(ctx: &Context, reason: &str) -> Result<AnchorRun, Error> {
    let report = check(ctx).await?;
    if let Some(r) = report.unreachable().next() {
        return Err(Error::Unavailable(format!(
            "{r}; a new anchor epoch must be written to every region, so it waits for it"
        )));
    }
    let epoch = report.epoch + 1;
    let before: Vec<String> = report.regions.iter().map(|r| r.to_string()).collect();
    let actor = &ctx.actor;
    ctx.catalog
        .audit_entry(&crate::catalog::AuditEntry {
            reason: Some(reason),
            detail: &format!("anchor epoch {epoch} begins; before: {}", before.join("; ")),
            ..crate::catalog::AuditEntry::by(actor, "audit.anchor-restart", Utc::now())
        })
        .await?;
    let run = write_head(ctx, &report, epoch, Some(reason)).await?;
    if let Some((region, Written::Failed(e))) = run
        .regions
        .iter()
        .find(|(_, w)| matches!(w, Written::Failed(_)))
    {
        return Err(Error::Unavailable(format!(
            "region {region}: the anchor of epoch {epoch} was not written: {e}; run `lifeboat audit \
             anchor` once it answers"
        )));
    }
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchor_names_parse_and_others_do_not() {
        let p = "prod/v1/audit/anchors/";
        let h = "0123456789abcdef";
        assert_eq!(
            parse_name(p, &format!("{p}000002-00000000000000000042-{h}.json")),
            Some((2, 42))
        );
        for bad in [
            format!("{p}000002-00000000000000000042-{h}.json.tmp"),
            format!("{p}2-42-{h}.json"),
            format!("{p}000002-00000000000000000042-{h}-x.json"),
            format!("{p}000002-00000000000000000042-0123456789abcdeg.json"),
            format!("{p}.lifeboat-tmp-1-000002-00000000000000000042-{h}.json"),
            format!("other/000002-00000000000000000042-{h}.json"),
        ] {
            assert_eq!(parse_name(p, &bad), None, "{bad}");
        }
    }
}
