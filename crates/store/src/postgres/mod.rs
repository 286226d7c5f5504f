//! The scale-out backend: PostgreSQL, one schema per deployment, shared by any number of
//! server and worker processes. Semantics are those of [`crate::sqlite`] (one conformance suite
//! checks both); what differs is how concurrency is made safe:
//!
//! - a claim is one statement (`FOR UPDATE SKIP LOCKED`), so claimers never block each other;
//! - every other read-then-write either locks the job row (`FOR UPDATE`) or takes an advisory
//!   transaction lock (idempotency keys, duplicate specs, quotas);
//! - enqueues `pg_notify` in their own transaction, and a listener wakes idle workers
//!   ([`JobQueue::wait_for_work`]) instead of letting them poll.
//!
//! Every commit waits for the WAL flush except a claim's, which cannot lose anything that
//! matters (see `CLAIM`); a claim + complete costs one flush. Deployments that prefer speed to
//! the last few hundred milliseconds of writes on a database crash can add
//! `options=-c%20synchronous_commit%3Doff` to the URL.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Postgres, Row};
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::*;

mod batches;
mod listen;
mod metadata;
mod queue;
mod store;

#[cfg(any(test, feature = "testing"))]
pub mod pg_testing;

pub use store::PgStore;

/// The code both SQL dialects share, for this driver.
type Shared = crate::sql::Shared<Postgres>;

#[cfg(test)]
mod tests;
