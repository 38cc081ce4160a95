//! Lifeboat: encrypted per-tenant backups in two regions, with restores that are proven.
//!
//! The code map and the invariants are in `ARCHITECTURE.md`.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod drill_report;
pub mod engine;
pub mod executor;
pub mod fault;
pub mod manifest;
pub mod metrics;
pub mod owner;
pub mod pipeline;
pub mod retention_report;
pub mod scratch;
pub mod secret;
pub mod serve;
pub mod storage;
pub mod tenant;
