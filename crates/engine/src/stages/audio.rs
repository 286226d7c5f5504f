//! Stage `audio`: the soundtrack, with narrations placed on the timeline, music ducked under
//! them, loudness normalised, encoded to AAC once for the whole video.

use std::fs;
use std::path::PathBuf;

use reelsmith_media::audio::{self, Clip, MIX_CHANNELS, MIX_RATE, MixPlan};
use reelsmith_media::ffmpeg;
use reelsmith_spec::{Spec, limits};
use serde::Serialize;

use super::Render;
use super::narration::Speech;
use crate::RenderError;
use crate::cache;
use crate::plan::Timeline;
use crate::stage::Stage;

/// Narration alone is mono (encoding stereo AAC costs twice the CPU for the same sound);
/// music makes the soundtrack stereo.
fn channels(spec: &Spec) -> u16 {
    if spec.music.is_some() { MIX_CHANNELS } else { 1 }
}

#[derive(Serialize)]
struct MixKey<'a> {
    channels: u16,
    narrations: Vec<(String, u64)>,
    music: Option<(String, &'a reelsmith_spec::Music)>,
    frames: u64,
    fps: u32,
    loudness: Option<f32>,
    bitrate: u32,
}

/// Mixes and encodes the soundtrack; returns its file, loudness and, when it was encoded rather
/// than found in the cache, the encoder's CPU seconds.
pub(super) fn mixdown(
    r: &Render<'_>,
    tl: &Timeline,
    speech: &[Option<Speech>],
) -> Result<(PathBuf, Option<f64>, Option<f64>), RenderError> {
    let (engine, counts, spec, inputs) = (r.engine, &r.counts, r.spec, &r.inputs);
    let starts: Vec<u64> = tl.scenes.iter().map(|s| s.start + s.narration_frame).collect();
    let key = cache::key(
        Stage::Audio.cache_name(),
        &MixKey {
            channels: channels(spec),
            narrations: speech.iter().zip(&starts).filter_map(|(s, &f)| s.as_ref().map(|s| (s.key.hex(), f))).collect(),
            music: spec.music.as_ref().map(|m| (inputs.hash(&m.file), m)),
            frames: tl.total_frames,
            fps: tl.fps,
            loudness: spec.audio.loudness,
            bitrate: spec.audio.bitrate_kbps,
        },
    );
    let mut child_cpu = None;
    let channels = channels(spec);
    let (dir, _) = counts.cached(engine, Stage::Audio, &key, |dir| {
        let fps = tl.fps as f64;
        let to_frames = |frame: u64| (frame as f64 / fps * MIX_RATE as f64).round() as u64;
        let mut plan = MixPlan { frames: to_frames(tl.total_frames), clips: vec![], music: None };
        for (s, &f) in speech.iter().zip(&starts) {
            if let Some(s) = s {
                plan.clips.push(Clip { path: s.path.clone(), start: to_frames(f), frames: s.frames });
            }
        }
        if let Some(m) = &spec.music {
            // Decoded once to a raw file in the cache, then read block by block.
            let mkey = cache::key(Stage::Music.cache_name(), &inputs.hash(&m.file));
            let (mdir, _) = counts.cached(engine, Stage::Music, &mkey, |d| {
                let out = d.join("music.f32");
                ffmpeg::decode_audio_to_file(
                    &inputs.path(&m.file),
                    MIX_RATE,
                    MIX_CHANNELS,
                    limits::MAX_TOTAL_SECONDS,
                    &out,
                )
                .map_err(|e| RenderError::at("music.file", e.to_string()))?;
                Ok(())
            })?;
            let path = mdir.join("music.f32");
            let frames = fs::metadata(&path)?.len() / 8;
            if frames == 0 {
                return Err(RenderError::at("music.file", "the music file has no audio"));
            }
            let d = &m.ducking;
            plan.music = Some(audio::Music {
                path,
                frames,
                looped: m.r#loop,
                volume: m.volume,
                ducking: d.enabled.then_some(audio::Ducking {
                    level: d.level,
                    attack: d.attack as f64,
                    release: d.release as f64,
                }),
                fade: m.fade as f64,
            });
        }
        let mut enc = ffmpeg::AacEncoder::start(MIX_RATE, channels, spec.audio.bitrate_kbps, &dir.join("audio.m4a"))?;
        let mut mono = vec![];
        let mut enc_err = None;
        // A -1 dBFS ceiling keeps AAC's overshoot from clipping.
        let streamed = plan.stream(spec.audio.loudness.map(f64::from), 0.89, |block| {
            let block = if channels == 1 {
                mono.clear();
                mono.extend(block.iter().step_by(2));
                &mono[..]
            } else {
                block
            };
            enc.write(block).map_err(|e| {
                let msg = e.to_string();
                enc_err = Some(e);
                std::io::Error::other(msg)
            })
        });
        if let Some(e) = enc_err {
            return Err(e.into());
        }
        let (_, after) = streamed?;
        child_cpu = Some(enc.finish()?);
        fs::write(dir.join("loudness.json"), serde_json::to_vec(&after).expect("f64 serialises"))?;
        Ok(())
    })?;
    let loudness: Option<f64> =
        fs::read(dir.join("loudness.json")).ok().and_then(|b| serde_json::from_slice(&b).ok()).flatten();
    Ok((dir.join("audio.m4a"), loudness, child_cpu))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narration_alone_is_mono_and_music_makes_it_stereo() {
        let spoken = reelsmith_spec::parse(r#"{"version":1,"scenes":[{"duration":1}]}"#).unwrap();
        assert_eq!(channels(&spoken), 1);
        let with_music =
            reelsmith_spec::parse(r#"{"version":1,"music":{"file":"m.mp3"},"scenes":[{"duration":1}]}"#).unwrap();
        assert_eq!(channels(&with_music), MIX_CHANNELS);
    }
}
