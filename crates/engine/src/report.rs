//! The render report (per-stage wall and CPU time, cache hits, peak memory, throughput) and
//! the probes behind it: process CPU time including children, and the process tree's RSS.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct StageReport {
    pub wall_s: f64,
    /// CPU seconds of this process and of the FFmpeg children it ran in the stage.
    pub cpu_s: f64,
    /// Items the stage handled (scenes, segments…).
    pub items: u64,
    /// Items actually computed (cache misses): for `tts` the syntheses, for `segments` the encodes.
    pub runs: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub output: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub frames: u64,
    pub duration_s: f64,
    pub encoder: String,
    pub wall_s: f64,
    pub cpu_s: f64,
    /// Highest summed RSS of this process and all its children, sampled every 20 ms (counts
    /// shared library pages once per process).
    pub peak_tree_rss_mb: f64,
    /// Summed PSS of the same tree near its RSS peak (shared pages split among processes).
    pub peak_tree_pss_mb: f64,
    /// Frames composited and encoded per second of the segments stage (0 when all were reused).
    pub encode_fps: f64,
    pub encoded_frames: u64,
    pub segments_total: u64,
    pub segments_encoded: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub cache_hit_ratio: f64,
    /// In pipeline order: narration, canvas, audio, segments, concat.
    pub stages: BTreeMap<String, StageReport>,
    pub loudness_lufs: Option<f64>,
    /// The subtitles as timed cues (for WebVTT/SRT sidecars), in order.
    pub captions: Vec<Caption>,
    /// Every segment of the timeline, in order: what it shows, its cache key, whether it was
    /// already cached when the render began, and (in distributed renders) which worker made it.
    pub segments: Vec<SegmentInfo>,
}

/// One segment of the video as the render found it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentInfo {
    pub index: usize,
    /// The scene it shows (a transition shows this one and the next).
    pub scene: usize,
    pub transition: bool,
    pub frames: u64,
    /// Cache key (hex) of the encoded segment.
    pub key: String,
    /// Found in a cache (this node's or the shared tier) when the render began.
    pub cached: bool,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub worker: Option<String>,
}

/// One subtitle page on the video's timeline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Caption {
    pub start_s: f64,
    pub end_s: f64,
    /// Lines separated by '\n'.
    pub text: String,
}

impl Report {
    /// The captions as a WebVTT document.
    pub fn webvtt(&self) -> String {
        fn ts(t: f64) -> String {
            let ms = (t.max(0.0) * 1000.0).round() as u64;
            format!("{:02}:{:02}:{:02}.{:03}", ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000)
        }
        let mut out = String::from("WEBVTT\n");
        for (i, c) in self.captions.iter().enumerate() {
            // A blank line inside a cue would end it early.
            let text: Vec<&str> = c.text.lines().filter(|l| !l.trim().is_empty()).collect();
            out.push_str(&format!("\n{}\n{} --> {}\n{}\n", i + 1, ts(c.start_s), ts(c.end_s), text.join("\n")));
        }
        out
    }
}

/// CPU seconds used so far by this process plus its waited-for children.
pub fn cpu_seconds() -> f64 {
    fn usage(who: libc::c_int) -> f64 {
        // SAFETY: getrusage only writes into the zeroed struct we own.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(who, &mut ru) };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
    usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN)
}

/// CPU seconds used by the calling thread alone.
pub fn thread_cpu_seconds() -> f64 {
    // SAFETY: clock_gettime writes into the zeroed timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Times one stage: wall clock and CPU (this process and children) between start and stop,
/// inside a `stage` tracing span (exported as a trace span when OTLP is on).
pub struct StageTimer {
    wall: Instant,
    cpu: f64,
    _span: tracing::span::EnteredSpan,
}

impl StageTimer {
    pub fn start(stage: &'static str) -> Self {
        let span = tracing::info_span!("stage", stage).entered();
        Self { wall: Instant::now(), cpu: cpu_seconds(), _span: span }
    }
    pub fn stop(self, r: &mut StageReport) {
        r.wall_s = self.wall.elapsed().as_secs_f64();
        r.cpu_s = (cpu_seconds() - self.cpu).max(0.0);
    }
}

/// Peak memory of a process tree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TreePeak {
    /// Highest summed RSS, MB: shared library pages count once per process.
    pub rss_mb: f64,
    /// Highest summed PSS, MB: shared pages split among the processes sharing them, so this is
    /// what the tree really occupies.
    pub pss_mb: f64,
}

/// Samples the memory of this process and all its descendants; keeps the peaks: RSS every
/// 20 ms (the tree itself every 100 ms), PSS when the RSS peak rises.
pub struct TreeMemory {
    stop: Arc<AtomicBool>,
    peak_rss_kb: Arc<AtomicU64>,
    peak_pss_kb: Arc<AtomicU64>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl TreeMemory {
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_rss_kb = Arc::new(AtomicU64::new(0));
        let peak_pss_kb = Arc::new(AtomicU64::new(0));
        let (s, r, p) = (stop.clone(), peak_rss_kb.clone(), peak_pss_kb.clone());
        let handle = std::thread::Builder::new()
            .name("rss-sampler".into())
            .spawn(move || {
                let me = std::process::id();
                let mut last_pss = std::time::Instant::now() - Duration::from_secs(1);
                let mut pids: Vec<u32> = vec![];
                let mut sample = 0u64;
                while !s.load(Ordering::Relaxed) {
                    // The tree is walked every 100 ms (a read per thread of every process); in
                    // between, only the known processes' statm is read.
                    let tree = if sample.is_multiple_of(5) {
                        let tree = process_tree(me);
                        pids = tree.iter().map(|t| t.0).collect();
                        tree
                    } else {
                        pids.iter().filter_map(|&p| Some((p, statm_rss_kb(p)?))).collect()
                    };
                    sample += 1;
                    let rss: u64 = tree.iter().map(|t| t.1).sum();
                    let new_peak = rss > r.fetch_max(rss, Ordering::Relaxed);
                    // Reading smaps_rollup stalls the sampled processes (it walks their page
                    // tables under the mmap lock: sampling it every 100 ms cost ~15% of render
                    // speed), so PSS is read only when RSS reaches a new peak, at most 4x/s.
                    if new_peak && last_pss.elapsed() >= Duration::from_millis(250) {
                        p.fetch_max(tree.iter().map(|t| pss_kb(t.0)).sum(), Ordering::Relaxed);
                        last_pss = std::time::Instant::now();
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .ok();
        Self { stop, peak_rss_kb, peak_pss_kb, handle }
    }

    /// Stops sampling; the peaks.
    pub fn finish(mut self) -> TreePeak {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        TreePeak {
            rss_mb: self.peak_rss_kb.load(Ordering::Relaxed) as f64 / 1024.0,
            pss_mb: self.peak_pss_kb.load(Ordering::Relaxed) as f64 / 1024.0,
        }
    }
}

/// Proportional set size (kB) of one process; 0 when it is gone or unreadable.
pub fn pss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Pss:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()))
        .unwrap_or(0)
}

/// Summed resident memory (kB) of `root` and every process descended from it.
pub fn tree_rss_kb(root: u32) -> u64 {
    process_tree(root).iter().map(|p| p.1).sum()
}

/// `(pid, rss kB)` of `root` and all its descendants, from /proc: by each thread's
/// `children` list where the kernel has them (a handful of reads: the sampler runs every
/// 20 ms, and scanning every process of a busy host cost ~2.5% of a render's CPU), else by a
/// scan of every process's parent.
pub fn process_tree(root: u32) -> Vec<(u32, u64)> {
    descendants(root).unwrap_or_else(|| scan_tree(root))
}

fn descendants(root: u32) -> Option<Vec<(u32, u64)>> {
    // CONFIG_PROC_CHILDREN: the file exists for every thread of a live process.
    if !std::path::Path::new(&format!("/proc/{root}/task/{root}/children")).exists() {
        return None;
    }
    let mut out = vec![];
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let Some(rss) = statm_rss_kb(pid) else { continue };
        out.push((pid, rss));
        if out.len() > 4096 {
            break;
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for t in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(t.path().join("children")) {
                todo.extend(list.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
            }
        }
    }
    Some(out)
}

/// Resident memory (kB) of one process from `/proc/{pid}/statm`.
fn statm_rss_kb(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4) // x86-64 / aarch64 Linux base pages
}

fn scan_tree(root: u32) -> Vec<(u32, u64)> {
    let mut parent: HashMap<u32, u32> = HashMap::new();
    let mut rss: HashMap<u32, u64> = HashMap::new();
    let page_kb = 4; // x86-64 / aarch64 Linux base pages
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![] };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // The command name may contain spaces: fields start after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // rest: state(0) ppid(1) ... rss is field 24 of stat, i.e. index 21 here.
        if let (Some(pp), Some(r)) =
            (f.get(1).and_then(|s| s.parse().ok()), f.get(21).and_then(|s| s.parse::<u64>().ok()))
        {
            parent.insert(pid, pp);
            rss.insert(pid, r * page_kb);
        }
    }
    rss.into_iter()
        .filter(|(pid, _)| {
            let mut p = *pid;
            for _ in 0..64 {
                if p == root {
                    return true;
                }
                match parent.get(&p) {
                    Some(&pp) if pp != 0 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tree_rss_counts_children() {
        let me = std::process::id();
        let mut child = std::process::Command::new("sleep").arg("5").spawn().unwrap();
        let tree = process_tree(me);
        let total = tree_rss_kb(me);
        // Both ways of finding the tree find the child (other tests' children may come and go).
        let scanned = scan_tree(me);
        assert!(scanned.iter().any(|p| p.0 == child.id()), "{scanned:?}");
        if let Some(walked) = descendants(me) {
            assert!(walked.iter().any(|p| p.0 == child.id()), "{walked:?}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let mine = tree.iter().find(|p| p.0 == me).map(|p| p.1).unwrap_or(0);
        let theirs = tree.iter().find(|p| p.0 == child.id()).map(|p| p.1);
        assert!(mine > 1000, "own RSS is at least a MB: {mine}");
        // Its RSS may still be 0 this early (between fork and exec); being listed is the point.
        assert!(theirs.is_some(), "the child is in the tree: {tree:?}");
        assert!(total >= mine);
        let pss = pss_kb(me);
        assert!(pss > 500 && pss <= mine + 1024, "PSS {pss} kB vs RSS {mine} kB");
    }

    #[test]
    fn cpu_seconds_advance_with_work() {
        let (proc0, thread0) = (cpu_seconds(), thread_cpu_seconds());
        // A fixed amount of work, not a fixed time: a loaded machine only makes it take longer.
        let mut x = 0u64;
        for i in 0..30_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        assert!(x != 1);
        let (proc1, thread1) = (cpu_seconds(), thread_cpu_seconds());
        assert!(thread1 - thread0 > 0.001, "the loop used CPU: {}", thread1 - thread0);
        // The process total includes this thread's time.
        assert!(proc1 - proc0 >= (thread1 - thread0) - 0.002, "{} vs {}", proc1 - proc0, thread1 - thread0);
    }
}

#[cfg(test)]
mod caption_tests {
    use super::*;

    #[test]
    fn webvtt_cues_are_numbered_timed_and_never_blank_inside() {
        let r = Report {
            captions: vec![
                Caption { start_s: 0.5, end_s: 2.25, text: "Hello\nworld".into() },
                Caption { start_s: 3661.0, end_s: 3662.001, text: "a\n\nb".into() },
            ],
            ..Default::default()
        };
        assert_eq!(
            r.webvtt(),
            "WEBVTT\n\n1\n00:00:00.500 --> 00:00:02.250\nHello\nworld\n\n2\n01:01:01.000 --> 01:01:02.001\na\nb\n"
        );
    }
}
