//! `[api]`: the staff and customer HTTP API's listener, TLS, link key, limits and networks.

use super::echo::ser;
use super::raw::RawApi;
use super::{ConfigError, Source, parse_size};
use crate::secret::SecretSource;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// A role an API token carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApiRole {
    /// Everything staff can do, and managing tokens.
    Admin,
    /// Reads tenants and backups (and restores, once the API offers them); no tokens, no audit.
    Support,
    /// Reads tenants, backups and the audit log; changes nothing.
    Auditor,
    /// One tenant's self-service: its backups and download links.
    Customer,
}

impl ApiRole {
    pub const ALL: [ApiRole; 4] = [
        ApiRole::Admin,
        ApiRole::Support,
        ApiRole::Auditor,
        ApiRole::Customer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ApiRole::Admin => "admin",
            ApiRole::Support => "support",
            ApiRole::Auditor => "auditor",
            ApiRole::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<ApiRole> {
        ApiRole::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// `[api]`: the staff and customer HTTP API that `serve` runs on its own listener.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ApiConfig {
    #[serde(serialize_with = "ser::display")]
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain and private key; `None`: plain HTTP (loopback, or
    /// `allow-plain-http = true` behind a TLS-terminating proxy).
    #[serde(flatten)]
    pub tls: Option<TlsFiles>,
    /// The HMAC-SHA256 key of download links (at least 32 bytes, checked when `serve` starts).
    #[serde(serialize_with = "ser::secret")]
    pub link_secret: SecretSource,
    #[serde(serialize_with = "ser::duration")]
    pub link_lifetime: Duration,
    pub link_uses: u32,
    /// Whether customers may list and download their tenant's retained backups, beside the
    /// ones they ask for.
    pub customer_retained_downloads: bool,
    /// Client networks allowed per role; a role not listed is allowed from any address.
    #[serde(serialize_with = "ser::display_map")]
    pub allow: BTreeMap<ApiRole, Vec<ipnet::IpNet>>,
    /// Largest request body accepted.
    pub max_body: usize,
    /// How long a client may take to send a request's head (or, between requests, to start
    /// the next), to send its body, and to take the next bytes of a response.
    #[serde(serialize_with = "ser::duration")]
    pub client_timeout: Duration,
    /// Connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Peers whose `Forwarded`/`X-Forwarded-For` is believed (a TLS proxy in front); from any
    /// other peer those headers are ignored.
    #[serde(serialize_with = "ser::display_list")]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Whether a restore over live asked through the API waits for a second person (an admin
    /// other than the one who asked) to approve it.
    pub live_restore_approval: bool,
    /// Backups one tenant may ask for within any 24 hours (429 `quota_exceeded` beyond).
    pub requested_backups_per_day: u32,
    /// How long a requested backup outlives the link issued with its request.
    #[serde(serialize_with = "ser::duration")]
    pub requested_backup_grace: Duration,
    /// Live (unexpired, not used up) passphrase links one tenant may hold (429
    /// `passphrase_links_exceeded` beyond): each costs scrypt work when made and when used.
    pub passphrase_links_per_tenant: u32,
}

/// `[api] link-lifetime` unless set.
pub const LINK_LIFETIME: Duration = Duration::from_secs(3600);
/// `[api] link-uses` unless set.
pub const LINK_USES: u32 = 3;
/// `[api] max-body` unless set.
pub const MAX_BODY: usize = 64 << 10;
/// `[api] client-timeout` unless set.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// `[api] max-connections` unless set.
pub const MAX_CONNECTIONS: usize = 1024;
/// `[api] customer-retained-downloads` unless set: only backups customers ask for.
pub const CUSTOMER_RETAINED_DOWNLOADS: bool = false;
/// `[api] live-restore-approval` unless set: a second admin approves.
pub const LIVE_RESTORE_APPROVAL: bool = true;
/// `[api] requested-backups-per-day` unless set: as many as the busiest shipped tier's schedule
/// makes (paid, every 4 hours). Each is a full dump from the tenant's server and is kept for its
/// link's lifetime plus the grace.
pub const REQUESTED_BACKUPS_PER_DAY: u32 = 6;
/// `[api] requested-backup-grace` unless set (also when there is no `[api]`: requested backups
/// made while it was configured are still kept this long after their link).
pub const REQUESTED_BACKUP_GRACE: Duration = Duration::from_secs(86400);
/// `[api] passphrase-links-per-tenant` unless set.
pub const PASSPHRASE_LINKS_PER_TENANT: u32 = 10;

#[derive(Debug, Clone, serde::Serialize)]
pub struct TlsFiles {
    #[serde(rename = "tls-cert-file", serialize_with = "ser::path")]
    pub cert: PathBuf,
    #[serde(rename = "tls-key-file", serialize_with = "ser::path")]
    pub key: PathBuf,
}

/// The longest a download link may live.
pub const LINK_LIFETIME_MAX: Duration = Duration::from_secs(7 * 86400);
/// Networks one role of `[api.allow]` may list.
const ALLOW_MAX: usize = 256;

/// `[api]`: TLS unless the listener is loopback or plain HTTP is allowed explicitly; every
/// limit bounded.
pub(super) fn parse_api(
    src: &Source,
    a: RawApi,
    server_listen: std::net::SocketAddr,
) -> Result<ApiConfig, ConfigError> {
    let listen: std::net::SocketAddr = a.listen.get_ref().parse().map_err(|_| {
        src.invalid(
            a.listen.span(),
            "api.listen",
            a.listen.get_ref(),
            "an address such as `0.0.0.0:8443` or `127.0.0.1:8443`",
        )
    })?;
    if listen == server_listen && listen.port() != 0 {
        return Err(src.invalid(
            a.listen.span(),
            "api.listen",
            a.listen.get_ref(),
            "an address other than server.listen (the API has a listener of its own)",
        ));
    }
    let tls = match (a.tls_cert_file, a.tls_key_file) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: src.path(cert.get_ref()),
            key: src.path(key.get_ref()),
        }),
        (None, None) => None,
        (Some(cert), None) => {
            return Err(src.invalid(
                cert.span(),
                "api.tls-cert-file",
                cert.get_ref(),
                "set together with api.tls-key-file (the certificate's private key, PEM)",
            ));
        }
        (None, Some(key)) => {
            return Err(src.invalid(
                key.span(),
                "api.tls-key-file",
                key.get_ref(),
                "set together with api.tls-cert-file (the certificate chain, PEM)",
            ));
        }
    };
    if tls.is_none() && !listen.ip().is_loopback() && a.allow_plain_http != Some(true) {
        return Err(src.invalid(
            a.listen.span(),
            "api.listen",
            a.listen.get_ref(),
            "a loopback address for plain HTTP; on any other address set api.tls-cert-file and \
             api.tls-key-file (HTTPS), or `allow-plain-http = true` if a TLS proxy on this host \
             terminates HTTPS",
        ));
    }
    let link_secret = SecretSource::from_pair(
        "api.link-secret",
        a.link_secret_env,
        a.link_secret_file.map(|p| src.path(&p)),
    )
    .map_err(|source| ConfigError::Secret {
        file: src.file.to_path_buf(),
        source,
    })?
    .ok_or_else(|| {
        src.missing(
            "api.link-secret-env or api.link-secret-file",
            "in [api] (the HMAC key of download links, at least 32 bytes)",
        )
    })?;
    let link_lifetime = match &a.link_lifetime {
        Some(l) => src.duration_in(
            l,
            "api.link-lifetime",
            Duration::from_secs(60)..=LINK_LIFETIME_MAX,
            "a duration from `1m` to `7d`",
        )?,
        None => LINK_LIFETIME,
    };
    let link_uses = match &a.link_uses {
        Some(u) => src.int_in(u, "api.link-uses", 1..=100, "an integer from 1 to 100")? as u32,
        None => LINK_USES,
    };
    let max_body = match &a.max_body {
        Some(m) => parse_size(m.get_ref())
            .filter(|n| (1 << 10..=1 << 20).contains(n))
            .ok_or_else(|| {
                src.invalid(
                    m.span(),
                    "api.max-body",
                    m.get_ref(),
                    "a size from `1KiB` to `1MiB`",
                )
            })?,
        None => MAX_BODY,
    };
    let client_timeout = match &a.client_timeout {
        Some(t) => src.duration_in(
            t,
            "api.client-timeout",
            Duration::from_secs(1)..=Duration::from_secs(600),
            "a duration from `1s` to `10m`",
        )?,
        None => CLIENT_TIMEOUT,
    };
    let max_connections = match &a.max_connections {
        Some(n) => src.int_in(
            n,
            "api.max-connections",
            1..=65536,
            "an integer from 1 to 65536",
        )? as usize,
        None => MAX_CONNECTIONS,
    };
    let requested_backups_per_day = match &a.requested_backups_per_day {
        Some(n) => src.int_in(
            n,
            "api.requested-backups-per-day",
            1..=1000,
            "an integer from 1 to 1000",
        )? as u32,
        None => REQUESTED_BACKUPS_PER_DAY,
    };
    let requested_backup_grace = match &a.requested_backup_grace {
        Some(g) => src.duration_in(
            g,
            "api.requested-backup-grace",
            Duration::from_secs(60)..=Duration::from_secs(30 * 86400),
            "a duration from `1m` to `30d`",
        )?,
        None => REQUESTED_BACKUP_GRACE,
    };
    let passphrase_links_per_tenant = match &a.passphrase_links_per_tenant {
        Some(n) => src.int_in(
            n,
            "api.passphrase-links-per-tenant",
            1..=1000,
            "an integer from 1 to 1000",
        )? as u32,
        None => PASSPHRASE_LINKS_PER_TENANT,
    };
    let mut allow = BTreeMap::new();
    if let Some(raw) = a.allow {
        for (role, nets) in [
            (ApiRole::Admin, raw.admin),
            (ApiRole::Support, raw.support),
            (ApiRole::Auditor, raw.auditor),
            (ApiRole::Customer, raw.customer),
        ] {
            let Some(nets) = nets else { continue };
            let field = format!("api.allow.{}", role.as_str());
            allow.insert(role, parse_nets(src, &nets, &field)?);
        }
    }
    let trusted_proxies = match &a.trusted_proxies {
        Some(nets) => parse_nets(src, nets, "api.trusted-proxies")?,
        None => Vec::new(),
    };
    Ok(ApiConfig {
        listen,
        tls,
        link_secret,
        link_lifetime,
        link_uses,
        customer_retained_downloads: a
            .customer_retained_downloads
            .unwrap_or(CUSTOMER_RETAINED_DOWNLOADS),
        allow,
        max_body,
        client_timeout,
        max_connections,
        trusted_proxies,
        live_restore_approval: a.live_restore_approval.unwrap_or(LIVE_RESTORE_APPROVAL),
        requested_backups_per_day,
        requested_backup_grace,
        passphrase_links_per_tenant,
    })
}

/// A list of at most `ALLOW_MAX` networks (`10.0.0.0/8`, or one address), for `field`.
fn parse_nets(
    src: &Source,
    nets: &Spanned<Vec<String>>,
    field: &str,
) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    if nets.get_ref().len() > ALLOW_MAX {
        return Err(src.invalid(
            nets.span(),
            field,
            format!("{} networks", nets.get_ref().len()),
            &format!("at most {ALLOW_MAX} networks"),
        ));
    }
    let mut parsed = Vec::new();
    for n in nets.get_ref() {
        parsed.push(parse_net(n).ok_or_else(|| {
            src.invalid(
                nets.span(),
                field,
                n,
                "an address or network such as `10.0.0.0/8`, `127.0.0.1` or `fd00::/8`",
            )
        })?);
    }
    Ok(parsed)
}

/// `10.0.0.0/8`, or one address (`127.0.0.1` is `127.0.0.1/32`).
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
}
