//! The catalog's state and status columns as enums. Each has exactly one text per variant (the
//! text the migrations' CHECKs allow), so the stored text stays what it always was and both
//! databases need no migration; a text no variant has is a `CatalogError::UnknownState` naming
//! where it was read.

use super::CatalogError;
use std::fmt;
use std::str::FromStr;

/// A state column's text that no variant has (`FromStr`'s error; `decode` adds where it was read).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?}")]
pub struct UnknownState {
    pub kind: &'static str,
    pub value: String,
}

/// Declares a state enum with its one `as_str`/`FromStr` pair. `Debug`, `Display` and
/// `Serialize` print the stored text, so every message and JSON document reads as it did when
/// the column was a `String`; comparing with a `&str` keeps the text comparisons of tests.
macro_rules! catalog_state {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vm])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The text stored in the catalog.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, UnknownState> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownState { kind: stringify!($name), value: s.to_string() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self.as_str(), f)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }
    };
}

catalog_state! {
    /// `tenants.state`.
    TenantState { Active = "active", Terminated = "terminated", Purged = "purged" }
}

impl From<&crate::domain::lifecycle::Lifecycle> for TenantState {
    /// The state a tenant's row has in each step of its lifecycle (as its records say).
    fn from(l: &crate::domain::lifecycle::Lifecycle) -> Self {
        use crate::domain::lifecycle::Lifecycle;
        match l {
            Lifecycle::Active => TenantState::Active,
            Lifecycle::Terminated { .. } => TenantState::Terminated,
            Lifecycle::Purged { .. } => TenantState::Purged,
        }
    }
}

catalog_state! {
    /// `backups.status`.
    BackupStatus { Running = "running", Completed = "completed", Failed = "failed" }
}

catalog_state! {
    /// `copies.state`: stored or queued but not yet verified, verified, or failed.
    CopyState { Pending = "pending", Verified = "verified", Failed = "failed" }
}

catalog_state! {
    /// `jobs.state`.
    JobState { Queued = "queued", Leased = "leased", Done = "done", Failed = "failed" }
}

catalog_state! {
    /// `restores.mode`: on the side, or over the live data.
    RestoreMode { Side = "side", Live = "live" }
}

catalog_state! {
    /// `restores.state`: running → restored (side) | swapped (live, the previous data kept) →
    /// finalized | rolled_back; failed at any step before the swap.
    RestoreState {
        Running = "running",
        Restored = "restored",
        Swapped = "swapped",
        Finalized = "finalized",
        RolledBack = "rolled_back",
        Failed = "failed",
    }
}

catalog_state! {
    /// `restore_approvals.state`.
    ApprovalState { Pending = "pending", Approved = "approved", Rejected = "rejected", Expired = "expired" }
}

catalog_state! {
    /// `notify_deliveries.state`.
    DeliveryState { Pending = "pending", Delivered = "delivered", GivenUp = "given_up" }
}

/// A state column's text read from `table`.`column` as its enum; an unknown text (a catalog
/// written by a newer version, or edited by hand) is an error naming where it was found.
pub(crate) fn decode<T: FromStr<Err = UnknownState>>(
    table: &'static str,
    column: &'static str,
    value: String,
) -> Result<T, CatalogError> {
    value.parse().map_err(|_| CatalogError::UnknownState {
        table,
        column,
        value,
    })
}

/// A tenant id read from `table`.`column`, validated as every id is before it was written.
pub(crate) fn decode_tenant(
    table: &'static str,
    column: &'static str,
    value: String,
) -> Result<crate::tenant::TenantId, CatalogError> {
    crate::tenant::TenantId::parse(&value).map_err(|source| CatalogError::InvalidTenantId {
        table,
        column,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: FromStr<Err = UnknownState> + Copy + PartialEq + fmt::Debug>(
        all: &[T],
        text: fn(T) -> &'static str,
    ) {
        for v in all {
            assert_eq!(text(*v).parse::<T>().unwrap(), *v);
        }
    }

    #[test]
    fn every_state_reads_back_its_text() {
        round_trip(TenantState::ALL, TenantState::as_str);
        round_trip(BackupStatus::ALL, BackupStatus::as_str);
        round_trip(CopyState::ALL, CopyState::as_str);
        round_trip(JobState::ALL, JobState::as_str);
        round_trip(RestoreMode::ALL, RestoreMode::as_str);
        round_trip(RestoreState::ALL, RestoreState::as_str);
        round_trip(ApprovalState::ALL, ApprovalState::as_str);
        round_trip(DeliveryState::ALL, DeliveryState::as_str);
        assert_eq!(RestoreState::RolledBack.to_string(), "rolled_back");
        assert_eq!(format!("{:?}", BackupStatus::Completed), "\"completed\"");
    }

    /// A state no variant has, written behind the catalog's back (CHECKs off), is an error
    /// when read, not a default.
    #[tokio::test]
    async fn a_stored_unknown_state_is_an_error_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let cat = super::super::Catalog::open_with(&url, None).await.unwrap();
        let acme = crate::tenant::TenantId::parse("acme").unwrap();
        cat.upsert_tenant(&acme, "sqlite", "paid", None, chrono::Utc::now())
            .await
            .unwrap();
        let super::super::Pool::Sqlite(pool) = &cat.pool else {
            unreachable!()
        };
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("PRAGMA ignore_check_constraints = ON")
            .execute(&mut *conn)
            .await
            .unwrap();
        sqlx::query("UPDATE tenants SET state = 'frozen' WHERE id = 'acme'")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        let e = cat.tenant(&acme).await.unwrap_err();
        assert!(
            matches!(&e, CatalogError::UnknownState { table: "tenants", column: "state", value } if value == "frozen"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_state_names_table_column_and_value() {
        let e = decode::<CopyState>("copies", "state", "lost".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "catalog: copies.state holds \"lost\", which this version does not know"
        );
    }
}
