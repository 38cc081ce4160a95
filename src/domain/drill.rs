//! Restore drills, the pure part: which tenants a run drills (the sampler), the RPO achieved per
//! region, and the RTO predicted for tenants not drilled, each with its reason.

use super::objectives::fmt_duration;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A tenant a drill plan may select.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub tenant: String,
    pub engine: String,
    pub tier: String,
    /// When it was last drilled successfully.
    pub last_drilled: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selected {
    pub tenant: String,
    pub reason: String,
}

/// The tenants one run drills. `within: None` selects every candidate. `Some(d)` draws a
/// sample: each day ⌈n / days(d)⌉ tenants, the least recently drilled first (never drilled
/// before all; ties in a order that changes every day), plus every tenant whose last drill is
/// a day away from being `d` old, plus for each engine of the fleet missing from the sample its
/// least recently drilled tenant. Run daily, every tenant is drilled at least once within `d`.
pub fn select(
    candidates: &[Candidate],
    within: Option<Duration>,
    now: DateTime<Utc>,
) -> Vec<Selected> {
    let Some(within) = within else {
        return candidates
            .iter()
            .map(|c| Selected {
                tenant: c.tenant.clone(),
                reason: "every tenant of the plan".into(),
            })
            .collect();
    };
    let days = (within.as_secs() / 86_400).max(1) as usize;
    let per_day = candidates.len().div_ceil(days);
    let day = now.format("%Y-%m-%d").to_string();
    let tie = |t: &str| Sha256::digest(format!("{day}/{t}").as_bytes());
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| {
        a.last_drilled
            .cmp(&b.last_drilled)
            .then_with(|| tie(&a.tenant).cmp(&tie(&b.tenant)))
    });
    let due_by =
        now - chrono::Duration::from_std(within).unwrap_or_default() + chrono::Duration::days(1);
    let reason = |c: &Candidate| match c.last_drilled {
        None => "never drilled".to_string(),
        Some(at) => format!(
            "last drilled {} ago",
            fmt_duration((now - at).to_std().unwrap_or_default())
        ),
    };
    let mut out = Vec::new();
    let mut taken = BTreeSet::new();
    for (i, c) in order.iter().enumerate() {
        // Never drilled is not overdue: those sort first, so the daily share reaches them.
        let overdue = c.last_drilled.is_some_and(|at| at <= due_by);
        if i < per_day || overdue {
            let why = if i < per_day {
                format!("{}: among the {per_day} least recently drilled", reason(c))
            } else {
                format!(
                    "{}: due within a day of {}",
                    reason(c),
                    fmt_duration(within)
                )
            };
            out.push(Selected {
                tenant: c.tenant.clone(),
                reason: why,
            });
            taken.insert(c.tenant.as_str());
        }
    }
    let engines: BTreeSet<&str> = candidates.iter().map(|c| c.engine.as_str()).collect();
    for engine in engines {
        let covered = candidates
            .iter()
            .any(|c| c.engine == engine && taken.contains(c.tenant.as_str()));
        if !covered && let Some(c) = order.iter().find(|c| c.engine == engine) {
            out.push(Selected {
                tenant: c.tenant.clone(),
                reason: format!("{}: the sample's only {engine} tenant", reason(c)),
            });
            taken.insert(c.tenant.as_str());
        }
    }
    out
}

/// A recovery point held in one region.
#[derive(Debug, Clone)]
pub struct Point {
    pub region: String,
    pub at: DateTime<Utc>,
}

/// The RPO achieved by one tenant's copies in one region.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RegionRpo {
    pub region: String,
    /// Age of the newest recovery point (`None`: the region holds none).
    pub newest_age: Option<Duration>,
    /// The longest time without a recovery point in the window, the current one included.
    pub worst_gap: Option<Duration>,
}

/// The RPO achieved per region over `window` before `now` (each region's copies on their own:
/// a backup whose copy never reached a region leaves a gap there).
pub fn rpo_by_region(
    points: &[Point],
    regions: &[String],
    window: Duration,
    now: DateTime<Utc>,
) -> Vec<RegionRpo> {
    let start = now - chrono::Duration::from_std(window).unwrap_or_default();
    let mut by_region: BTreeMap<&str, Vec<DateTime<Utc>>> = BTreeMap::new();
    for p in points.iter().filter(|p| p.at <= now) {
        by_region.entry(&p.region).or_default().push(p.at);
    }
    regions
        .iter()
        .map(|region| {
            let mut at = by_region.remove(region.as_str()).unwrap_or_default();
            at.sort();
            let Some(&newest) = at.last() else {
                return RegionRpo {
                    region: region.clone(),
                    newest_age: None,
                    worst_gap: None,
                };
            };
            // Gaps ending inside the window (the first may start before it), then the open one.
            let mut worst = now - newest;
            for w in at.windows(2) {
                if w[1] >= start {
                    worst = worst.max(w[1] - w[0]);
                }
            }
            RegionRpo {
                region: region.clone(),
                newest_age: Some((now - newest).to_std().unwrap_or_default()),
                worst_gap: Some(worst.to_std().unwrap_or_default()),
            }
        })
        .collect()
}

/// Whether a tenant's RPO meets `objective` in every region; the reason names the first miss.
pub fn rpo_verdict(rpo: &[RegionRpo], objective: Duration) -> Result<(), String> {
    for r in rpo {
        match (r.newest_age, r.worst_gap) {
            (None, _) | (_, None) => {
                return Err(format!("region {} holds no recovery point", r.region));
            }
            (Some(age), _) if age > objective => {
                return Err(format!(
                    "region {}: newest recovery point is {} old, objective {}",
                    r.region,
                    fmt_duration(age),
                    fmt_duration(objective)
                ));
            }
            (_, Some(gap)) if gap > objective => {
                return Err(format!(
                    "region {}: {} without a recovery point in the window, objective {}",
                    r.region,
                    fmt_duration(gap),
                    fmt_duration(objective)
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// One measured restore: its artifact size and time.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub artifact_bytes: u64,
    pub rto: Duration,
}

/// The restore time predicted for an artifact of `bytes` from the measured restores of its tier:
/// the tier's fixed cost (the fastest measured restore of the smallest artifact) plus the bytes
/// at the tier's measured throughput. `None` without measurements.
pub fn predict_rto(measured: &[Measured], bytes: u64) -> Option<Duration> {
    let fixed = measured
        .iter()
        .min_by_key(|m| (m.artifact_bytes, m.rto))?
        .rto;
    let total_bytes: u64 = measured.iter().map(|m| m.artifact_bytes).sum();
    let total_time: f64 = measured.iter().map(|m| m.rto.as_secs_f64()).sum();
    if total_bytes == 0 || total_time <= 0.0 {
        return Some(fixed);
    }
    let per_byte = total_time / total_bytes as f64;
    Some(fixed.max(Duration::from_secs_f64(per_byte * bytes as f64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 3, 0, 0).unwrap()
    }

    fn fleet(n: usize) -> Vec<Candidate> {
        (0..n)
            .map(|i| Candidate {
                tenant: format!("t{i:03}"),
                engine: ["sqlite", "postgres", "sqlite", "sqlite"][i % 4].into(),
                tier: "paid".into(),
                last_drilled: None,
            })
            .collect()
    }

    #[test]
    fn without_a_sample_every_candidate_is_drilled() {
        assert_eq!(select(&fleet(7), None, now()).len(), 7);
    }

    #[test]
    fn a_daily_sample_drills_every_tenant_within_the_window_and_covers_every_engine() {
        let mut f = fleet(100);
        f.push(Candidate {
            tenant: "maria".into(),
            engine: "mariadb".into(),
            tier: "free".into(),
            last_drilled: Some(now()),
        });
        let within = Duration::from_secs(30 * 86_400);
        let mut last: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut worst = chrono::Duration::zero();
        for day in 0..90 {
            let today = now() + chrono::Duration::days(day);
            for c in &mut f {
                c.last_drilled = last.get(&c.tenant).copied().or(c.last_drilled);
            }
            let picked = select(&f, Some(within), today);
            let engines: BTreeSet<&str> = picked
                .iter()
                .map(|s| {
                    f.iter()
                        .find(|c| c.tenant == s.tenant)
                        .unwrap()
                        .engine
                        .as_str()
                })
                .collect();
            assert_eq!(engines.len(), 3, "day {day}: every engine in the sample");
            assert!(
                picked.len() <= 101usize.div_ceil(30) + 3,
                "day {day}: {}",
                picked.len()
            );
            for s in picked {
                last.insert(s.tenant, today);
            }
            if day >= 30 {
                for c in &f {
                    worst = worst.max(today - last[&c.tenant]);
                }
            }
        }
        assert!(worst <= chrono::Duration::days(30), "worst gap {worst}");
    }

    #[test]
    fn the_sample_changes_from_day_to_day_among_equals() {
        let f = fleet(100);
        let within = Some(Duration::from_secs(30 * 86_400));
        let a = select(&f, within, now());
        let b = select(&f, within, now() + chrono::Duration::days(1));
        assert_ne!(a, b);
        assert_eq!(a, select(&f, within, now()), "repeatable on one day");
        assert!(a[0].reason.starts_with("never drilled"), "{}", a[0].reason);
    }

    fn p(region: &str, hours_ago: i64) -> Point {
        Point {
            region: region.into(),
            at: now() - chrono::Duration::hours(hours_ago),
        }
    }

    #[test]
    fn rpo_counts_each_region_on_its_own() {
        let regions = vec!["eu".to_string(), "us".to_string()];
        // eu: every 6 h; us missed the copies of 30 h and 36 h ago.
        let mut points: Vec<Point> = (0..10).map(|i| p("eu", 6 * i)).collect();
        points.extend([0, 6, 12, 18, 24, 42, 48].map(|h| p("us", h)));
        let rpo = rpo_by_region(&points, &regions, Duration::from_secs(7 * 86_400), now());
        assert_eq!(rpo[0].worst_gap, Some(Duration::from_secs(6 * 3600)));
        assert_eq!(rpo[1].worst_gap, Some(Duration::from_secs(18 * 3600)));
        assert_eq!(rpo[1].newest_age, Some(Duration::ZERO));
        let twelve = Duration::from_secs(12 * 3600);
        let why = rpo_verdict(&rpo, twelve).unwrap_err();
        assert!(
            why.contains("region us: 18h without a recovery point"),
            "{why}"
        );
        assert!(rpo_verdict(&rpo[..1], twelve).is_ok());
    }

    #[test]
    fn rpo_of_backups_that_stopped_is_the_open_gap() {
        let regions = vec!["eu".to_string()];
        let rpo = rpo_by_region(
            &[p("eu", 100), p("eu", 106)],
            &regions,
            Duration::from_secs(30 * 86_400),
            now(),
        );
        assert_eq!(rpo[0].newest_age, Some(Duration::from_secs(100 * 3600)));
        assert_eq!(rpo[0].worst_gap, Some(Duration::from_secs(100 * 3600)));
        let why = rpo_verdict(&rpo, Duration::from_secs(12 * 3600)).unwrap_err();
        assert!(why.contains("newest recovery point is 4d 4h old"), "{why}");
        let none = rpo_by_region(&[], &regions, Duration::from_secs(86_400), now());
        assert_eq!(
            rpo_verdict(&none, Duration::from_secs(1)).unwrap_err(),
            "region eu holds no recovery point"
        );
    }

    #[test]
    fn prediction_scales_with_size_above_the_fixed_cost() {
        let m = [
            Measured {
                artifact_bytes: 1_000,
                rto: Duration::from_secs(2),
            },
            Measured {
                artifact_bytes: 9_000,
                rto: Duration::from_secs(8),
            },
        ];
        // 10 s for 10 kB: 1 ms per byte.
        assert_eq!(predict_rto(&m, 100_000), Some(Duration::from_secs(100)));
        assert_eq!(
            predict_rto(&m, 10),
            Some(Duration::from_secs(2)),
            "never below the fixed cost"
        );
        assert_eq!(predict_rto(&[], 10), None);
    }
}
