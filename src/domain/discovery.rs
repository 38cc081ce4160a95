//! Tenant discovery, reconciled: what the catalog must change after the sources were read.
//!
//! Pure: the catalog's tenants and what the sources found in, the changes out.
//! - A tenant found active and unknown to the catalog is onboarded (its identity is created by
//!   its first backup).
//! - A tenant the catalog has as active that no source returns any more, or that a source
//!   reports terminated, is marked terminated: never deleted; retention's purge window starts.
//! - A tenant terminated in the catalog but active in a source is a conflict, reported and left
//!   alone: reinstating is an operator's decision (`lifeboat tenant reinstate`).
//! - If the terminations would exceed `terminate_share` of the active tenants, none is applied:
//!   a broken control-plane query must not terminate the fleet.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FoundState {
    Active,
    Terminated,
}

#[derive(Debug, Default, PartialEq)]
pub struct Reconcile {
    pub onboard: Vec<String>,
    pub terminate: Vec<String>,
    /// Terminated in the catalog, active in a source.
    pub conflicts: Vec<String>,
    /// Why the terminations were withheld, if they were.
    pub refused: Option<String>,
}

/// `known`: the catalog's tenants (id → state: `active`, `terminated`, `purged`).
/// `found`: every tenant the sources returned (id → state).
pub fn reconcile(
    known: &BTreeMap<String, String>,
    found: &BTreeMap<String, FoundState>,
    terminate_share: f64,
) -> Reconcile {
    let mut r = Reconcile::default();
    for (id, state) in found {
        match (known.get(id).map(String::as_str), state) {
            (None, FoundState::Active) => r.onboard.push(id.clone()),
            (Some("active"), FoundState::Terminated) => r.terminate.push(id.clone()),
            (Some("terminated"), FoundState::Active) => r.conflicts.push(id.clone()),
            _ => {}
        }
    }
    for (id, state) in known {
        if state == "active" && !found.contains_key(id) {
            r.terminate.push(id.clone());
        }
    }
    r.terminate.sort();
    let active = known.values().filter(|s| *s == "active").count();
    let limit = (active as f64 * terminate_share).floor() as usize;
    if r.terminate.len() > limit.max(1) {
        r.refused = Some(format!(
            "{} of {active} active tenants would be terminated, more than scheduler.terminate-share = {terminate_share}; \
             none was (check the discovery sources, or terminate them with `lifeboat tenant terminate`)",
            r.terminate.len()
        ));
        r.terminate.clear();
    }
    r
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters and `?` one.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Iterative matcher with one backtrack point: linear in practice, no recursion.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }
    fn found(pairs: &[(&str, FoundState)]) -> BTreeMap<String, FoundState> {
        pairs.iter().map(|(a, b)| (a.to_string(), *b)).collect()
    }
    use FoundState::*;

    #[test]
    fn onboards_new_terminates_vanished_and_reported() {
        let k = known(&[
            ("a", "active"),
            ("b", "active"),
            ("c", "active"),
            ("d", "terminated"),
            ("e", "active"),
            ("f", "active"),
            ("g", "active"),
            ("h", "active"),
        ]);
        let f = found(&[
            ("a", Active),
            ("b", Terminated),
            ("d", Active),
            ("e", Active),
            ("f", Active),
            ("g", Active),
            ("h", Active),
            ("new", Active),
            ("gone-new", Terminated),
        ]);
        let r = reconcile(&k, &f, 0.3);
        assert_eq!(r.onboard, vec!["new"]);
        assert_eq!(r.terminate, vec!["b", "c"]);
        assert_eq!(r.conflicts, vec!["d"]);
        assert_eq!(r.refused, None);
    }

    #[test]
    fn an_empty_source_does_not_terminate_the_fleet() {
        let k = known(&[("a", "active"), ("b", "active"), ("c", "active")]);
        let r = reconcile(&k, &BTreeMap::new(), 0.25);
        assert!(r.terminate.is_empty());
        assert!(r.refused.unwrap().contains("3 of 3 active tenants"));
        // One tenant may always go, however small the fleet.
        let r = reconcile(&k, &found(&[("a", Active), ("b", Active)]), 0.25);
        assert_eq!(r.terminate, vec!["c"]);
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("tenant_*", "tenant_42", true),
            ("tenant_*", "tenant_", true),
            ("tenant_*", "other", false),
            ("t?_x", "t1_x", true),
            ("t?_x", "t12_x", false),
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("", "a", false),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }
}
