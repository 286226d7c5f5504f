//! Maintenance jobs: retention of finished generations and unused assets.

use std::path::Path;
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
    // What a process that died mid-write leaves: attempts' work folders, half-copied result
    // files, uploads and downloads of assets (each named with a leading dot until complete).
    let stale = Duration::from_secs_f64(state.config.job_timeout_secs * 2.0);
    let data = &state.config.data_dir;
    sweep_stale(&data.join("tmp"), stale, |_| true).await;
    sweep_stale(&data.join("artifacts").join(".tmp"), stale, |_| true).await;
    sweep_stale(&state.config.assets_dir(), stale, |name| name.starts_with('.')).await;
    Ok(removed)
}

/// Removes the entries of `dir` whose names pass `pick` and that have not changed for `age`.
async fn sweep_stale(dir: &Path, age: Duration, pick: impl Fn(&str) -> bool) {
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else { return };
    while let Ok(Some(e)) = rd.next_entry().await {
        if !pick(&e.file_name().to_string_lossy()) {
            continue;
        }
        let Ok(meta) = e.metadata().await else { continue };
        let old = meta.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > age);
        if old {
            let _ = if meta.is_dir() {
                tokio::fs::remove_dir_all(e.path()).await
            } else {
                tokio::fs::remove_file(e.path()).await
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_stale_entries_that_are_picked_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        for name in [".up_old", "asset_old", ".up_new"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        std::fs::create_dir(dir.path().join(".dir_old")).unwrap();
        std::fs::write(dir.path().join(".dir_old").join("part"), b"x").unwrap();
        for name in [".up_old", "asset_old"] {
            std::fs::File::options().write(true).open(dir.path().join(name)).unwrap().set_modified(old).unwrap();
        }
        // A folder is opened for reading only; its owner may still set its times.
        std::fs::File::open(dir.path().join(".dir_old")).unwrap().set_modified(old).unwrap();
        sweep_stale(dir.path(), Duration::from_secs(600), |n| n.starts_with('.')).await;
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        left.sort();
        assert_eq!(left, [".up_new", "asset_old"], "old dot-files and folders go; new ones and assets stay");
    }
}
