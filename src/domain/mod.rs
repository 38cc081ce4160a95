//! Pure planning: no I/O, no clock reads. Functions take facts and `now` and return decisions
//! with reasons.

pub mod discovery;
pub mod drill;
pub mod history;
pub mod lifecycle;
pub mod notify;
pub mod objectives;
pub mod retention;
pub mod schedule;
