//! Choosing the H.264 encoder: hardware ones only when a real probe encode succeeds here.

use std::sync::Mutex;

use reelsmith_media::ffmpeg::{self, H264Encoder};
use reelsmith_spec::EncoderChoice;

/// Encoders that passed a probe encode, hardware first, libx264 last if it works.
/// Probed once per process: a failed hardware probe costs tens of milliseconds each.
pub fn working_encoders() -> Vec<H264Encoder> {
    static PROBED: Mutex<Option<Vec<H264Encoder>>> = Mutex::new(None);
    let mut guard = PROBED.lock().expect("probe lock");
    guard
        .get_or_insert_with(|| {
            let mut all = H264Encoder::HARDWARE.to_vec();
            all.push(H264Encoder::Libx264);
            all.into_iter().filter(|e| ffmpeg::probe_encoder(*e)).collect()
        })
        .clone()
}

/// The encoder for a spec's choice: `auto` takes the first working hardware encoder; an
/// explicit hardware encoder that fails its probe falls back to libx264 (with a warning).
pub fn resolve(choice: EncoderChoice) -> H264Encoder {
    let wanted = match choice {
        EncoderChoice::Libx264 => return H264Encoder::Libx264,
        EncoderChoice::Auto => None,
        EncoderChoice::H264Nvenc => Some(H264Encoder::Nvenc),
        EncoderChoice::H264Qsv => Some(H264Encoder::Qsv),
        EncoderChoice::H264Vaapi => Some(H264Encoder::Vaapi),
        EncoderChoice::H264Videotoolbox => Some(H264Encoder::VideoToolbox),
    };
    let working = working_encoders();
    match wanted {
        Some(w) if working.contains(&w) => w,
        Some(w) => {
            tracing::warn!(encoder = w.ffmpeg_name(), "encoder failed its probe here; using libx264");
            H264Encoder::Libx264
        }
        None => working.into_iter().find(|e| *e != H264Encoder::Libx264).unwrap_or(H264Encoder::Libx264),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libx264_works_and_missing_hardware_falls_back() {
        let working = working_encoders();
        assert!(working.contains(&H264Encoder::Libx264));
        // Whatever this machine has, an unusable choice never survives resolution.
        for choice in [EncoderChoice::H264Nvenc, EncoderChoice::H264Vaapi, EncoderChoice::Auto] {
            let got = resolve(choice);
            assert!(working.contains(&got), "{got:?} not in {working:?}");
        }
    }
}
