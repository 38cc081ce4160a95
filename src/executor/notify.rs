//! Delivering notifications: one round reads the open events of the outbox, asks the planner
//! (`domain::notify::plan`) what is due, sends it to the `[[notify]]` sinks and records each
//! outcome. `serve` runs rounds in a loop of its own (one worker of a shared catalog at a time),
//! so a receiver that is slow or down delays nothing but its own deliveries.
//!
//! Webhook requests follow Standard Webhooks: `webhook-id` (the event id: the receiver's
//! idempotency key), `webhook-timestamp` (Unix seconds), `webhook-signature: v1,<base64 of
//! HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`; the key is the base64 after `whsec_` of the
//! sink's secret, or the secret's bytes when it has no such prefix.

use super::{Context, Error};
use crate::catalog::{Catalog, EventRow};
use crate::config::{NotifyFormat, NotifySink, SinkUrl, check_sink_url};
use crate::domain::notify::{self, DeliveryState, EventKind, SinkPlan};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use std::sync::Arc;
use std::time::Duration;

/// Open events a round looks at, oldest first.
const ROUND_EVENTS: i64 = 500;

/// A sink with its URL and key read.
pub struct Sink {
    pub config: NotifySink,
    url: url::Url,
    key: Option<Vec<u8>>,
}

/// Reads every sink's URL and key; errors name the sink's setting, never the value.
pub fn resolve_sinks(sinks: &[NotifySink]) -> Result<Vec<Sink>, Error> {
    sinks.iter().map(resolve).collect()
}

fn resolve(s: &NotifySink) -> Result<Sink, Error> {
    let field = |f: &str| format!("notify {:?} {f}", s.name);
    let url = match &s.url {
        SinkUrl::Plain(u) => u.clone(),
        SinkUrl::Secret(src) => {
            let v = src
                .resolve(&field("url"))
                .map_err(|e| Error::Refused(e.to_string()))?;
            // The value is a credential: the error names the setting, not the URL.
            check_sink_url(v.expose(), s.allow_http)
                .map_err(|why| Error::Refused(format!("{} is not valid: {why}", field("url"))))?
        }
    };
    let key = match &s.secret {
        Some(src) => {
            let v = src
                .resolve(&field("secret"))
                .map_err(|e| Error::Refused(e.to_string()))?;
            Some(match v.expose().strip_prefix("whsec_") {
                Some(b64) => base64::engine::general_purpose::STANDARD
                    .decode(b64)
                    .map_err(|_| {
                        Error::Refused(format!(
                            "{}: a `whsec_` secret must be base64 after the prefix",
                            field("secret")
                        ))
                    })?,
                None => v.expose().as_bytes().to_vec(),
            })
        }
        None => None,
    };
    if key.as_ref().is_some_and(|k| k.len() < 16) {
        return Err(Error::Refused(format!(
            "{}: at least 16 bytes (24 or more recommended)",
            field("secret")
        )));
    }
    Ok(Sink {
        config: s.clone(),
        url,
        key,
    })
}

/// The Standard Webhooks signature header value of `body`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The JSON a sink receives for `e`.
pub fn payload(format: NotifyFormat, e: &EventRow) -> serde_json::Value {
    let data: serde_json::Value = serde_json::from_str(&e.data).unwrap_or_default();
    match format {
        NotifyFormat::Webhook => serde_json::json!({
            "id": e.id,
            "type": e.kind,
            "timestamp": e.created_at,
            "tenant": e.tenant,
            "tier": e.tier,
            "data": data,
        }),
        NotifyFormat::Slack => serde_json::json!({ "text": slack_text(e, &data) }),
    }
}

/// One line for a chat: what happened, to whom, and the fields that say more.
fn slack_text(e: &EventRow, data: &serde_json::Value) -> String {
    let what = match EventKind::parse(&e.kind) {
        Some(EventKind::RestoreFinished) => "Restore finished",
        Some(EventKind::RestoreFailed) => "Restore FAILED",
        Some(EventKind::BackupReady) => "Requested backup ready",
        Some(EventKind::BackupFailing) => "Backups failing",
        Some(EventKind::RpoBreached) => "RPO objective breached",
        Some(EventKind::DrillFailed) => "Restore drill failed",
        Some(EventKind::PurgeCompleted) => "Tenant purged",
        Some(EventKind::RegionUnreachable) => "Region unreachable",
        Some(EventKind::RegionBack) => "Region reachable again",
        Some(EventKind::RetentionCapped) => "Retention stopped by a cap",
        Some(EventKind::AuditFailed) => "Audit log verification FAILED",
        Some(EventKind::Test) => "Test notification",
        None => e.kind.as_str(),
    };
    let mut text = format!("Lifeboat: {what}");
    if let Some(t) = &e.tenant {
        text.push_str(&format!(" — tenant `{t}`"));
    }
    if let Some(t) = &e.tier {
        text.push_str(&format!(" (tier {t})"));
    }
    if let Some(map) = data.as_object() {
        let fields: Vec<String> = map
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}: {s}"),
                v => format!("{k}: {v}"),
            })
            .collect();
        if !fields.is_empty() {
            text.push_str(&format!("\n{}", fields.join(" · ")));
        }
    }
    text
}

/// Sends `e` to `sink` once: Ok on a 2xx answer, else why not (status, or the transport error).
pub async fn send(sink: &Sink, e: &EventRow, now: DateTime<Utc>) -> Result<u16, String> {
    let body = serde_json::to_vec(&payload(sink.config.format, e)).expect("JSON serializes");
    let ts = now.timestamp();
    let mut headers = vec![
        ("webhook-id", e.id.clone()),
        ("webhook-timestamp", ts.to_string()),
    ];
    if let Some(key) = &sink.key {
        headers.push(("webhook-signature", sign(key, &e.id, ts, &body)));
    }
    let attempt = http::post(&sink.url, &headers, body);
    match tokio::time::timeout(sink.config.timeout, attempt).await {
        Err(_) => Err(format!(
            "no answer within {}",
            crate::domain::objectives::fmt_duration(sink.config.timeout)
        )),
        Ok(Err(e)) => Err(e),
        Ok(Ok(status)) if (200..300).contains(&status) => Ok(status),
        Ok(Ok(status)) => Err(format!("answered HTTP {status}")),
    }
}

/// What a round did, for logs and `/metrics`.
#[derive(Debug, Default)]
pub struct Round {
    /// (sink, event id, kind, outcome): `delivered`, `failed` (retried later) or `given_up`.
    pub attempts: Vec<(String, String, String, &'static str)>,
}

/// One delivery round at `now`.
pub async fn round(
    catalog: &Catalog,
    sinks: &[Arc<Sink>],
    now: DateTime<Utc>,
) -> Result<Round, Error> {
    let rows = catalog.open_events(ROUND_EVENTS).await?;
    let mut report = Round::default();
    let Some(first) = rows.first() else {
        return Ok(report);
    };
    let recorded = catalog.deliveries_since(first.seq).await?;
    let attempts_of = |id: &str, sink: &str| {
        recorded
            .iter()
            .find(|d| d.event_id == id && d.sink == sink)
            .map_or(0, |d| d.attempts.clamp(0, i64::from(u32::MAX)) as u32)
    };
    let states = Catalog::delivery_states(&recorded);
    // An event of a kind this build does not know (a newer worker wrote it) is left to others.
    let open: Vec<_> = rows.iter().filter_map(EventRow::open).collect();
    let plans: Vec<SinkPlan> = sinks
        .iter()
        .map(|s| SinkPlan {
            name: &s.config.name,
            filter: &s.config.filter,
            deadline: s.config.deadline,
        })
        .collect();
    let plan = notify::plan(&open, &states, &plans, now);
    let row = |id: &str| rows.iter().find(|r| r.id == id).expect("planned from rows");
    let sink_named = |name: &str| {
        sinks
            .iter()
            .find(|s| s.config.name == name)
            .expect("planned from sinks")
    };
    for (id, s) in &plan.give_up {
        catalog
            .record_delivery(id, s, DeliveryState::GivenUp, attempts_of(id, s), None, now)
            .await?;
        report
            .attempts
            .push((s.clone(), id.clone(), row(id).kind.clone(), "given_up"));
    }
    // Every due (event, sink) at once: one per tenant and sink, each bounded by its timeout.
    let sends = plan.send.iter().map(|(id, s)| {
        let (e, sink) = (row(id), sink_named(s).clone());
        async move { (id, s, send(&sink, e, now).await) }
    });
    for (id, s, result) in futures::future::join_all(sends).await {
        let attempts = attempts_of(id, s) + 1;
        let kind = row(id).kind.clone();
        match result {
            Ok(_) => {
                catalog
                    .record_delivery(id, s, DeliveryState::Delivered, attempts, None, now)
                    .await?;
                report
                    .attempts
                    .push((s.clone(), id.clone(), kind, "delivered"));
            }
            Err(why) => {
                let next_at = Utc::now()
                    + chrono::Duration::from_std(notify::backoff(attempts)).unwrap_or_default();
                catalog
                    .record_delivery(
                        id,
                        s,
                        DeliveryState::Pending { attempts, next_at },
                        attempts,
                        Some(&why),
                        now,
                    )
                    .await?;
                report
                    .attempts
                    .push((s.clone(), id.clone(), kind, "failed"));
            }
        }
    }
    // Settled: the planner saw them finished before this round, or this round finished them.
    let after = Catalog::delivery_states(&catalog.deliveries_since(first.seq).await?);
    let settled = notify::plan(&open, &after, &plans, now).settled;
    catalog.settle_events(&settled, Utc::now()).await?;
    Ok(report)
}

/// Probes every region and judges every active tenant's RPO; a change writes its event
/// (`region.unreachable`, `region.back`, `rpo.breached`) once, whichever worker sees it. Returns
/// what changed, for the log.
pub async fn watch_conditions(ctx: &Context, now: DateTime<Utc>) -> Result<Vec<String>, Error> {
    let mut changes = Vec::new();
    for r in &ctx.regions {
        let prefix = r.layout.tenants_prefix();
        let probe = r.store.probe(&prefix);
        let down = !matches!(
            tokio::time::timeout(Duration::from_secs(30), probe).await,
            Ok(Ok(()))
        );
        let kind = if down {
            EventKind::RegionUnreachable
        } else {
            EventKind::RegionBack
        };
        let event = crate::catalog::NewEvent::new(
            kind,
            None,
            None,
            now,
            serde_json::json!({ "region": r.name }),
        );
        let subject = format!("region:{}", r.name);
        if ctx
            .catalog
            .change_condition(&subject, down, "unreachable", Some(&event))
            .await?
        {
            changes.push(format!("{}: {}", kind.as_str(), r.name));
        }
    }
    let known = ctx.catalog.known_tenants().await?;
    for t in ctx.catalog.live_tenants().await? {
        let Some(tier) = ctx.config.tiers.get(&t.tier) else {
            continue;
        };
        let newest = known
            .get(t.id.as_str())
            .and_then(|k| k.history.newest_recovery_point);
        let breached = t.state == crate::catalog::TenantState::Active
            && notify::rpo_breached(newest, tier.rpo, now);
        let event = breached.then(|| {
            crate::catalog::NewEvent::new(
                EventKind::RpoBreached,
                Some(t.id.as_str()),
                Some(t.tier.as_str()),
                now,
                serde_json::json!({
                    "newest_recovery_point": newest,
                    "rpo_objective": crate::domain::objectives::fmt_duration(tier.rpo),
                }),
            )
        });
        let subject = format!("rpo:{}", t.id);
        if ctx
            .catalog
            .change_condition(&subject, breached, "breached", event.as_ref())
            .await?
            && breached
        {
            changes.push(format!("rpo.breached: {}", t.id));
        }
    }
    Ok(changes)
}

/// `lifeboat notify test SINK`: a `test` event straight to the sink (not through the outbox).
pub async fn send_test(ctx: &Context, name: &str) -> Result<u16, Error> {
    let cfg = ctx
        .config
        .notify
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            Error::NotFound(format!(
                "no [[notify]] sink is named {name:?}; configured: {}",
                ctx.config
                    .notify
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
    let sink = resolve(cfg)?;
    let now = Utc::now();
    let e = EventRow {
        seq: 0,
        id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
        kind: EventKind::Test.as_str().into(),
        tenant: None,
        tier: None,
        created_at: now,
        data: serde_json::json!({ "sink": name }).to_string(),
        settled_at: None,
    };
    send(&sink, &e, now)
        .await
        .map_err(|why| Error::Unavailable(format!("notify {name:?}: {why}")))
}

/// How often `serve` looks for due deliveries.
pub const TICK: Duration = Duration::from_millis(500);

mod http {
    //! A minimal HTTP/1.1 POST over hyper (and rustls for https, the system's roots): one
    //! request per connection, which is all a notification needs.

    use std::sync::{Arc, OnceLock};

    pub async fn post(
        url: &url::Url,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<u16, String> {
        let host = url.host_str().ok_or("the URL has no host")?;
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("lifeboat/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(axum::body::Body::from(body))
            .map_err(|e| format!("request: {e}"))?;
        // Brackets of an IPv6 literal are not part of the address to connect to.
        let addr_host = host.trim_start_matches('[').trim_end_matches(']');
        let tcp = tokio::net::TcpStream::connect((addr_host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        if url.scheme() == "https" {
            let name = rustls_pki_types::ServerName::try_from(addr_host.to_string())
                .map_err(|e| format!("server name {host}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(client_config())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(tls, req).await
        } else {
            exchange(tcp, req).await
        }
    }

    async fn exchange<S>(stream: S, req: hyper::Request<axum::body::Body>) -> Result<u16, String>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP: {e}"))?;
        let conn = tokio::spawn(conn);
        let result = sender
            .send_request(req)
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| format!("HTTP: {e}"));
        conn.abort();
        result
    }

    fn client_config() -> Arc<rustls::ClientConfig> {
        static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                let mut config = rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .expect("aws-lc-rs supports the default versions")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Arc::new(config)
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference libraries.
    #[test]
    fn signature_matches_standard_webhooks() {
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        let sig = sign(
            &key,
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
