//! The audio mix, rendered window by window so memory does not grow with the video's length:
//! narration clips (each with its own gain) and looped music read from raw files on disk, music
//! ducked under the narration; EBU R128 loudness of files and of the mix, and a look-ahead peak
//! limiter.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

/// The mix is interleaved stereo f32 at this rate.
pub const MIX_RATE: u32 = 48_000;
pub const MIX_CHANNELS: u16 = 2;
/// Frames rendered per block (one second).
const BLOCK: usize = MIX_RATE as usize;

/// A mono clip (raw f32le at [`MIX_RATE`]) placed at `start` frames.
#[derive(Clone, Debug)]
pub struct Clip {
    pub path: PathBuf,
    pub start: u64,
    pub frames: u64,
    /// Linear gain (each narration is brought to the loudness target on its own).
    pub gain: f32,
}

/// Ducking: music gain `level` while speech plays, ramping over `attack`/`release` seconds.
#[derive(Clone, Copy, Debug)]
pub struct Ducking {
    pub level: f32,
    pub attack: f64,
    pub release: f64,
}

/// Stereo music (raw f32le at [`MIX_RATE`]).
#[derive(Clone, Debug)]
pub struct Music {
    pub path: PathBuf,
    pub frames: u64,
    pub looped: bool,
    pub volume: f32,
    pub ducking: Option<Ducking>,
    /// Fade in at the start and out at the end of the video, seconds.
    pub fade: f64,
}

/// Everything that goes into the soundtrack.
#[derive(Clone, Debug, Default)]
pub struct MixPlan {
    pub frames: u64,
    pub clips: Vec<Clip>,
    pub music: Option<Music>,
}

fn read_f32_at(f: &mut File, frame: u64, channels: u64, out: &mut [f32]) -> io::Result<()> {
    f.seek(SeekFrom::Start(frame * channels * 4))?;
    let mut bytes = vec![0u8; out.len() * 4];
    let mut filled = 0;
    while filled < bytes.len() {
        match f.read(&mut bytes[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    for (o, b) in out.iter_mut().zip(bytes[..filled].chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    out[filled / 4..].fill(0.0);
    Ok(())
}

impl MixPlan {
    /// Speech spans in seconds (what the music ducks under).
    pub fn speech_spans(&self) -> Vec<(f64, f64)> {
        self.clips
            .iter()
            .map(|c| (c.start as f64 / MIX_RATE as f64, (c.start + c.frames) as f64 / MIX_RATE as f64))
            .collect()
    }

    /// Renders interleaved stereo frames `[start, start + out.len()/2)`.
    pub fn render(&self, start: u64, out: &mut [f32], spans: &[(f64, f64)]) -> io::Result<()> {
        out.fill(0.0);
        let len = (out.len() / 2) as u64;
        let end = start + len;
        let mut mono = vec![];
        for c in &self.clips {
            let (a, b) = (c.start.max(start), (c.start + c.frames).min(end));
            if a >= b {
                continue;
            }
            mono.resize((b - a) as usize, 0.0);
            read_f32_at(&mut File::open(&c.path)?, a - c.start, 1, &mut mono)?;
            for (i, s) in mono.iter().enumerate() {
                let f = (a - start) as usize + i;
                out[f * 2] += s * c.gain;
                out[f * 2 + 1] += s * c.gain;
            }
        }
        if let Some(m) = &self.music
            && m.frames > 0
        {
            let mut f = File::open(&m.path)?;
            let mut buf = vec![0.0f32; out.len()];
            // Copy runs of the music file, wrapping when it loops.
            let mut pos = 0u64;
            while pos < len {
                let t = start + pos;
                if !m.looped && t >= m.frames {
                    break;
                }
                let src = t % m.frames;
                let run = (m.frames - src).min(len - pos) as usize;
                read_f32_at(&mut f, src, 2, &mut buf[pos as usize * 2..(pos as usize + run) * 2])?;
                pos += run as u64;
            }
            let total = self.frames as f64 / MIX_RATE as f64;
            // Only spans near this block matter for its envelope.
            let (t0, t1) = (start as f64 / MIX_RATE as f64, end as f64 / MIX_RATE as f64);
            let near: Vec<(f64, f64)> = match m.ducking {
                Some(d) => spans.iter().copied().filter(|&(s, e)| s - d.attack <= t1 && e + d.release >= t0).collect(),
                None => vec![],
            };
            for i in 0..(pos as usize) {
                let t = (start + i as u64) as f64 / MIX_RATE as f64;
                let g = music_gain(t, total, m, &near);
                out[i * 2] += buf[i * 2] * g;
                out[i * 2 + 1] += buf[i * 2 + 1] * g;
            }
        }
        Ok(())
    }

    /// Renders interleaved stereo frames from `start` (which may be before the mix or run past
    /// its end: silence there).
    pub fn render_window(&self, start: i64, out: &mut [f32], spans: &[(f64, f64)]) -> io::Result<()> {
        out.fill(0.0);
        let end = (start + (out.len() / 2) as i64).min(self.frames as i64);
        let from = start.max(0);
        if from < end {
            let at = ((from - start) * 2) as usize;
            self.render(from as u64, &mut out[at..at + ((end - from) * 2) as usize], spans)?;
        }
        Ok(())
    }
}

/// Music gain at `t` seconds: volume, ducked under nearby speech, faded at both ends.
fn music_gain(t: f64, total: f64, m: &Music, spans: &[(f64, f64)]) -> f32 {
    let mut g = 1.0f64;
    if let Some(d) = m.ducking {
        let level = d.level as f64;
        for &(s, e) in spans {
            let duck = if t < s - d.attack || t > e + d.release {
                1.0
            } else if t < s {
                1.0 - (1.0 - level) * ((t - (s - d.attack)) / d.attack.max(1e-6)).clamp(0.0, 1.0)
            } else if t <= e {
                level
            } else {
                level + (1.0 - level) * ((t - e) / d.release.max(1e-6)).clamp(0.0, 1.0)
            };
            g = g.min(duck);
        }
    }
    let edge = if m.fade > 0.0 { (t / m.fade).min((total - t) / m.fade).clamp(0.0, 1.0) } else { 1.0 };
    (g * edge) as f32 * m.volume
}

/// EBU R128 integrated loudness of interleaved stereo fed block by block.
pub struct LoudnessMeter(ebur128::EbuR128);

impl LoudnessMeter {
    pub fn stereo() -> io::Result<Self> {
        ebur128::EbuR128::new(2, MIX_RATE, ebur128::Mode::I).map(Self).map_err(io::Error::other)
    }

    pub fn add(&mut self, interleaved: &[f32]) -> io::Result<()> {
        self.0.add_frames_f32(interleaved).map_err(io::Error::other)
    }

    /// LUFS; `None` for silence.
    pub fn integrated(&self) -> Option<f64> {
        self.0.loudness_global().ok().filter(|l| l.is_finite())
    }
}

/// Integrated loudness of a raw interleaved f32le file, LUFS, read block by block; `None` for
/// silence.
pub fn file_loudness(path: &std::path::Path, channels: u32) -> io::Result<Option<f64>> {
    let mut m = ebur128::EbuR128::new(channels, MIX_RATE, ebur128::Mode::I).map_err(io::Error::other)?;
    let mut f = io::BufReader::with_capacity(1 << 16, File::open(path)?);
    let mut bytes = vec![0u8; BLOCK * 4 * channels as usize];
    let mut samples = Vec::with_capacity(BLOCK * channels as usize);
    loop {
        let mut filled = 0;
        while filled < bytes.len() {
            match f.read(&mut bytes[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        let whole = filled / (4 * channels as usize) * channels as usize;
        if whole == 0 {
            break;
        }
        samples.clear();
        samples.extend(bytes[..whole * 4].chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        m.add_frames_f32(&samples).map_err(io::Error::other)?;
        if filled < bytes.len() {
            break;
        }
    }
    Ok(m.loudness_global().ok().filter(|l| l.is_finite()))
}

/// Integrated loudness of interleaved samples, LUFS; `None` for silence.
pub fn integrated_loudness(samples: &[f32], channels: u32, rate: u32) -> Option<f64> {
    let mut m = ebur128::EbuR128::new(channels, rate, ebur128::Mode::I).ok()?;
    m.add_frames_f32(samples).ok()?;
    m.loudness_global().ok().filter(|l| l.is_finite())
}

/// A streaming look-ahead peak limiter for interleaved stereo: gain drops ahead of any peak
/// that would exceed the ceiling (so no sample does) and recovers over ~80 ms.
pub struct Limiter {
    ceiling: f32,
    look: usize,
    release: f32,
    gain: f32,
}

impl Limiter {
    pub fn new(ceiling: f32, rate: u32) -> Self {
        Self {
            ceiling,
            look: (rate as usize / 200).max(1),
            release: 1.0 - (-1.0 / (0.08 * rate as f32)).exp(),
            gain: 1.0,
        }
    }

    /// Frames of look-ahead the limiter wants after each block.
    pub fn lookahead(&self) -> usize {
        self.look
    }

    /// Limits the first `len` frames of `buf` (stereo); frames after them are look-ahead only.
    pub fn process(&mut self, buf: &mut [f32], len: usize) {
        let frames = buf.len() / 2;
        let need: Vec<f32> = (0..frames)
            .map(|f| {
                let peak = buf[f * 2].abs().max(buf[f * 2 + 1].abs());
                if peak > self.ceiling { self.ceiling / peak } else { 1.0 }
            })
            .collect();
        // Sliding minimum of the needed gain over the look-ahead window (monotonic deque).
        let mut window_min = vec![1.0f32; len];
        let mut dq: std::collections::VecDeque<usize> = Default::default();
        for i in (0..frames).rev() {
            while dq.back().is_some_and(|&j| need[j] >= need[i]) {
                dq.pop_back();
            }
            dq.push_back(i);
            while dq.front().is_some_and(|&j| j > i + self.look) {
                dq.pop_front();
            }
            if i < len {
                window_min[i] = need[*dq.front().expect("non-empty")];
            }
        }
        for f in 0..len {
            let target = window_min[f];
            self.gain = if target < self.gain { target } else { self.gain + (target - self.gain) * self.release };
            // Never above what this very frame needs, so the ceiling holds exactly.
            let g = self.gain.min(need[f]);
            buf[f * 2] *= g;
            buf[f * 2 + 1] *= g;
        }
    }
}

/// Resamples mono `input` from `from` Hz to `to` Hz in this process (FFT resampler: the
/// whole band kept, anti-aliased), `round(len × to / from)` samples, aligned with the input
/// (the resampler's delay is taken off). Used for synthesized speech, which once took one
/// FFmpeg process per narration just for this.
pub fn resample(input: &[f32], from: u32, to: u32) -> io::Result<Vec<f32>> {
    use rubato::{FftFixedIn, Resampler};
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    let err = |e: &dyn std::fmt::Display| io::Error::other(format!("resampling {from} Hz to {to} Hz: {e}"));
    let mut r = FftFixedIn::<f32>::new(from as usize, to as usize, 1024, 2, 1).map_err(|e| err(&e))?;
    let expected = ((input.len() as u64 * to as u64 + from as u64 / 2) / from as u64) as usize;
    let delay = r.output_delay();
    let mut out = Vec::with_capacity(expected + delay + 4096);
    let mut buf = r.output_buffer_allocate(true);
    let mut pos = 0;
    while pos + r.input_frames_next() <= input.len() {
        let n = r.input_frames_next();
        let (_, made) = r.process_into_buffer(&[&input[pos..pos + n]], &mut buf, None).map_err(|e| err(&e))?;
        out.extend_from_slice(&buf[0][..made]);
        pos += n;
    }
    // rubato takes an empty channel for a missing one: a tail of no samples is no input.
    let tail = &input[pos..];
    let tail = (!tail.is_empty()).then_some([tail]);
    let (_, made) =
        r.process_partial_into_buffer(tail.as_ref().map(|t| &t[..]), &mut buf, None).map_err(|e| err(&e))?;
    out.extend_from_slice(&buf[0][..made]);
    // Flush the resampler until the delayed tail is out.
    let mut guard = 0;
    while out.len() < expected + delay && guard < 64 {
        let (_, made) = r.process_partial_into_buffer(None::<&[&[f32]]>, &mut buf, None).map_err(|e| err(&e))?;
        out.extend_from_slice(&buf[0][..made]);
        guard += 1;
    }
    out.drain(..delay.min(out.len()));
    out.resize(expected, 0.0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64, amp: f32, freq: f32) -> Vec<f32> {
        (0..(seconds * MIX_RATE as f64) as usize)
            .map(|i| (i as f32 * freq * std::f32::consts::TAU / MIX_RATE as f32).sin() * amp)
            .collect()
    }

    fn raw(dir: &std::path::Path, name: &str, samples: &[f32]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, samples.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        p
    }

    /// The whole mix, before the limiter.
    fn collect(plan: &MixPlan) -> Vec<f32> {
        let mut all = vec![0.0; plan.frames as usize * 2];
        plan.render_window(0, &mut all, &plan.speech_spans()).unwrap();
        all
    }

    #[test]
    fn a_clip_brought_to_target_by_its_gain_is_on_target_in_the_mix_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let clip = raw(dir.path(), "c.f32", &tone(3.0, 0.05, 440.0));
        let before = file_loudness(&clip, 1).unwrap().unwrap();
        assert!(before < -25.0, "{before}");
        let gain = 10f64.powf((-16.0 - before) / 20.0) as f32;
        let frames = 3 * MIX_RATE as u64;
        let plan = MixPlan { frames, clips: vec![Clip { path: clip, start: 0, frames, gain }], music: None };
        let mut all = collect(&plan);
        assert_eq!(all.len(), 3 * MIX_RATE as usize * 2);
        Limiter::new(0.89, MIX_RATE).process(&mut all, frames as usize);
        // The narration-only soundtrack is encoded mono: its left channel.
        let left: Vec<f32> = all.iter().step_by(2).copied().collect();
        let after = integrated_loudness(&left, 1, MIX_RATE).unwrap();
        assert!((after + 16.0).abs() < 0.5, "{after}");
        assert!(all.iter().all(|s| s.abs() <= 0.89 + 1e-6));
    }

    #[test]
    fn limiter_caps_a_spike_across_blocks() {
        let mut l = Limiter::new(0.9, MIX_RATE);
        let mut a: Vec<f32> = tone(1.0, 0.2, 440.0).into_iter().flat_map(|x| [x, x]).collect();
        let n = a.len() / 2;
        a[2 * (n - 10)] = 3.0; // a spike at the end of the block
        let orig_early = a[2 * 1000];
        l.process(&mut a, n);
        assert!(a.iter().all(|x| x.abs() <= 0.9 + 1e-6));
        assert_eq!(a[2 * 1000], orig_early, "far from the spike nothing changes");
    }

    #[test]
    fn music_loops_ducks_and_fades() {
        let dir = tempfile::tempdir().unwrap();
        let music: Vec<f32> = vec![0.5; 2 * 1000]; // 1000 frames of DC, looped
        let mpath = raw(dir.path(), "m.f32", &music);
        let speech = raw(dir.path(), "s.f32", &vec![0.0; MIX_RATE as usize * 2]);
        let plan = MixPlan {
            frames: 10 * MIX_RATE as u64,
            clips: vec![Clip { path: speech, start: 4 * MIX_RATE as u64, frames: 2 * MIX_RATE as u64, gain: 1.0 }],
            music: Some(Music {
                path: mpath,
                frames: 1000,
                looped: true,
                volume: 1.0,
                ducking: Some(Ducking { level: 0.2, attack: 0.2, release: 0.5 }),
                fade: 1.0,
            }),
        };
        let all = collect(&plan);
        let at = |t: f64| all[(t * MIX_RATE as f64) as usize * 2];
        assert!((at(2.0) - 0.5).abs() < 1e-6, "looped music at full volume");
        assert!((at(5.0) - 0.1).abs() < 1e-6, "ducked under speech");
        assert!(at(3.9) < 0.5 && at(3.9) > 0.1, "attack ramp");
        assert!((at(8.0) - 0.5).abs() < 1e-6, "released");
        assert!(at(0.1) < 0.06, "fade in");
        assert!(at(9.95) < 0.03, "fade out");
    }

    #[test]
    fn clips_are_placed_at_their_frame() {
        let dir = tempfile::tempdir().unwrap();
        let clip = raw(dir.path(), "c.f32", &[0.5; 10]);
        let plan = MixPlan {
            frames: MIX_RATE as u64,
            clips: vec![Clip { path: clip, start: 24_000, frames: 10, gain: 1.0 }],
            music: None,
        };
        let all = collect(&plan);
        assert_eq!(all[24_000 * 2], 0.5);
        assert_eq!(all[24_000 * 2 + 1], 0.5);
        assert_eq!(all[23_999 * 2], 0.0);
        assert_eq!(all[24_010 * 2], 0.0);
    }

    #[test]
    fn speech_rate_sound_resamples_to_the_mix_rate_in_time_and_in_tune() {
        // 0.5 s of silence, then 1 kHz for 1 s, at Piper's 22050 Hz.
        let from = 22_050;
        let mut input = vec![0.0f32; from as usize / 2];
        input.extend((0..from).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / from as f32).sin() * 0.5));
        let out = resample(&input, from, MIX_RATE).unwrap();
        assert_eq!(out.len(), 72_000, "1.5 s at 48 kHz");
        // The tone starts where it started (within a millisecond), not a filter delay later.
        let onset = out.iter().position(|s| s.abs() > 0.25).unwrap();
        assert!((onset as i64 - 24_000).abs() < 48, "onset at sample {onset}");
        // In tune and clean: against an ideal 1 kHz sine fitted in the middle of the tone.
        let mid = &out[36_000..60_000];
        let (mut sc, mut cc) = (0.0f64, 0.0f64);
        for (i, &s) in mid.iter().enumerate() {
            let t = 2.0 * std::f64::consts::PI * 1000.0 * i as f64 / MIX_RATE as f64;
            sc += s as f64 * t.sin();
            cc += s as f64 * t.cos();
        }
        let (a, b) = (2.0 * sc / mid.len() as f64, 2.0 * cc / mid.len() as f64);
        let mut err = 0.0f64;
        let mut sig = 0.0f64;
        for (i, &s) in mid.iter().enumerate() {
            let t = 2.0 * std::f64::consts::PI * 1000.0 * i as f64 / MIX_RATE as f64;
            let ideal = a * t.sin() + b * t.cos();
            err += (s as f64 - ideal).powi(2);
            sig += ideal.powi(2);
        }
        let snr = 10.0 * (sig / err).log10();
        assert!(snr > 60.0, "SNR {snr:.1} dB");
        assert!(((a * a + b * b).sqrt() - 0.5).abs() < 0.01, "amplitude kept");
        assert_eq!(resample(&[], from, MIX_RATE).unwrap().len(), 0);
    }

    /// Found by the batch benchmark: a narration whose length was a whole number of the
    /// resampler's 1024-sample chunks left an empty tail, which rubato refuses ("Insufficient
    /// buffer size 0"), so about one voice line in a thousand failed its render.
    #[test]
    fn speech_of_whole_resampler_chunks_resamples() {
        for chunks in [1, 2, 7] {
            let input = vec![0.25f32; 1024 * chunks];
            let out = resample(&input, 22_050, MIX_RATE).unwrap();
            assert_eq!(out.len(), (1024 * chunks * 48_000 + 11_025) / 22_050);
            assert!((out[out.len() / 2] - 0.25).abs() < 0.01, "level kept");
        }
    }
}
