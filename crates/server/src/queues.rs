//! Queue and job-kind names: what each job queue carries.

/// Render jobs: one generation each.
pub const RENDER_QUEUE: &str = "render";

/// Segment jobs of distributed renders ([`crate::jobs::segments`]).
pub const SEGMENT_QUEUE: &str = "segments";

/// Retention and cleanup.
pub const MAINTENANCE_QUEUE: &str = "maintenance";

/// The job kind of segment jobs.
pub const SEGMENT_KIND: &str = "segment";

/// Webhook deliveries.
pub const WEBHOOK_QUEUE: &str = "webhooks";

pub const WEBHOOK_KIND: &str = "webhook";
