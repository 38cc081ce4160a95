//! Tier files (`schedules/NAME.toml`): schedule, objectives, retention, deletion window.

use super::echo::ser;
use super::raw::RawTier;
use super::{ConfigError, Source, is_tier_name, parse_cron, read};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A tier file's `spread` unless set: every tenant starts at the cron time.
pub const SPREAD: Duration = Duration::ZERO;
/// A tier file's `[retention] min-keep` unless set.
pub const MIN_KEEP: u32 = 1;

/// A tier: a named service level from `schedules/NAME.toml`.
#[derive(Debug, Clone)]
pub struct Tier {
    pub name: String,
    pub file: PathBuf,
    pub cron_text: String,
    pub cron: cron::Schedule,
    /// Tenants start at a fixed offset within this window after each cron time.
    pub spread: Duration,
    pub priority: u32,
    pub rpo: Duration,
    pub rto: Duration,
    pub retention: RetentionPolicy,
    pub deletion_window: Duration,
}

/// What retention keeps, per tier (with per-tenant overrides). A backup is kept when any rule
/// keeps it; `max-age` caps every rule but `min-keep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    pub keep_last: u32,
    pub max_age: Duration,
    /// The newest backup of each of the last N days (weeks, months, years) that have backups.
    pub keep_daily: u32,
    pub keep_weekly: u32,
    pub keep_monthly: u32,
    pub keep_yearly: u32,
    /// The newest N backups are kept whatever their age.
    pub min_keep: u32,
}

/// A tenant's overrides of its tier's retention policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RetentionOverride {
    pub keep_last: Option<u32>,
    #[serde(serialize_with = "ser::duration_opt")]
    pub max_age: Option<Duration>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub min_keep: Option<u32>,
}

impl RetentionOverride {
    /// Nothing overridden (the echo leaves `[tenants.retention]` out).
    pub fn is_unset(&self) -> bool {
        *self == RetentionOverride::default()
    }

    pub fn apply(&self, p: RetentionPolicy) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last.unwrap_or(p.keep_last),
            max_age: self.max_age.unwrap_or(p.max_age),
            keep_daily: self.keep_daily.unwrap_or(p.keep_daily),
            keep_weekly: self.keep_weekly.unwrap_or(p.keep_weekly),
            keep_monthly: self.keep_monthly.unwrap_or(p.keep_monthly),
            keep_yearly: self.keep_yearly.unwrap_or(p.keep_yearly),
            min_keep: self.min_keep.unwrap_or(p.min_keep),
        }
    }
}

/// Loads every `*.toml` under the schedules directory; the tier's name is the file's stem.
pub fn load_tiers(dir: &Path) -> Result<BTreeMap<String, Tier>, ConfigError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
        file: dir.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    let mut tiers = BTreeMap::new();
    for file in files {
        let tier = load_tier(&file)?;
        tiers.insert(tier.name.clone(), tier);
    }
    if tiers.is_empty() {
        return Err(ConfigError::Parse {
            location: dir.display().to_string(),
            message:
                "no tier file (`NAME.toml`) found; ship at least one, e.g. schedules/standard.toml"
                    .into(),
        });
    }
    Ok(tiers)
}

pub fn load_tier(file: &Path) -> Result<Tier, ConfigError> {
    let text = read(file)?;
    let src = Source { file, text: &text };
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    if !is_tier_name(&name) {
        return Err(ConfigError::Parse {
            location: file.display().to_string(),
            message: format!(
                "the file name gives tier name {name:?}; a tier name is 1 to 63 characters of a-z, 0-9, '_' and '-'"
            ),
        });
    }
    let raw: RawTier = src.parse()?;
    let cron = parse_cron(raw.cron.get_ref()).ok_or_else(|| {
        src.invalid(
            raw.cron.span(),
            "cron",
            raw.cron.get_ref(),
            "a cron expression of 5 fields (minute hour day-of-month month day-of-week), e.g. \"0 */6 * * *\", or 6 with seconds first",
        )
    })?;
    let keep_last = raw.retention.keep_last;
    if *keep_last.get_ref() == 0 {
        return Err(src.invalid(
            keep_last.span(),
            "retention.keep-last",
            0,
            "at least 1 (the newest backup is always kept)",
        ));
    }
    Ok(Tier {
        name,
        file: file.to_path_buf(),
        cron_text: raw.cron.get_ref().clone(),
        cron,
        spread: match &raw.spread {
            Some(s) => src.duration("spread", s)?,
            None => SPREAD,
        },
        priority: raw.priority,
        rpo: src.duration("objectives.rpo", &raw.objectives.rpo)?,
        rto: src.duration("objectives.rto", &raw.objectives.rto)?,
        retention: RetentionPolicy {
            keep_last: *keep_last.get_ref(),
            max_age: src.duration("retention.max-age", &raw.retention.max_age)?,
            keep_daily: raw.retention.keep_daily,
            keep_weekly: raw.retention.keep_weekly,
            keep_monthly: raw.retention.keep_monthly,
            keep_yearly: raw.retention.keep_yearly,
            min_keep: match &raw.retention.min_keep {
                None => MIN_KEEP,
                Some(m) if *m.get_ref() == 0 => {
                    return Err(src.invalid(m.span(), "retention.min-keep", 0, "at least 1"));
                }
                Some(m) => *m.get_ref(),
            },
        },
        deletion_window: src.duration("deletion.window", &raw.deletion.window)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> Tier {
        load_tier(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("schedules")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn shipped_tiers_hold_the_seed_policy() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        for (file, rpo) in [
            ("paid.toml", h(12)),
            ("free.toml", h(90)),
            ("standard.toml", h(18)),
        ] {
            let t = shipped(file);
            assert_eq!(t.rpo, rpo, "{file}");
            assert_eq!(t.retention.keep_last, 24, "{file}");
            assert_eq!(t.retention.max_age, h(24 * 120), "{file}");
            assert_eq!(t.deletion_window, h(24 * 90), "{file}");
        }
        let all = load_tiers(&Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules")).unwrap();
        assert_eq!(all.len(), 3);
    }
}
