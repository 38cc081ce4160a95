//! `config check`'s echo: the resolved configuration as TOML, secrets as where they come from.
//!
//! The resolved structs serialise themselves: their field names are the keys of lifeboat.toml
//! (a secret `X-env`/`X-file` shows as `X`), so a key is declared once and the echo cannot
//! drift from it. Tiers and drill plans come from files of their own and are shown as comments.

use super::{ApiRole, Config, DrillPlan, Tier};
use crate::domain::objectives::fmt_duration;

impl Config {
    /// The resolved configuration as TOML, with every secret replaced by where it comes from.
    pub fn redacted(&self) -> String {
        let mut out = format!("# {}\n", self.file.display());
        let toml = toml::to_string(self).expect("the resolved config serialises to TOML");
        out.push_str(&with_notes(&toml, &self.notes()));
        out.push('\n');
        for p in &self.drills {
            out.push_str(&drill_comment(p));
        }
        for t in self.tiers.values() {
            out.push_str(&tier_comment(t));
        }
        out
    }

    /// What an absent optional key means, where that is worth saying: (section, note).
    fn notes(&self) -> Vec<(&'static str, &'static str)> {
        let mut notes = Vec::new();
        if self.keys.master_identity.is_none() {
            notes.push((
                "[keys]",
                "no master identity: backup-only, restores are refused",
            ));
        }
        if self.api.as_ref().is_some_and(|a| a.tls.is_none()) {
            notes.push(("[api]", "plain HTTP: no tls-cert-file"));
        }
        if self
            .api
            .as_ref()
            .is_some_and(|a| a.allow.len() < ApiRole::ALL.len())
        {
            notes.push((
                "[api.allow]",
                "a role not listed may use its tokens from any address",
            ));
        }
        if self.audit.key.is_none() {
            notes.push(("[audit]", "no key: entries are hashed with plain SHA-256"));
        }
        if self.retention.schedule.is_none() {
            notes.push((
                "[retention]",
                "no schedule: `serve` never applies retention; run `retention apply` yourself",
            ));
        }
        notes
    }
}

/// `toml` with each note as a comment right under its section's header (at the end when the
/// section is not printed), where an operator reading that section looks.
fn with_notes(toml: &str, notes: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for line in toml.lines() {
        out.push_str(line);
        out.push('\n');
        for (_, note) in notes.iter().filter(|(section, _)| *section == line) {
            out.push_str(&format!("# {note}\n"));
        }
    }
    for (section, note) in notes {
        if !toml.lines().any(|l| l == *section) {
            out.push_str(&format!("# {section} {note}\n"));
        }
    }
    out
}

fn drill_comment(p: &DrillPlan) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        "# drill plan {} from {}\n# schedule = {}, tiers = {}, region = {}, catalog = {}, {}, time limit {}\n\n",
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
    )
}

fn tier_comment(t: &Tier) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    format!(
        "# tier {} from {}\n# cron = {}, priority = {}, rpo = {}, rto = {}, keep-last = {}, max-age = {}, deletion window = {}\n\n",
        t.name,
        t.file.display(),
        q(&t.cron_text),
        t.priority,
        fmt_duration(t.rpo),
        fmt_duration(t.rto),
        t.retention.keep_last,
        fmt_duration(t.retention.max_age),
        fmt_duration(t.deletion_window),
    )
}

/// How the resolved structs' values are written (`#[serde(serialize_with = …)]`).
pub(super) mod ser {
    use crate::domain::objectives::fmt_duration;
    use crate::secret::SecretSource;
    use serde::{Serialize, Serializer};
    use std::collections::BTreeMap;
    use std::fmt::Display;
    use std::path::Path;
    use std::time::Duration;

    pub fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&fmt_duration(*d))
    }

    pub fn duration_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => duration(d, s),
            None => s.serialize_none(),
        }
    }

    /// Where the secret comes from, never its value.
    pub fn secret<S: Serializer>(v: &SecretSource, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.describe())
    }

    /// An optional secret: left out when unset.
    pub fn secret_opt<S: Serializer>(v: &Option<SecretSource>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => secret(v, s),
            None => s.serialize_none(),
        }
    }

    /// An optional secret shown as `<none>` when unset.
    pub fn secret_or_none<S: Serializer>(
        v: &Option<SecretSource>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => secret(v, s),
            None => s.serialize_str("<none>"),
        }
    }

    pub fn path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&p.display())
    }

    /// A schedule as it was written; left out when unset.
    pub fn cron_opt<S: Serializer>(
        v: &Option<(String, cron::Schedule)>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some((text, _)) => s.serialize_str(text),
            None => s.serialize_none(),
        }
    }

    /// A table of lists, each item as it displays.
    pub fn display_map<K: Serialize, T: Display, S: Serializer>(
        m: &BTreeMap<K, Vec<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_map(
            m.iter()
                .map(|(k, v)| (k, v.iter().map(T::to_string).collect::<Vec<_>>())),
        )
    }

    pub fn display<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn display_list<T: Display, S: Serializer>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| x.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::raw::RawConfig;
    use super::super::readme_keys::defined;
    use super::*;
    use std::path::Path;

    /// Each key's path in `table` (array elements under their array's name).
    fn paths(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                toml::Value::Table(t) => paths(t, &path, out),
                toml::Value::Array(a) if a.iter().all(|e| e.is_table()) && !a.is_empty() => {
                    for e in a {
                        paths(e.as_table().expect("a table"), &path, out);
                    }
                }
                _ => out.push(path),
            }
        }
    }

    /// The echo is TOML holding exactly the resolved config, and each of its keys is one that
    /// lifeboat.toml defines (a secret's `X-env`/`X-file` shown as `X`, where it comes from).
    #[test]
    fn the_echo_is_the_resolved_config_under_lifeboat_toml_keys() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/lifeboat.example.toml");
        let example = Config::load(&file).expect("the shipped example loads");
        // What the example lacks: discovery of both kinds and notify sinks.
        let extra = format!(
            "{}\n[[discovery]]\nkind = \"server\"\nengine = \"postgres\"\n\
             url = \"postgres://lb@db3.internal:5432/postgres\"\npassword-env = \"PW\"\n\
             pattern = \"t_*\"\ntier = \"paid\"\n\n[[discovery]]\nkind = \"query\"\n\
             url = \"postgres://cp@control.internal:5432/cp\"\nquery = \"SELECT 1\"\n\n\
             [[notify]]\nname = \"ops\"\nurl = \"https://hooks.example.net/x\"\n\
             secret-env = \"WH\"\nevents = [\"backup.failing\"]\ntiers = [\"paid\"]\n\n\
             [[notify]]\nname = \"chat\"\nformat = \"slack\"\nurl-env = \"SLACK\"\n",
            std::fs::read_to_string(&file).unwrap()
        );
        let more = Config::parse(&file, &extra).expect("the example with more loads");
        for config in [example, more] {
            check(&config);
        }
    }

    fn check(config: &Config) {
        let echo = config.redacted();
        let table: toml::Table = toml::from_str(&echo).expect("the echo is TOML");
        assert_eq!(table, toml::Table::try_from(config).unwrap(), "{echo}");
        let keys = defined::<RawConfig>();
        let mut echoed = Vec::new();
        paths(&table, "", &mut echoed);
        assert!(echoed.len() > 30, "{echoed:?}");
        for k in echoed {
            assert!(
                keys.contains(&k) || keys.contains(&format!("{k}-env")),
                "the echo shows `{k}`, which lifeboat.toml does not define"
            );
        }
    }
}
