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
