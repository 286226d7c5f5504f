//! The live stream: an HLS playlist of fragmented MP4 pieces, one per segment with its span of
//! the soundtrack, published in order as segments finish, so a player starts long before the
//! render ends. Segments finish out of order (and in parallel); whichever thread completes the
//! next piece in line publishes it and any after it that are ready.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use reelsmith_media::audio::MIX_RATE;
use reelsmith_media::{aac, ffmpeg, fmp4};

use crate::plan::Timeline;
use crate::{LiveOptions, RenderError};

/// A live stream being written.
pub(super) struct Live<'a> {
    opts: &'a LiveOptions,
    fps: u32,
    /// Each segment's first frame and frame count.
    frames: Vec<(u64, u64)>,
    /// Each segment's first soundtrack sample (see `audio::span_bounds`).
    bounds: Vec<u64>,
    target_duration: u64,
    /// The tracks (id, timescale) of the first piece, which every piece must share.
    tracks: std::sync::OnceLock<Vec<(u32, u32)>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    video: BTreeMap<usize, PathBuf>,
    audio: Option<Vec<PathBuf>>,
    next: usize,
    /// A thread is publishing: others only leave their piece for it.
    busy: bool,
    /// The stream broke (it never breaks the render): nothing more is published.
    stopped: bool,
    sequence: u32,
    playlist: String,
    playlists_written: u32,
}

impl<'a> Live<'a> {
    pub(super) fn new(opts: &'a LiveOptions, tl: &Timeline, bounds: Vec<u64>) -> Result<Self, RenderError> {
        fs::create_dir_all(&opts.dir)?;
        let mut frames = Vec::with_capacity(tl.segments.len());
        let mut at = 0;
        for s in &tl.segments {
            frames.push((at, s.frames()));
            at += s.frames();
        }
        let longest = frames.iter().map(|f| f.1).max().unwrap_or(0);
        let mut playlist = String::new();
        let target_duration = longest.div_ceil(tl.fps as u64).max(1);
        // EVENT: pieces are only ever added, so a player may start at the first and keep going.
        let _ = write!(
            playlist,
            "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target_duration}\n#EXT-X-PLAYLIST-TYPE:EVENT\n\
             #EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{}init.mp4\"\n",
            opts.uri_prefix
        );
        Ok(Self {
            opts,
            fps: tl.fps,
            frames,
            bounds,
            target_duration,
            tracks: Default::default(),
            state: Mutex::new(State { sequence: 1, playlist, ..Default::default() }),
        })
    }

    pub(super) fn video_ready(&self, segment: usize, path: PathBuf) {
        self.state.lock().expect("live lock").video.insert(segment, path);
        self.pump();
    }

    pub(super) fn audio_ready(&self, spans: Option<&[PathBuf]>) {
        {
            let mut st = self.state.lock().expect("live lock");
            match spans.filter(|s| s.len() == self.frames.len()) {
                Some(s) => st.audio = Some(s.to_vec()),
                None => {
                    tracing::warn!("the soundtrack's spans are not all in the cache; no live stream for this render");
                    st.stopped = true;
                }
            }
        }
        self.pump();
    }

    /// Publishes every piece that is next in line and ready, unless another thread is at it.
    fn pump(&self) {
        let mut st = self.state.lock().expect("live lock");
        if st.busy {
            return;
        }
        st.busy = true;
        loop {
            let i = st.next;
            let ready = match (&st.audio, st.video.get(&i)) {
                (Some(a), Some(v)) if !st.stopped && i < self.frames.len() => Some((v.clone(), a[i].clone())),
                _ => None,
            };
            let Some((video, audio)) = ready else { break };
            let sequence = st.sequence;
            // Muxing takes tens of milliseconds: other threads go on meanwhile.
            drop(st);
            let published = self.publish(i, &video, &audio, sequence);
            st = self.state.lock().expect("live lock");
            match published {
                Ok((sequence, line)) => {
                    st.sequence = sequence;
                    st.playlist.push_str(&line);
                    st.next += 1;
                    let end = st.next == self.frames.len();
                    if end {
                        st.playlist.push_str("#EXT-X-ENDLIST\n");
                    }
                    st.playlists_written += 1;
                    let name = format!("playlist-{}.m3u8", st.playlists_written);
                    if let Err(e) = self.hand_over(&name, crate::LIVE_PLAYLIST, st.playlist.as_bytes()) {
                        tracing::warn!(error = %e, "live playlist not written; the live stream stops here");
                        st.stopped = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(segment = i, error = %e, "live piece not made; the live stream stops here");
                    st.stopped = true;
                }
            }
        }
        st.busy = false;
    }

    /// Writes `bytes` to a fresh file and hands it to the stream's owner as `name`.
    fn hand_over(&self, file: &str, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.opts.dir.join(file);
        fs::write(&path, bytes)?;
        (self.opts.publish)(name, &path);
        Ok(())
    }

    /// Makes segment `i`'s piece; returns the next fragment number and its playlist lines.
    fn publish(&self, i: usize, video: &Path, audio: &Path, sequence: u32) -> Result<(u32, String), RenderError> {
        let work = tempfile::tempdir_in(&self.opts.dir)?;
        let mut sound = fs::read(audio)?;
        if i == 0 {
            // The stream starts at the first sample: the encoder's priming frame is left out
            // (the MP4 skips it with an edit list, which fragments do not have).
            let priming = aac::adts_frames(&sound)?.first().map_or(0, |f| f.len());
            sound.drain(..priming);
        }
        let sound_path = work.path().join("sound.aac");
        fs::write(&sound_path, &sound)?;
        let muxed = work.path().join("piece.mp4");
        ffmpeg::fragment(video, (!sound.is_empty()).then_some(sound_path.as_path()), &muxed)?;
        let f = fmp4::split(&fs::read(&muxed)?).map_err(std::io::Error::other)?;
        if i == 0 {
            self.hand_over("init.mp4", "init.mp4", &f.init)?;
        }
        // Pieces are played with the first one's initialisation part: their tracks must match.
        let tracks = self.tracks.get_or_init(|| f.tracks.clone());
        if f.tracks.iter().any(|t| !tracks.contains(t)) {
            return Err(RenderError::Io(std::io::Error::other(format!(
                "piece {i} has tracks {:?}, the stream {tracks:?}",
                f.tracks
            ))));
        }
        let (first_frame, frames) = self.frames[i];
        let mut media = f.media;
        let mut next = sequence;
        // Track 1 is the pictures, track 2 the sound (the order `fragment` maps them in).
        let offset = |track: u32| {
            let ts = f.tracks.iter().find(|t| t.0 == track).map_or(1, |t| t.1) as u128;
            let ticks = match track {
                1 => first_frame as u128 * ts / self.fps as u128,
                _ => self.bounds[i] as u128 * ts / MIX_RATE as u128,
            };
            ticks as u64
        };
        fmp4::retime(&mut media, &mut next, offset).map_err(std::io::Error::other)?;
        let name = format!("seg-{i}.m4s");
        self.hand_over(&name, &name, &media)?;
        let seconds = frames as f64 / self.fps as f64;
        debug_assert!(seconds <= self.target_duration as f64 + 0.5);
        Ok((next, format!("#EXTINF:{seconds:.3},\n{}{name}\n", self.opts.uri_prefix)))
    }
}
