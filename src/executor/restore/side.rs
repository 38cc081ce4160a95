//! A restore on the side: a new database or file beside the live one.

use super::choice::choose;
use super::load::{KeysFrom, Load, load_verified_reporting};
use super::progress::Progress;
use super::{RestoreReport, RestoreRequest, fail};
use crate::catalog::{RestoreMode, RestoreState};
use crate::engine;
use crate::executor::{Context, Error};
use chrono::Utc;
use std::sync::Arc;
use std::time::Instant;

pub(super) async fn restore_side(
    ctx: &Context,
    req: &RestoreRequest,
    target: &str,
    progress: &Arc<Progress>,
    recorded: &mut Option<String>,
) -> Result<RestoreReport, Error> {
    let clock = Instant::now();
    let chosen = choose(ctx, req).await?;
    let process = crate::owner::this_tag();
    ctx.catalog
        .insert_restore(&chosen.record(req, RestoreMode::Side, target, None, process.as_deref()))
        .await?;
    let restore_id = chosen.restore_id.clone();
    *recorded = Some(restore_id.clone());
    let engine = engine::for_tenant(&chosen.tenant);
    let loaded = async {
        let v = load_verified_reporting(
            ctx,
            engine.as_ref(),
            &Load {
                tenant: &req.tenant,
                region: chosen.region,
                backup_id: &chosen.backup_id,
                target,
                ownership: &chosen.ownership,
                keys: KeysFrom::Catalog,
            },
            Some(progress),
        )
        .await?;
        let restored_to = v.staged.commit().await?;
        Ok::<_, Error>((v.manifest, v.tables, restored_to))
    }
    .await;
    let (manifest, tables, restored_to) = match loaded {
        Ok(done) => done,
        Err(e) => {
            fail(ctx, &restore_id, &e).await;
            return Err(e);
        }
    };
    ctx.catalog
        .move_restore(
            &restore_id,
            RestoreState::Running,
            RestoreState::Restored,
            None,
            Utc::now(),
        )
        .await?;
    Ok(chosen.report(clock, restored_to, &manifest, &tables, None))
}
