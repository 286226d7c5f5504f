//! The render's stages, each named here once. Three places name them, and two stages carry a
//! different (historical, now public) name in some of them: the cache (namespace of every key
//! and the per-stage hit counts; part of each key's hash, so never changed), the report's
//! `stages` map, and progress events.

/// One stage of a render, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Each scene's speech: WAV and word timings.
    Narration,
    /// Each scene's background at its largest zoom (and its face rig).
    Canvas,
    /// Background music decoded to the mix's format (part of the soundtrack).
    Music,
    /// The mixed, loudness-normalised soundtrack (runs beside the segments).
    Audio,
    /// The soundtrack under one segment, encoded on its own: an edit re-encodes only the
    /// spans whose sound it changes.
    AudioSpan,
    /// Each encoded H.264 segment.
    Segment,
    /// The stream-copied MP4.
    Join,
}

impl Stage {
    pub const ALL: [Stage; 7] =
        [Stage::Narration, Stage::Canvas, Stage::Music, Stage::Audio, Stage::AudioSpan, Stage::Segment, Stage::Join];

    /// The cache's name: namespace of the stage's keys and of its hit counts.
    pub fn cache_name(self) -> &'static str {
        match self {
            Stage::Narration => "narration",
            Stage::Canvas => "canvas",
            Stage::Music => "music",
            Stage::Audio => "audio",
            Stage::AudioSpan => "audio-span",
            Stage::Segment => "segment",
            Stage::Join => "final",
        }
    }

    /// The key in the report's `stages` (and the tracing span's `stage`).
    pub fn report_name(self) -> &'static str {
        match self {
            Stage::Narration => "narration",
            Stage::Canvas => "canvas",
            Stage::Music => "music",
            Stage::Audio => "audio",
            Stage::AudioSpan => "audio_spans",
            Stage::Segment => "segments",
            Stage::Join => "concat",
        }
    }

    /// The name in `Progress::Stage` events; the soundtrack is reported with the segments.
    /// (Music has no report entry of its own either: its time is the soundtrack's.)
    pub fn progress_name(self) -> Option<&'static str> {
        match self {
            Stage::Narration => Some("narration"),
            Stage::Canvas => Some("canvas"),
            Stage::Music | Stage::Audio | Stage::AudioSpan => None,
            Stage::Segment => Some("render"),
            Stage::Join => Some("concat"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are what reports, progress followers and existing caches already use.
    #[test]
    fn every_stage_keeps_its_public_names() {
        let names: Vec<_> = Stage::ALL.iter().map(|s| (s.cache_name(), s.report_name(), s.progress_name())).collect();
        assert_eq!(
            names,
            [
                ("narration", "narration", Some("narration")),
                ("canvas", "canvas", Some("canvas")),
                ("music", "music", None),
                ("audio", "audio", None),
                ("audio-span", "audio_spans", None),
                ("segment", "segments", Some("render")),
                ("final", "concat", Some("concat")),
            ]
        );
    }
}
