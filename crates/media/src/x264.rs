//! H.264 encoding in this process with libx264, written straight into an MP4: no FFmpeg start,
//! no pipe, no copy of each frame through the kernel. Settings match what FFmpeg's libx264
//! wrapper sets for the same preset, tune, CRF and threads (see `x264_shim.c`), and the MP4
//! is laid out like FFmpeg's (one track at `fps × 1000`, B-frame delay in the edit list), so
//! segments join by stream copy exactly as before.

use std::ffi::{CStr, CString, c_char, c_float, c_int};
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

use crate::frame::{Yuv420, macroblocks};
use crate::h264;
use crate::mp4box::{ctts, dinf, elst, ftyp, full_box, mdhd, mp4_box, mvhd, sample_tables, stss, tkhd, to_movie};

#[repr(C)]
struct RsX264 {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn rs_x264_build() -> c_int;
    fn rs_x264_open(
        width: c_int,
        height: c_int,
        fps: c_int,
        preset: *const c_char,
        tune: *const c_char,
        crf: c_float,
        threads: c_int,
        block_hints: c_int,
        err: *mut c_char,
        err_len: c_int,
    ) -> *mut RsX264;
    fn rs_x264_headers(
        s: *mut RsX264,
        sps: *mut *const u8,
        sps_len: *mut c_int,
        pps: *mut *const u8,
        pps_len: *mut c_int,
        sei: *mut *const u8,
        sei_len: *mut c_int,
    ) -> c_int;
    fn rs_x264_encode(
        s: *mut RsX264,
        y: *const u8,
        u: *const u8,
        v: *const u8,
        pts: i64,
        constant: *const u8,
        out: *mut *const u8,
        out_pts: *mut i64,
        out_dts: *mut i64,
        keyframe: *mut c_int,
    ) -> c_int;
    fn rs_x264_delayed(s: *mut RsX264) -> c_int;
    fn rs_x264_bframe_delay(s: *mut RsX264) -> c_int;
    fn rs_x264_error(s: *mut RsX264) -> *const c_char;
    fn rs_x264_close(s: *mut RsX264);
}

/// The libx264 API version this binary was built against (part of cache keys: another x264
/// makes other bytes).
pub fn build() -> u32 {
    // SAFETY: returns a compile-time constant.
    unsafe { rs_x264_build() as u32 }
}

/// Why in-process encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum X264Error {
    #[error("x264: {0}")]
    Encoder(String),
    #[error("x264 output i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// What to encode: the frame size and rate, and x264's preset, tune, CRF and threads.
#[derive(Clone, Debug)]
pub struct X264Settings<'a> {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub preset: &'a str,
    /// `""` for none, else e.g. `"stillimage"`.
    pub tune: &'a str,
    pub crf: u8,
    /// 0 lets x264 decide.
    pub threads: u32,
    /// Pictures may come with a map of the macroblocks that equal the previous picture's
    /// ([`Mp4Encoder::write_frame_after`]); x264 skips those without searching them.
    pub block_hints: bool,
}

/// A picture going into the encoder: the frame, its number, and which of its macroblocks equal
/// the previous picture's (one byte each, raster order, non-zero where equal), if known.
struct Picture<'a> {
    frame: &'a Yuv420,
    at: i64,
    constant: Option<&'a [u8]>,
}

/// One coded picture: its length-prefixed NAL units, timestamps in frames, and whether it is
/// an IDR picture.
struct Packet<'a> {
    bytes: &'a [u8],
    pts: i64,
    dts: i64,
    keyframe: bool,
}

/// The stream's parameter sets and the encoder's SEI, each without a length prefix.
struct Headers {
    sps: Vec<u8>,
    pps: Vec<u8>,
    sei: Vec<u8>,
}

/// A libx264 encoder. Dropping it closes it.
struct Encoder {
    raw: NonNull<RsX264>,
    width: u32,
    height: u32,
    block_hints: bool,
}

// SAFETY: an x264_t is used by one thread at a time (every method takes `&mut self`); x264's
// own worker threads are private to it.
unsafe impl Send for Encoder {}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: `raw` came from rs_x264_open and is closed once.
        unsafe { rs_x264_close(self.raw.as_ptr()) }
    }
}

impl Encoder {
    fn open(s: &X264Settings<'_>) -> Result<Self, X264Error> {
        if s.width == 0 || s.height == 0 || !s.width.is_multiple_of(2) || !s.height.is_multiple_of(2) || s.fps == 0 {
            return Err(X264Error::Encoder(format!(
                "frames must have an even, non-zero size and a rate (got {}x{} at {} fps)",
                s.width, s.height, s.fps
            )));
        }
        let preset = CString::new(s.preset).map_err(|_| X264Error::Encoder("preset holds a NUL".into()))?;
        let tune = CString::new(s.tune).map_err(|_| X264Error::Encoder("tune holds a NUL".into()))?;
        let mut err = [0 as c_char; 256];
        // SAFETY: the strings live across the call; `err` is as long as we say.
        let raw = unsafe {
            rs_x264_open(
                s.width as c_int,
                s.height as c_int,
                s.fps as c_int,
                preset.as_ptr(),
                tune.as_ptr(),
                s.crf as c_float,
                s.threads as c_int,
                c_int::from(s.block_hints),
                err.as_mut_ptr(),
                err.len() as c_int,
            )
        };
        match NonNull::new(raw) {
            Some(raw) => Ok(Self { raw, width: s.width, height: s.height, block_hints: s.block_hints }),
            None => {
                // SAFETY: the shim NUL-terminates what it writes into `err`.
                let why = unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned();
                Err(X264Error::Encoder(why))
            }
        }
    }

    fn last_error(&self) -> String {
        // SAFETY: the shim keeps a NUL-terminated message buffer for the encoder's life.
        let e = unsafe { CStr::from_ptr(rs_x264_error(self.raw.as_ptr())) }.to_string_lossy().into_owned();
        if e.is_empty() { "encoding failed".into() } else { e.trim().to_string() }
    }

    /// SPS, PPS and the SEI naming the encoder (copied: x264 reuses its buffers).
    fn headers(&mut self) -> Result<Headers, X264Error> {
        let (mut sps, mut pps, mut sei) = (std::ptr::null(), std::ptr::null(), std::ptr::null());
        let (mut sps_len, mut pps_len, mut sei_len) = (0, 0, 0);
        // SAFETY: out-pointers to locals; the returned buffers are valid until the next call.
        let rc = unsafe {
            rs_x264_headers(self.raw.as_ptr(), &mut sps, &mut sps_len, &mut pps, &mut pps_len, &mut sei, &mut sei_len)
        };
        if rc < 0 {
            return Err(X264Error::Encoder(format!("no stream headers: {}", self.last_error())));
        }
        // SAFETY: each (pointer, length) pair describes bytes x264 owns until the next call.
        let copy = |p: *const u8, n: c_int| {
            if n > 0 { unsafe { std::slice::from_raw_parts(p, n as usize) }.to_vec() } else { vec![] }
        };
        Ok(Headers { sps: copy(sps, sps_len), pps: copy(pps, pps_len), sei: copy(sei, sei_len) })
    }

    /// Encodes `frame` (or drains a delayed picture when `None`), with its map of constant
    /// macroblocks where it has one; the packet borrows x264's buffer until the next call.
    fn encode(&mut self, frame: Option<Picture<'_>>) -> Result<Option<Packet<'_>>, X264Error> {
        let (mut out, mut pts, mut dts, mut key) = (std::ptr::null(), 0i64, 0i64, 0 as c_int);
        let mut constant_map = std::ptr::null();
        let (y, u, v, at) = match frame {
            Some(Picture { frame: f, at, constant }) => {
                let chroma = (f.width as usize).div_ceil(2) * (f.height as usize).div_ceil(2);
                if (f.width, f.height) != (self.width, self.height)
                    || f.y.len() != (f.width * f.height) as usize
                    || f.u.len() != chroma
                    || f.v.len() != chroma
                {
                    return Err(X264Error::Encoder(format!(
                        "a {}x{} frame given to a {}x{} encoder",
                        f.width, f.height, self.width, self.height
                    )));
                }
                if let Some(map) = constant {
                    if !self.block_hints || map.len() != macroblocks(self.width, self.height) {
                        return Err(X264Error::Encoder(format!(
                            "a map of {} macroblocks given to a {}x{} encoder{}",
                            map.len(),
                            self.width,
                            self.height,
                            if self.block_hints { "" } else { " opened without block hints" }
                        )));
                    }
                    constant_map = map.as_ptr();
                }
                (f.y.as_ptr(), f.u.as_ptr(), f.v.as_ptr(), at)
            }
            None => (std::ptr::null(), std::ptr::null(), std::ptr::null(), 0),
        };
        // SAFETY: the planes and the map were checked against the encoder's size above; the shim
        // copies both before returning. Out-pointers are to locals.
        let size = unsafe {
            rs_x264_encode(self.raw.as_ptr(), y, u, v, at, constant_map, &mut out, &mut pts, &mut dts, &mut key)
        };
        if size < 0 {
            return Err(X264Error::Encoder(self.last_error()));
        }
        if size == 0 {
            return Ok(None);
        }
        // SAFETY: x264 guarantees an access unit's NAL units are contiguous, `size` bytes long,
        // valid until the next encode call (tied to `&mut self` by the return type).
        let bytes = unsafe { std::slice::from_raw_parts(out, size as usize) };
        Ok(Some(Packet { bytes, pts, dts, keyframe: key != 0 }))
    }

    /// Frames by which decode times trail presentation times.
    fn bframe_delay(&self) -> i64 {
        // SAFETY: a live encoder.
        unsafe { rs_x264_bframe_delay(self.raw.as_ptr()) }.max(0) as i64
    }

    fn delayed(&self) -> usize {
        // SAFETY: a live encoder.
        unsafe { rs_x264_delayed(self.raw.as_ptr()) }.max(0) as usize
    }
}

/// Encodes frames into an MP4 file holding one H.264 track, streaming: the pictures go to the
/// file as they come out of the encoder; only their sizes and times stay in memory (a few
/// bytes a frame) until [`Mp4Encoder::finish`] writes the index (`moov`) at the end.
pub struct Mp4Encoder {
    enc: Encoder,
    out: BufWriter<File>,
    path: PathBuf,
    fps: u32,
    avcc: Vec<u8>,
    /// Prepended to the first picture, as FFmpeg does with global headers.
    sei: Option<Vec<u8>>,
    mdat_start: u64,
    written: u64,
    sizes: Vec<u32>,
    pts: Vec<i64>,
    dts: Vec<i64>,
    sync: Vec<u32>,
    frames_in: i64,
    /// Unchanged frames are written as repeats of the picture before (see [`Repeats`]).
    repeats: Option<Box<Repeats>>,
}

/// The encoder's own pictures among repeats written without it ([`crate::h264`]): x264 codes a
/// still once, each caption change, and one picture in every run of unchanged frames as long
/// as a decoder allows; every other unchanged frame is a skipped, non-reference picture that
/// costs a few bytes and no encoder time. x264's pictures keep their bits except their picture
/// order counts, set to where they sit among the repeats, and every picture's decode time is
/// its presentation time less x264's B-frame delay (no picture is reordered).
struct Repeats {
    params: h264::StreamParams,
    /// Most repeats in a row after one of x264's pictures.
    max_run: u32,
    /// x264's pictures not out of it yet (x264's number, presentation time) and the repeats
    /// that follow each.
    pending: std::collections::VecDeque<(i64, i64, u32)>,
    /// Pictures given to x264.
    fed: i64,
    /// Unchanged frames since the last picture given to x264.
    run: u32,
    /// The last picture written: its presentation time and `frame_num`.
    last: Option<(i64, u32)>,
    /// The last IDR picture's presentation time (picture order counts start there).
    idr: i64,
    /// x264's B-frame delay in frames (its own decode times follow the gaps the repeats leave).
    delay: i64,
}

/// The avcC decoder configuration record for one SPS and one PPS (4-byte NAL lengths).
fn avcc(sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, X264Error> {
    if sps.len() < 4 || sps.len() > u16::MAX as usize || pps.len() > u16::MAX as usize {
        return Err(X264Error::Encoder("x264 gave an unusable SPS or PPS".into()));
    }
    let mut b = vec![1, sps[1], sps[2], sps[3], 0xFF, 0xE1];
    b.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    b.extend_from_slice(sps);
    b.push(1);
    b.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    b.extend_from_slice(pps);
    Ok(mp4_box(b"avcC", &[&b]))
}

impl Mp4Encoder {
    /// Opens the encoder and starts `path` (replaced if it exists).
    pub fn create(s: &X264Settings<'_>, path: &Path) -> Result<Self, X264Error> {
        let mut enc = Encoder::open(s)?;
        let Headers { sps, pps, sei } = enc.headers()?;
        let avcc = avcc(&sps, &pps)?;
        let repeats = if s.block_hints { h264::StreamParams::parse(&sps, &pps) } else { None }.map(|params| {
            Box::new(Repeats {
                max_run: params.max_repeats(),
                params,
                pending: Default::default(),
                fed: 0,
                run: 0,
                last: None,
                idr: 0,
                delay: enc.bframe_delay(),
            })
        });
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let ftyp = ftyp();
        out.write_all(&ftyp)?;
        // A 64-bit mdat header, its size filled in by `finish`.
        out.write_all(&1u32.to_be_bytes())?;
        out.write_all(b"mdat")?;
        out.write_all(&0u64.to_be_bytes())?;
        let sei = (!sei.is_empty()).then(|| {
            let mut b = (sei.len() as u32).to_be_bytes().to_vec();
            b.extend_from_slice(&sei);
            b
        });
        Ok(Self {
            enc,
            out,
            path: path.to_path_buf(),
            fps: s.fps,
            avcc,
            sei,
            mdat_start: ftyp.len() as u64,
            written: 16,
            sizes: vec![],
            pts: vec![],
            dts: vec![],
            sync: vec![],
            frames_in: 0,
            repeats,
        })
    }

    /// Encodes the next frame (of the encoder's size).
    pub fn write_frame(&mut self, f: &Yuv420) -> Result<(), X264Error> {
        self.encode(Some(Picture { frame: f, at: self.frames_in, constant: None }))?;
        // Counted once x264 took it: a refused frame leaves the stream as it was.
        self.frames_in += 1;
        Ok(())
    }

    /// Encodes the next frame as a P picture predicted from the previous one, skipping the
    /// macroblocks `constant` marks as equal to it (see [`Yuv420::unchanged_macroblocks`]): a still
    /// picture whose caption changes costs only the blocks the caption covers. Needs an
    /// encoder created with `block_hints` and a frame before this one.
    pub fn write_frame_after(&mut self, f: &Yuv420, constant: &[u8]) -> Result<(), X264Error> {
        if self.frames_in == 0 {
            return Err(X264Error::Encoder("the first picture has no previous one to skip to".into()));
        }
        self.encode(Some(Picture { frame: f, at: self.frames_in, constant: Some(constant) }))?;
        self.frames_in += 1;
        Ok(())
    }

    /// Writes the next frame, `f`, which equals the one before: as a repeat of the previous
    /// picture (no encoding) where the stream allows one, else like
    /// [`Mp4Encoder::write_frame_after`] with every macroblock unchanged. Needs an encoder
    /// created with `block_hints` and a frame before this one.
    pub fn write_unchanged(&mut self, f: &Yuv420) -> Result<(), X264Error> {
        if self.frames_in == 0 {
            return Err(X264Error::Encoder("the first picture has nothing to repeat".into()));
        }
        let Some(r) = self.repeats.as_mut().filter(|r| r.run < r.max_run) else {
            let all = vec![1u8; macroblocks(self.enc.width, self.enc.height)];
            return self.write_frame_after(f, &all);
        };
        r.run += 1;
        match r.pending.back_mut() {
            // Written when x264 lets that picture out.
            Some((_, _, n)) => *n += 1,
            // x264 already let the picture before out: the repeat follows it at once.
            None => self.write_repeat()?,
        }
        self.frames_in += 1;
        Ok(())
    }

    pub fn frames(&self) -> u64 {
        self.frames_in as u64
    }

    fn encode(&mut self, mut frame: Option<Picture<'_>>) -> Result<(), X264Error> {
        if let (Some(r), Some(p)) = (self.repeats.as_mut(), frame.as_mut()) {
            // x264 numbers its pictures without the repeats' gaps, so its rate control sees
            // the pictures it codes as it would without repeats.
            r.pending.push_back((r.fed, p.at, 0));
            p.at = r.fed;
            r.fed += 1;
            r.run = 0;
        }
        let Some(p) = self.enc.encode(frame)? else { return Ok(()) };
        let (mut pts, keyframe) = (p.pts, p.keyframe);
        let mut size = 0;
        if let Some(sei) = self.sei.take() {
            self.out.write_all(&sei)?;
            size += sei.len();
        }
        let dts = match self.repeats.as_mut() {
            None => {
                self.out.write_all(p.bytes)?;
                size += p.bytes.len();
                p.dts
            }
            Some(r) => {
                let delay = r.delay;
                pts = match r.pending.front() {
                    Some(&(fed, at, _)) if fed == pts => at,
                    _ => return Err(X264Error::Encoder("x264 reordered the pictures of a still".into())),
                };
                // Each slice's picture order count: twice its frames since the IDR picture.
                let mut rest = p.bytes;
                let mut frame_num = None;
                while let Some((len, tail)) = rest.split_first_chunk::<4>() {
                    let len = u32::from_be_bytes(*len) as usize;
                    let nal = tail.get(..len).ok_or_else(|| X264Error::Encoder("x264 cut a NAL unit short".into()))?;
                    rest = &tail[len..];
                    let kind = nal.first().map_or(0, |b| b & 0x1f);
                    if kind == 5 {
                        r.idr = pts;
                    }
                    let nal = if kind == 1 || kind == 5 {
                        let poc = (2 * (pts - r.idr)) as u32;
                        let (nal, num) = r.params.with_poc(nal, poc).map_err(|e| X264Error::Encoder(e.to_string()))?;
                        frame_num = Some(num);
                        std::borrow::Cow::Owned(nal)
                    } else {
                        std::borrow::Cow::Borrowed(nal)
                    };
                    self.out.write_all(&(nal.len() as u32).to_be_bytes())?;
                    self.out.write_all(&nal)?;
                    size += 4 + nal.len();
                }
                let num = frame_num.ok_or_else(|| X264Error::Encoder("a picture without a slice".into()))?;
                r.last = Some((pts, num));
                pts - delay
            }
        };
        self.push_sample(size, pts, dts, keyframe)?;
        if let Some((_, _, n)) = self.repeats.as_mut().and_then(|r| r.pending.pop_front()) {
            for _ in 0..n {
                self.write_repeat()?;
            }
        }
        Ok(())
    }

    /// Writes a repeat of the last picture written, one frame after it.
    fn write_repeat(&mut self) -> Result<(), X264Error> {
        let r = self.repeats.as_mut().expect("only with repeats");
        let (Some((last, num)), delay) = (r.last, r.delay) else {
            return Err(X264Error::Encoder("a repeat before any picture".into()));
        };
        let pts = last + 1;
        let nal = r.params.repeat(num, (2 * (pts - r.idr)) as u32);
        // A repeat is no reference: the next one refers to the same picture, with the same frame_num.
        r.last = Some((pts, num));
        self.out.write_all(&(nal.len() as u32).to_be_bytes())?;
        self.out.write_all(&nal)?;
        self.push_sample(4 + nal.len(), pts, pts - delay, false)
    }

    fn push_sample(&mut self, size: usize, pts: i64, dts: i64, keyframe: bool) -> Result<(), X264Error> {
        self.written += size as u64;
        let size = u32::try_from(size).map_err(|_| X264Error::Encoder("a picture over 4 GB".into()))?;
        self.sizes.push(size);
        self.pts.push(pts);
        self.dts.push(dts);
        if keyframe {
            self.sync.push(self.sizes.len() as u32);
        }
        Ok(())
    }

    /// Drains the encoder's delayed pictures, writes the index and closes the file.
    pub fn finish(mut self) -> Result<PathBuf, X264Error> {
        while self.enc.delayed() > 0 {
            self.encode(None)?;
        }
        if self.sizes.len() as i64 != self.frames_in {
            return Err(X264Error::Encoder(format!(
                "{} frames went in, {} pictures came out",
                self.frames_in,
                self.sizes.len()
            )));
        }
        let moov = self.moov();
        let mdat_len = self.written;
        self.out.write_all(&moov)?;
        self.out.flush()?;
        let mut f = self.out.into_inner().map_err(|e| X264Error::Io(e.into_error()))?;
        f.seek(SeekFrom::Start(self.mdat_start + 8))?;
        f.write_all(&mdat_len.to_be_bytes())?;
        f.sync_data().ok();
        Ok(self.path)
    }

    /// The index: one track at `fps × 1000` (a frame lasts 1000 ticks, as FFmpeg's segments
    /// are made), decode times shifted to start at zero and the shift (the B-frame delay)
    /// skipped by the edit list, all pictures in one chunk.
    fn moov(&self) -> Vec<u8> {
        let tick = 1000i64;
        let timescale = self.fps * 1000;
        let n = self.sizes.len();
        let shift = self.dts.first().map_or(0, |d| -d.min(&0));
        let deltas: Vec<u32> = (0..n)
            .map(|i| match self.dts.get(i + 1) {
                Some(next) => ((next - self.dts[i]) * tick).max(0) as u32,
                None => tick as u32,
            })
            .collect();
        let offsets: Vec<i32> = (0..n).map(|i| ((self.pts[i] - self.dts[i]) * tick) as i32).collect();
        let duration: u64 = deltas.iter().map(|&d| d as u64).sum();
        let mut extra = vec![];
        if offsets.iter().any(|&o| o != 0) {
            extra.push(ctts(&offsets));
        }
        if self.sync.len() != n {
            extra.push(stss(&self.sync));
        }
        let chunks: Vec<(u64, u32)> = if n > 0 { vec![(self.mdat_start + 16, n as u32)] } else { vec![] };
        let stbl = sample_tables(&self.stsd(), &deltas, &self.sizes, &chunks, &extra);
        let vmhd = full_box(b"vmhd", 0, 1, &[&[0u8; 8]]);
        let hdlr = full_box(b"hdlr", 0, 0, &[&[0u8; 4], b"vide", &[0u8; 12], b"VideoHandler\0"]);
        let minf = mp4_box(b"minf", &[&vmhd, &dinf(), &stbl]);
        let mdia = mp4_box(b"mdia", &[&mdhd(timescale, duration), &hdlr, &minf]);
        let movie = to_movie(duration, timescale);
        let mut head = tkhd(1, movie, None, false);
        // tkhd's width and height (16.16) are its last 8 bytes.
        let len = head.len();
        head[len - 8..len - 4].copy_from_slice(&(self.enc.width << 16).to_be_bytes());
        head[len - 4..].copy_from_slice(&(self.enc.height << 16).to_be_bytes());
        let trak = mp4_box(b"trak", &[&head, &elst(movie, shift * tick), &mdia]);
        mp4_box(b"moov", &[&mvhd(movie, 2), &trak])
    }

    /// The `avc1` sample entry: size, avcC, and the BT.709 limited-range colour the SPS says.
    fn stsd(&self) -> Vec<u8> {
        let mut e = vec![0u8; 6];
        e.extend_from_slice(&1u16.to_be_bytes()); // data reference index
        e.extend_from_slice(&[0u8; 16]); // pre_defined, reserved
        e.extend_from_slice(&(self.enc.width as u16).to_be_bytes());
        e.extend_from_slice(&(self.enc.height as u16).to_be_bytes());
        e.extend_from_slice(&0x0048_0000u32.to_be_bytes());
        e.extend_from_slice(&0x0048_0000u32.to_be_bytes());
        e.extend_from_slice(&[0u8; 4]);
        e.extend_from_slice(&1u16.to_be_bytes()); // frames per sample
        e.extend_from_slice(&[0u8; 32]); // compressor name
        e.extend_from_slice(&0x0018u16.to_be_bytes());
        e.extend_from_slice(&(-1i16).to_be_bytes());
        let colr = mp4_box(b"colr", &[b"nclx", &1u16.to_be_bytes(), &1u16.to_be_bytes(), &1u16.to_be_bytes(), &[0]]);
        let avc1 = mp4_box(b"avc1", &[&e, &self.avcc, &colr]);
        full_box(b"stsd", 0, 0, &[&1u32.to_be_bytes(), &avc1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(w: u32, h: u32) -> X264Settings<'static> {
        X264Settings {
            width: w,
            height: h,
            fps: 25,
            preset: "veryfast",
            tune: "",
            crf: 18,
            threads: 1,
            block_hints: false,
        }
    }

    #[test]
    fn bad_settings_and_frames_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.mp4");
        let odd = Mp4Encoder::create(&settings(95, 64), &out).err().unwrap().to_string();
        assert!(odd.contains("95x64"), "{odd}");
        let preset = X264Settings { preset: "ludicrous", ..settings(96, 64) };
        let e = Mp4Encoder::create(&preset, &out).err().unwrap().to_string();
        assert!(e.contains("ludicrous"), "{e}");
        let mut enc = Mp4Encoder::create(&settings(96, 64), &out).unwrap();
        let e = enc.write_frame(&Yuv420::solid(64, 64, [0, 0, 0])).unwrap_err().to_string();
        assert!(e.contains("64x64 frame given to a 96x64"), "{e}");
    }
}
