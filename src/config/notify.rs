//! `[[notify]]` sinks: where events go, in which format, signed with which secret, and which
//! events each wants. A sink URL must be https unless it is loopback or `allow-http = true`.

use super::echo::ser;
use super::{ConfigError, Source, Tier};
use crate::domain::notify::{EventKind, SinkFilter};
use crate::secret::SecretSource;
use crate::tenant::TenantId;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawNotify {
    name: Spanned<String>,
    format: Option<Spanned<String>>,
    url: Option<Spanned<String>>,
    url_env: Option<String>,
    url_file: Option<String>,
    secret_env: Option<String>,
    secret_file: Option<String>,
    events: Option<Spanned<Vec<String>>>,
    tenants: Option<Spanned<Vec<String>>>,
    tiers: Option<Spanned<Vec<String>>>,
    allow_http: Option<bool>,
    timeout: Option<Spanned<String>>,
    deadline: Option<Spanned<String>>,
}

/// `[[notify]] timeout` unless set.
pub const SINK_TIMEOUT: Duration = Duration::from_secs(10);
/// `[[notify]] deadline` unless set.
pub const SINK_DEADLINE: Duration = Duration::from_secs(86400);

/// What a sink receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotifyFormat {
    /// The event as JSON, signed Standard Webhooks style.
    Webhook,
    /// `{"text": …}` for a Slack-compatible incoming webhook.
    Slack,
}

impl NotifyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyFormat::Webhook => "webhook",
            NotifyFormat::Slack => "slack",
        }
    }
}

/// Where a sink's URL comes from: the config (a receiver's address), or a secret (a Slack
/// incoming-webhook URL is itself the credential).
#[derive(Debug, Clone)]
pub enum SinkUrl {
    Plain(url::Url),
    Secret(SecretSource),
}

/// One `[[notify]]` sink.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct NotifySink {
    pub name: String,
    pub format: NotifyFormat,
    #[serde(serialize_with = "sink_url")]
    pub url: SinkUrl,
    /// The HMAC-SHA256 key of the `webhook-signature` header (`whsec_` + base64, or raw bytes);
    /// required for `webhook`, optional for `slack`.
    #[serde(serialize_with = "ser::secret_or_none")]
    pub secret: Option<SecretSource>,
    #[serde(flatten, serialize_with = "filter")]
    pub filter: SinkFilter,
    /// Plain `http://` to a host that is not loopback.
    pub allow_http: bool,
    /// One attempt's limit (connect, send, answer).
    #[serde(serialize_with = "ser::duration")]
    pub timeout: Duration,
    /// How long after an event it is still retried; then given up.
    #[serde(serialize_with = "ser::duration")]
    pub deadline: Duration,
}

/// A sink's URL as the echo shows it: without its credentials, or where the secret one comes from.
fn sink_url<S: serde::Serializer>(url: &SinkUrl, s: S) -> Result<S::Ok, S::Error> {
    match url {
        SinkUrl::Plain(u) => s.serialize_str(&redact_sink_url(u)),
        SinkUrl::Secret(v) => ser::secret(v, s),
    }
}

/// A sink's filter as its three keys; `tenants` and `tiers` left out when every one is wanted.
fn filter<S: serde::Serializer>(f: &SinkFilter, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(None)?;
    let events: Vec<&str> = f.events.iter().map(|k| k.as_str()).collect();
    map.serialize_entry("events", &events)?;
    if let Some(t) = &f.tenants {
        map.serialize_entry("tenants", t)?;
    }
    if let Some(t) = &f.tiers {
        map.serialize_entry("tiers", t)?;
    }
    map.end()
}

/// `url` if it may receive events: https, or http to a loopback host or with `allow-http`.
pub fn check_sink_url(url: &str, allow_http: bool) -> Result<url::Url, String> {
    let u = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    let loopback = match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => return Err("a URL with a host".into()),
    };
    match u.scheme() {
        "https" => Ok(u),
        "http" if loopback || allow_http => Ok(u),
        "http" => Err(
            "an https:// URL (plain http only to a loopback host, or with `allow-http = true`)"
                .into(),
        ),
        _ => Err("an https:// URL".into()),
    }
}

/// Shown in place of a URL: scheme, host and port only, since a path may carry a token.
pub fn redact_sink_url(u: &url::Url) -> String {
    format!(
        "{}://{}{}/…",
        u.scheme(),
        u.host_str().unwrap_or(""),
        u.port().map(|p| format!(":{p}")).unwrap_or_default()
    )
}

pub(super) fn parse_notify(
    src: &Source,
    i: usize,
    n: RawNotify,
    tiers: &BTreeMap<String, Tier>,
    names: &mut BTreeSet<String>,
) -> Result<NotifySink, ConfigError> {
    let field = |f: &str| format!("notify[{i}].{f}");
    let name = n.name.get_ref().clone();
    if TenantId::parse(&name).is_err() || !names.insert(name.clone()) {
        return Err(src.invalid(
            n.name.span(),
            &field("name"),
            &name,
            "a name of its own (lowercase letters, digits, `-` and `_`), unique among [[notify]]",
        ));
    }
    let format = match n.format.as_ref().map(|f| f.get_ref().as_str()) {
        None | Some("webhook") => NotifyFormat::Webhook,
        Some("slack") => NotifyFormat::Slack,
        Some(other) => {
            let f = n.format.as_ref().expect("matched Some");
            return Err(src.invalid(f.span(), &field("format"), other, "`webhook` or `slack`"));
        }
    };
    let secret_err = |source| ConfigError::Secret {
        file: src.file.to_path_buf(),
        source,
    };
    let allow_http = n.allow_http.unwrap_or(false);
    let url_secret =
        SecretSource::from_pair(&field("url"), n.url_env, n.url_file.map(|p| src.path(&p)))
            .map_err(secret_err)?;
    let url = match (n.url, url_secret) {
        (Some(u), None) => SinkUrl::Plain(
            check_sink_url(u.get_ref(), allow_http)
                .map_err(|why| src.invalid(u.span(), &field("url"), u.get_ref(), &why))?,
        ),
        (None, Some(s)) => SinkUrl::Secret(s),
        (Some(u), Some(_)) => {
            return Err(src.invalid(
                u.span(),
                &field("url"),
                u.get_ref(),
                "either url or url-env/url-file, not both",
            ));
        }
        (None, None) => {
            return Err(src.missing(
                &field("url"),
                "(or url-env/url-file, for a URL that is itself a secret)",
            ));
        }
    };
    let secret = SecretSource::from_pair(
        &field("secret"),
        n.secret_env,
        n.secret_file.map(|p| src.path(&p)),
    )
    .map_err(secret_err)?;
    if secret.is_none() && format == NotifyFormat::Webhook {
        return Err(src.missing(
            &format!("{} or {}", field("secret-env"), field("secret-file")),
            "for a webhook sink (the HMAC-SHA256 key receivers verify the signature with)",
        ));
    }
    let mut filter = SinkFilter::default();
    if let Some(events) = &n.events {
        for e in events.get_ref() {
            let kind = EventKind::parse(e)
                .filter(|k| *k != EventKind::Test)
                .ok_or_else(|| {
                    src.invalid(
                        events.span(),
                        &field("events"),
                        e,
                        &format!(
                            "event names from: {}",
                            EventKind::names().replace(", test", "")
                        ),
                    )
                })?;
            filter.events.insert(kind);
        }
    }
    if let Some(tenants) = &n.tenants {
        let mut set = BTreeSet::new();
        for t in tenants.get_ref() {
            TenantId::parse(t).map_err(|_| {
                src.invalid(
                    tenants.span(),
                    &field("tenants"),
                    t,
                    "tenant ids (lowercase letters, digits, `-` and `_`)",
                )
            })?;
            set.insert(t.clone());
        }
        filter.tenants = Some(set);
    }
    if let Some(ts) = &n.tiers {
        let mut set = BTreeSet::new();
        for t in ts.get_ref() {
            if !tiers.contains_key(t) {
                return Err(src.invalid(
                    ts.span(),
                    &field("tiers"),
                    t,
                    &format!(
                        "tier names from: {}",
                        tiers.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            set.insert(t.clone());
        }
        filter.tiers = Some(set);
    }
    let timeout = match &n.timeout {
        Some(t) => src.duration_in(
            t,
            &field("timeout"),
            Duration::from_secs(1)..=Duration::from_secs(120),
            "a duration from `1s` to `2m`",
        )?,
        None => SINK_TIMEOUT,
    };
    let deadline = match &n.deadline {
        Some(d) => src.duration_in(
            d,
            &field("deadline"),
            Duration::from_secs(1)..=Duration::from_secs(30 * 86400),
            "a duration from `1s` to `30d`, such as `24h`",
        )?,
        None => SINK_DEADLINE,
    };
    Ok(NotifySink {
        name,
        format,
        url,
        secret,
        filter,
        allow_http,
        timeout,
        deadline,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_urls() {
        for (url, allow, ok) in [
            ("https://hooks.example.com/x", false, true),
            ("http://127.0.0.1:9000/hook", false, true),
            ("http://[::1]:9000/hook", false, true),
            ("http://localhost/hook", false, true),
            ("http://hooks.example.com/x", false, false),
            ("http://hooks.example.com/x", true, true),
            ("ftp://hooks.example.com/x", true, false),
            ("hooks.example.com", false, false),
        ] {
            assert_eq!(
                check_sink_url(url, allow).is_ok(),
                ok,
                "{url} allow-http={allow}"
            );
        }
    }

    #[test]
    fn redaction_keeps_the_host_only() {
        let u = url::Url::parse("https://hooks.slack.com:443/services/T0/B0/SECRET").unwrap();
        assert_eq!(redact_sink_url(&u), "https://hooks.slack.com/…");
    }
}
