//! The one resolver of tenants. Every path that looks a tenant up by id (backup, restore,
//! lifecycle, rebuild, the staff and customer API, the CLI) asks here, in this order:
//! `[[tenants]]`, then what the `[[discovery]]` sources list now, then the connection the catalog
//! remembers from the last time discovery found the tenant. The last one is the tenant support
//! needs most: a terminated customer that discovery no longer lists, whose backups still exist.

use super::discovery;
use super::{Context, Error};
use crate::config::{Connection, Discovered, DiscoverySource, EngineKind, TenantConfig};
use crate::tenant::TenantId;

/// Every tenant listed now: `[[tenants]]` and what the `[[discovery]]` sources list (what
/// `backup --all`, the planner and drills work on). An unreadable source is an error here;
/// `current` is the variant that keeps going without it.
pub async fn all(ctx: &Context) -> Result<discovery::Fleet, Error> {
    discovery::discover(ctx).await
}

/// The tenant as `[[tenants]]` or a discovery source lists it now (what may be backed up).
pub async fn listed(ctx: &Context, id: &TenantId) -> Result<Option<TenantConfig>, Error> {
    if let Some(t) = ctx.config.tenant(id) {
        return Ok(Some(t.clone()));
    }
    if ctx.config.discovery.is_empty() {
        return Ok(None);
    }
    let fleet = all(ctx).await?;
    Ok(fleet.tenants.into_iter().find(|t| t.id == *id))
}

/// The tenant's configuration, or why none was found (naming every place looked at).
pub async fn tenant(ctx: &Context, id: &TenantId) -> Result<TenantConfig, Error> {
    if let Some(t) = ctx.config.tenant(id) {
        return Ok(t.clone());
    }
    let mut unread = String::new();
    if !ctx.config.discovery.is_empty() {
        match discovery::discover(ctx).await {
            Ok(fleet) => {
                if let Some(t) = fleet.tenants.into_iter().find(|t| t.id == *id) {
                    return Ok(t);
                }
            }
            // A source that is down does not hide a tenant the catalog remembers.
            Err(e) => unread = format!(" (discovery could not be read: {e})"),
        }
    }
    if let Some(row) = ctx.catalog.tenant(id).await?
        && let Some(json) = &row.connection
    {
        return recall(ctx, id, &row.tier, json);
    }
    Err(Error::NotFound(format!(
        "tenant {id} is not in {}, no discovery source lists it{unread}, and the catalog remembers no connection for it",
        ctx.config.file.display()
    )))
}

/// Every tenant configured or discovered now, read once, for a path that looks up many.
pub struct Current {
    tenants: Vec<TenantConfig>,
    /// Why discovery could not be read (then only `[[tenants]]` are here).
    pub unread: Option<String>,
}

impl Current {
    pub fn get(&self, id: &TenantId) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.id == *id)
    }
}

pub async fn current(ctx: &Context) -> Current {
    match discovery::discover(ctx).await {
        Ok(f) => Current {
            tenants: f.tenants,
            unread: None,
        },
        Err(e) => Current {
            tenants: ctx.config.tenants.clone(),
            unread: Some(e.to_string()),
        },
    }
}

/// Whether `id` names a tenant of this installation (configured, discovered or in the catalog).
pub async fn exists(ctx: &Context, id: &TenantId) -> Result<bool, Error> {
    if ctx.catalog.tenant(id).await?.is_some() {
        return Ok(true);
    }
    match tenant(ctx, id).await {
        Ok(_) => Ok(true),
        Err(Error::NotFound(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The tenant's configuration from what the catalog remembers, with the password source of the
/// discovery source that found it (which must still be configured).
fn recall(ctx: &Context, id: &TenantId, tier: &str, json: &str) -> Result<TenantConfig, Error> {
    let bad = |why: String| Error::Failed(format!("tenant {id}: {why}"));
    let r: Discovered = serde_json::from_str(json).map_err(|e| {
        bad(format!(
            "the catalog's remembered connection is unreadable: {e}"
        ))
    })?;
    let engine: EngineKind = r
        .engine
        .parse()
        .map_err(|_| bad(format!("unknown engine {:?} in the catalog", r.engine)))?;
    let source = ctx
        .config
        .discovery
        .iter()
        .find(|s| discovery::source_url(s) == r.source);
    let connection = match engine {
        EngineKind::Sqlite => Connection::Sqlite {
            path: r.location.clone().into(),
        },
        EngineKind::Postgres | EngineKind::Mariadb => {
            let url = url::Url::parse(&r.location)
                .map_err(|e| bad(format!("remembered URL {:?}: {e}", r.location)))?;
            let password = match (r.password.as_str(), source) {
                ("none", _) => None,
                ("url", _) => {
                    return Err(bad(format!(
                        "its password came in the row of discovery source {}, which no longer lists it, and passwords are never stored; list it there again (state terminated is enough) to restore it",
                        r.source
                    )));
                }
                (_, None) => {
                    return Err(bad(format!(
                        "discovery source {} that found it is no longer in {}, so its password is unknown",
                        r.source,
                        ctx.config.file.display()
                    )));
                }
                (_, Some(DiscoverySource::Server { password, .. })) => password.clone(),
                (
                    _,
                    Some(DiscoverySource::Query {
                        tenant_password, ..
                    }),
                ) => tenant_password.clone(),
            };
            engine
                .server_connection(url, password)
                .ok_or_else(|| bad(format!("engine {} has no server", engine.as_str())))?
        }
    };
    Ok(discovery::tenant(
        id.clone(),
        engine,
        tier.to_string(),
        connection,
        Some(r),
    ))
}
