//! Audio in f32: placing clips on a timeline, music looping with ducking under narration,
//! EBU R128 loudness normalisation and a peak limiter.

/// Interleaved stereo at the mix rate.
pub const MIX_RATE: u32 = 48_000;
pub const MIX_CHANNELS: u16 = 2;

/// A stereo mix buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Mix {
    pub samples: Vec<f32>,
}

impl Mix {
    pub fn silence(seconds: f64) -> Self {
        let frames = (seconds * MIX_RATE as f64).round() as usize;
        Self {
            samples: vec![0.0; frames * 2],
        }
    }

    pub fn frames(&self) -> usize {
        self.samples.len() / 2
    }

    /// Adds a mono clip at `at` seconds, clipped to the mix's length.
    pub fn add_mono(&mut self, clip: &[f32], at: f64, gain: f32) {
        let start = (at * MIX_RATE as f64).round().max(0.0) as usize;
        let frames = self.frames();
        for (i, s) in clip.iter().enumerate() {
            let f = start + i;
            if f >= frames {
                break;
            }
            self.samples[f * 2] += s * gain;
            self.samples[f * 2 + 1] += s * gain;
        }
    }

    /// Adds stereo music from the start, looped if asked, with a per-frame gain envelope.
    pub fn add_music(&mut self, music: &[f32], looped: bool, gain: &[f32]) {
        let mframes = music.len() / 2;
        if mframes == 0 {
            return;
        }
        for f in 0..self.frames() {
            let src = if looped {
                f % mframes
            } else if f < mframes {
                f
            } else {
                break;
            };
            let g = gain.get(f).copied().unwrap_or(0.0);
            self.samples[f * 2] += music[src * 2] * g;
            self.samples[f * 2 + 1] += music[src * 2 + 1] * g;
        }
    }

    /// Integrated loudness in LUFS (EBU R128); `None` for silence.
    pub fn loudness(&self) -> Option<f64> {
        integrated_loudness(&self.samples, MIX_CHANNELS as u32, MIX_RATE)
    }

    /// Scales to `target` LUFS, then limits peaks to `ceiling` (linear) so the gain never clips.
    pub fn normalize(&mut self, target: f64, ceiling: f32) -> Option<f64> {
        let measured = self.loudness()?;
        let gain = 10f64.powf((target - measured) / 20.0) as f32;
        for s in &mut self.samples {
            *s *= gain;
        }
        limit_peaks(&mut self.samples, 2, ceiling, MIX_RATE);
        Some(measured)
    }
}

/// Integrated loudness of interleaved samples.
pub fn integrated_loudness(samples: &[f32], channels: u32, rate: u32) -> Option<f64> {
    let mut m = ebur128::EbuR128::new(channels, rate, ebur128::Mode::I).ok()?;
    m.add_frames_f32(samples).ok()?;
    let l = m.loudness_global().ok()?;
    l.is_finite().then_some(l)
}

/// Gain per output frame for music: `volume`, dipping to `volume * level` while any of
/// `speech` (start, end seconds) plays, ramping down over `attack` before it and back up over
/// `release` after it; plus fades at both ends of the video.
pub fn ducking_envelope(
    frames: usize,
    speech: &[(f64, f64)],
    volume: f32,
    level: f32,
    attack: f64,
    release: f64,
    fade: f64,
) -> Vec<f32> {
    let rate = MIX_RATE as f64;
    let total = frames as f64 / rate;
    let mut env = vec![1.0f32; frames];
    for &(s, e) in speech {
        let a0 = ((s - attack).max(0.0) * rate) as usize;
        let r1 = (((e + release).min(total)) * rate) as usize;
        for (f, g) in env.iter_mut().enumerate().take(r1.min(frames)).skip(a0) {
            let t = f as f64 / rate;
            let duck = if t < s {
                1.0 - (1.0 - level as f64) * ((t - (s - attack)) / attack.max(1e-6)).clamp(0.0, 1.0)
            } else if t <= e {
                level as f64
            } else {
                level as f64 + (1.0 - level as f64) * ((t - e) / release.max(1e-6)).clamp(0.0, 1.0)
            };
            *g = g.min(duck as f32);
        }
    }
    for (f, g) in env.iter_mut().enumerate() {
        let t = f as f64 / rate;
        let edge = if fade > 0.0 {
            (t / fade).min((total - t) / fade).clamp(0.0, 1.0)
        } else {
            1.0
        };
        *g *= volume * edge as f32;
    }
    env
}

/// A look-ahead peak limiter: gain drops ahead of any peak that would exceed `ceiling`
/// (so no sample does) and recovers over ~80 ms.
pub fn limit_peaks(samples: &mut [f32], channels: usize, ceiling: f32, rate: u32) {
    let frames = samples.len() / channels;
    if frames == 0 {
        return;
    }
    let need: Vec<f32> = (0..frames)
        .map(|f| {
            let peak = samples[f * channels..][..channels]
                .iter()
                .fold(0.0f32, |m, s| m.max(s.abs()));
            if peak > ceiling { ceiling / peak } else { 1.0 }
        })
        .collect();
    if need.iter().all(|&g| g >= 1.0) {
        return;
    }
    let look = (rate as usize / 200).max(1); // 5 ms
    let release = 1.0 - (-1.0 / (0.08 * rate as f32)).exp();
    // Minimum of the needed gain over the look-ahead window (monotonic deque).
    let mut window_min = vec![1.0f32; frames];
    let mut dq: std::collections::VecDeque<usize> = Default::default();
    for i in (0..frames).rev() {
        while dq.back().is_some_and(|&j| need[j] >= need[i]) {
            dq.pop_back();
        }
        dq.push_back(i);
        while dq.front().is_some_and(|&j| j > i + look) {
            dq.pop_front();
        }
        window_min[i] = need[*dq.front().expect("non-empty")];
    }
    let mut g = 1.0f32;
    for f in 0..frames {
        let target = window_min[f];
        g = if target < g {
            target
        } else {
            g + (target - g) * release
        };
        // Never above what this very sample needs, so the ceiling holds exactly.
        let applied = g.min(need[f]);
        for s in &mut samples[f * channels..][..channels] {
            *s *= applied;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(seconds: f64, amp: f32) -> Vec<f32> {
        (0..(seconds * MIX_RATE as f64) as usize)
            .map(|i| (i as f32 * 440.0 * std::f32::consts::TAU / MIX_RATE as f32).sin() * amp)
            .collect()
    }

    #[test]
    fn normalize_hits_the_target() {
        let mut m = Mix::silence(3.0);
        m.add_mono(&tone(3.0, 0.05), 0.0, 1.0);
        let before = m.loudness().unwrap();
        m.normalize(-16.0, 0.95);
        let after = m.loudness().unwrap();
        assert!(before < -25.0, "{before}");
        assert!((after + 16.0).abs() < 0.5, "{after}");
        assert!(m.samples.iter().all(|s| s.abs() <= 0.95 + 1e-6));
    }

    #[test]
    fn limiter_caps_peaks_and_leaves_quiet_parts() {
        let mut s: Vec<f32> = tone(1.0, 0.2).into_iter().flat_map(|x| [x, x]).collect();
        s[48_000] = 3.0; // a spike in the middle
        limit_peaks(&mut s, 2, 0.9, MIX_RATE);
        assert!(s.iter().all(|x| x.abs() <= 0.9 + 1e-6));
        // Far away from the spike nothing changed.
        let orig = tone(1.0, 0.2);
        assert!((s[2 * 1000] - orig[1000]).abs() < 1e-6);
    }

    #[test]
    fn ducking_dips_under_speech_only() {
        let env = ducking_envelope(
            MIX_RATE as usize * 10,
            &[(4.0, 6.0)],
            0.5,
            0.2,
            0.2,
            0.5,
            1.0,
        );
        let at = |t: f64| env[(t * MIX_RATE as f64) as usize];
        assert!((at(2.0) - 0.5).abs() < 1e-6);
        assert!((at(5.0) - 0.1).abs() < 1e-6);
        assert!(at(3.9) < 0.5 && at(3.9) > 0.1);
        assert!((at(8.0) - 0.5).abs() < 1e-6);
        assert!(at(0.1) < 0.06, "fade in");
        assert!(at(9.95) < 0.03, "fade out");
    }

    #[test]
    fn music_loops_and_mono_is_placed() {
        let mut m = Mix::silence(1.0);
        let music: Vec<f32> = vec![0.5; 2 * 1000];
        m.add_music(&music, true, &vec![1.0; m.frames()]);
        assert!(m.samples.iter().all(|&s| (s - 0.5).abs() < 1e-6));
        let mut m = Mix::silence(1.0);
        m.add_mono(&[1.0; 10], 0.5, 0.5);
        assert_eq!(m.samples[24_000 * 2], 0.5);
        assert_eq!(m.samples[23_999 * 2], 0.0);
    }
}
