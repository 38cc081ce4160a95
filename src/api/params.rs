//! Every value the API takes from a request, parsed in one place by pure functions: ids, times
//! and ranges, limits, query strings, the Authorization header, API tokens and link tokens.
//! Each refusal carries a stable code and a message that repeats nothing secret. These are the
//! functions the property tests feed with arbitrary input.

use super::error::CODES;
use crate::storage::BackupId;
use crate::tenant::TenantId;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;

// Beside `ApiError`, whose codes it uses: the error module sits below the parsers.
pub use super::error::ParamError;

fn bad(code: &'static str, message: impl Into<String>) -> ParamError {
    debug_assert!(CODES.contains(&code), "error code {code}");
    ParamError {
        code,
        message: message.into(),
    }
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Query strings longer than this are refused whole.
pub const QUERY_MAX: usize = 2048;
/// The most entries `GET /api/v1/audit` and the backup lists return.
pub const LIMIT_MAX: u32 = 1000;
/// Reasons are one line of at most this many bytes.
pub const REASON_MAX: usize = 500;
/// Passphrases for an encrypted download: at least this many characters…
pub const PASSPHRASE_MIN: usize = 12;
/// …and at most this many bytes.
pub const PASSPHRASE_MAX: usize = 1024;
/// Token names: 1 to this many bytes.
pub const TOKEN_NAME_MAX: usize = 64;
/// A token's default and longest lifetime.
pub const TOKEN_LIFETIME_DEFAULT: std::time::Duration = std::time::Duration::from_secs(90 * 86400);
pub const TOKEN_LIFETIME_MAX: std::time::Duration = std::time::Duration::from_secs(365 * 86400);
/// Link tokens longer than this are not even decoded.
pub const LINK_TOKEN_MAX: usize = 512;

pub fn tenant_id(s: &str) -> Result<TenantId, ParamError> {
    TenantId::parse(s).map_err(|_| {
        bad(
            "invalid_tenant_id",
            "a tenant id is 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a-z or 0-9",
        )
    })
}

pub fn backup_id(s: &str) -> Result<BackupId, ParamError> {
    BackupId::parse(s).map_err(|_| bad("invalid_backup_id", "a backup id is a lower-case UUIDv7"))
}

/// A lower-case UUID (v4 or v7) naming a link or a restore.
pub fn uuid(s: &str, code: &'static str) -> Result<String, ParamError> {
    match uuid::Uuid::parse_str(s) {
        Ok(u) if u.to_string() == s => Ok(s.to_string()),
        _ => Err(bad(code, "expected a lower-case UUID")),
    }
}

/// A time bound: RFC 3339, or a duration back from `now` (`7d`, `12h`).
pub fn time(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ParamError> {
    crate::audit::parse_time_bound(s, now).map_err(|_| {
        bad(
            "invalid_time",
            "expected an RFC 3339 time such as 2026-08-01T00:00:00Z, or a duration back from now such as 7d",
        )
    })
}

/// A time window; either end may be open.
pub type Window = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// `since` must not be after `until`.
pub fn range(
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<Window, ParamError> {
    match (since, until) {
        (Some(s), Some(u)) if s > u => Err(bad("invalid_range", "since is after until")),
        r => Ok(r),
    }
}

/// A limit from 1 to `max`; `default` when absent.
pub fn limit(s: Option<&str>, default: u32, max: u32) -> Result<u32, ParamError> {
    let Some(s) = s else { return Ok(default) };
    // Canonical decimal only: `u32::from_str` also takes "+5" and "05".
    let canonical = !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
    match s.parse::<u32>().ok().filter(|_| canonical) {
        Some(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(bad(
            "invalid_limit",
            format!("limit is an integer from 1 to {max}"),
        )),
    }
}

/// A query string as a map: every key in `allowed`, none twice, bounded length.
pub fn query<'a>(
    raw: Option<&str>,
    allowed: &[&'a str],
) -> Result<BTreeMap<&'a str, String>, ParamError> {
    let mut out = BTreeMap::new();
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(out);
    };
    if raw.len() > QUERY_MAX {
        return Err(bad(
            "invalid_query",
            format!("the query string is longer than {QUERY_MAX} bytes"),
        ));
    }
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        let Some(key) = allowed.iter().find(|a| **a == k) else {
            return Err(bad(
                "invalid_query",
                format!("unknown parameter; expected one of: {}", allowed.join(", ")),
            ));
        };
        if out.insert(*key, v.into_owned()).is_some() {
            return Err(bad(
                "invalid_query",
                format!("parameter {key} is given twice"),
            ));
        }
    }
    Ok(out)
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer(value: &[u8]) -> Result<&str, ParamError> {
    let refuse = || {
        bad(
            "unauthenticated",
            "expected an Authorization header `Bearer lbt_…`",
        )
    };
    let s = std::str::from_utf8(value).map_err(|_| refuse())?;
    let (scheme, token) = s.trim().split_once(' ').ok_or_else(refuse)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(refuse());
    }
    let token = token.trim();
    if token.is_empty() || token.len() > 200 || token.contains(char::is_whitespace) {
        return Err(refuse());
    }
    Ok(token)
}

/// The two parts of an API token `lbt_<id>_<secret>`: 16 lower-case hex digits, then 32 bytes
/// in unpadded base64url.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiToken {
    pub id: String,
    pub secret: [u8; 32],
}

impl ApiToken {
    pub fn parse(s: &str) -> Result<ApiToken, ParamError> {
        let refuse = || bad("unauthenticated", "not a Lifeboat API token (lbt_…)");
        let rest = s.strip_prefix("lbt_").ok_or_else(refuse)?;
        let (id, text) = rest.split_once('_').ok_or_else(refuse)?;
        if id.len() != 16 || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(refuse());
        }
        if text.len() != 43 {
            return Err(refuse());
        }
        let bytes = B64.decode(text).map_err(|_| refuse())?;
        let secret: [u8; 32] = bytes.try_into().map_err(|_| refuse())?;
        // Only the canonical spelling: one token, one string.
        if B64.encode(secret) != text {
            return Err(refuse());
        }
        Ok(ApiToken {
            id: id.to_string(),
            secret,
        })
    }

    pub fn encode(&self) -> String {
        format!("lbt_{}_{}", self.id, B64.encode(self.secret))
    }

    /// A token id: 16 lower-case hex digits.
    pub fn id(s: &str) -> Result<String, ParamError> {
        if s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(s.to_string())
        } else {
            Err(bad(
                "invalid_token_id",
                "a token id is 16 lower-case hex digits",
            ))
        }
    }
}

/// What a download is: the dump as stored, or encrypted with age to a recipient or a passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    Plain,
    Recipient,
    Passphrase,
}

impl LinkMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkMode::Plain => "plain",
            LinkMode::Recipient => "recipient",
            LinkMode::Passphrase => "passphrase",
        }
    }
    pub fn parse(s: &str) -> Option<LinkMode> {
        [LinkMode::Plain, LinkMode::Recipient, LinkMode::Passphrase]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// What a link token binds: the link, its tenant and backup, its expiry and its mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    pub link_id: String,
    pub tenant: TenantId,
    pub backup: BackupId,
    /// Unix seconds.
    pub expires: i64,
    pub mode: LinkMode,
}

const LINK_VERSION: &str = "lbl1";

impl LinkClaims {
    /// The signed bytes: one field per line.
    pub fn encode(&self) -> Vec<u8> {
        format!(
            "{LINK_VERSION}\n{}\n{}\n{}\n{}\n{}",
            self.link_id,
            self.tenant,
            self.backup,
            self.expires,
            self.mode.as_str()
        )
        .into_bytes()
    }

    /// Parses signed bytes (after the signature was checked).
    pub fn decode(payload: &[u8]) -> Result<LinkClaims, ParamError> {
        let refuse = || bad("link_invalid", "this download link is not valid");
        let text = std::str::from_utf8(payload).map_err(|_| refuse())?;
        let fields: Vec<&str> = text.split('\n').collect();
        let [version, link_id, tenant, backup, expires, mode] = fields[..] else {
            return Err(refuse());
        };
        if version != LINK_VERSION {
            return Err(refuse());
        }
        let claims = LinkClaims {
            link_id: uuid(link_id, "link_invalid").map_err(|_| refuse())?,
            tenant: TenantId::parse(tenant).map_err(|_| refuse())?,
            backup: BackupId::parse(backup).map_err(|_| refuse())?,
            expires: expires
                .parse()
                .ok()
                .filter(|n: &i64| n.to_string() == expires)
                .ok_or_else(refuse)?,
            mode: LinkMode::parse(mode).ok_or_else(refuse)?,
        };
        Ok(claims)
    }
}

/// A link token `base64url(payload).base64url(signature)` split into its decoded parts; the
/// signature is checked by the caller, with the key.
pub fn link_token(s: &str) -> Result<(Vec<u8>, [u8; 32]), ParamError> {
    let refuse = || bad("link_invalid", "this download link is not valid");
    if s.is_empty() || s.len() > LINK_TOKEN_MAX {
        return Err(refuse());
    }
    let (payload, sig) = s.split_once('.').ok_or_else(refuse)?;
    let payload = B64.decode(payload).map_err(|_| refuse())?;
    let sig: [u8; 32] = B64
        .decode(sig)
        .map_err(|_| refuse())?
        .try_into()
        .map_err(|_| refuse())?;
    if payload.is_empty() {
        return Err(refuse());
    }
    Ok((payload, sig))
}

/// Joins a payload and its signature into a link token.
pub fn link_token_encode(payload: &[u8], sig: &[u8; 32]) -> String {
    format!("{}.{}", B64.encode(payload), B64.encode(sig))
}

/// A reason: one line, not blank, at most `REASON_MAX` bytes.
pub fn reason(s: &str) -> Result<String, ParamError> {
    let r = s.trim();
    if r.is_empty() || r.len() > REASON_MAX || r.chars().any(char::is_control) {
        return Err(bad(
            "invalid_reason",
            format!("a reason is one line of 1 to {REASON_MAX} bytes"),
        ));
    }
    Ok(r.to_string())
}

/// A token's name: 1 to `TOKEN_NAME_MAX` bytes of letters, digits, space, `.`, `_`, `-`, `@`.
pub fn token_name(s: &str) -> Result<String, ParamError> {
    let ok = (1..=TOKEN_NAME_MAX).contains(&s.len())
        && s.trim() == s
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || " ._-@".contains(c));
    if ok {
        Ok(s.to_string())
    } else {
        Err(bad(
            "invalid_token_name",
            format!(
                "a token name is 1 to {TOKEN_NAME_MAX} characters of letters, digits, space, '.', '_', '-' and '@'"
            ),
        ))
    }
}

/// A token lifetime such as `90d`: from 1 hour to `TOKEN_LIFETIME_MAX`.
pub fn token_lifetime(s: Option<&str>) -> Result<std::time::Duration, ParamError> {
    let Some(s) = s else {
        return Ok(TOKEN_LIFETIME_DEFAULT);
    };
    crate::config::parse_duration(s)
        .filter(|d| (std::time::Duration::from_secs(3600)..=TOKEN_LIFETIME_MAX).contains(d))
        .ok_or_else(|| {
            bad(
                "invalid_expires",
                "a token lifetime is a duration from 1h to 365d, such as 90d",
            )
        })
}

/// An age X25519 recipient (`age1…`).
pub fn recipient(s: &str) -> Result<age::x25519::Recipient, ParamError> {
    if s.len() > 100 {
        return Err(bad(
            "invalid_recipient",
            "expected an age recipient (age1…)",
        ));
    }
    s.parse()
        .map_err(|_| bad("invalid_recipient", "expected an age recipient (age1…)"))
}

/// A passphrase for an encrypted download.
pub fn passphrase(s: &str) -> Result<(), ParamError> {
    if s.chars().count() < PASSPHRASE_MIN
        || s.len() > PASSPHRASE_MAX
        || s.chars().any(char::is_control)
    {
        return Err(bad(
            "invalid_passphrase",
            format!(
                "a passphrase is {PASSPHRASE_MIN} to {PASSPHRASE_MAX} bytes with no control characters"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-10T12:00:00Z")
            .unwrap()
            .to_utc()
    }

    fn claims() -> LinkClaims {
        LinkClaims {
            link_id: "0192f0c1-7a3b-7c4d-8e5f-0123456789ab".into(),
            tenant: TenantId::parse("acme").unwrap(),
            backup: BackupId::parse("0192f0c1-7a3b-7c4d-8e5f-0123456789ab").unwrap(),
            expires: 1_900_000_000,
            mode: LinkMode::Recipient,
        }
    }

    #[test]
    fn table_of_cases() {
        assert!(tenant_id("acme").is_ok());
        assert_eq!(tenant_id("../x").unwrap_err().code, "invalid_tenant_id");
        assert_eq!(backup_id("nope").unwrap_err().code, "invalid_backup_id");
        assert_eq!(limit(None, 100, 1000), Ok(100));
        assert_eq!(limit(Some("1000"), 100, 1000), Ok(1000));
        // Only the canonical decimal form: "01" and "+1" are refused, so an accepted
        // limit always prints back as it was written (the proptest found "01").
        for l in ["0", "1001", "-1", "", "1e3", " 5", "01", "+1", "007"] {
            assert_eq!(
                limit(Some(l), 100, 1000).unwrap_err().code,
                "invalid_limit",
                "{l}"
            );
        }
        let t = time("7d", now()).unwrap();
        assert_eq!(t.to_rfc3339(), "2026-03-03T12:00:00+00:00");
        assert_eq!(time("soon", now()).unwrap_err().code, "invalid_time");
        assert_eq!(
            range(Some(now()), Some(t)).unwrap_err().code,
            "invalid_range"
        );
        assert!(range(Some(t), Some(now())).is_ok());
        let q = query(Some("tenant=acme&limit=5"), &["tenant", "limit"]).unwrap();
        assert_eq!(q["tenant"], "acme");
        assert_eq!(
            query(Some("tenant=a&tenant=b"), &["tenant"])
                .unwrap_err()
                .code,
            "invalid_query"
        );
        assert_eq!(
            query(Some("x=1"), &["tenant"]).unwrap_err().code,
            "invalid_query"
        );
        assert_eq!(bearer(b"Bearer abc"), Ok("abc"));
        assert_eq!(bearer(b"bearer  abc "), Ok("abc"));
        for h in [
            &b"Basic abc"[..],
            b"Bearer",
            b"Bearer a b",
            b"\xff\xfe",
            b"",
        ] {
            assert!(bearer(h).is_err(), "{h:?}");
        }
        let token = ApiToken {
            id: "0123456789abcdef".into(),
            secret: [7; 32],
        };
        assert_eq!(ApiToken::parse(&token.encode()), Ok(token.clone()));
        let enc = token.encode();
        for bad_token in [
            &enc[..enc.len() - 1],
            &enc.replace("lbt_", "lbx_"),
            &enc.to_uppercase(),
            "lbt_0123456789abcdef_",
            "lbt__",
        ] {
            assert!(ApiToken::parse(bad_token).is_err(), "{bad_token}");
        }
        let c = claims();
        assert_eq!(LinkClaims::decode(&c.encode()), Ok(c.clone()));
        let tok = link_token_encode(&c.encode(), &[9; 32]);
        assert_eq!(link_token(&tok), Ok((c.encode(), [9; 32])));
        assert!(link_token("abc").is_err());
        assert!(link_token(&"a".repeat(600)).is_err());
        assert!(reason("INC-1 customer asked").is_ok());
        assert!(reason(" ").is_err());
        assert!(reason("a\nb").is_err());
        assert!(passphrase("correct horse battery").is_ok());
        assert!(passphrase("short").is_err());
        assert!(token_name("ci deploy").is_ok());
        assert!(token_name("").is_err());
        assert!(token_name("x\n").is_err());
        assert_eq!(
            token_lifetime(Some("90d")).unwrap(),
            std::time::Duration::from_secs(90 * 86400)
        );
        assert!(token_lifetime(Some("400d")).is_err());
        assert!(token_lifetime(Some("1m")).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary text never panics any parser, and what is accepted round-trips.
        #[test]
        fn arbitrary_strings(s in "\\PC{0,80}|[a-z0-9_.=&%-]{0,80}") {
            if let Ok(t) = tenant_id(&s) { prop_assert_eq!(t.as_str(), s.as_str()); }
            if let Ok(b) = backup_id(&s) { prop_assert_eq!(b.as_str(), s.as_str()); }
            let _ = time(&s, now());
            if let Ok(n) = limit(Some(&s), 100, LIMIT_MAX) {
                prop_assert_eq!(n.to_string(), s.clone());
            }
            if let Ok(q) = query(Some(&s), &["tenant", "actor", "since", "until", "limit"]) {
                let again: String = url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(q.iter().map(|(k, v)| (*k, v.as_str())))
                    .finish();
                prop_assert_eq!(query(Some(&again), &["tenant", "actor", "since", "until", "limit"]).unwrap(), q);
            }
            if let Ok(t) = bearer(s.as_bytes()) { prop_assert!(s.contains(t)); }
            if let Ok(t) = ApiToken::parse(&s) { prop_assert_eq!(t.encode(), s.clone()); }
            if let Ok((payload, sig)) = link_token(&s) {
                prop_assert_eq!(link_token_encode(&payload, &sig), s.clone());
            }
            if let Ok(c) = LinkClaims::decode(s.as_bytes()) {
                prop_assert_eq!(c.encode(), s.as_bytes().to_vec());
            }
            if let Ok(r) = reason(&s) { prop_assert_eq!(reason(&r).unwrap(), r); }
            if let Ok(n) = token_name(&s) { prop_assert_eq!(n, s.clone()); }
            let _ = token_lifetime(Some(&s));
            let _ = recipient(&s);
            let _ = passphrase(&s);
            let _ = uuid(&s, "link_invalid");
        }

        /// Arbitrary bytes in the places that take bytes.
        #[test]
        fn arbitrary_bytes(b in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = bearer(&b);
            if let Ok(c) = LinkClaims::decode(&b) { prop_assert_eq!(c.encode(), b.clone()); }
            let tok = link_token_encode(&b, &[1; 32]);
            if !b.is_empty() && tok.len() <= LINK_TOKEN_MAX {
                prop_assert_eq!(link_token(&tok).unwrap(), (b.clone(), [1; 32]));
            }
        }

        /// Valid values of every shape round-trip.
        #[test]
        fn valid_values_round_trip(
            id in "[0-9a-f]{16}",
            secret in proptest::array::uniform32(any::<u8>()),
            tenant in "[a-z0-9][a-z0-9_-]{0,62}",
            expires in any::<i64>(),
            mode in 0usize..3,
        ) {
            let t = ApiToken { id, secret };
            prop_assert_eq!(ApiToken::parse(&t.encode()).unwrap(), t.clone());
            let header = format!("Bearer {}", t.encode());
            prop_assert_eq!(bearer(header.as_bytes()).unwrap(), t.encode());
            let c = LinkClaims {
                link_id: uuid::Uuid::new_v4().to_string(),
                tenant: TenantId::parse(&tenant).unwrap(),
                backup: BackupId::generate(),
                expires,
                mode: [LinkMode::Plain, LinkMode::Recipient, LinkMode::Passphrase][mode],
            };
            prop_assert_eq!(LinkClaims::decode(&c.encode()).unwrap(), c.clone());
            let tok = link_token_encode(&c.encode(), &secret);
            prop_assert_eq!(link_token(&tok).unwrap(), (c.encode(), secret));
        }
    }
}
