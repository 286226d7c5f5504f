//! Faults the end-to-end tests inject through the environment (crash and kill handling). Only
//! builds with the `fault-injection` feature read them, which `cargo test` turns on (the CLI's
//! dev-dependencies) and release builds leave out.

/// Render attempts up to this number panic (`REELSMITH_FAULT_PANIC_ATTEMPTS`).
pub(crate) fn panic_attempts() -> u32 {
    if cfg!(feature = "fault-injection") {
        std::env::var("REELSMITH_FAULT_PANIC_ATTEMPTS").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
    } else {
        0
    }
}

/// Segment jobs hold (heartbeating) until stopped or killed (`REELSMITH_FAULT_HANG_SEGMENTS`),
/// so a test can kill a worker mid-segment for certain.
pub(crate) fn hang_segments() -> bool {
    cfg!(feature = "fault-injection") && std::env::var_os("REELSMITH_FAULT_HANG_SEGMENTS").is_some()
}

/// Storing a render's results pauses after its first file until its generation is deleted
/// (`REELSMITH_FAULT_PAUSE_STORING=<dir>`): the worker writes `<dir>/<generation id>` when it
/// pauses and removes it when it goes on, so a test can delete a generation mid-upload for certain.
pub(crate) async fn pause_storing(state: &crate::state::AppState, generation: &str) {
    if !cfg!(feature = "fault-injection") {
        return;
    }
    let Some(dir) = std::env::var_os("REELSMITH_FAULT_PAUSE_STORING") else { return };
    let marker = std::path::Path::new(&dir).join(generation);
    let _ = std::fs::write(&marker, b"");
    let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while matches!(state.meta.generation(generation).await, Ok(Some(_))) && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = std::fs::remove_file(&marker);
}
