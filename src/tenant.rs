//! Tenant ids: validated once, here, before they become part of a path or an object key.

use std::fmt;

/// A validated tenant id (`^[a-z0-9][a-z0-9_-]{0,62}$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "invalid tenant id {value:?}: {why}; a tenant id is 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit"
)]
pub struct InvalidTenantId {
    pub value: String,
    pub why: &'static str,
}

impl TenantId {
    pub fn parse(value: &str) -> Result<Self, InvalidTenantId> {
        let err = |why| InvalidTenantId {
            value: value.to_string(),
            why,
        };
        let mut chars = value.chars();
        let first = chars.next().ok_or_else(|| err("it is empty"))?;
        if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
            return Err(err("it must start with a-z or 0-9"));
        }
        if value.len() > 63 {
            return Err(err("it is longer than 63 characters"));
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') {
            return Err(err("it contains a character outside a-z, 0-9, '_' and '-'"));
        }
        Ok(TenantId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// Serialized as its text, as the `String` it replaced was.
impl serde::Serialize for TenantId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl PartialEq<str> for TenantId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for TenantId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids() {
        let cases: &[(&str, bool)] = &[
            ("acme", true),
            ("a", true),
            ("0day", true),
            ("acme-eu_2", true),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
            ("", false),
            ("../etc", false),
            ("acme/../x", false),
            ("Acme", false),
            ("-acme", false),
            ("_acme", false),
            ("acme.db", false),
            ("acme\0", false),
            ("acmé", false),
            ("a b", false),
        ];
        for (value, ok) in cases {
            assert_eq!(TenantId::parse(value).is_ok(), *ok, "tenant id {value:?}");
        }
    }
}
