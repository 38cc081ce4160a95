//! One file being parsed (spans to `file:line:col`), and the value parsers every section uses.

use super::ConfigError;
use crate::tenant::TenantId;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;
use toml::Spanned;

/// One source file being parsed; turns spans into `file:line:col`.
pub(super) struct Source<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
}

impl Source<'_> {
    pub(super) fn at(&self, span: Range<usize>) -> String {
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
        format!("{}:{line}:{col}", self.file.display())
    }

    /// `raw`, a duration within `range`, or an error naming `field`, the value and `expected`.
    pub(super) fn duration_in(
        &self,
        raw: &Spanned<String>,
        field: &str,
        range: std::ops::RangeInclusive<Duration>,
        expected: &str,
    ) -> Result<Duration, ConfigError> {
        parse_duration(raw.get_ref())
            .filter(|d| range.contains(d))
            .ok_or_else(|| self.invalid(raw.span(), field, raw.get_ref(), expected))
    }

    /// `raw`, an integer within `range`, or an error naming `field`, the value and `expected`.
    pub(super) fn int_in(
        &self,
        raw: &Spanned<i64>,
        field: &str,
        range: std::ops::RangeInclusive<i64>,
        expected: &str,
    ) -> Result<i64, ConfigError> {
        let n = *raw.get_ref();
        if range.contains(&n) {
            Ok(n)
        } else {
            Err(self.invalid(raw.span(), field, n, expected))
        }
    }

    pub(super) fn invalid<T: ToString>(
        &self,
        span: Range<usize>,
        field: &str,
        value: T,
        expected: &str,
    ) -> ConfigError {
        ConfigError::Invalid {
            location: self.at(span),
            field: field.to_string(),
            value: value.to_string(),
            expected: expected.to_string(),
        }
    }

    pub(super) fn missing(&self, field: &str, context: &str) -> ConfigError {
        ConfigError::Parse {
            location: self.file.display().to_string(),
            message: format!("{field} is required {context}"),
        }
    }

    pub(super) fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|e| ConfigError::Parse {
            location: match e.span() {
                Some(span) => self.at(span),
                None => self.file.display().to_string(),
            },
            message: e.message().trim().to_string(),
        })
    }

    pub(super) fn duration(
        &self,
        field: &str,
        value: &Spanned<String>,
    ) -> Result<Duration, ConfigError> {
        parse_duration(value.get_ref()).ok_or_else(|| {
            self.invalid(
                value.span(),
                field,
                value.get_ref(),
                "a duration such as `30m`, `12h` or `90d`",
            )
        })
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// The text of a configuration file.
pub(super) fn read(file: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    })
}

/// Parses durations like `12h`, `90d`, `1h 30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim())
        .ok()
        .filter(|d| !d.is_zero())
}

/// Parses byte sizes like `16MiB`, `8 MB`, `5242880`.
pub fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().ok()?;
    let mult: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Parses a cron expression: standard 5 fields (min hour dom mon dow) or 6 with seconds first.
pub fn parse_cron(expr: &str) -> Option<cron::Schedule> {
    let fields = expr.split_whitespace().count();
    let full = match fields {
        5 => format!("0 {expr}"),
        6 => expr.to_string(),
        _ => return None,
    };
    cron::Schedule::from_str(&full).ok()
}

pub(super) fn is_tier_name(s: &str) -> bool {
    TenantId::parse(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_durations_and_crons() {
        assert_eq!(parse_size("16MiB"), Some(16 << 20));
        assert_eq!(parse_size("5 MB"), Some(5_000_000));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("12 parsecs"), None);
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43200)));
        assert_eq!(parse_duration("90d"), Some(Duration::from_secs(90 * 86400)));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("soon"), None);
        assert!(parse_cron("0 */6 * * *").is_some());
        assert!(parse_cron("30 0 */6 * * *").is_some());
        assert!(parse_cron("61 * * * *").is_none());
        assert!(parse_cron("every hour").is_none());
    }
}
