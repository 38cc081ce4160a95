//! The notification outbox (`notify_events`) and its delivery attempts (`notify_deliveries`).
//!
//! Every event is written by `outbox!`, inside the transaction of the change it reports, so a
//! change that commits always has its event and one that rolls back never does. `serve`'s
//! delivery worker reads the open events, plans (`domain::notify::plan`), sends, and records each
//! outcome here; it holds no transaction while it sends.

use super::{BeginWrite, Catalog, CatalogError, Pool, on_pool};
use crate::domain::notify::{DeliveryState, EventKind, OpenEvent};
use chrono::{DateTime, Utc};
use sqlx::Row;
use std::collections::HashMap;

/// An event to write. `data` holds ids, times, digests, counts and names only: never a secret, a
/// token, a link, a passphrase or tenant data (the payload is sent outside the process).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: String,
    pub kind: EventKind,
    pub tenant: Option<String>,
    pub tier: Option<String>,
    pub at: DateTime<Utc>,
    pub data: serde_json::Value,
}

impl NewEvent {
    /// A new event with a fresh id (UUIDv7: sorts by time, unique across workers).
    pub fn new(
        kind: EventKind,
        tenant: Option<&str>,
        tier: Option<&str>,
        at: DateTime<Utc>,
        data: serde_json::Value,
    ) -> NewEvent {
        NewEvent {
            id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            kind,
            tenant: tenant.map(str::to_string),
            tier: tier.map(str::to_string),
            at,
            data,
        }
    }
}

/// An event as stored, with where it stands per sink.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub tenant: Option<String>,
    pub tier: Option<String>,
    pub created_at: DateTime<Utc>,
    pub data: String,
    pub settled_at: Option<DateTime<Utc>>,
}

impl EventRow {
    pub fn open(&self) -> Option<OpenEvent> {
        Some(OpenEvent {
            seq: self.seq,
            id: self.id.clone(),
            kind: EventKind::parse(&self.kind)?,
            tenant: self.tenant.clone(),
            tier: self.tier.clone(),
            created_at: self.created_at,
        })
    }
}

/// One (event, sink) attempt record, for `notify list`.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub event_id: String,
    pub sink: String,
    pub state: super::DeliveryState,
    pub attempts: i64,
    pub next_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// Inserts `event` (a `&NewEvent`) into the outbox on the transaction `tx`: the one way events
/// are written (a macro so one body serves both databases' transactions).
macro_rules! outbox {
    ($tx:expr, $event:expr) => {{
        let e: &$crate::catalog::NewEvent = $event;
        sqlx::query(
            "INSERT INTO notify_events (id, kind, tenant_id, tier, created_at, data) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&e.id)
        .bind(e.kind.as_str())
        .bind(&e.tenant)
        .bind(&e.tier)
        .bind(e.at)
        .bind(e.data.to_string())
        .execute($tx)
        .await?;
    }};
}

macro_rules! event_from {
    ($row:expr) => {{
        let r = $row;
        EventRow {
            seq: r.get("seq"),
            id: r.get("id"),
            kind: r.get("kind"),
            tenant: r.get("tenant_id"),
            tier: r.get("tier"),
            created_at: r.get("created_at"),
            data: r.get("data"),
            settled_at: r.get("settled_at"),
        }
    }};
}

impl Catalog {
    /// Writes an event that goes with no other change (a region that stopped answering, a
    /// failed audit verification): its own transaction.
    pub async fn emit(&self, event: &NewEvent) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            outbox!(&mut *tx, event);
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records that `subject`'s condition (`region:NAME`, `rpo:TENANT`) holds (`on`) or not,
    /// writing `event` with the change when it is one. Whether it changed.
    pub async fn change_condition(
        &self,
        subject: &str,
        on: bool,
        state: &str,
        event: Option<&NewEvent>,
    ) -> Result<bool, CatalogError> {
        let at = event.map_or_else(Utc::now, |e| e.at);
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let changed = if on {
                sqlx::query(
                    "INSERT INTO notify_conditions (subject, state, changed_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (subject) DO NOTHING",
                )
                .bind(subject)
                .bind(state)
                .bind(at)
                .execute(&mut *tx)
                .await?
                .rows_affected()
            } else {
                sqlx::query("DELETE FROM notify_conditions WHERE subject = $1")
                    .bind(subject)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
            } == 1;
            if changed && let Some(event) = event {
                outbox!(&mut *tx, event);
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    /// The oldest `limit` events not yet settled, in `seq` order.
    pub async fn open_events(&self, limit: i64) -> Result<Vec<EventRow>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT * FROM notify_events WHERE settled_at IS NULL ORDER BY seq LIMIT $1",
            )
            .bind(limit)
            .fetch_all(pool)
            .await?;
            Ok(rows.iter().map(|r| event_from!(r)).collect())
        })
    }

    /// The newest `limit` events, newest first (settled ones too), for `notify list`.
    pub async fn recent_events(&self, limit: i64) -> Result<Vec<EventRow>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query("SELECT * FROM notify_events ORDER BY seq DESC LIMIT $1")
                .bind(limit)
                .fetch_all(pool)
                .await?;
            Ok(rows.iter().map(|r| event_from!(r)).collect())
        })
    }

    /// The recorded attempts of events from `min_seq` on, by (event id, sink).
    pub async fn deliveries_since(&self, min_seq: i64) -> Result<Vec<DeliveryRow>, CatalogError> {
        on_pool!(self, pool => {
            let rows = sqlx::query(
                "SELECT d.* FROM notify_deliveries d JOIN notify_events e ON e.id = d.event_id \
                 WHERE e.seq >= $1",
            )
            .bind(min_seq)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(DeliveryRow {
                        event_id: r.get("event_id"),
                        sink: r.get("sink"),
                        state: super::states::decode("notify_deliveries", "state", r.get("state"))?,
                        attempts: r.get("attempts"),
                        next_at: r.get("next_at"),
                        last_error: r.get("last_error"),
                    })
                })
                .collect()
        })
    }

    /// Records where (event, sink) stands after `attempts` tries (or a decision to give up).
    pub async fn record_delivery(
        &self,
        event_id: &str,
        sink: &str,
        state: DeliveryState,
        attempts: u32,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        let (name, next_at) = match state {
            DeliveryState::Pending { next_at, .. } => ("pending", Some(next_at)),
            DeliveryState::Delivered => ("delivered", None),
            DeliveryState::GivenUp => ("given_up", None),
        };
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO notify_deliveries (event_id, sink, state, attempts, next_at, last_error, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (event_id, sink) DO UPDATE SET \
                 state = excluded.state, attempts = excluded.attempts, next_at = excluded.next_at, \
                 last_error = COALESCE(excluded.last_error, notify_deliveries.last_error), \
                 updated_at = excluded.updated_at",
            )
            .bind(event_id)
            .bind(sink)
            .bind(name)
            .bind(i64::from(attempts))
            .bind(next_at)
            .bind(error)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Marks events settled: every sink that wants them is done with them.
    pub async fn settle_events(
        &self,
        ids: &[String],
        now: DateTime<Utc>,
    ) -> Result<(), CatalogError> {
        on_pool!(self, pool => {
            for id in ids {
                sqlx::query("UPDATE notify_events SET settled_at = $1 WHERE id = $2 AND settled_at IS NULL")
                    .bind(now)
                    .bind(id)
                    .execute(pool)
                    .await?;
            }
            Ok(())
        })
    }

    /// Unsettled events and the creation time of the oldest, for `/metrics`.
    pub async fn outbox_backlog(&self) -> Result<(i64, Option<DateTime<Utc>>), CatalogError> {
        on_pool!(self, pool => {
            let r = sqlx::query(
                "SELECT COUNT(*) AS n, MIN(created_at) AS oldest FROM notify_events WHERE settled_at IS NULL",
            )
            .fetch_one(pool)
            .await?;
            let oldest: Option<DateTime<Utc>> = r.try_get("oldest").unwrap_or(None);
            Ok((r.get("n"), oldest))
        })
    }

    /// (event id, sink) → state, for the planner.
    pub fn delivery_states(rows: &[DeliveryRow]) -> HashMap<(String, String), DeliveryState> {
        rows.iter()
            .map(|d| {
                let state = match d.state.as_str() {
                    "delivered" => DeliveryState::Delivered,
                    "given_up" => DeliveryState::GivenUp,
                    _ => DeliveryState::Pending {
                        attempts: d.attempts.clamp(0, i64::from(u32::MAX)) as u32,
                        next_at: d.next_at.unwrap_or(DateTime::<Utc>::MIN_UTC),
                    },
                };
                ((d.event_id.clone(), d.sink.clone()), state)
            })
            .collect()
    }
}
