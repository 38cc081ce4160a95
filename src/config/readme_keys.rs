//! The README's two configuration tables name every key the parser accepts, and no other.
//!
//! The keys are not listed a second time here: they are asked of the serde definitions
//! themselves, whose unknown-key error names every key a table accepts.

use super::raw::{RawConfig, RawTier};
use super::{ConfigError, Source};
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::path::Path;

const PROBE: &str = "lifeboat-probe";

/// The keys a table accepts, if `text` (ending inside that table) reaches it.
fn expected<T: DeserializeOwned>(text: &str) -> Option<Vec<String>> {
    let src = Source {
        file: Path::new("probe.toml"),
        text: &format!("{text}{PROBE} = 1\n"),
    };
    match src.parse::<T>() {
        Err(ConfigError::Parse { message, .. })
            if message.contains(&format!("unknown field `{PROBE}`")) =>
        {
            let (_, list) = message.split_once("expected")?;
            Some(
                list.split('`')
                    .skip(1)
                    .step_by(2)
                    .map(String::from)
                    .collect(),
            )
        }
        _ => None,
    }
}

/// Every key under `path` (its headers in `text`): leaves as `a.b.key`, tables as `a.b`.
fn walk<T: DeserializeOwned>(text: &str, path: &str, out: &mut BTreeSet<String>) {
    for key in expected::<T>(text).expect("the probe reaches its table") {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        let table = format!("{text}[{full}]\n");
        let array = format!("{text}[[{full}]]\n");
        if expected::<T>(&table).is_some() {
            walk::<T>(&table, &full, out);
        } else if expected::<T>(&array).is_some() {
            walk::<T>(&array, &full, out);
        } else {
            out.insert(full);
            continue;
        }
        out.insert(full);
    }
}

pub(super) fn defined<T: DeserializeOwned>() -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    walk::<T>("", "", &mut keys);
    keys
}

/// The keys one README table names in its first column: `[section] a`, `b-env`/`-file`,
/// `[[array]] k = "v"`, or a bare `[table]` for all of its keys.
fn named(rows: &[&str]) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for row in rows {
        let cell = row
            .trim_start_matches('|')
            .split(" | ")
            .next()
            .unwrap_or("");
        let mut prefix = String::new();
        let mut last = String::new();
        for token in cell.split('`').skip(1).step_by(2) {
            let mut token = token.trim();
            if token.starts_with('[') {
                let end = token.rfind(']').expect("a closed header");
                prefix = token[..end].trim_matches(['[', ']']).to_string();
                token = token[end + 1..].trim();
                if token.is_empty() {
                    keys.insert(prefix.clone());
                    continue;
                }
            }
            let token = token.split(" = ").next().unwrap_or(token);
            let key = match token.strip_prefix('-') {
                Some(suffix) => match last.rsplit_once('-') {
                    Some((stem, _)) => format!("{stem}-{suffix}"),
                    None => panic!("{token} follows no key in {row}"),
                },
                None => token.to_string(),
            };
            last = key.clone();
            keys.insert(if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            });
        }
    }
    keys
}

/// The rows of the README's two tables under "## Configuration": lifeboat.toml's and a tier's.
fn readme_tables(readme: &str) -> (Vec<&str>, Vec<&str>) {
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .expect("a Configuration section")
        .split("\n## ")
        .next()
        .unwrap_or("");
    let mut tables = section.split("| key | meaning |").skip(1).map(|t| {
        t.lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
    });
    let config = tables.next().expect("the lifeboat.toml table");
    let tier = tables.next().expect("the tier file table");
    (config, tier)
}

/// Both ways: what the README names is defined, and what is defined is named (a leaf, or a
/// table the README names whole).
fn compare(what: &str, readme: &BTreeSet<String>, defined: &BTreeSet<String>) -> Vec<String> {
    let mut wrong = Vec::new();
    for k in readme.difference(defined) {
        wrong.push(format!(
            "{what}: the README names `{k}`, which no definition has"
        ));
    }
    for k in defined {
        let covered = readme.contains(k)
            || readme.iter().any(|t| k.starts_with(&format!("{t}.")))
            || defined.iter().any(|d| d.starts_with(&format!("{k}.")));
        if !covered {
            wrong.push(format!(
                "{what}: `{k}` is defined but the README does not name it"
            ));
        }
    }
    wrong
}

#[test]
fn readme_tables_name_every_key_and_no_other() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let (config_rows, tier_rows) = readme_tables(&readme);
    let mut wrong = compare(
        "lifeboat.toml",
        &named(&config_rows),
        &defined::<RawConfig>(),
    );
    wrong.extend(compare(
        "tier file",
        &named(&tier_rows),
        &defined::<RawTier>(),
    ));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_missing_row_is_found() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let (config_rows, _) = readme_tables(&readme);
    let fewer: Vec<&str> = config_rows
        .into_iter()
        .filter(|r| !r.starts_with("| `[pipeline] zstd-level`"))
        .collect();
    let wrong = compare("lifeboat.toml", &named(&fewer), &defined::<RawConfig>());
    assert_eq!(
        wrong,
        ["lifeboat.toml: `pipeline.zstd-level` is defined but the README does not name it"]
    );
}
