//! Maintenance jobs: retention of finished generations and unused assets.

use std::path::PathBuf;
use std::time::Duration;

use reelsmith_store::{ClaimedJob, now_ms};
use tokio_util::sync::CancellationToken;

use crate::jobs::outcome::Outcome;
use crate::state::AppState;

/// Enqueues a cleanup every interval (one per interval, whichever node gets there first): ten
/// minutes, or half the retention when that is shorter.
pub(crate) async fn schedule_cleanup(state: AppState, stop: CancellationToken) {
    let shortest = state.config.retention_hours.min(state.config.asset_retention_hours);
    let interval_ms = ((shortest * 3_600_000.0 / 2.0) as i64).clamp(500, 600_000);
    loop {
        let slot = now_ms() / interval_ms;
        let mut job = crate::queues::Job::Cleanup.to_new_job();
        job.dedup_key = Some(format!("cleanup-{interval_ms}-{slot}"));
        job.retry.max_attempts = 1;
        if let Err(e) = state.queue.enqueue(job).await {
            tracing::warn!(error = %e, "cannot schedule cleanup");
        }
        let next = (slot + 1) * interval_ms - now_ms();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(next.max(1) as u64)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

pub(crate) async fn maintenance(state: &AppState, job: ClaimedJob) -> Outcome {
    match cleanup(state).await {
        Ok(n) => {
            tracing::info!(removed = n, "cleanup done");
            let _ = state.queue.complete(&job.lease, vec![]).await;
            Outcome::Succeeded
        }
        Err(e) => {
            let _ = state.queue.fail(&job.lease, &e, true, vec![]).await;
            Outcome::Failed
        }
    }
}

/// Retention: expired generations with their files, finished helper jobs, stale work folders.
/// Removes assets unused for `asset_retention_hours`, except those a queued or running
/// generation still needs.
async fn expire_assets(state: &AppState) -> Result<u64, String> {
    let cutoff = now_ms() - (state.config.asset_retention_hours * 3_600_000.0) as i64;
    let stale = state.meta.stale_assets(cutoff, 500).await.map_err(|e| e.to_string())?;
    if stale.is_empty() {
        return Ok(0);
    }
    let ids: Vec<String> = stale.iter().map(|a| a.id.clone()).collect();
    let busy: std::collections::HashSet<String> = crate::assets::assets_in_use(state, None, &ids)
        .await
        .map_err(|e| e.message)?
        .into_iter()
        .map(|(a, _)| a)
        .collect();
    let mut removed = 0;
    for a in stale.iter().filter(|a| !busy.contains(&a.id)) {
        crate::assets::remove_asset(state, &a.id).await.map_err(|e| e.message)?;
        removed += 1;
    }
    Ok(removed)
}

pub async fn cleanup(state: &AppState) -> Result<u64, String> {
    let cutoff = now_ms() - (state.config.retention_hours * 3_600_000.0) as i64;
    let mut removed = 0;
    loop {
        let ids = state.meta.expired_generations(cutoff, 200).await.map_err(|e| e.to_string())?;
        if ids.is_empty() {
            break;
        }
        let mut progressed = false;
        for id in ids {
            // One undeletable folder must not stall retention for everything behind it.
            if let Err(e) = state.artifacts.delete_prefix(&id).await {
                tracing::warn!(generation = %id, error = %e, "cannot remove files; removing the record anyway");
            }
            state.meta.delete_generation(&id).await.map_err(|e| e.to_string())?;
            removed += 1;
            progressed = true;
        }
        if !progressed {
            break;
        }
    }
    // Batches that ended before the cutoff (their generations went above).
    loop {
        let n = state.meta.purge_batches(cutoff, 200).await.map_err(|e| e.to_string())?;
        removed += n;
        if n < 200 {
            break;
        }
    }
    state.queue.purge_finished(cutoff).await.map_err(|e| e.to_string())?;
    removed += expire_assets(state).await?;
    // Work folders of attempts that died with their process.
    let tmp: PathBuf = state.config.data_dir.join("tmp");
    if let Ok(mut rd) = tokio::fs::read_dir(&tmp).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            let old = e
                .metadata()
                .await
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs_f64(state.config.job_timeout_secs * 2.0));
            if old {
                let _ = tokio::fs::remove_dir_all(e.path()).await;
            }
        }
    }
    Ok(removed)
}
