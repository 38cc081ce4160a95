//! `config check`'s echo: the resolved configuration as TOML, secrets as where they come from.

use super::{
    ApiRole, Config, Connection, DiscoverySource, RegionBackend, RegionRole, SinkUrl,
    redact_sink_url,
};
use crate::secret::SecretSource;

impl Config {
    /// The resolved configuration as TOML, with every secret replaced by where it comes from.
    pub fn redacted(&self) -> String {
        use crate::domain::objectives::fmt_duration;
        use std::fmt::Write;
        let mut out = String::new();
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let _ = writeln!(out, "# {}", self.file.display());
        let _ = writeln!(out, "[catalog]\nurl = {}", q(&self.catalog.url));
        if let Some(p) = &self.catalog.password {
            let _ = writeln!(out, "password = {}", q(&p.describe()));
        }
        let _ = writeln!(out);
        let _ = writeln!(out, "[keys]");
        let recips: Vec<String> = self.keys.master_recipients.iter().map(|r| q(r)).collect();
        let _ = writeln!(out, "master-recipients = [{}]", recips.join(", "));
        let ident = match &self.keys.master_identity {
            Some(s) => s.describe(),
            None => "<none: backup-only, restores are refused>".into(),
        };
        let _ = writeln!(out, "master-identity = {}\n", q(&ident));
        let p = &self.pipeline;
        let _ = writeln!(
            out,
            "[pipeline]\nzstd-level = {}\nzstd-workers = {}\npart-size = {}\nupload-concurrency = {}\njob-timeout = {}\n",
            p.zstd_level,
            p.zstd_workers,
            p.part_size,
            p.upload_concurrency,
            q(&fmt_duration(p.job_timeout))
        );
        let _ = writeln!(
            out,
            "[server]\nlisten = {}\n",
            q(&self.server.listen.to_string())
        );
        let sc = &self.scheduler;
        let _ = writeln!(
            out,
            "[scheduler]\ninterval = {}\nconcurrency = {}\nper-host = {}\ndrain = {}\nlease = {}\nterminate-share = {}\n",
            q(&fmt_duration(sc.interval)),
            sc.concurrency,
            sc.per_host,
            q(&fmt_duration(sc.drain)),
            q(&fmt_duration(sc.lease)),
            sc.terminate_share
        );
        let secret =
            |s: &Option<SecretSource>| q(&s.as_ref().map_or("<none>".into(), |s| s.describe()));
        for d in &self.discovery {
            match d {
                DiscoverySource::Query {
                    url,
                    password,
                    query,
                    tenant_password,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "[[discovery]]\nkind = \"query\"\nurl = {}\npassword = {}\nquery = {}\ntenant-password = {}\n",
                        q(url.as_str()),
                        secret(password),
                        q(query),
                        secret(tenant_password)
                    );
                }
                DiscoverySource::Server {
                    engine,
                    url,
                    password,
                    pattern,
                    tier,
                    ..
                } => {
                    let _ = writeln!(
                        out,
                        "[[discovery]]\nkind = \"server\"\nengine = {}\nurl = {}\npassword = {}\npattern = {}\ntier = {}\n",
                        q(engine.as_str()),
                        q(url.as_str()),
                        secret(password),
                        q(pattern),
                        q(tier)
                    );
                }
            }
        }
        for p in &self.drills {
            let _ = writeln!(
                out,
                "# drill plan {} from {}\n# schedule = {}, tiers = {}, region = {}, catalog = {}, {}, time limit {}\n",
                p.name,
                p.file.display(),
                q(&p.schedule_text),
                if p.tiers.is_empty() {
                    "all".to_string()
                } else {
                    p.tiers.join(" ")
                },
                p.region
                    .as_deref()
                    .unwrap_or("the first holding a verified copy"),
                p.use_catalog,
                p.every_tenant_within
                    .map_or("every tenant each run".into(), |d| {
                        format!("every tenant within {}", fmt_duration(d))
                    }),
                fmt_duration(p.time_limit)
            );
        }
        if let Some(api) = &self.api {
            let _ = writeln!(out, "[api]\nlisten = {}", q(&api.listen.to_string()));
            match &api.tls {
                Some(t) => {
                    let _ = writeln!(
                        out,
                        "tls-cert-file = {}\ntls-key-file = {}",
                        q(&t.cert.display().to_string()),
                        q(&t.key.display().to_string())
                    );
                }
                None => {
                    let _ = writeln!(out, "# plain HTTP: no tls-cert-file");
                }
            }
            let _ = writeln!(
                out,
                "link-secret = {}\nlink-lifetime = {}\nlink-uses = {}\ncustomer-retained-downloads = {}\nmax-body = {}\nclient-timeout = {}\nmax-connections = {}\n\
                 requested-backups-per-day = {}\nrequested-backup-grace = {}\npassphrase-links-per-tenant = {}",
                q(&api.link_secret.describe()),
                q(&fmt_duration(api.link_lifetime)),
                api.link_uses,
                api.customer_retained_downloads,
                api.max_body,
                q(&fmt_duration(api.client_timeout)),
                api.max_connections,
                api.requested_backups_per_day,
                q(&fmt_duration(api.requested_backup_grace)),
                api.passphrase_links_per_tenant
            );
            let proxies: Vec<String> = api
                .trusted_proxies
                .iter()
                .map(|n| q(&n.to_string()))
                .collect();
            let _ = writeln!(
                out,
                "trusted-proxies = [{}]\nlive-restore-approval = {}",
                proxies.join(", "),
                api.live_restore_approval
            );
            let _ = writeln!(out, "[api.allow]");
            for role in ApiRole::ALL {
                match api.allow.get(&role) {
                    Some(nets) => {
                        let nets: Vec<String> = nets.iter().map(|n| q(&n.to_string())).collect();
                        let _ = writeln!(out, "{} = [{}]", role.as_str(), nets.join(", "));
                    }
                    None => {
                        let _ = writeln!(out, "# {}: any address", role.as_str());
                    }
                }
            }
            let _ = writeln!(out);
        }
        for n in &self.notify {
            let url = match &n.url {
                SinkUrl::Plain(u) => redact_sink_url(u),
                SinkUrl::Secret(s) => s.describe(),
            };
            let events: Vec<String> = n.filter.events.iter().map(|k| q(k.as_str())).collect();
            let list = |set: &Option<std::collections::BTreeSet<String>>| {
                set.as_ref().map_or("# all".to_string(), |s| {
                    format!(
                        "[{}]",
                        s.iter().map(|t| q(t)).collect::<Vec<_>>().join(", ")
                    )
                })
            };
            let _ = writeln!(
                out,
                "[[notify]]\nname = {}\nformat = {}\nurl = {}\nsecret = {}\nevents = [{}]\ntenants = {}\ntiers = {}\nallow-http = {}\ntimeout = {}\ndeadline = {}\n",
                q(&n.name),
                q(n.format.as_str()),
                q(&url),
                secret(&n.secret),
                events.join(", "),
                list(&n.filter.tenants),
                list(&n.filter.tiers),
                n.allow_http,
                q(&fmt_duration(n.timeout)),
                q(&fmt_duration(n.deadline))
            );
        }
        let _ = writeln!(
            out,
            "[audit]\n{}\nanchor-interval = {}\n",
            match &self.audit.key {
                Some(k) => format!("key = {}", q(&k.describe())),
                None => "# no key: entries are hashed with plain SHA-256".into(),
            },
            q(&fmt_duration(self.audit.anchor_interval))
        );
        let _ = writeln!(
            out,
            "[retention]\n{}\nmax-deletes = {}\nmax-delete-share = {}\ncertificates-dir = {}\n",
            self.retention.schedule.as_ref().map_or(
                "# no schedule: `serve` never applies retention; run `retention apply` yourself"
                    .into(),
                |(t, _)| format!("schedule = {}", q(t))
            ),
            self.retention.max_deletes,
            self.retention.max_delete_share,
            q(&self.retention.certificates_dir.display().to_string())
        );
        for r in &self.regions {
            let role = match r.role {
                RegionRole::Primary => "primary",
                RegionRole::Secondary => "secondary",
            };
            let _ = writeln!(
                out,
                "[[regions]]\nname = {}\nrole = {}\nprefix = {}",
                q(&r.name),
                q(role),
                q(&r.prefix)
            );
            match &r.backend {
                RegionBackend::Dir { path } => {
                    let _ = writeln!(
                        out,
                        "kind = \"dir\"\npath = {}\n",
                        q(&path.display().to_string())
                    );
                }
                RegionBackend::S3 {
                    endpoint,
                    region,
                    bucket,
                    path_style,
                    access_key_id,
                    secret_access_key,
                } => {
                    let _ = writeln!(
                        out,
                        "kind = \"s3\"\nendpoint = {}\nregion = {}\nbucket = {}\npath-style = {}\naccess-key-id = {}\nsecret-access-key = {}\n",
                        q(endpoint),
                        q(region),
                        q(bucket),
                        path_style,
                        q(&access_key_id.describe()),
                        q(&secret_access_key.describe())
                    );
                }
            }
        }
        for t in &self.tenants {
            let _ = writeln!(
                out,
                "[[tenants]]\nid = {}\nengine = {}\ntier = {}",
                q(t.id.as_str()),
                q(t.engine.as_str()),
                q(&t.tier)
            );
            match &t.connection {
                Connection::Sqlite { path } => {
                    let _ = writeln!(out, "path = {}\n", q(&path.display().to_string()));
                }
                Connection::Postgres { url, password } | Connection::Mariadb { url, password } => {
                    let pw = password
                        .as_ref()
                        .map(|s| s.describe())
                        .unwrap_or_else(|| "<none>".into());
                    let _ = writeln!(out, "url = {}\npassword = {}\n", q(url.as_str()), q(&pw));
                }
            }
        }
        for t in self.tiers.values() {
            let _ = writeln!(
                out,
                "# tier {} from {}\n# cron = {}, priority = {}, rpo = {}, rto = {}, keep-last = {}, max-age = {}, deletion window = {}\n",
                t.name,
                t.file.display(),
                q(&t.cron_text),
                t.priority,
                fmt_duration(t.rpo),
                fmt_duration(t.rto),
                t.retention.keep_last,
                fmt_duration(t.retention.max_age),
                fmt_duration(t.deletion_window),
            );
        }
        out
    }
}
