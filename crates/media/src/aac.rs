//! The soundtrack's AAC encoder, in the process: libavcodec's `aac` encoder through a small C
//! shim (`src/aac_shim.c`), with the options the `ffmpeg` command line would set for
//! `-c:a aac -b:a <kbps>k -aac_coder <coder> -f adts`, so its packets are the same bytes. No
//! FFmpeg process starts and binds its libraries, and no sample goes through a pipe.
//!
//! [`AacSpanEncoder`] encodes many stretches in sequence on one encoder; each stretch's kept
//! frames go to their own ADTS file, so spans encoded apart join by concatenation.

use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_char, c_int};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Samples per AAC frame; the encoder delays its output by one frame (the priming frame).
pub const AAC_FRAME: u64 = 1024;

#[repr(C)]
struct RsAac {
    _private: [u8; 0],
}

unsafe extern "C" {
    fn rs_aac_open(
        rate: c_int,
        channels: c_int,
        bit_rate: c_int,
        coder: *const c_char,
        err: *mut c_char,
        err_len: c_int,
    ) -> *mut RsAac;
    fn rs_aac_frame_size(s: *const RsAac) -> c_int;
    fn rs_aac_send(s: *mut RsAac, samples: *const f32, pts: i64, err: *mut c_char, err_len: c_int) -> c_int;
    fn rs_aac_receive(s: *mut RsAac, data: *mut *const u8, size: *mut c_int, err: *mut c_char, err_len: c_int)
    -> c_int;
    fn rs_aac_close(s: *mut RsAac);
}

#[derive(Debug, thiserror::Error)]
pub enum AacError {
    #[error("AAC encoder: {0}")]
    Codec(String),
    #[error("AAC encoder: {0}")]
    Usage(String),
    #[error("{0}")]
    Adts(String),
    #[error("AAC encoder i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// FFmpeg's AAC quantiser search for a bitrate. Its `fast` coder is better than the default
/// `twoloop` at higher bitrates and takes about half the CPU (72 s of stereo at 160 kb/s: 1.1 s
/// vs 2.1 s, 41 vs 28 dB SNR against the source); below 96 kb/s `twoloop` sounds better (FFmpeg's
/// encoder documentation).
pub fn aac_coder(kbps: u32) -> &'static str {
    if kbps >= 96 { "fast" } else { "twoloop" }
}

/// One stretch of audio fed to an [`AacSpanEncoder`]: `samples` frames, of which the AAC frames
/// starting in `keep` (frames from the stretch's start) are written to `out` as ADTS. The
/// samples before and after `keep` only give the kept frames their context (the MDCT overlaps
/// one frame each way), so spans encoded apart join seamlessly by concatenation.
#[derive(Clone, Debug)]
pub struct AacStretch {
    pub samples: u64,
    pub keep: std::ops::Range<u64>,
    pub out: PathBuf,
}

/// The 7-byte ADTS header (MPEG-4, AAC-LC, no CRC) of a frame of `payload` bytes, as FFmpeg's
/// ADTS muxer writes it.
pub fn adts_header(payload: usize, rate: u32, channels: u16) -> Result<[u8; 7], AacError> {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let index = RATES
        .iter()
        .position(|&r| r == rate)
        .ok_or_else(|| AacError::Usage(format!("ADTS has no sample rate {rate}")))? as u8;
    let len = payload + 7;
    if len >= 1 << 13 || !(1..=7).contains(&channels) {
        return Err(AacError::Usage(format!("an ADTS frame of {len} bytes, {channels} channels")));
    }
    let (len, ch) = (len as u32, channels as u8);
    // Object type 2 (AAC-LC) is written as 1.
    Ok([
        0xFF,
        0xF1,
        (1 << 6) | (index << 2) | (ch >> 2),
        ((ch & 3) << 6) | (len >> 11) as u8,
        (len >> 3) as u8,
        (((len & 7) << 5) | 0x1F) as u8,
        0xFC,
    ])
}

/// Splits an ADTS stream into its frames (headers kept), or says where it stops making sense.
pub fn adts_frames(bytes: &[u8]) -> Result<Vec<&[u8]>, AacError> {
    let mut frames = vec![];
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 7 {
            return Err(AacError::Adts(format!("ADTS frame cut short at byte {}", bytes.len() - rest.len())));
        }
        let len = adts_frame_len(rest)
            .ok_or_else(|| AacError::Adts(format!("not an ADTS frame at byte {}", bytes.len() - rest.len())))?;
        if len > rest.len() {
            return Err(AacError::Adts(format!("ADTS frame cut short at byte {}", bytes.len() - rest.len())));
        }
        frames.push(&rest[..len]);
        rest = &rest[len..];
    }
    Ok(frames)
}

/// The length of the ADTS frame `b` starts with, header included.
fn adts_frame_len(b: &[u8]) -> Option<usize> {
    if b.len() < 7 || b[0] != 0xFF || b[1] & 0xF0 != 0xF0 {
        return None;
    }
    let len = ((b[3] as usize & 3) << 11) | ((b[4] as usize) << 3) | (b[5] as usize >> 5);
    (len >= 7).then_some(len)
}

/// libavcodec's AAC encoder: interleaved f32 samples in, raw AAC packets out.
struct Encoder {
    raw: *mut RsAac,
    frame_size: usize,
    channels: usize,
    pts: i64,
    err: Vec<u8>,
}

// SAFETY: the encoder is used by one thread at a time (`&mut self`); libavcodec keeps no
// thread-local state for it.
unsafe impl Send for Encoder {}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: `raw` came from rs_aac_open and is freed once, here.
        unsafe { rs_aac_close(self.raw) }
    }
}

impl Encoder {
    fn open(rate: u32, channels: u16, kbps: u32) -> Result<Self, AacError> {
        let coder = CString::new(aac_coder(kbps)).expect("no NUL");
        let mut err = vec![0u8; 256];
        let bit_rate = c_int::try_from(u64::from(kbps) * 1000)
            .map_err(|_| AacError::Usage(format!("a bitrate of {kbps} kb/s")))?;
        // SAFETY: every pointer is valid for the call; err has err_len bytes.
        let raw = unsafe {
            rs_aac_open(rate as c_int, channels as c_int, bit_rate, coder.as_ptr(), err.as_mut_ptr().cast(), 256)
        };
        if raw.is_null() {
            return Err(AacError::Codec(message(&err)));
        }
        // SAFETY: raw is a live encoder.
        let frame_size = unsafe { rs_aac_frame_size(raw) } as usize;
        Ok(Self { raw, frame_size, channels: channels as usize, pts: 0, err })
    }

    /// Sends one frame of `frame_size` interleaved samples (`None`: flush).
    fn send(&mut self, frame: Option<&[f32]>) -> Result<(), AacError> {
        let ptr = match frame {
            Some(f) => {
                assert_eq!(f.len(), self.frame_size * self.channels, "one whole frame");
                f.as_ptr()
            }
            None => std::ptr::null(),
        };
        // SAFETY: raw is live; a frame holds frame_size * channels samples; err has 256 bytes.
        let r = unsafe { rs_aac_send(self.raw, ptr, self.pts, self.err.as_mut_ptr().cast(), 256) };
        self.pts += self.frame_size as i64;
        if r < 0 { Err(AacError::Codec(message(&self.err))) } else { Ok(()) }
    }

    /// Hands each packet ready to `sink`; returns false once a flush is complete.
    fn receive(&mut self, mut sink: impl FnMut(&[u8]) -> Result<(), AacError>) -> Result<bool, AacError> {
        loop {
            let (mut data, mut size) = (std::ptr::null(), 0);
            // SAFETY: raw is live; data/size are written when a packet is returned.
            let r = unsafe { rs_aac_receive(self.raw, &mut data, &mut size, self.err.as_mut_ptr().cast(), 256) };
            match r {
                1 => {
                    // SAFETY: the packet stays valid until the next receive.
                    sink(unsafe { std::slice::from_raw_parts(data, size as usize) })?
                }
                0 => return Ok(true),
                -1 => return Ok(false),
                _ => return Err(AacError::Codec(message(&self.err))),
            }
        }
    }
}

fn message(err: &[u8]) -> String {
    CStr::from_bytes_until_nul(err).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Sends each AAC frame to the stretch whose kept range holds it. Frame `m` (from 1) of the
/// encoder's output decodes input samples `[(m - 2) * 1024, (m - 1) * 1024)`; the first is priming.
struct Router {
    announced: VecDeque<AacStretch>,
    /// The stretch being filled, where it starts in the encoder's input, and its file.
    current: Option<(AacStretch, u64, Option<BufWriter<File>>)>,
    next_start: u64,
    frames: u64,
}

impl Router {
    fn close(c: Option<(AacStretch, u64, Option<BufWriter<File>>)>) -> Result<(), AacError> {
        if let Some((s, _, f)) = c {
            match f {
                Some(mut f) => f.flush()?,
                // A stretch with no frame kept: an empty file says so to whoever reads it.
                None => drop(File::create(&s.out)?),
            }
        }
        Ok(())
    }

    fn frame(&mut self, header: &[u8; 7], payload: &[u8]) -> Result<(), AacError> {
        self.frames += 1;
        let Some(first) = ((self.frames - 1) * AAC_FRAME).checked_sub(AAC_FRAME) else { return Ok(()) };
        while self.current.as_ref().is_none_or(|(s, at, _)| first >= at + s.samples) {
            let Some(s) = self.announced.pop_front() else {
                // Past the last stretch: the encoder's flush.
                return Self::close(self.current.take());
            };
            Self::close(self.current.take())?;
            let at = self.next_start;
            self.next_start += s.samples;
            self.current = Some((s, at, None));
        }
        let Some((s, at, file)) = self.current.as_mut() else { return Ok(()) };
        if s.keep.contains(&(first - *at)) {
            let f = match file {
                Some(f) => f,
                slot => slot.insert(BufWriter::new(File::create(&s.out)?)),
            };
            f.write_all(header)?;
            f.write_all(payload)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), AacError> {
        Self::close(self.current.take())?;
        // Stretches announced but never reached still get their (empty) file.
        while let Some(s) = self.announced.pop_front() {
            Self::close(Some((s, 0, None)))?;
        }
        Ok(())
    }
}

/// One AAC encoder for many stretches in sequence: each stretch's kept frames go to its own
/// ADTS file as they come out.
pub struct AacSpanEncoder {
    encoder: Encoder,
    router: Router,
    rate: u32,
    channels: u16,
    /// Samples written but not yet a whole frame.
    carry: Vec<f32>,
    /// Samples announced by stretches but not yet written.
    expected: u64,
}

impl AacSpanEncoder {
    pub fn start(rate: u32, channels: u16, kbps: u32) -> Result<Self, AacError> {
        adts_header(0, rate, channels)?;
        let encoder = Encoder::open(rate, channels, kbps)?;
        if encoder.frame_size as u64 != AAC_FRAME {
            return Err(AacError::Codec(format!("frames of {} samples, not {AAC_FRAME}", encoder.frame_size)));
        }
        let router = Router { announced: VecDeque::new(), current: None, next_start: 0, frames: 0 };
        Ok(Self { encoder, router, rate, channels, carry: vec![], expected: 0 })
    }

    /// Announces the next stretch; its samples follow with [`AacSpanEncoder::write`]. Its
    /// length and kept range must be whole AAC frames.
    pub fn stretch(&mut self, s: AacStretch) -> Result<(), AacError> {
        let whole = |n: u64| n.is_multiple_of(AAC_FRAME);
        if !(whole(s.samples) && whole(s.keep.start) && whole(s.keep.end) && s.keep.end <= s.samples) {
            return Err(AacError::Usage(format!("an AAC stretch must be whole frames: {s:?}")));
        }
        self.expected += s.samples;
        self.router.announced.push_back(s);
        Ok(())
    }

    /// Interleaved samples of the stretches, in order.
    pub fn write(&mut self, samples: &[f32]) -> Result<(), AacError> {
        let channels = self.channels as u64;
        if samples.len() as u64 > self.expected * channels {
            return Err(AacError::Usage("more samples than the announced stretches hold".into()));
        }
        self.expected -= samples.len() as u64 / channels;
        let frame = self.encoder.frame_size * self.channels as usize;
        let mut rest = samples;
        if !self.carry.is_empty() {
            let take = (frame - self.carry.len()).min(rest.len());
            self.carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.carry.len() < frame {
                return Ok(());
            }
            let whole = std::mem::take(&mut self.carry);
            self.encode(&whole)?;
        }
        let whole = rest.len() / frame * frame;
        for f in rest[..whole].chunks_exact(frame) {
            self.encode(f)?;
        }
        self.carry.extend_from_slice(&rest[whole..]);
        Ok(())
    }

    fn encode(&mut self, frame: &[f32]) -> Result<(), AacError> {
        self.encoder.send(Some(frame))?;
        self.drain()?;
        Ok(())
    }

    fn drain(&mut self) -> Result<bool, AacError> {
        let (router, rate, channels) = (&mut self.router, self.rate, self.channels);
        self.encoder.receive(|p| router.frame(&adts_header(p.len(), rate, channels)?, p))
    }

    /// Flushes the encoder and completes every stretch's file. It encodes on the caller's
    /// thread, so the caller's CPU time includes it.
    pub fn finish(mut self) -> Result<(), AacError> {
        if !self.carry.is_empty() || self.expected > 0 {
            return Err(AacError::Usage(format!(
                "the stretches announced {} samples that were never written",
                self.expected + (self.carry.len() / self.channels as usize) as u64
            )));
        }
        self.encoder.send(None)?;
        while self.drain()? {}
        self.router.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise_and_tone(n: usize, channels: usize) -> Vec<f32> {
        let mut state = 0x9e37_79b9_u32;
        (0..n * channels)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let t = (i / channels) as f32 / 48000.0;
                (t * 440.0 * std::f32::consts::TAU * (1 + i % channels) as f32).sin() * 0.3
                    + (state as f32 / u32::MAX as f32 - 0.5) * 0.05
            })
            .collect()
    }

    /// The same bytes as `ffmpeg -f f32le … -c:a aac -b:a …k -aac_coder … -f adts`, for mono
    /// and stereo, both coders: the cache's spans stay valid, and the sound is FFmpeg's.
    #[test]
    fn packets_are_the_ffmpeg_command_lines_bytes() {
        let dir = tempfile::tempdir().unwrap();
        for (channels, kbps) in [(1u16, 160u32), (2, 160), (2, 64)] {
            let n = 150 * 1024;
            let pcm = noise_and_tone(n, channels as usize);
            let raw = dir.path().join("in.f32");
            std::fs::write(&raw, pcm.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
            let cli = dir.path().join("cli.aac");
            let status =
                std::process::Command::new(std::env::var("REELSMITH_FFMPEG").unwrap_or_else(|_| "ffmpeg".into()))
                    .args(["-hide_banner", "-loglevel", "error", "-f", "f32le", "-ar", "48000", "-ac"])
                    .arg(channels.to_string())
                    .arg("-i")
                    .arg(&raw)
                    .args([
                        "-c:a",
                        "aac",
                        "-b:a",
                        &format!("{kbps}k"),
                        "-aac_coder",
                        aac_coder(kbps),
                        "-f",
                        "adts",
                        "-y",
                    ])
                    .arg(&cli)
                    .status()
                    .unwrap();
            assert!(status.success());
            let out = dir.path().join("ours.aac");
            let mut enc = AacSpanEncoder::start(48000, channels, kbps).unwrap();
            enc.stretch(AacStretch { samples: n as u64, keep: 0..n as u64, out: out.clone() }).unwrap();
            // Uneven writes: frames are cut from whatever arrives.
            for part in pcm.chunks(3001 * channels as usize) {
                enc.write(part).unwrap();
            }
            enc.finish().unwrap();
            let (ours, theirs) = (std::fs::read(&out).unwrap(), std::fs::read(&cli).unwrap());
            let theirs = adts_frames(&theirs).unwrap();
            // Ours keeps the frames of samples 0..n: everything but FFmpeg's priming frame.
            assert_eq!(adts_frames(&ours).unwrap().len(), n / 1024);
            assert_eq!(theirs.len(), n / 1024 + 1);
            assert!(ours == theirs[1..].concat(), "{channels} channels at {kbps} kb/s differ from FFmpeg's");
        }
    }

    #[test]
    fn adts_frames_are_split_and_garbage_is_named() {
        let frame = |len: usize| {
            let mut f = vec![0xFF, 0xF1, 0x50, 0x80, 0, 0, 0xFC];
            f[3] |= ((len >> 11) & 3) as u8;
            f[4] = ((len >> 3) & 0xFF) as u8;
            f[5] = (((len & 7) << 5) | 0x1F) as u8;
            f.resize(len, 0xAA);
            f
        };
        let stream = [frame(20), frame(9)].concat();
        assert_eq!(adts_frames(&stream).unwrap().iter().map(|f| f.len()).collect::<Vec<_>>(), [20, 9]);
        let err = adts_frames(&stream[..25]).unwrap_err().to_string();
        assert!(err.contains("cut short at byte 20"), "{err}");
        assert!(adts_frames(b"ID3 garbage").is_err());
    }

    #[test]
    fn misuse_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut enc = AacSpanEncoder::start(48000, 1, 96).unwrap();
        let e = enc.stretch(AacStretch { samples: 1000, keep: 0..1000, out: dir.path().join("x") }).unwrap_err();
        assert!(e.to_string().contains("whole frames"), "{e}");
        assert!(enc.write(&[0.0; 10]).unwrap_err().to_string().contains("more samples"));
        enc.stretch(AacStretch { samples: 2048, keep: 0..2048, out: dir.path().join("y") }).unwrap();
        enc.write(&[0.0; 100]).unwrap();
        assert!(enc.finish().unwrap_err().to_string().contains("never written"));
        assert!(AacSpanEncoder::start(12345, 1, 96).err().unwrap().to_string().contains("12345"));
        assert!(adts_header(9000, 48000, 2).is_err());
    }
}
