//! `[[regions]]`: where backups are stored (a directory or an S3 bucket), one primary.

use super::echo::ser;
use super::raw::RawRegion;
use super::{ConfigError, Source, is_tier_name};
use crate::secret::SecretSource;
use std::path::PathBuf;

/// `[[regions]] region` (S3 signing region) unless set.
pub const S3_REGION: &str = "us-east-1";
/// `[[regions]] path-style` unless set.
pub const PATH_STYLE: bool = true;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionRole {
    Primary,
    Secondary,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RegionConfig {
    pub name: String,
    pub role: RegionRole,
    pub prefix: String,
    #[serde(flatten)]
    pub backend: RegionBackend,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RegionBackend {
    Dir {
        #[serde(serialize_with = "ser::path")]
        path: PathBuf,
    },
    #[serde(rename_all = "kebab-case")]
    S3 {
        endpoint: String,
        region: String,
        bucket: String,
        path_style: bool,
        #[serde(serialize_with = "ser::secret")]
        access_key_id: SecretSource,
        #[serde(serialize_with = "ser::secret")]
        secret_access_key: SecretSource,
    },
}

pub(super) fn parse_regions(
    src: &Source,
    raw: Vec<RawRegion>,
) -> Result<Vec<RegionConfig>, ConfigError> {
    let mut regions: Vec<RegionConfig> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let field = |f: &str| format!("regions[{i}].{f}");
        let name = r.name.get_ref().clone();
        if !is_tier_name(&name) {
            return Err(src.invalid(
                r.name.span(),
                &field("name"),
                &name,
                "1 to 63 characters of a-z, 0-9, '_' and '-'",
            ));
        }
        if regions.iter().any(|o| o.name == name) {
            return Err(src.invalid(
                r.name.span(),
                &field("name"),
                &name,
                "a name used by no other region",
            ));
        }
        let role = match r.role.get_ref().as_str() {
            "primary" => RegionRole::Primary,
            "secondary" => RegionRole::Secondary,
            other => {
                return Err(src.invalid(
                    r.role.span(),
                    &field("role"),
                    other,
                    "`primary` or `secondary`",
                ));
            }
        };
        let prefix = match &r.prefix {
            Some(p) => {
                let v = p.get_ref().trim_matches('/').to_string();
                let ok = v.split('/').all(|seg| {
                    seg.is_empty()
                        || (seg != "."
                            && seg != ".."
                            && seg
                                .chars()
                                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
                });
                if !ok {
                    return Err(src.invalid(
                        p.span(),
                        &field("prefix"),
                        p.get_ref(),
                        "path segments of a-z, A-Z, 0-9, '-', '_' and '.', without `..`",
                    ));
                }
                v
            }
            None => String::new(),
        };
        let backend = match r.kind.get_ref().as_str() {
            "dir" => RegionBackend::Dir {
                path: src.path(
                    r.path
                        .as_deref()
                        .ok_or_else(|| src.missing(&field("path"), "for kind = \"dir\""))?,
                ),
            },
            "s3" => {
                let endpoint = r
                    .endpoint
                    .ok_or_else(|| src.missing(&field("endpoint"), "for kind = \"s3\""))?;
                if url::Url::parse(endpoint.get_ref())
                    .map(|u| !matches!(u.scheme(), "http" | "https"))
                    .unwrap_or(true)
                {
                    return Err(src.invalid(
                        endpoint.span(),
                        &field("endpoint"),
                        endpoint.get_ref(),
                        "an http:// or https:// URL",
                    ));
                }
                let bucket = r
                    .bucket
                    .ok_or_else(|| src.missing(&field("bucket"), "for kind = \"s3\""))?;
                let secret = |name: &str, env, file: Option<String>| {
                    SecretSource::from_pair(&field(name), env, file.map(|p| src.path(&p)))
                        .map_err(|source| ConfigError::Secret {
                            file: src.file.to_path_buf(),
                            source,
                        })?
                        .ok_or_else(|| {
                            src.missing(
                                &format!("{0}-env or {0}-file", field(name)),
                                "for kind = \"s3\"",
                            )
                        })
                };
                RegionBackend::S3 {
                    endpoint: endpoint.into_inner(),
                    region: r.region.unwrap_or_else(|| S3_REGION.into()),
                    bucket: bucket.into_inner(),
                    path_style: r.path_style.unwrap_or(PATH_STYLE),
                    access_key_id: secret(
                        "access-key-id",
                        r.access_key_id_env,
                        r.access_key_id_file,
                    )?,
                    secret_access_key: secret(
                        "secret-access-key",
                        r.secret_access_key_env,
                        r.secret_access_key_file,
                    )?,
                }
            }
            other => {
                return Err(src.invalid(r.kind.span(), &field("kind"), other, "`dir` or `s3`"));
            }
        };
        regions.push(RegionConfig {
            name,
            role,
            prefix,
            backend,
        });
    }
    let primaries = regions
        .iter()
        .filter(|r| r.role == RegionRole::Primary)
        .count();
    let secondaries = regions.len() - primaries;
    if primaries != 1 || secondaries < 1 {
        return Err(ConfigError::Parse {
            location: src.file.display().to_string(),
            message: format!(
                "regions: found {primaries} primary and {secondaries} secondary regions; exactly one `role = \"primary\"` and at least one `role = \"secondary\"` are required"
            ),
        });
    }
    Ok(regions)
}
