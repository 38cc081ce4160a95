//! Where a backup is read from when no region is named (a restore without `--region`, a
//! download, a drill plan without `source-region`): the first region, primary first, whose
//! verified copy is really there. The catalog's "verified" is what a region held when it was
//! last checked; an emptied bucket does not tell the catalog, so each candidate is checked with
//! a HEAD of its manifest and artifact, and one whose objects are missing is passed over with a
//! line saying so (issue 17).

use super::{Error, replicate};
use crate::catalog::BackupRow;
use crate::storage::Region;

/// What to do with a region that cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreachable {
    /// Fail: an outage is not a missing copy, and the operator can name a region (restore).
    Fail,
    /// Pass over it like a missing copy (a customer's download, a drill: nobody to ask).
    PassOver,
}

/// The chosen region and backup, and a line for every region passed over before it.
pub struct Located<'c> {
    pub region: &'c Region,
    pub backup: BackupRow,
    pub fallbacks: Vec<String>,
}

/// The first of `candidates` (in region order; each the backup that region would serve, or why
/// it has none) whose manifest and artifact the region holds.
pub async fn first_held<'c>(
    tenant: &str,
    candidates: Vec<(&'c Region, Result<BackupRow, Error>)>,
    unreachable: Unreachable,
) -> Result<Located<'c>, Error> {
    let mut fallbacks = Vec::new();
    let mut first_err = None;
    for (region, backup) in candidates {
        let backup = match backup {
            Ok(b) => b,
            Err(e) => {
                first_err.get_or_insert(e);
                continue;
            }
        };
        let (artifact, manifest) = replicate::backup_keys(region, &backup.tenant_id, &backup.id)?;
        let mut missing = Vec::new();
        let mut down = None;
        for key in [&manifest, &artifact] {
            match region.store.head(key).await {
                Ok(Some(_)) => {}
                Ok(None) => missing.push(key.clone()),
                Err(e) if unreachable == Unreachable::PassOver => {
                    down = Some(e);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(e) = down {
            fallbacks.push(format!(
                "region {} cannot be asked for backup {} ({e}); trying the next region",
                region.name, backup.id
            ));
            first_err.get_or_insert(e.into());
            continue;
        }
        if missing.is_empty() {
            return Ok(Located {
                region,
                backup,
                fallbacks,
            });
        }
        fallbacks.push(format!(
            "region {} lists backup {} as verified but does not hold {}; trying the next region",
            region.name,
            backup.id,
            missing.join(" and ")
        ));
        first_err.get_or_insert(Error::NotFound(format!(
            "region {} does not hold {} of backup {}",
            region.name,
            missing.join(" and "),
            backup.id
        )));
    }
    let e = first_err.unwrap_or_else(|| Error::NotFound("no region is configured".into()));
    Err(match (fallbacks.is_empty(), e) {
        (true, e) => e,
        (false, e) => {
            let why = format!(
                "no region holds a readable verified copy of tenant {tenant}: {}; first: {e}",
                fallbacks.join("; ")
            );
            // A region that could not be asked may still hold it: that is an outage.
            match e {
                Error::Storage(_) => Error::Unavailable(why),
                _ => Error::NotFound(why),
            }
        }
    })
}
