//! FFmpeg as subprocesses: raw yuv420p frames in, H.264 segments out; audio decode and
//! AAC encode through pipes; stream-copy concatenation; ffprobe; hardware encoder probes.
//!
//! A subprocess isolates crashes and lets parallel segments each own an encoder; frames are
//! produced in the encoder's native pixel format so FFmpeg never converts them.

use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::aac::AAC_FRAME;
use crate::frame::Yuv420;

#[derive(Debug, thiserror::Error)]
pub enum FfmpegError {
    #[error("ffmpeg not found ({0}); install it (scripts/setup.sh) or set REELSMITH_FFMPEG")]
    Missing(String),
    #[error("{what} failed ({status}): {stderr}")]
    Failed { what: String, status: String, stderr: String },
    #[error("ffmpeg i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("unexpected ffprobe output: {0}")]
    Probe(String),
    #[error(transparent)]
    X264(#[from] crate::x264::X264Error),
    #[error(transparent)]
    Aac(#[from] crate::aac::AacError),
}

/// What an input file must be. Each kind opens only its own demuxers, and only through the
/// `file` and `pipe` protocols: a manifest or playlist (DASH, HLS, concat, image2 sequences…)
/// that would make FFmpeg read other files or the network is never opened, whatever its bytes
/// or its name claim. Pictures never reach FFmpeg (the `image` crate decodes them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    /// Narration recordings and music: MP3, WAV, Ogg, FLAC, AAC (ADTS), M4A/MP4, WebM/Matroska.
    Audio,
    /// Clips: MP4/MOV and WebM/Matroska.
    Video,
    /// Either of the above (probing an upload before its streams say which it is).
    Media,
}

impl MediaKind {
    /// The demuxers FFmpeg may use for this kind (names as `-format_whitelist` matches them).
    pub fn demuxers(self) -> &'static str {
        match self {
            MediaKind::Audio | MediaKind::Media => "mp3,wav,ogg,flac,aac,mov,matroska",
            MediaKind::Video => "mov,matroska",
        }
    }

    /// Whether ffprobe's `format_name` (e.g. `mov,mp4,m4a,3gp,3g2,mj2`) is one of them.
    pub fn allows(self, format_name: &str) -> bool {
        let allowed: Vec<&str> = self.demuxers().split(',').collect();
        format_name.split(',').any(|f| allowed.contains(&f))
    }
}

/// The most a short child (probe, decode, concat) may take before it is killed.
pub const CHILD_DEADLINE: Duration = Duration::from_secs(300);
/// The most a probe may take (it reads headers only).
pub const PROBE_DEADLINE: Duration = Duration::from_secs(30);

/// Arguments that open `path` as an input of `kind`: protocol and demuxer allowlists, then the
/// path as a `file:` URL, so a name like `http:host:port` or `-i` is a file name, nothing else.
fn input_args(cmd: &mut Command, path: &Path, kind: MediaKind) {
    cmd.args(["-protocol_whitelist", "file,pipe", "-format_whitelist", kind.demuxers(), "-i"]).arg(file_url(path));
}

/// `file:<path>` (absolute, so the working folder does not matter).
pub fn file_url(path: &Path) -> std::ffi::OsString {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut u = std::ffi::OsString::from("file:");
    u.push(abs.as_os_str());
    u
}

/// FFmpeg's words without server paths: the input's folders are cut, its name stays.
fn scrub(text: &str, path: &Path) -> String {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut out = text.to_string();
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    for p in [abs.as_path(), path] {
        let p = p.to_string_lossy();
        if !p.is_empty() {
            out = out.replace(&format!("file:{p}"), &name).replace(p.as_ref(), &name);
        }
    }
    out
}

pub fn ffmpeg_bin() -> String {
    std::env::var("REELSMITH_FFMPEG").unwrap_or_else(|_| "ffmpeg".into())
}
pub fn ffprobe_bin() -> String {
    std::env::var("REELSMITH_FFPROBE").unwrap_or_else(|_| "ffprobe".into())
}

fn command(bin: &str) -> Command {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(bin);
    c.arg("-hide_banner").arg("-nostdin").args(["-loglevel", "error"]);
    // Its own process group: a deadline or a cancel kills whatever it started, too.
    c.process_group(0);
    c
}

fn spawn(mut cmd: Command, what: &str) -> Result<Child, FfmpegError> {
    cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            FfmpegError::Missing(format!("{what}: {e}"))
        } else {
            FfmpegError::Io(e)
        }
    })
}

/// Reads a child's stderr on its own thread so a chatty process can never block on a full pipe.
fn drain(child: &mut Child) -> Option<JoinHandle<String>> {
    child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            // Keep the tail: that is where FFmpeg says what went wrong.
            if buf.len() > 4000 {
                let cut = buf.len() - 4000;
                let cut = (cut..buf.len()).find(|&i| buf.is_char_boundary(i)).unwrap_or(buf.len());
                buf.drain(..cut);
            }
            buf
        })
    })
}

/// Waits for a child like `Child::wait`, also returning the CPU seconds it used (for reports).
fn wait_with_cpu(child: &mut Child) -> std::io::Result<(ExitStatus, f64)> {
    use std::os::unix::process::ExitStatusExt;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: plain wait4 on our own child with out-pointers to locals.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            // Already reaped elsewhere: fall back to the std wait (no CPU figure).
            return child.wait().map(|s| (s, 0.0));
        }
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((ExitStatus::from_raw(status), tv(ru.ru_utime) + tv(ru.ru_stime)))
}

fn check(what: &str, status: ExitStatus, stderr: Option<JoinHandle<String>>) -> Result<(), FfmpegError> {
    let text = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if status.success() {
        Ok(())
    } else {
        Err(FfmpegError::Failed { what: what.into(), status: status.to_string(), stderr: text.trim().to_string() })
    }
}

/// Runs a child to its end and returns its stdout, killing it (and its process group) when it
/// outlives `deadline` or writes more than `max_stdout` bytes.
fn run(cmd: Command, what: &str) -> Result<Vec<u8>, FfmpegError> {
    run_limited(cmd, what, CHILD_DEADLINE, usize::MAX, None)
}

fn run_limited(
    mut cmd: Command,
    what: &str,
    deadline: Duration,
    max_stdout: usize,
    input: Option<&Path>,
) -> Result<Vec<u8>, FfmpegError> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(cmd, what)?;
    let stderr = drain(&mut child);
    let pgid = child.id() as libc::pid_t;
    let mut stdout = child.stdout.take().expect("stdout piped");
    let reader = std::thread::spawn(move || -> std::io::Result<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = stdout.read(&mut buf)?;
            if n == 0 {
                return Ok((out, false));
            }
            if out.len() + n > max_stdout {
                return Ok((out, true));
            }
            out.extend_from_slice(&buf[..n]);
        }
    });
    // The waiter tells the main thread when the child is gone; the deadline kills it first.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let r = wait_with_cpu(&mut child).map(|(s, _)| s);
        let _ = tx.send(());
        r
    });
    let timed_out = rx.recv_timeout(deadline).is_err();
    if timed_out {
        kill_group(pgid);
    }
    let status = waiter.join().map_err(|_| std::io::Error::other("child waiter panicked"))??;
    let (out, overflowed) = reader.join().map_err(|_| std::io::Error::other("child reader panicked"))??;
    let text = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    let text = match input {
        Some(p) => scrub(text.trim(), p),
        None => text.trim().to_string(),
    };
    if timed_out {
        return Err(FfmpegError::Failed {
            what: what.into(),
            status: format!("killed after {:.1} s", deadline.as_secs_f64()),
            stderr: text,
        });
    }
    // (An overflowing child needs no kill: the reader hung up, so its next write failed, and it
    // has been reaped by now; its pid may already be another process's.)
    if overflowed {
        return Err(FfmpegError::Failed {
            what: what.into(),
            status: format!("more than {max_stdout} bytes of output"),
            stderr: text,
        });
    }
    if status.success() {
        Ok(out)
    } else {
        Err(FfmpegError::Failed { what: what.into(), status: status.to_string(), stderr: text })
    }
}

/// Runs another tool (pdftoppm, LibreOffice) as FFmpeg's children run: in its own process
/// group, killed with whatever it started at `deadline`, its stdout bounded by `max_stdout`;
/// and its address space by `max_memory` bytes, so a hostile file cannot make it take the
/// machine's memory (an allocation past the limit fails inside the tool).
pub fn run_tool(
    mut cmd: Command,
    what: &str,
    deadline: Duration,
    max_stdout: usize,
    max_memory: u64,
) -> Result<Vec<u8>, FfmpegError> {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0);
    let limit = libc::rlimit { rlim_cur: max_memory as libc::rlim_t, rlim_max: max_memory as libc::rlim_t };
    // SAFETY: between fork and exec the closure calls only setrlimit (async-signal-safe) on
    // a value it owns.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_limited(cmd, what, deadline, max_stdout, None)
}

/// SIGKILL to a child's whole process group (the child leads it: see [`command`]).
fn kill_group(pgid: libc::pid_t) {
    // SAFETY: kill(2) with a negative pid signals our own child's process group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// The H.264 encoders Reelsmith knows how to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum H264Encoder {
    Libx264,
    Nvenc,
    Qsv,
    Vaapi,
    VideoToolbox,
}

impl H264Encoder {
    pub const HARDWARE: [H264Encoder; 4] = [Self::Nvenc, Self::Qsv, Self::Vaapi, Self::VideoToolbox];

    pub fn ffmpeg_name(self) -> &'static str {
        match self {
            Self::Libx264 => "libx264",
            Self::Nvenc => "h264_nvenc",
            Self::Qsv => "h264_qsv",
            Self::Vaapi => "h264_vaapi",
            Self::VideoToolbox => "h264_videotoolbox",
        }
    }

    /// Encoder arguments for a quality level given as x264's preset and CRF.
    fn args(self, preset: &str, crf: u8, threads: Option<u32>) -> Vec<String> {
        let mut a: Vec<String> = vec!["-c:v".into(), self.ffmpeg_name().into()];
        let q = crf.to_string();
        match self {
            Self::Libx264 => {
                a.extend(["-preset".into(), preset.into(), "-crf".into(), q]);
                if let Some(t) = threads {
                    a.extend(["-threads".into(), t.to_string()]);
                }
            }
            Self::Nvenc => a.extend([
                "-preset".into(),
                "p4".into(),
                "-rc".into(),
                "vbr".into(),
                "-cq".into(),
                q,
                "-b:v".into(),
                "0".into(),
            ]),
            Self::Qsv => a.extend(["-global_quality".into(), q]),
            Self::Vaapi => a.extend(["-qp".into(), q]),
            Self::VideoToolbox => a.extend(["-q:v".into(), (100u32.saturating_sub(crf as u32 * 2)).to_string()]),
        }
        a
    }

    /// Arguments placed before the input (device setup) and as a filter (upload).
    fn device_args(self) -> (Vec<String>, Option<&'static str>) {
        match self {
            Self::Vaapi => (vec!["-vaapi_device".into(), "/dev/dri/renderD128".into()], Some("format=nv12,hwupload")),
            _ => (vec![], None),
        }
    }
}

/// What to encode and how.
#[derive(Clone, Debug)]
pub struct VideoSettings {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub encoder: H264Encoder,
    pub preset: String,
    pub crf: u8,
    /// Encoder threads; `None` lets the encoder decide.
    pub threads: Option<u32>,
}

/// A streaming FFmpeg process that is killed and reaped when dropped before it was waited for:
/// an encoder or decoder abandoned mid-way (an error, a cancel, a clip cut short) must not keep
/// running. After a wait, the kill does nothing (the child's status is known, so no signal goes
/// to a pid that may have been reused).
struct ChildGuard(Child);

impl std::ops::Deref for ChildGuard {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether libx264 runs inside this process (the default) rather than in an FFmpeg child:
/// `REELSMITH_X264=ffmpeg` selects the child, for comparisons.
pub fn x264_in_process() -> bool {
    std::env::var("REELSMITH_X264").map_or(true, |v| v != "ffmpeg")
}

/// A running encoder: write frames, then [`VideoEncoder::finish`]. libx264 runs in this
/// process ([`crate::x264`]); hardware encoders run in an FFmpeg child fed through a pipe.
pub struct VideoEncoder {
    backend: Backend,
}

enum Backend {
    InProcess(crate::x264::Mp4Encoder),
    Child(ChildEncoder),
}

impl VideoEncoder {
    /// Starts writing an MP4 with one H.264 stream to `out`.
    pub fn start(s: &VideoSettings, out: &Path) -> Result<Self, FfmpegError> {
        Self::start_tuned(s, out, false)
    }

    /// Like [`VideoEncoder::start`], for frames that never change (a slide held while it is
    /// narrated): x264 is tuned for still pictures, and in this process it takes maps of the
    /// blocks that did not change ([`VideoEncoder::write_frame_after`]).
    pub fn start_still(s: &VideoSettings, out: &Path) -> Result<Self, FfmpegError> {
        Self::start_tuned(s, out, true)
    }

    fn start_tuned(s: &VideoSettings, out: &Path, still: bool) -> Result<Self, FfmpegError> {
        let backend = if s.encoder == H264Encoder::Libx264 && x264_in_process() {
            let x = crate::x264::X264Settings {
                width: s.width,
                height: s.height,
                fps: s.fps,
                preset: &s.preset,
                tune: if still { "stillimage" } else { "" },
                crf: s.crf,
                threads: s.threads.unwrap_or(0),
                block_hints: still,
            };
            Backend::InProcess(crate::x264::Mp4Encoder::create(&x, out)?)
        } else {
            Backend::Child(ChildEncoder::start(s, out, still)?)
        };
        Ok(Self { backend })
    }

    pub fn write_frame(&mut self, f: &Yuv420) -> Result<(), FfmpegError> {
        match &mut self.backend {
            Backend::InProcess(e) => Ok(e.write_frame(f)?),
            Backend::Child(c) => c.write_frame(f),
        }
    }

    /// Writes a frame that follows the previous one, `constant` marking its macroblocks equal to
    /// that one's (see [`Yuv420::unchanged_macroblocks`]): in this process x264 codes it as a P
    /// picture and skips those blocks; an FFmpeg child gets the frame alone.
    pub fn write_frame_after(&mut self, f: &Yuv420, constant: &[u8]) -> Result<(), FfmpegError> {
        match &mut self.backend {
            Backend::InProcess(e) => Ok(e.write_frame_after(f, constant)?),
            Backend::Child(c) => c.write_frame(f),
        }
    }

    /// Writes the next frame, which equals the one before: in this process a repeat of the
    /// picture before, mostly without encoding ([`crate::x264::Mp4Encoder::write_unchanged`]).
    pub fn write_unchanged(&mut self, f: &Yuv420) -> Result<(), FfmpegError> {
        match &mut self.backend {
            Backend::InProcess(e) => Ok(e.write_unchanged(f)?),
            Backend::Child(c) => c.write_frame(f),
        }
    }

    pub fn frames(&self) -> u64 {
        match &self.backend {
            Backend::InProcess(e) => e.frames(),
            Backend::Child(c) => c.frames,
        }
    }

    /// Closes the input and waits for the file to be complete.
    pub fn finish(self) -> Result<PathBuf, FfmpegError> {
        match self.backend {
            Backend::InProcess(e) => Ok(e.finish()?),
            Backend::Child(c) => c.finish(),
        }
    }
}

/// An FFmpeg encoder process fed raw frames through its stdin.
struct ChildEncoder {
    child: ChildGuard,
    stdin: Option<BufWriter<ChildStdin>>,
    stderr: Option<JoinHandle<String>>,
    frames: u64,
    out: PathBuf,
}

impl ChildEncoder {
    fn start(s: &VideoSettings, out: &Path, still: bool) -> Result<Self, FfmpegError> {
        let mut cmd = command(&ffmpeg_bin());
        let (pre, filter) = s.encoder.device_args();
        cmd.args(pre)
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p"])
            .args(["-s", &format!("{}x{}", s.width, s.height)])
            .args(["-framerate", &s.fps.to_string(), "-i", "pipe:0"]);
        if let Some(f) = filter {
            cmd.args(["-vf", f]);
        }
        cmd.args(s.encoder.args(&s.preset, s.crf, s.threads));
        if still && s.encoder == H264Encoder::Libx264 {
            cmd.args(["-tune", "stillimage"]);
        }
        cmd.args(["-pix_fmt", "yuv420p"])
            .args(["-color_range", "tv", "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709"])
            // One time base for every segment so stream-copy concatenation stays frame exact.
            .args(["-video_track_timescale", &(s.fps * 1000).to_string()])
            .args(["-an", "-f", "mp4", "-y"])
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = spawn(cmd, "video encoder")?;
        // Frames are written whole (megabytes), so a small buffer only serves the odd short write.
        let stdin = child.stdin.take().map(|s| BufWriter::with_capacity(1 << 16, s));
        let stderr = drain(&mut child);
        Ok(Self { child: ChildGuard(child), stdin, stderr, frames: 0, out: out.to_path_buf() })
    }

    fn write_frame(&mut self, f: &Yuv420) -> Result<(), FfmpegError> {
        let stdin = self.stdin.as_mut().expect("encoder stdin open until finish");
        if let Err(e) = f.write_to(stdin) {
            // A broken pipe means FFmpeg died: report its own words, not EPIPE.
            self.stdin = None;
            let status = self.child.wait()?;
            check("video encoder", status, self.stderr.take())?;
            return Err(e.into());
        }
        self.frames += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<PathBuf, FfmpegError> {
        let flushed = self.stdin.take().map_or(Ok(()), |mut s| s.flush());
        let status = self.child.wait()?;
        // FFmpeg's own failure explains a broken pipe better than the pipe error does.
        check("video encoder", status, self.stderr.take())?;
        flushed?;
        Ok(self.out.clone())
    }
}

/// A video clip decoded to raw yuv420p frames of one size at a fixed rate: FFmpeg seeks to
/// `start`, resamples the rate with the `fps` filter and fits the picture with `filter`; frames
/// stream through a pipe, one at a time.
pub struct VideoDecoder {
    child: ChildGuard,
    stdout: Option<std::io::BufReader<std::process::ChildStdout>>,
    stderr: Option<JoinHandle<String>>,
    width: u32,
    height: u32,
}

/// What a [`VideoDecoder`] reads and how it shapes the frames.
#[derive(Clone, Debug)]
pub struct ClipDecode<'a> {
    pub path: &'a Path,
    /// Seconds into the clip of the first frame.
    pub start: f64,
    /// Seconds of clip to decode at most.
    pub duration: Option<f64>,
    pub fps: u32,
    /// Output frame size (even).
    pub width: u32,
    pub height: u32,
    /// A filtergraph from the clip (`[0:v]`, already at `fps`) to `[out]`; it may use `[1:v]`.
    pub filter: &'a str,
    /// A raw yuv420p picture of the output size, looped as input 1 (what shows around a clip
    /// that does not cover the frame).
    pub backdrop: Option<&'a Path>,
}

impl VideoDecoder {
    pub fn start(c: &ClipDecode<'_>) -> Result<Self, FfmpegError> {
        let mut cmd = command(&ffmpeg_bin());
        // Seeking before -i jumps to the keyframe before `start` and decodes from there, exact
        // to the frame; the output's timestamps then start at zero.
        cmd.args(["-ss", &format!("{:.4}", c.start.max(0.0))]);
        input_args(&mut cmd, c.path, MediaKind::Video);
        if let Some(b) = c.backdrop {
            cmd.args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &format!("{}x{}", c.width, c.height)])
                .args(["-stream_loop", "-1", "-protocol_whitelist", "file,pipe", "-i"])
                .arg(file_url(b));
        }
        let graph = format!("[0:v]fps={},setsar=1[clip];{}", c.fps, c.filter.replace("[0:v]", "[clip]"));
        cmd.args(["-filter_complex", &graph, "-map", "[out]"]);
        if let Some(d) = c.duration {
            cmd.args(["-t", &format!("{:.4}", d.max(0.0))]);
        }
        cmd.args(["-an", "-sn", "-f", "rawvideo", "-pix_fmt", "yuv420p", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = spawn(cmd, "video decoder")?;
        let stdout = child.stdout.take().map(|s| std::io::BufReader::with_capacity(1 << 20, s));
        let stderr = drain(&mut child);
        Ok(Self { child: ChildGuard(child), stdout, stderr, width: c.width, height: c.height })
    }

    /// Reads the next frame into `out` (of the decoder's size); `false` once the clip has ended.
    pub fn read_frame(&mut self, out: &mut Yuv420) -> Result<bool, FfmpegError> {
        assert_eq!((out.width, out.height), (self.width, self.height), "frame size");
        let Some(r) = self.stdout.as_mut() else { return Ok(false) };
        for plane in [&mut out.y, &mut out.u, &mut out.v] {
            match r.read_exact(plane) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // The end: whatever FFmpeg said decides whether that was an error.
                    self.stdout = None;
                    let status = self.child.wait()?;
                    check("video decoder", status, self.stderr.take())?;
                    return Ok(false);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(true)
    }
}

/// Encodes a few synthetic frames with `enc` to see whether it really works on this machine.
pub fn probe_encoder(enc: H264Encoder) -> bool {
    let mut cmd = command(&ffmpeg_bin());
    let (pre, filter) = enc.device_args();
    cmd.args(pre).args(["-f", "lavfi", "-i", "testsrc2=size=256x144:rate=30:duration=0.2"]);
    if let Some(f) = filter {
        cmd.args(["-vf", f]);
    }
    cmd.args(enc.args("veryfast", 23, None)).args(["-f", "null", "-"]);
    run(cmd, enc.ffmpeg_name()).is_ok()
}

/// FFmpeg's version line, e.g. `ffmpeg version 5.1.6-0+deb12u1`.
pub fn version() -> Result<String, FfmpegError> {
    let mut c = Command::new(ffmpeg_bin());
    c.arg("-version");
    let out = run(c, "ffmpeg -version")?;
    Ok(String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_string())
}

/// The soundtrack [`concat()`] muxes in: raw ADTS that starts with the encoder's priming frame,
/// sampled at `rate` Hz (what [`AacSpanEncoder`](crate::aac::AacSpanEncoder) stretches join into); the MP4's edit list
/// skips that frame.
#[derive(Clone, Copy, Debug)]
pub struct Soundtrack<'a> {
    pub path: &'a Path,
    pub rate: u32,
}

/// Joins MP4 segments by stream copy (no re-encode) and muxes in the soundtrack, also copied.
pub fn concat(
    segments: &[PathBuf],
    audio: Option<Soundtrack<'_>>,
    out: &Path,
    work_dir: &Path,
) -> Result<(), FfmpegError> {
    let list = work_dir.join("concat.txt");
    let mut text = String::from("ffconcat version 1.0\n");
    for s in segments {
        // The concat format quotes with single quotes; escape any in the path.
        text.push_str(&format!("file '{}'\n", s.display().to_string().replace('\'', "'\\''")));
    }
    std::fs::write(&list, text)?;
    let mut cmd = command(&ffmpeg_bin());
    // Our own list of our own segments: the concat demuxer, then MP4 only, from files only.
    cmd.args(["-f", "concat", "-safe", "0", "-protocol_whitelist", "file,pipe", "-format_whitelist", "concat,mov"])
        .arg("-i")
        .arg(file_url(&list));
    if let Some(Soundtrack { path, rate }) = audio {
        // ADTS has no edit list: starting its clock one frame early makes the MP4 muxer write
        // one that skips the priming frame.
        cmd.args(["-itsoffset", &format!("-{:.9}", AAC_FRAME as f64 / rate as f64)]);
        input_args(&mut cmd, path, MediaKind::Audio);
        cmd.args(["-bsf:a", "aac_adtstoasc", "-map", "0:v:0", "-map", "1:a:0"]);
    }
    cmd.args(["-c", "copy", "-movflags", "+faststart", "-f", "mp4", "-y"]).arg(out);
    run(cmd, "concatenation").map(|_| ())
}

/// Decodes any audio FFmpeg reads to interleaved f32 at `rate` Hz with `channels`, through an
/// optional audio filter chain (tempo, pitch). Stops after `max_seconds`.
pub fn decode_audio(
    path: &Path,
    rate: u32,
    channels: u16,
    filter: Option<&str>,
    max_seconds: f64,
) -> Result<Vec<f32>, FfmpegError> {
    let mut cmd = command(&ffmpeg_bin());
    input_args(&mut cmd, path, MediaKind::Audio);
    cmd.args(["-vn", "-sn"]);
    if let Some(f) = filter {
        cmd.args(["-af", f]);
    }
    cmd.args(["-t", &format!("{max_seconds:.3}")]).args([
        "-f",
        "f32le",
        "-acodec",
        "pcm_f32le",
        "-ac",
        &channels.to_string(),
        "-ar",
        &rate.to_string(),
        "pipe:1",
    ]);
    // Never more samples than max_seconds of them (plus a little for the filter's rounding).
    let max_bytes = ((max_seconds + 1.0) * rate as f64 * channels as f64 * 4.0) as usize;
    let bytes = run_limited(cmd, &format!("decoding {}", display_name(path)), CHILD_DEADLINE, max_bytes, Some(path))?;
    Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
}

/// Muxes an H.264 segment and its ADTS sound into one fragmented MP4 by stream copy (a live
/// stream's piece: see [`crate::fmp4`]). Its first picture is presented at its first decode
/// time (negative composition offsets), so no edit list is needed.
pub fn fragment(video: &Path, audio: Option<&Path>, out: &Path) -> Result<(), FfmpegError> {
    let mut cmd = command(&ffmpeg_bin());
    input_args(&mut cmd, video, MediaKind::Video);
    if let Some(a) = audio {
        input_args(&mut cmd, a, MediaKind::Audio);
        cmd.args(["-map", "0:v:0", "-map", "1:a:0", "-bsf:a", "aac_adtstoasc"]);
    }
    // delay_moov: the sound's decoder configuration (made from its first ADTS header) is known
    // only then; without it a mono track is described as stereo.
    cmd.args(["-c", "copy", "-f", "mp4"])
        .args(["-movflags", "+frag_keyframe+empty_moov+delay_moov+default_base_moof+negative_cts_offsets"])
        .arg("-y")
        .arg(out);
    run(cmd, "fragmenting a segment").map(|_| ())
}

/// Decodes audio straight into a raw f32le file (nothing held in memory), returning its frames.
pub fn decode_audio_to_file(
    path: &Path,
    rate: u32,
    channels: u16,
    max_seconds: f64,
    out: &Path,
) -> Result<u64, FfmpegError> {
    let mut cmd = command(&ffmpeg_bin());
    input_args(&mut cmd, path, MediaKind::Audio);
    cmd.args(["-vn", "-sn", "-t", &format!("{max_seconds:.3}")])
        .args(["-f", "f32le", "-acodec", "pcm_f32le", "-ac", &channels.to_string(), "-ar", &rate.to_string(), "-y"])
        .arg(out);
    run_limited(cmd, &format!("decoding {}", display_name(path)), CHILD_DEADLINE, usize::MAX, Some(path))?;
    Ok(std::fs::metadata(out)?.len() / (4 * channels as u64))
}

/// What ffprobe says about a media file.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ProbeInfo {
    pub duration: f64,
    pub streams: Vec<StreamInfo>,
    /// ffprobe's `format_name`, e.g. `mov,mp4,m4a,3gp,3g2,mj2` or `mp3`.
    pub format: String,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct StreamInfo {
    pub codec_type: String,
    pub codec_name: String,
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub frames: u64,
    pub duration: f64,
    pub sample_rate: u32,
    pub channels: u32,
}

impl ProbeInfo {
    pub fn video(&self) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.codec_type == "video")
    }
    pub fn audio(&self) -> Option<&StreamInfo> {
        self.streams.iter().find(|s| s.codec_type == "audio")
    }
}

/// Probes an audio or video file (see [`probe_as`]).
pub fn probe(path: &Path) -> Result<ProbeInfo, FfmpegError> {
    probe_as(path, MediaKind::Media)
}

/// Probes `path` as `kind`: only that kind's demuxers may open it, and the format found must be
/// one of them (checked again on ffprobe's answer).
pub fn probe_as(path: &Path, kind: MediaKind) -> Result<ProbeInfo, FfmpegError> {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(ffprobe_bin());
    c.process_group(0);
    c.args(["-v", "error", "-print_format", "json", "-show_format", "-show_streams"])
        .args(["-protocol_whitelist", "file,pipe", "-format_whitelist", kind.demuxers()])
        .arg(file_url(path));
    let what = format!("ffprobe {}", display_name(path));
    // Headers only: a megabyte of JSON is far more than any real file's streams need.
    let out = run_limited(c, &what, PROBE_DEADLINE, 1 << 20, Some(path))?;
    let v: serde_json::Value = serde_json::from_slice(&out).map_err(|e| FfmpegError::Probe(e.to_string()))?;
    let num = |v: &serde_json::Value| -> f64 {
        v.as_str().and_then(|s| s.parse().ok()).or_else(|| v.as_f64()).unwrap_or(0.0)
    };
    let rate = |s: &str| -> f64 {
        match s.split_once('/') {
            Some((n, d)) => n.parse::<f64>().unwrap_or(0.0) / d.parse::<f64>().unwrap_or(1.0).max(1e-9),
            None => s.parse().unwrap_or(0.0),
        }
    };
    let streams = v["streams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|s| StreamInfo {
                    codec_type: s["codec_type"].as_str().unwrap_or_default().into(),
                    codec_name: s["codec_name"].as_str().unwrap_or_default().into(),
                    width: s["width"].as_u64().unwrap_or(0) as u32,
                    height: s["height"].as_u64().unwrap_or(0) as u32,
                    fps: rate(s["avg_frame_rate"].as_str().unwrap_or("0")),
                    frames: num(&s["nb_frames"]) as u64,
                    duration: num(&s["duration"]),
                    sample_rate: num(&s["sample_rate"]) as u32,
                    channels: s["channels"].as_u64().unwrap_or(0) as u32,
                })
                .collect()
        })
        .unwrap_or_default();
    let format = v["format"]["format_name"].as_str().unwrap_or_default();
    if !kind.allows(format) {
        return Err(FfmpegError::Probe(format!(
            "{} is a '{format}' file, not one of {}",
            display_name(path),
            kind.demuxers()
        )));
    }
    Ok(ProbeInfo { duration: num(&v["format"]["duration"]), streams, format: format.to_string() })
}

/// A file's name without its folders (what errors may show).
fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Decodes one video frame at `t` seconds to straight RGB24 (for tests and thumbnails).
pub fn frame_rgb_at(path: &Path, t: f64) -> Result<(u32, u32, Vec<u8>), FfmpegError> {
    let info = probe_as(path, MediaKind::Video)?;
    let v = info.video().ok_or_else(|| FfmpegError::Probe("no video stream".into()))?;
    let (w, h) = (v.width, v.height);
    let mut cmd = command(&ffmpeg_bin());
    // Seeking after -i decodes from the start: slower but exact to the frame.
    input_args(&mut cmd, path, MediaKind::Video);
    cmd.args(["-ss", &format!("{t:.4}"), "-frames:v", "1"]).args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]);
    let bytes = run(cmd, "frame extraction")?;
    if bytes.len() != (w * h * 3) as usize {
        return Err(FfmpegError::Probe(format!("expected a {w}x{h} frame, got {} bytes", bytes.len())));
    }
    Ok((w, h, bytes))
}

/// Decodes a whole video to raw yuv420p (for the encode-only benchmark reference).
pub fn decode_to_raw(path: &Path, out: &Path) -> Result<(), FfmpegError> {
    let mut cmd = command(&ffmpeg_bin());
    input_args(&mut cmd, path, MediaKind::Video);
    cmd.args(["-an", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-y"]).arg(out);
    run(cmd, "raw decode").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aac::{AacSpanEncoder, AacStretch, adts_frames};

    fn settings(w: u32, h: u32) -> VideoSettings {
        VideoSettings {
            width: w,
            height: h,
            fps: 25,
            encoder: H264Encoder::Libx264,
            preset: "ultrafast".into(),
            crf: 23,
            threads: Some(1),
        }
    }

    #[test]
    fn encode_concat_probe_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut segs = vec![];
        for (i, rgb) in [[255u8, 0, 0], [0, 0, 255]].into_iter().enumerate() {
            let out = dir.path().join(format!("s{i}.mp4"));
            let mut enc = VideoEncoder::start(&settings(64, 48), &out).unwrap();
            let f = Yuv420::solid(64, 48, rgb);
            for _ in 0..(10 + i * 5) {
                enc.write_frame(&f).unwrap();
            }
            segs.push(enc.finish().unwrap());
        }
        // About a second of stereo sound, as the engine encodes a first span: context either
        // side, and the frame before the sound kept in the priming frame's place.
        let frames = 47 * AAC_FRAME;
        let samples: Vec<f32> = (0..frames + 4 * AAC_FRAME)
            .flat_map(|i| {
                let s = (i as f32 * 440.0 * std::f32::consts::TAU / 48000.0).sin() * 0.3;
                [s, s]
            })
            .collect();
        let audio = dir.path().join("a.aac");
        let mut enc = AacSpanEncoder::start(48000, 2, 128).unwrap();
        let keep = AAC_FRAME..frames + 2 * AAC_FRAME;
        enc.stretch(AacStretch { samples: frames + 4 * AAC_FRAME, keep, out: audio.clone() }).unwrap();
        enc.write(&samples).unwrap();
        enc.finish().unwrap();
        let decoded = decode_audio(&audio, 48000, 1, None, 10.0).unwrap();
        assert!((decoded.len() as i64 - 48000).abs() < 2048, "{}", decoded.len());

        let out = dir.path().join("out.mp4");
        concat(&segs, Some(Soundtrack { path: &audio, rate: 48000 }), &out, dir.path()).unwrap();
        let info = probe(&out).unwrap();
        let v = info.video().unwrap();
        assert_eq!((v.width, v.height, v.frames), (64, 48, 25));
        assert!((v.fps - 25.0).abs() < 0.01);
        assert_eq!(info.audio().unwrap().codec_name, "aac");
        let (_, _, px) = frame_rgb_at(&out, 0.2).unwrap();
        assert!(px[0] > 200 && px[2] < 60, "first segment red: {:?}", &px[..3]);
        let (_, _, px) = frame_rgb_at(&out, 0.8).unwrap();
        assert!(px[2] > 200 && px[0] < 60, "second segment blue: {:?}", &px[..3]);
    }

    /// Mono samples of a sweep: every stretch of it differs, so a misplaced frame shows.
    fn sweep(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as f32 / 48000.0) * (300.0 + i as f32 / 200.0) * std::f32::consts::TAU).sin() * 0.3)
            .collect()
    }

    /// Signal-to-error ratio of `got` against `want` over `range`, dB.
    fn snr(want: &[f32], got: &[f32], range: std::ops::Range<usize>) -> f64 {
        let (mut p, mut e) = (0f64, 0f64);
        for i in range {
            p += (want[i] as f64).powi(2);
            e += (want[i] as f64 - got[i] as f64).powi(2);
        }
        10.0 * (p / e.max(1e-12)).log10()
    }

    #[test]
    fn aac_spans_encoded_apart_join_by_concatenation_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let n = 96 * 1024;
        let pcm = sweep(n);
        let cut = 40 * 1024u64;
        let context = 2 * AAC_FRAME;
        // Second span first, in the same process: the order of stretches does not matter.
        let second = AacStretch {
            samples: n as u64 - cut + context,
            keep: context..n as u64 - cut + context,
            out: dir.path().join("b.aac"),
        };
        let first = AacStretch {
            samples: cut + 2 * context,
            keep: context - AAC_FRAME..cut + context,
            out: dir.path().join("a.aac"),
        };
        let mut enc = AacSpanEncoder::start(48000, 1, 96).unwrap();
        enc.stretch(second.clone()).unwrap();
        enc.write(&pcm[(cut - context) as usize..]).unwrap();
        enc.stretch(first.clone()).unwrap();
        let mut head = vec![0.0; context as usize];
        head.extend_from_slice(&pcm[..(cut + context) as usize]);
        enc.write(&head).unwrap();
        enc.finish().unwrap();
        let (a, b) = (std::fs::read(&first.out).unwrap(), std::fs::read(&second.out).unwrap());
        // The first span keeps its priming frame; each frame holds 1024 samples.
        assert_eq!(adts_frames(&a).unwrap().len() as u64, cut / AAC_FRAME + 1);
        assert_eq!(adts_frames(&b).unwrap().len() as u64, (n as u64 - cut) / AAC_FRAME);
        let joined = dir.path().join("joined.aac");
        std::fs::write(&joined, [a, b].concat()).unwrap();

        let video = dir.path().join("v.mp4");
        let mut v = VideoEncoder::start(&settings(64, 48), &video).unwrap();
        for _ in 0..51 {
            v.write_frame(&Yuv420::solid(64, 48, [9, 9, 9])).unwrap();
        }
        let out = dir.path().join("out.mp4");
        concat(&[v.finish().unwrap()], Some(Soundtrack { path: &joined, rate: 48000 }), &out, dir.path()).unwrap();
        let info = probe(&out).unwrap();
        assert_eq!(info.audio().unwrap().codec_name, "aac");
        let got = decode_audio(&out, 48000, 1, None, 10.0).unwrap();
        assert!(got.len() >= n, "{} samples", got.len());
        // In place (a frame early or late would be noise) and seamless across the cut.
        let c = cut as usize;
        assert!(snr(&pcm, &got, 1024..c - 2048) > 20.0, "{}", snr(&pcm, &got, 1024..c - 2048));
        assert!(snr(&pcm, &got, c - 2048..c + 2048) > 20.0, "{}", snr(&pcm, &got, c - 2048..c + 2048));
        assert!(snr(&pcm, &got, c + 2048..n - 2048) > 20.0);
        assert!(snr(&pcm[1024..], &got, 0..c) < 3.0, "a frame off is noise");
    }

    #[test]
    fn clip_decoder_seeks_resamples_and_fits() {
        let dir = tempfile::tempdir().unwrap();
        // 2 s at 10 fps, 64x48: red for the first second, blue after.
        let clip = dir.path().join("clip.mp4");
        let mut s = settings(64, 48);
        s.fps = 10;
        let mut enc = VideoEncoder::start(&s, &clip).unwrap();
        for i in 0..20 {
            enc.write_frame(&Yuv420::solid(64, 48, if i < 10 { [255, 0, 0] } else { [0, 0, 255] })).unwrap();
        }
        enc.finish().unwrap();
        // From 0.5 s at 20 fps, scaled to 32x16 (cover): 1.5 s left = 30 frames.
        let filter = "[0:v]scale=32:16:force_original_aspect_ratio=increase,crop=32:16[out]";
        let mut dec = VideoDecoder::start(&ClipDecode {
            path: &clip,
            start: 0.5,
            duration: None,
            fps: 20,
            width: 32,
            height: 16,
            filter,
            backdrop: None,
        })
        .unwrap();
        let mut f = Yuv420::solid(32, 16, [0, 0, 0]);
        let mut colours = vec![];
        while dec.read_frame(&mut f).unwrap() {
            let [r, _, b] = f.rgb_at(16, 8);
            colours.push(if r > 200 && b < 60 {
                'r'
            } else if b > 200 && r < 60 {
                'b'
            } else {
                '?'
            });
        }
        let got: String = colours.into_iter().collect();
        assert_eq!(got, format!("{}{}", "r".repeat(10), "b".repeat(20)));
        // A file that is no video says so.
        let bad = dir.path().join("bad.mp4");
        std::fs::write(&bad, b"not a video").unwrap();
        let mut dec = VideoDecoder::start(&ClipDecode {
            path: &bad,
            ..ClipDecode {
                path: &clip,
                start: 0.0,
                duration: Some(1.0),
                fps: 20,
                width: 32,
                height: 16,
                filter,
                backdrop: None,
            }
        })
        .unwrap();
        assert!(matches!(dec.read_frame(&mut f), Err(FfmpegError::Failed { .. })));
    }

    #[test]
    fn encoder_failure_reports_ffmpeg_words() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = settings(64, 48);
        s.preset = "no-such-preset".into();
        // The FFmpeg child (hardware encoders, REELSMITH_X264=ffmpeg); x264 in process names
        // its own errors (x264::tests).
        let child = ChildEncoder::start(&s, &dir.path().join("x.mp4"), false).unwrap();
        let mut enc = VideoEncoder { backend: Backend::Child(child) };
        let f = Yuv420::solid(64, 48, [0, 0, 0]);
        let mut res = Ok(());
        for _ in 0..50 {
            res = enc.write_frame(&f);
            if res.is_err() {
                break;
            }
        }
        let err = match res {
            Err(e) => e,
            Ok(()) => enc.finish().unwrap_err(),
        };
        assert!(err.to_string().contains("video encoder failed"), "{err}");
    }

    #[test]
    fn decode_missing_audio_is_an_error() {
        let err = decode_audio(Path::new("/nonexistent.wav"), 48000, 2, None, 5.0).unwrap_err();
        assert!(err.to_string().contains("nonexistent.wav"), "{err}");
    }

    /// An ID3 tag (what sniffing calls MP3) in front of `body`.
    fn id3_wrapped(body: &str) -> Vec<u8> {
        let mut b = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
        b.extend_from_slice(body.as_bytes());
        b
    }

    /// A DASH manifest (the attack's payload) pointing at `base_url`.
    fn dash_manifest(base_url: &str, mime: &str) -> String {
        include_str!("../tests/fixtures/dash-manifest.xml").replace("BASE_URL", base_url).replace("MIME", mime)
    }

    #[test]
    fn manifests_and_playlists_are_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        // Somebody else's video next to the upload, and a listener standing for an internal service.
        let victim = dir.path().join("victim.mp4");
        let mut enc = VideoEncoder::start(&settings(64, 48), &victim).unwrap();
        for _ in 0..10 {
            enc.write_frame(&Yuv420::solid(64, 48, [255, 0, 0])).unwrap();
        }
        enc.finish().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let cases = [
            ("dash-file.mp3", id3_wrapped(&dash_manifest("victim.mp4", "video/mp4"))),
            ("dash-http.mp3", id3_wrapped(&dash_manifest(&format!("http://127.0.0.1:{port}/ssrf"), "audio/mp4"))),
            (
                "hls.mp3",
                id3_wrapped(&format!(
                    "#EXTM3U\n#EXT-X-TARGETDURATION:5\n#EXTINF:5,\nhttp://127.0.0.1:{port}/ssrf-hls\n#EXT-X-ENDLIST\n"
                )),
            ),
            ("concat.mp4", b"ffconcat version 1.0\nfile 'victim.mp4'\n".to_vec()),
        ];
        for (name, bytes) in cases {
            let f = dir.path().join(name);
            std::fs::write(&f, bytes).unwrap();
            for kind in [MediaKind::Media, MediaKind::Audio, MediaKind::Video] {
                let e = probe_as(&f, kind).unwrap_err().to_string();
                assert!(!e.contains(&dir.path().display().to_string()), "{name}: a server path in {e}");
            }
            assert!(decode_audio(&f, 48000, 1, None, 5.0).is_err(), "{name} decoded as audio");
            let mut dec = VideoDecoder::start(&ClipDecode {
                path: &f,
                start: 0.0,
                duration: Some(1.0),
                fps: 10,
                width: 64,
                height: 48,
                filter: "[0:v]null[out]",
                backdrop: None,
            })
            .unwrap();
            let mut frame = Yuv420::solid(64, 48, [0, 0, 0]);
            assert!(dec.read_frame(&mut frame).is_err(), "{name} decoded as a clip");
        }
        assert!(listener.accept().is_err(), "something connected to the listener");
        // The real video still probes as video, and not as audio-only demuxers would have it.
        assert_eq!(probe_as(&victim, MediaKind::Video).unwrap().video().unwrap().width, 64);
    }

    #[test]
    fn a_tool_cannot_allocate_past_its_memory_limit() {
        let grab = |mb: u64, limit: u64| {
            let mut cmd = Command::new("python3");
            cmd.args(["-c", &format!("b = bytearray({mb} << 20); print(len(b))")]);
            run_tool(cmd, "python3", Duration::from_secs(30), 1 << 10, limit)
        };
        assert_eq!(String::from_utf8(grab(64, 2 << 30).unwrap()).unwrap().trim(), (64u64 << 20).to_string());
        let e = grab(512, 256 << 20).unwrap_err();
        assert!(e.to_string().contains("MemoryError"), "{e}");
    }

    #[test]
    fn a_hanging_child_is_killed_at_its_deadline() {
        let dir = tempfile::tempdir().unwrap();
        // A FIFO nobody writes to: ffprobe blocks opening it forever.
        let fifo = dir.path().join("stuck.wav");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(ffprobe_bin());
        cmd.process_group(0);
        cmd.args(["-v", "error", "-protocol_whitelist", "file,pipe"]).arg(file_url(&fifo));
        let started = std::time::Instant::now();
        let e = run_limited(cmd, "ffprobe stuck.wav", Duration::from_millis(300), 1 << 20, Some(&fifo)).unwrap_err();
        assert!(e.to_string().contains("killed after"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(20), "the deadline did not hold");
    }

    #[test]
    fn libx264_always_probes_ok() {
        assert!(probe_encoder(H264Encoder::Libx264));
    }
}
