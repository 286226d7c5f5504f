//! Stored templates and batches of template rows: what a batch is made of and how far it got.
//! Each row becomes a generation when its batch's pump submits it; the row keeps the link, so
//! a batch's counts and manifest read the generations' own states.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{JobState, NewJob, Result};

/// A template kept by the service for a key (`tpl_…`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TemplateRecord {
    pub id: String,
    pub api_key_id: Option<String>,
    pub name: String,
    /// The template document: the spec with its placeholders and `fields`.
    pub body: serde_json::Value,
    pub created_at_ms: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BatchState {
    /// Rows are being submitted or rendered.
    Running,
    /// Every row is rendered, failed or was refused.
    Completed,
    /// Cancelled: no further row is submitted and the rendering ones were asked to stop.
    Cancelled,
}

impl BatchState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }
}

/// Where a row is. `Submitted` and `Done` rows have a generation, whose job tells how it went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowStatus {
    Pending,
    /// The row does not fit the template, or its spec does not validate: skipped.
    Invalid,
    /// Refused at submission (the key's budget, a revoked key): skipped.
    Refused,
    Cancelled,
    Submitted,
    Done,
}

impl RowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Invalid => "invalid",
            Self::Refused => "refused",
            Self::Cancelled => "cancelled",
            Self::Submitted => "submitted",
            Self::Done => "done",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "invalid" => Self::Invalid,
            "refused" => Self::Refused,
            "cancelled" => Self::Cancelled,
            "submitted" => Self::Submitted,
            "done" => Self::Done,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchRecord {
    pub id: String,
    pub api_key_id: Option<String>,
    /// The stored template it was made from (None: sent inline).
    pub template_id: Option<String>,
    /// The template as it was when the batch was made (deleting the stored one changes nothing).
    pub template: serde_json::Value,
    /// What every row's generation is submitted with: priority, webhook_url, metadata.
    pub options: serde_json::Value,
    pub state: BatchState,
    pub total: u32,
    pub created_at_ms: i64,
    pub finished_at_ms: Option<i64>,
}

/// A row as the batch is made: its values, and why it was refused when it does not fit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct NewBatchRow {
    pub index: u32,
    pub merge: serde_json::Value,
    pub status: RowStatus,
    pub error: Option<serde_json::Value>,
}

/// A row with its generation's state, when it has one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BatchRow {
    pub index: u32,
    pub merge: serde_json::Value,
    pub status: RowStatus,
    pub generation_id: Option<String>,
    pub error: Option<serde_json::Value>,
    /// None when the row has no generation, or its generation was deleted.
    pub generation_state: Option<JobState>,
}

impl BatchRow {
    /// What the row's outcome is called: its generation's state once submitted ("expired"
    /// when that generation was deleted), else the row's own status.
    pub fn outcome(&self) -> &'static str {
        match (self.status, self.generation_state) {
            (RowStatus::Submitted | RowStatus::Done, Some(s)) => s.as_str(),
            (RowStatus::Submitted | RowStatus::Done, None) => "expired",
            (s, _) => s.as_str(),
        }
    }
}

/// Templates and batches, on the same database as everything else.
#[async_trait]
pub trait BatchStore: Send + Sync + 'static {
    async fn put_template(&self, t: &TemplateRecord) -> Result<()>;
    async fn template(&self, id: &str) -> Result<Option<TemplateRecord>>;
    /// A key's templates (None: the keyless caller's), newest first, older than `cursor`.
    async fn templates_of(
        &self,
        api_key_id: Option<&str>,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<Vec<TemplateRecord>>;
    async fn delete_template(&self, id: &str) -> Result<bool>;

    /// Stores the batch, its rows and the first job of its pump, in one transaction.
    async fn create_batch(&self, b: &BatchRecord, rows: &[NewBatchRow], pump: NewJob) -> Result<()>;
    async fn batch(&self, id: &str) -> Result<Option<BatchRecord>>;
    /// A key's batches, newest first, older than `cursor`.
    async fn batches_of(&self, api_key_id: Option<&str>, cursor: Option<&str>, limit: u32) -> Result<Vec<BatchRecord>>;
    /// Rows after index `after` (None: from the first), in order; only those of `status` when
    /// given.
    async fn batch_rows(
        &self,
        id: &str,
        status: Option<RowStatus>,
        after: Option<u32>,
        limit: u32,
    ) -> Result<Vec<BatchRow>>;
    /// Moves a row from `from` to `to`, with its generation and error; false (nothing
    /// changed) when the row was not in `from` (a cancelled batch's pending rows).
    async fn move_batch_row(
        &self,
        id: &str,
        index: u32,
        from: RowStatus,
        to: RowStatus,
        generation_id: Option<&str>,
        error: Option<&serde_json::Value>,
    ) -> Result<bool>;
    /// How many rows have each outcome ([`BatchRow::outcome`]).
    async fn batch_counts(&self, id: &str) -> Result<BTreeMap<String, u64>>;
    /// Generations of the key's running batches that are queued or running.
    async fn key_batch_active(&self, api_key_id: Option<&str>) -> Result<u64>;
    /// Ends a running batch (`Cancelled` also cancels its pending rows), in one transaction;
    /// false when it was not running.
    async fn finish_batch(&self, id: &str, state: BatchState, at_ms: i64) -> Result<bool>;
    /// Removes up to `limit` batches (with their rows) that ended before `before_ms`, oldest
    /// first (retention); how many went.
    async fn purge_batches(&self, before_ms: i64, limit: u32) -> Result<u64>;
}
