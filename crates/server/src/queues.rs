//! Every kind of job: its queue, its kind and what it carries ([`Job`]), in one place.

use reelsmith_store::{ClaimedJob, NewJob};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Render jobs: one generation each.
pub const RENDER_QUEUE: &str = "render";

pub const RENDER_KIND: &str = "render";

/// Segment jobs of distributed renders ([`crate::jobs::segments`]).
pub const SEGMENT_QUEUE: &str = "segments";

/// Retention and cleanup.
pub const MAINTENANCE_QUEUE: &str = "maintenance";

pub const CLEANUP_KIND: &str = "cleanup";

/// The job kind of segment jobs.
pub const SEGMENT_KIND: &str = "segment";

/// Batch pumps: each batch's rows submitted as generations, a few at a time.
pub const BATCH_QUEUE: &str = "batches";

pub const BATCH_KIND: &str = "batch";

/// Webhook deliveries.
pub const WEBHOOK_QUEUE: &str = "webhooks";

pub const WEBHOOK_KIND: &str = "webhook";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Delivery {
    pub url: String,
    pub event_id: String,
    pub event_type: String,
    /// The exact bytes sent each attempt (as a string).
    pub body: String,
    /// The API key whose generation this is: its own secret signs the delivery (none: the
    /// server's `webhook_secret`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// What a segment job carries.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SegmentPayload {
    pub generation: String,
    pub index: usize,
    /// The cache key the planner computed; the segment worker's must match.
    pub key: String,
    pub frames: u64,
    /// The render job and attempt that asked for it.
    pub parent: String,
    pub parent_attempt: u32,
}

/// A job as the workers see it: which one, with its typed payload.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    /// One generation's video (or a remote D-ID talk).
    Render { generation: String },
    /// One segment of a distributed render, into the (shared) cache.
    Segment(SegmentPayload),
    /// One signed webhook event.
    Webhook(Delivery),
    /// Retention of finished generations and unused assets.
    Cleanup,
    /// One round of a batch: finished rows noted, the next rows submitted.
    Batch { batch: String },
}

impl Job {
    pub fn queue(&self) -> &'static str {
        match self {
            Job::Render { .. } => RENDER_QUEUE,
            Job::Segment(_) => SEGMENT_QUEUE,
            Job::Webhook(_) => WEBHOOK_QUEUE,
            Job::Cleanup => MAINTENANCE_QUEUE,
            Job::Batch { .. } => BATCH_QUEUE,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Job::Render { .. } => RENDER_KIND,
            Job::Segment(_) => SEGMENT_KIND,
            Job::Webhook(_) => WEBHOOK_KIND,
            Job::Cleanup => CLEANUP_KIND,
            Job::Batch { .. } => BATCH_KIND,
        }
    }

    /// The record to enqueue; the caller adds what depends on the moment (subject, priority,
    /// retries, dedup key, time limit).
    pub fn to_new_job(&self) -> NewJob {
        let payload = match self {
            Job::Render { generation } => json!({ "generation": generation }),
            Job::Segment(p) => serde_json::to_value(p).unwrap_or_default(),
            Job::Webhook(d) => serde_json::to_value(d).unwrap_or_default(),
            Job::Cleanup => json!({}),
            Job::Batch { batch } => json!({ "batch": batch }),
        };
        NewJob::new(self.queue(), self.kind(), payload)
    }

    /// Reads a claimed job back; the error says what is wrong with it (such a job cannot
    /// succeed on any attempt).
    pub fn from_claimed(job: &ClaimedJob) -> Result<Job, String> {
        let bad = |e: serde_json::Error| format!("bad {} job: {e}", job.kind);
        match (job.queue.as_str(), job.kind.as_str()) {
            (RENDER_QUEUE, _) => {
                let generation = job.payload["generation"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| job.subject.clone())
                    .ok_or_else(|| "render job without a generation".to_string())?;
                Ok(Job::Render { generation })
            }
            (SEGMENT_QUEUE, _) => serde_json::from_value(job.payload.clone()).map(Job::Segment).map_err(bad),
            (WEBHOOK_QUEUE, _) => serde_json::from_value(job.payload.clone()).map(Job::Webhook).map_err(bad),
            (MAINTENANCE_QUEUE, _) => Ok(Job::Cleanup),
            (BATCH_QUEUE, _) => match job.payload["batch"].as_str() {
                Some(batch) => Ok(Job::Batch { batch: batch.into() }),
                None => Err("batch job without a batch".into()),
            },
            (queue, kind) => Err(format!("unknown job: {kind} on queue {queue}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(j: &NewJob) -> ClaimedJob {
        ClaimedJob {
            lease: reelsmith_store::Lease { job_id: j.id.clone(), owner: "w".into(), attempt: 1 },
            queue: j.queue.clone(),
            kind: j.kind.clone(),
            subject: j.subject.clone(),
            payload: j.payload.clone(),
            priority: j.priority,
            max_attempts: 1,
            timeout: j.timeout,
            recovered: false,
        }
    }

    /// Every job reads back as it was enqueued, on its own queue under its own kind.
    #[test]
    fn jobs_round_trip_through_their_records() {
        let jobs = [
            Job::Render { generation: "gen_1".into() },
            Job::Segment(SegmentPayload {
                generation: "gen_1".into(),
                index: 3,
                key: "k".into(),
                frames: 90,
                parent: "job_1".into(),
                parent_attempt: 2,
            }),
            Job::Webhook(Delivery {
                url: "https://example.com/hook".into(),
                event_id: "evt_1_succeeded".into(),
                event_type: "generation.succeeded".into(),
                body: "{}".into(),
                key_id: Some("key_1".into()),
            }),
            Job::Cleanup,
            Job::Batch { batch: "bat_1".into() },
        ];
        let mut queues = std::collections::BTreeSet::new();
        for job in jobs {
            let record = job.to_new_job();
            assert_eq!((record.queue.as_str(), record.kind.as_str()), (job.queue(), job.kind()));
            queues.insert(record.queue.clone());
            assert_eq!(Job::from_claimed(&claimed(&record)), Ok(job));
        }
        assert_eq!(queues.len(), 5, "one queue per kind of job");
    }

    /// A record no worker can run is an error naming what is wrong (the worker fails it for good).
    #[test]
    fn unreadable_jobs_are_named() {
        let mut bad = Job::Cleanup.to_new_job();
        bad.queue = "nowhere".into();
        assert!(Job::from_claimed(&claimed(&bad)).unwrap_err().contains("nowhere"));
        let mut seg = Job::Cleanup.to_new_job();
        (seg.queue, seg.kind) = (SEGMENT_QUEUE.into(), SEGMENT_KIND.into());
        assert!(Job::from_claimed(&claimed(&seg)).unwrap_err().starts_with("bad segment job"));
        let mut render = Job::Cleanup.to_new_job();
        render.queue = RENDER_QUEUE.into();
        assert_eq!(Job::from_claimed(&claimed(&render)).unwrap_err(), "render job without a generation");
    }
}
