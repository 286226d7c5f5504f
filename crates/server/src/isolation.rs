//! Renders in a process of their own, under a memory limit: a render that runs out of memory
//! or crashes ends its own job, never the server and the other jobs it is running
//! (`render_memory_limit_mb`; 0 renders on threads of the server process instead).
//!
//! The worker starts `reelsmith render-child` (the server's own executable), writes a
//! [`Request`] line to its stdin and reads [`Message`] lines from its stdout: progress, live
//! stream pieces, then the report or the failure. A `cancel` line stops the render between
//! frames, as does stdin closing (the server died); a render that ignores it is killed.
//! The process's data size (`RLIMIT_DATA`: heap and private writable maps, not mapped files)
//! is capped before it starts, and its FFmpeg processes inherit the cap.
//!
//! A process that finished a render normally waits for the next one, with its fonts and
//! models loaded (loading the face and voice models takes ~0.7 s, a third of a talking photo);
//! one that crashed, was cancelled or has made [`RENDERS_PER_PROCESS`] renders is replaced.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use reelsmith_engine::{Cache, Engine, LiveOptions, Progress, RenderError, RenderOptions, Report, Scope, Stage};
use reelsmith_spec::Spec;
use serde::{Deserialize, Serialize};

/// The argument that makes the server's executable a render process.
pub const CHILD_COMMAND: &str = "render-child";

/// How long a render process has to stop after `cancel` before it is killed.
const KILL_GRACE: Duration = Duration::from_secs(10);

/// How long the log of a render process that died is read on for its last lines.
const LOG_DRAIN: Duration = Duration::from_secs(2);

/// Lines of a render process's stderr kept for the failure message.
const STDERR_LINES: usize = 20;
/// The line a render process writes on its stderr just before it reports a failure: what the
/// failing code wrote there before it (x264 reports a failed allocation only on stderr) has then
/// been read once this line has.
const FAILURE_MARK: &str = "reelsmith-render-child: failure follows";

/// Longest line read from a render process (a report with every caption of a long video
/// stays far below it).
const MAX_LINE: u64 = 64 << 20;

/// Where renders run: on the calling thread, or in a process of their own.
pub struct Renderer {
    pub engine: Arc<Engine>,
    isolation: Option<Isolation>,
    /// Render processes between renders, ready for the next (models and fonts loaded).
    idle: Mutex<Vec<Process>>,
}

/// Renders one process makes before it is replaced (bounds what a long-lived process may
/// accumulate: heap fragments, cached models of voices no longer used).
const RENDERS_PER_PROCESS: u32 = 100;

/// How render processes are started.
#[derive(Clone, Debug)]
pub struct Isolation {
    /// An executable that runs [`child_main`] when given [`CHILD_COMMAND`].
    pub program: PathBuf,
    pub memory_limit_mb: u64,
    pub cache: CacheSetup,
    pub trace: Option<TraceHooks>,
}

/// What a binary that exports traces lends render processes, so their spans join the job's
/// trace (this crate does not depend on OpenTelemetry).
#[derive(Clone, Copy, Debug)]
pub struct TraceHooks {
    /// The calling span's W3C `traceparent` (in the server, as a render is sent).
    pub current: fn() -> Option<String>,
    /// Makes `traceparent` the parent of root spans on this thread until the guard drops (in
    /// the render process, around each render).
    pub enter: fn(&str) -> Option<Box<dyn std::any::Any>>,
    /// Exports the spans buffered so far (in the render process, after each render).
    pub flush: fn(),
}

/// How a render process opens the stage cache: the same folder and limit as the server's.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CacheSetup {
    pub root: PathBuf,
    pub max_bytes: u64,
    pub redis: Option<reelsmith_store::RedisConfig>,
}

/// What a render process is asked to do: [`Engine::render`]'s arguments.
#[derive(Serialize, Deserialize)]
struct Request {
    spec: Spec,
    base_dir: PathBuf,
    out: PathBuf,
    scope: Scope,
    jobs: Option<usize>,
    encoder_threads: Option<u32>,
    cache_scope: Option<String>,
    cache_share: Option<u64>,
    /// The live stream's folder and URI prefix.
    live: Option<(PathBuf, String)>,
    redraw_still_spans: bool,
    cache: CacheSetup,
    /// The job span's W3C `traceparent`, when traces are exported.
    traceparent: Option<String>,
}

/// What a render process reports, one JSON object per line.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Message {
    Stage {
        name: String,
        total: u64,
    },
    Frames {
        done: u64,
        total: u64,
    },
    Publish {
        name: String,
        file: PathBuf,
    },
    /// What the render did with the shared cache tier (hits, stores, errors), for the server's
    /// counters (`/ready`).
    SharedCache {
        counts: [u64; 3],
    },
    Done {
        report: Box<Report>,
    },
    Failed {
        code: String,
        message: String,
        input_error: bool,
    },
}

/// This process's executable, to start render processes with (on Linux the running file
/// itself, even once an upgrade has replaced it on disk).
pub fn this_executable() -> Option<PathBuf> {
    let proc_self = Path::new("/proc/self/exe");
    if proc_self.exists() { Some(proc_self.to_path_buf()) } else { std::env::current_exe().ok() }
}

impl Renderer {
    pub fn new(engine: Arc<Engine>, isolation: Option<Isolation>) -> Self {
        Self { engine, isolation, idle: Mutex::new(vec![]) }
    }

    /// Renders `spec` to `out` like [`Engine::render`], in a render process when isolated.
    /// Blocks: call it from a render thread.
    pub fn render(
        &self,
        spec: &Spec,
        base_dir: &Path,
        out: &Path,
        opts: &RenderOptions,
    ) -> Result<Report, RenderError> {
        let Some(iso) = &self.isolation else {
            return self.engine.render(spec, base_dir, out, opts);
        };
        let request = Request {
            spec: spec.clone(),
            base_dir: base_dir.to_path_buf(),
            out: out.to_path_buf(),
            scope: opts.scope.clone(),
            jobs: opts.jobs,
            encoder_threads: opts.encoder_threads,
            cache_scope: opts.cache_scope.clone(),
            cache_share: opts.cache_share,
            live: opts.live.as_ref().map(|l| (l.dir.clone(), l.uri_prefix.clone())),
            redraw_still_spans: opts.redraw_still_spans,
            cache: iso.cache.clone(),
            traceparent: iso.trace.and_then(|t| (t.current)()),
        };
        let mut line = serde_json::to_vec(&request).map_err(|e| RenderError::Io(std::io::Error::other(e)))?;
        line.push(b'\n');
        let idle = {
            let mut idle = self.idle.lock().expect("idle processes lock");
            // One that died while idle (killed from outside) is reaped here.
            idle.retain_mut(|p| matches!(p.child.try_wait(), Ok(None)));
            idle.pop()
        };
        let mut process = match idle {
            Some(p) => p,
            None => Process::start(iso)?,
        };
        if process.send(&line).is_err() {
            // It died while idle (killed from outside): a fresh one takes the render.
            process = Process::start(iso)?;
            process.send(&line).map_err(RenderError::Io)?;
        }
        let (result, reusable) = process.run(iso, &self.engine.cache, opts);
        if reusable && process.renders < RENDERS_PER_PROCESS {
            self.idle.lock().expect("idle processes lock").push(process);
        }
        result
    }
}

/// One render process: its pipes, and the last lines of its log.
struct Process {
    child: std::process::Child,
    stdin: Arc<Mutex<std::process::ChildStdin>>,
    stdout: BufReader<std::process::ChildStdout>,
    log: Arc<Log>,
    log_thread: Option<std::thread::JoinHandle<()>>,
    renders: u32,
}

impl Process {
    fn start(iso: &Isolation) -> Result<Self, RenderError> {
        let mut cmd = Command::new(&iso.program);
        cmd.arg(CHILD_COMMAND).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group: a kill takes the render process and nothing of the server's.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        // Within the hard limit this process has (a process may not raise its own).
        let mut own = libc::rlimit { rlim_cur: 0, rlim_max: libc::RLIM_INFINITY };
        // SAFETY: getrlimit writes into the struct we own.
        unsafe { libc::getrlimit(libc::RLIMIT_DATA, &mut own) };
        let limit = ((iso.memory_limit_mb.saturating_mul(1 << 20)) as libc::rlim_t).min(own.rlim_max);
        // SAFETY: between fork and exec only setrlimit runs, an async-signal-safe system call
        // on a struct on this stack.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                let cap = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                if libc::setrlimit(libc::RLIMIT_DATA, &cap) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        // The render thread's lowered priority carries over to the process it starts.
        let mut child = cmd.spawn().map_err(|e| {
            RenderError::Io(std::io::Error::other(format!(
                "cannot start a render process ({}): {e}",
                iso.program.display()
            )))
        })?;
        let stdin = Arc::new(Mutex::new(child.stdin.take().expect("piped stdin")));
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Log::default());
        let log_thread = {
            let log = log.clone();
            std::thread::Builder::new()
                .name("render-log".into())
                .spawn(move || forward_stderr(stderr, &log))
                .map_err(RenderError::Io)?
        };
        Ok(Self { child, stdin, stdout, log, log_thread: Some(log_thread), renders: 0 })
    }

    fn send(&mut self, line: &[u8]) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().expect("stdin lock");
        stdin.write_all(line)?;
        stdin.flush()
    }

    /// Follows the render just sent until its result; whether the process may take another.
    fn run(&mut self, iso: &Isolation, cache: &Cache, opts: &RenderOptions) -> (Result<Report, RenderError>, bool) {
        self.renders += 1;
        let failures_before = {
            let mut lines = self.log.lines.lock().expect("log lock");
            lines.tail.clear();
            lines.failures
        };
        let finished = Arc::new(AtomicBool::new(false));
        let (asked, killed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let canceller = {
            let (finished, asked, killed) = (finished.clone(), asked.clone(), killed.clone());
            let (pid, stdin, cancel) = (self.child.id() as libc::pid_t, self.stdin.clone(), opts.cancel.clone());
            std::thread::Builder::new()
                .name("render-cancel".into())
                .spawn(move || watch_cancel(pid, &stdin, cancel, &finished, &asked, &killed))
        };
        let result = self.follow(iso, cache, opts, failures_before);
        finished.store(true, Ordering::Relaxed);
        if let Ok(c) = canceller {
            let _ = c.join();
        }
        match result {
            Some(r) => {
                // Not reused when asked to stop (its `cancel` line may still be unread), or
                // after a panic or an allocation failure (it exits or may be left short).
                let spent = matches!(&r, Err(e) if matches!(e.code(), "render_crashed" | "out_of_memory"));
                let reusable = !asked.load(Ordering::Relaxed) && !spent;
                (r, reusable)
            }
            None => {
                let status = self.child.wait();
                // Its last lines, once the log is read to its end; an FFmpeg process it left
                // behind may hold the log open, so not for long.
                let since = Instant::now();
                while self.log_thread.as_ref().is_some_and(|t| !t.is_finished()) && since.elapsed() < LOG_DRAIN {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let tail: Vec<String> = self.log.lines.lock().expect("log lock").tail.iter().cloned().collect();
                (Err(diagnose(iso, status, &tail, killed.load(Ordering::Relaxed))), false)
            }
        }
    }

    /// Hands progress and live pieces on until the render's result (`None`: the process ended
    /// without one).
    fn follow(
        &mut self,
        iso: &Isolation,
        cache: &Cache,
        opts: &RenderOptions,
        failures_before: u64,
    ) -> Option<Result<Report, RenderError>> {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut self.stdout).take(MAX_LINE).read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let Ok(message) = serde_json::from_slice::<Message>(&buf) else {
                let start = String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned();
                tracing::warn!(line = %start, "render process wrote a line that is not a message");
                continue;
            };
            match message {
                Message::Stage { name, total } => {
                    if let (Some(name), Some(f)) = (progress_name(&name), &opts.progress) {
                        f(Progress::Stage { name, total });
                    }
                }
                Message::Frames { done, total } => {
                    if let Some(f) = &opts.progress {
                        f(Progress::Frames { done, total });
                    }
                }
                Message::Publish { name, file } => {
                    if let Some(live) = &opts.live {
                        (live.publish)(&name, &file);
                    }
                }
                Message::SharedCache { counts } => cache.add_shared_counts(counts),
                Message::Done { report } => return Some(Ok(*report)),
                // An FFmpeg process of the render inherits its limit: its allocation failures
                // are the render's. (Other failures' messages may quote the spec.)
                Message::Failed { code, message, .. }
                    if matches!(code.as_str(), "ffmpeg_failed" | "io" | "render_crashed")
                        && (out_of_memory(&message) || self.log.says_out_of_memory(failures_before)) =>
                {
                    return Some(Err(RenderError::OutOfMemory { limit_mb: iso.memory_limit_mb }));
                }
                Message::Failed { code, message, input_error } => {
                    return Some(Err(failure(&code, message, input_error)));
                }
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // Dropped between renders (nothing to lose) or after its render was given up.
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            kill_render(self.child.id() as libc::pid_t);
        }
        let _ = self.child.wait();
        // The log thread ends when the last holder of the pipe closes it; it is not waited for.
        if let Some(t) = self.log_thread.take().filter(|t| t.is_finished()) {
            let _ = t.join();
        }
    }
}

/// Kills render process `pid` (not yet reaped) with its process group, and the FFmpeg
/// processes it started, each of which leads a group of its own.
fn kill_render(pid: libc::pid_t) {
    // Stopped first, so it starts nothing new while its children are listed.
    // SAFETY: a plain kill; the process is not reaped yet, so its id is its own.
    unsafe { libc::kill(-pid, libc::SIGSTOP) };
    let mut children = vec![];
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let list = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            children.extend(list.split_whitespace().filter_map(|c| c.parse::<libc::pid_t>().ok()));
        }
    }
    // SAFETY: plain kills. The render process is not reaped yet, so neither its id nor its
    // children's (reparented only once it dies) can have been reused.
    unsafe {
        for c in children {
            libc::kill(-c, libc::SIGKILL);
            libc::kill(c, libc::SIGKILL);
        }
        libc::kill(-pid, libc::SIGKILL);
    }
}

/// Why a render process ended without a result.
fn diagnose(
    iso: &Isolation,
    status: std::io::Result<std::process::ExitStatus>,
    tail: &[String],
    killed: bool,
) -> RenderError {
    if killed {
        return RenderError::Cancelled;
    }
    if tail.iter().any(|l| out_of_memory(l)) {
        return RenderError::OutOfMemory { limit_mb: iso.memory_limit_mb };
    }
    let how = match status {
        Ok(s) => describe_exit(s),
        Err(e) => format!("cannot be waited for: {e}"),
    };
    let last = tail.last().map(|l| format!(": {l}")).unwrap_or_default();
    RenderError::Isolated {
        code: "render_crashed",
        message: format!("the render process {how}{last}"),
        input_error: false,
    }
}

/// Sends `cancel` when the render is asked to stop, and kills the process group if it has
/// not ended [`KILL_GRACE`] later. Ends when the render does.
fn watch_cancel(
    pid: libc::pid_t,
    stdin: &Mutex<std::process::ChildStdin>,
    cancel: Option<Arc<AtomicBool>>,
    finished: &AtomicBool,
    asked: &AtomicBool,
    killed: &AtomicBool,
) {
    let stop_requested = || cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed));
    while !finished.load(Ordering::Relaxed) {
        if stop_requested() {
            asked.store(true, Ordering::Relaxed);
            if let Ok(mut stdin) = stdin.lock() {
                let _ = stdin.write_all(b"cancel\n").and_then(|_| stdin.flush());
            }
            let since = Instant::now();
            while !finished.load(Ordering::Relaxed) && since.elapsed() < KILL_GRACE {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !finished.load(Ordering::Relaxed) {
                killed.store(true, Ordering::Relaxed);
                kill_render(pid);
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A render process's last log lines, and how many failure marks it has written.
#[derive(Default)]
struct Log {
    lines: Mutex<LogLines>,
    marked: Condvar,
}

#[derive(Default)]
struct LogLines {
    tail: VecDeque<String>,
    failures: u64,
}

impl Log {
    /// Whether the render's log says an allocation failed, once it has been read up to the
    /// failure mark written after mark `failures_before` (for at most [`LOG_DRAIN`]).
    fn says_out_of_memory(&self, failures_before: u64) -> bool {
        let lines = self.lines.lock().expect("log lock");
        let (lines, _) =
            self.marked.wait_timeout_while(lines, LOG_DRAIN, |l| l.failures <= failures_before).expect("log lock");
        lines.tail.iter().any(|l| out_of_memory(l))
    }
}

/// Copies a render process's log lines to this process's stderr, keeping the last few.
fn forward_stderr(stderr: std::process::ChildStderr, log: &Log) {
    let mut reader = BufReader::new(stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        // Lines past 8 KB are cut; the rest of such a line comes as the next ones.
        match (&mut reader).take(8192).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // The mark is for this reader only: counted, never forwarded or kept.
        if buf.trim_ascii_end() == FAILURE_MARK.as_bytes() {
            log.lines.lock().expect("log lock").failures += 1;
            log.marked.notify_all();
            continue;
        }
        let _ = std::io::stderr().write_all(&buf);
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if line.is_empty() {
            continue;
        }
        let mut lines = log.lines.lock().expect("log lock");
        if lines.tail.len() == STDERR_LINES {
            lines.tail.pop_front();
        }
        lines.tail.push_back(line);
    }
}

/// Whether a log line says an allocation failed (Rust's allocator, C++'s, the C library's,
/// x264's).
fn out_of_memory(line: &str) -> bool {
    (line.contains("memory allocation of") && line.contains("failed"))
        || line.contains("std::bad_alloc")
        || line.contains("Cannot allocate memory")
        || (line.contains("malloc of size") && line.contains("failed"))
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(libc::SIGKILL)) => "was killed (SIGKILL: the system may be out of memory)".into(),
        (_, Some(sig)) => format!("died of signal {sig}"),
        (Some(code), _) => format!("exited with status {code} without a result"),
        _ => "ended without a result".into(),
    }
}

/// The progress name `name` stands for (progress names are static in the engine).
fn progress_name(name: &str) -> Option<&'static str> {
    Stage::ALL.iter().filter_map(|s| s.progress_name()).find(|n| *n == name)
}

/// A failure a render process reported, as the error the same render in this process gives.
fn failure(code: &str, message: String, input_error: bool) -> RenderError {
    match code {
        "cancelled" => RenderError::Cancelled,
        _ => {
            let code = RenderError::CODES.iter().find(|c| **c == code).copied().unwrap_or("render_crashed");
            RenderError::Isolated { code, message, input_error }
        }
    }
}

/// What a render thread's panic carries.
pub(crate) type Thrown = Box<dyn std::any::Any + Send>;

/// A panic's message (render threads here and in the workers).
pub(crate) fn panic_message(panic: &Thrown) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

/// `reelsmith render-child`: renders the requests read from stdin, one after the other, and
/// reports on stdout. Returns the process's exit code once stdin closes.
pub fn child_main(trace: Option<TraceHooks>) -> i32 {
    // Each request comes with its stop flag, made here as it is read: a `cancel` line raises
    // the latest request's, and so does stdin closing (the server is gone), whether or not
    // the render has started yet.
    let (requests, incoming) = std::sync::mpsc::channel::<(String, Arc<AtomicBool>)>();
    {
        let spawned = std::thread::Builder::new().name("render-stdin".into()).spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut latest = Arc::new(AtomicBool::new(false));
            loop {
                let mut l = String::new();
                match stdin.read_line(&mut l) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if l.trim() == "cancel" => latest.store(true, Ordering::Relaxed),
                    Ok(_) => {
                        latest = Arc::new(AtomicBool::new(false));
                        if requests.send((l, latest.clone())).is_err() {
                            break;
                        }
                    }
                }
            }
            latest.store(true, Ordering::Relaxed);
        });
        if let Err(e) = spawned {
            eprintln!("render-child: cannot read stdin: {e}");
            return 2;
        }
    }
    // Messages go to the stdout the server reads; anything else this process or a library in
    // it prints to stdout goes to stderr instead, so it cannot break a message line.
    // SAFETY: plain descriptor calls on this process's own standard descriptors; the new
    // descriptor is owned by the File from here on.
    let out = unsafe {
        // Close-on-exec: an FFmpeg process the render starts must not hold the server's pipe
        // open (the server reads to its end when the render process dies).
        let messages = libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3);
        if messages < 0 || libc::dup2(2, 1) < 0 {
            eprintln!("render-child: cannot set up its output: {}", std::io::Error::last_os_error());
            return 2;
        }
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(messages)
    };
    let out = Arc::new(Mutex::new(out));
    let send = move |m: &Message| {
        let mut line = serde_json::to_vec(m).expect("messages serialise");
        line.push(b'\n');
        let mut o = out.lock().expect("stdout lock");
        let _ = o.write_all(&line).and_then(|_| o.flush());
    };
    let mut engine: Option<Engine> = None;
    for (line, cancel) in incoming {
        let request: Request = match serde_json::from_str(&line) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("render-child: unreadable request: {e}");
                return 2;
            }
        };
        let in_trace = trace.zip(request.traceparent.as_deref()).and_then(|(t, parent)| (t.enter)(parent));
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_request(&mut engine, &request, cancel, &send)
        }));
        drop(in_trace);
        if let Some(t) = trace {
            (t.flush)();
        }
        let panicked = result.is_err();
        if !matches!(result, Ok(Ok(_))) {
            // After anything the failing code wrote on stderr (see `FAILURE_MARK`).
            eprintln!("{FAILURE_MARK}");
        }
        let message = match result {
            Ok(Ok(report)) => Message::Done { report: Box::new(report) },
            Ok(Err(e)) => {
                Message::Failed { code: e.code().into(), message: e.to_string(), input_error: e.is_input_error() }
            }
            Err(panic) => Message::Failed {
                code: "render_crashed".into(),
                message: format!("render worker panicked: {}", panic_message(&panic)),
                input_error: false,
            },
        };
        send(&message);
        if panicked {
            // What the unwind left (a poisoned lock, half-made state) must not meet the next
            // render: a fresh process takes it.
            return 0;
        }
    }
    0
}

fn run_request(
    engine: &mut Option<Engine>,
    request: &Request,
    cancel: Arc<AtomicBool>,
    send: &(impl Fn(&Message) + Send + Sync + Clone + 'static),
) -> Result<Report, RenderError> {
    let engine = match engine {
        Some(e) => e,
        None => {
            // Every request of a server names the same cache: the first one opens it.
            let mut cache = Cache::open(&request.cache.root, request.cache.max_bytes)?;
            if let Some(redis) = &request.cache.redis {
                match reelsmith_store::RedisTier::new(redis) {
                    Ok(tier) => cache = cache.with_shared(Arc::new(tier)),
                    // The shared tier is an accelerator: the server has warned about it already.
                    Err(e) => tracing::warn!(error = %e, "render process: no shared cache"),
                }
            }
            engine.insert(Engine::new(cache)?)
        }
    };
    let progress = {
        let send = send.clone();
        Arc::new(move |p: Progress| match p {
            Progress::Stage { name, total } => send(&Message::Stage { name: name.into(), total }),
            Progress::Frames { done, total } => send(&Message::Frames { done, total }),
        }) as reelsmith_engine::ProgressFn
    };
    let live = request.live.as_ref().map(|(dir, uri_prefix)| {
        let send = send.clone();
        LiveOptions {
            dir: dir.clone(),
            uri_prefix: uri_prefix.clone(),
            publish: Arc::new(move |name: &str, file: &Path| {
                send(&Message::Publish { name: name.into(), file: file.to_path_buf() })
            }),
        }
    });
    let opts = RenderOptions {
        jobs: request.jobs,
        encoder_threads: request.encoder_threads,
        progress: Some(progress),
        cancel: Some(cancel),
        scope: request.scope.clone(),
        cache_scope: request.cache_scope.clone(),
        cache_share: request.cache_share,
        live,
        redraw_still_spans: request.redraw_still_spans,
    };
    let shared_before = engine.cache.shared_counts();
    let result = engine.render(&request.spec, &request.base_dir, &request.out, &opts);
    if let (Some(before), Some(after)) = (shared_before, engine.cache.shared_counts()) {
        let counts = [0, 1, 2].map(|i| after[i] - before[i]);
        if counts != [0; 3] {
            send(&Message::SharedCache { counts });
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x264 reports a failed allocation only on stderr, just before the render fails: the
    /// failure is known as one of memory once the log is read up to the render's failure mark,
    /// however far the log thread lags behind the messages.
    #[test]
    fn an_allocation_failure_on_stderr_before_the_mark_is_out_of_memory() {
        let log_of = |script: &str| {
            let mut child = Command::new("sh").args(["-c", script]).stderr(Stdio::piped()).spawn().unwrap();
            let stderr = child.stderr.take().unwrap();
            let log = Arc::new(Log::default());
            let reader = {
                let log = log.clone();
                std::thread::spawn(move || forward_stderr(stderr, &log))
            };
            let oom = log.says_out_of_memory(0);
            child.wait().unwrap();
            reader.join().unwrap();
            (oom, log)
        };
        let (oom, log) =
            log_of(&format!("echo 'x264 [error]: malloc of size 45925056 failed' >&2; echo '{FAILURE_MARK}' >&2"));
        assert!(oom);
        let lines = log.lines.lock().unwrap();
        assert_eq!(lines.failures, 1);
        assert!(lines.tail.iter().all(|l| l != FAILURE_MARK), "the mark is not a log line");
        drop(lines);
        let (oom, _) = log_of(&format!("echo 'x264 [error]: invalid frame' >&2; echo '{FAILURE_MARK}' >&2"));
        assert!(!oom);
    }

    #[test]
    fn failures_keep_their_codes_across_the_process_boundary() {
        for code in RenderError::CODES {
            let e = failure(code, "m".into(), false);
            assert_eq!(e.code(), code);
        }
        assert!(matches!(failure("cancelled", "x".into(), false), RenderError::Cancelled));
        // A code this version does not know is a crash, never a made-up code.
        assert_eq!(failure("no_such_code", "x".into(), false).code(), "render_crashed");
        let invalid = failure("spec_invalid", "scenes[0]: bad".into(), true);
        assert!(invalid.is_input_error());
        assert_eq!(invalid.to_string(), "scenes[0]: bad");
    }

    #[test]
    fn allocation_failures_are_recognised_in_the_log() {
        assert!(out_of_memory("memory allocation of 1073741824 bytes failed"));
        assert!(out_of_memory("terminate called after throwing an instance of 'std::bad_alloc'"));
        assert!(out_of_memory("ffmpeg failed: x264 [error]: malloc of size 7332480 failed"));
        assert!(!out_of_memory("render finished"));
    }

    #[test]
    fn progress_names_come_back_as_the_engines() {
        for s in Stage::ALL {
            if let Some(n) = s.progress_name() {
                assert_eq!(progress_name(n), Some(n));
            }
        }
        assert_eq!(progress_name("render"), Some("render"));
        assert_eq!(progress_name("made-up"), None);
    }

    #[test]
    fn messages_are_one_json_object_per_line() {
        let m = Message::Publish { name: "seg-1.m4s".into(), file: "/tmp/x".into() };
        let line = serde_json::to_string(&m).unwrap();
        assert!(!line.contains('\n'));
        assert!(matches!(serde_json::from_str(&line).unwrap(), Message::Publish { .. }));
    }
}
