//! End-to-end renders of small videos, checked with ffprobe, sampled frames and the audio.

mod common;

use common::*;
use reelsmith_engine::RenderOptions;
use reelsmith_media::ffmpeg;
use serde_json::json;

const W: u32 = 320;
const H: u32 = 180;
const FPS: f64 = 25.0;

/// Three scenes: a red card, a blue picture with narration and Ken Burns, a green card with
/// narration; crossfade then fade-black; music ducked under the narration.
fn storyboard(f: &Fixture, second_line: &str) -> serde_json::Value {
    f.ramp_png("blue.png", 640, 360, [40, 60, 255]);
    f.tone_wav("music.wav", 1000.0, 3.0, 0.3);
    json!({
        "version": 1,
        "output": { "width": W, "height": H, "fps": FPS as u32, "quality": { "preset": "ultrafast", "crf": 28 } },
        "subtitles": { "style": "word-highlight", "font": { "size": 0.09, "color": "#ffffff" }, "highlight_color": "#ffff00" },
        "music": { "file": "music.wav", "volume": 0.5, "fade": 0.0, "ducking": { "level": 0.2, "attack": 0.1, "release": 0.1 } },
        "scenes": [
            { "background": { "color": "#ff0000" }, "duration": 1.6, "transition": { "type": "crossfade", "duration": 0.4 } },
            { "image": "blue.png", "narration": { "text": second_line },
              "motion": { "type": "ken-burns", "zoom_from": 1.0, "zoom_to": 1.5, "pan": "right" },
              "transition": { "type": "fade-black", "duration": 0.4 } },
            { "background": { "color": "#00c000" }, "narration": { "text": "And a green ending." } }
        ]
    })
}

/// Music whose channels differ keeps them apart: a stereo soundtrack, each side its own tone.
#[test]
fn stereo_music_makes_a_stereo_soundtrack() {
    let f = Fixture::new();
    // Left 440 Hz, right 660 Hz.
    f.wav("stereo.wav", 2, (0..96_000).flat_map(|i| [sine_sample(i, 440.0, 0.3), sine_sample(i, 660.0, 0.3)]));
    let spec = f.write_spec(
        "spec.json",
        &json!({
            "version": 1,
            "output": { "width": W, "height": H, "fps": 10, "quality": { "preset": "ultrafast" } },
            "music": { "file": "stereo.wav", "fade": 0.0 },
            "scenes": [{ "background": { "color": "#203040" }, "duration": 1.5 }]
        }),
    );
    let out = f.path("out.mp4");
    render(&f.path("cache"), &spec, &out);
    assert_eq!(ffmpeg::probe(&out).unwrap().audio().unwrap().channels, 2);
    let side = |pan: &str| {
        let pcm =
            ffmpeg_out(&["-i", out.to_str().unwrap(), "-af", pan, "-f", "f32le", "-ac", "1", "-ar", "48000", "-"]);
        pcm.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect::<Vec<f32>>()
    };
    let (left, right) = (side("pan=mono|c0=c0"), side("pan=mono|c0=c1"));
    assert!(tone_amplitude(&left, 440.0, 0.3, 1.2) > 5.0 * tone_amplitude(&left, 660.0, 0.3, 1.2), "left is 440 Hz");
    assert!(tone_amplitude(&right, 660.0, 0.3, 1.2) > 5.0 * tone_amplitude(&right, 440.0, 0.3, 1.2), "right is 660 Hz");
}

/// A mono soundtrack gets 128 kbit/s unless the spec asks for a bitrate; noise, which uses
/// every bit the encoder is given, shows the rate in the file.
#[test]
fn a_mono_soundtrack_defaults_to_128_kbits_and_takes_the_bitrate_asked_for() {
    let f = Fixture::new();
    // White noise (xorshift), a quarter of full scale.
    let mut state = 0x2545_f491_u32;
    let noise = std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 16) as i16 / 4
    });
    f.wav("noise.wav", 1, noise.take(4 * 48_000));
    let rate = |name: &str, audio: serde_json::Value| {
        let mut doc = json!({
            "version": 1,
            "output": { "width": W, "height": H, "fps": 10, "quality": { "preset": "ultrafast" } },
            "music": { "file": "noise.wav", "fade": 0.0 },
            "scenes": [{ "background": { "color": "#203040" }, "duration": 4.0 }]
        });
        if !audio.is_null() {
            doc["audio"] = audio;
        }
        let spec = f.write_spec(&format!("{name}.json"), &doc);
        let out = f.path(&format!("{name}.mp4"));
        render(&f.path("cache"), &spec, &out);
        assert_eq!(ffmpeg::probe(&out).unwrap().audio().unwrap().channels, 1, "{name}: mono music, mono sound");
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "a", "-show_entries", "stream=bit_rate", "-of", "csv=p=0"])
            .arg(&out)
            .output()
            .unwrap();
        String::from_utf8_lossy(&probe.stdout).trim().parse::<f64>().unwrap() / 1000.0
    };
    let default = rate("default", serde_json::Value::Null);
    let asked = rate("asked", json!({ "bitrate_kbps": 192 }));
    assert!((115.0..=140.0).contains(&default), "default mono rate {default} kbit/s");
    assert!((175.0..=210.0).contains(&asked), "asked-for rate {asked} kbit/s");
}

#[test]
fn storyboard_renders_to_the_planned_video() {
    let f = Fixture::new();
    let spec = f.write_spec("spec.json", &storyboard(&f, "Hello there, this is the blue scene."));
    let out = f.path("out.mp4");
    let cache = f.path("cache");
    let rep = render(&cache, &spec, &out);

    // Streams, size, rate and duration within one frame of the plan.
    let info = ffmpeg::probe(&out).unwrap();
    let v = info.video().unwrap();
    assert_eq!((v.codec_name.as_str(), v.width, v.height), ("h264", W, H));
    assert!((v.fps - FPS).abs() < 0.01, "fps {}", v.fps);
    assert_eq!(v.frames, rep.frames, "frame count");
    let planned = rep.frames as f64 / FPS;
    assert!((v.duration - planned).abs() <= 1.0 / FPS + 1e-6, "video {} vs planned {planned}", v.duration);
    let a = info.audio().unwrap();
    assert_eq!(a.codec_name, "aac");
    assert!((a.duration - planned).abs() < 0.05, "audio {} vs {planned}", a.duration);
    // Mono music under centred narration: both channels would be equal, so the sound is mono.
    assert_eq!(a.channels, 1, "mono music makes a mono soundtrack");

    // Scene 0 is red; mid-crossfade (1.4 s) shows red and blue mixed; then the blue picture.
    let red = mean_rgb(&out, 0.5, 0, 0, W, H / 2);
    assert!(red[0] > 200.0 && red[2] < 40.0, "red card {red:?}");
    let mid = mean_rgb(&out, 1.4, 0, 0, W, H / 2);
    assert!(mid[0] > 60.0 && mid[0] < 200.0 && mid[2] > 50.0, "crossfade mixes both: {mid:?}");
    let blue_t = 2.2;
    let blue = mean_rgb(&out, blue_t, 0, 0, W, H / 2);
    assert!(blue[2] > 60.0 && blue[0] < 40.0, "blue picture {blue:?}");

    // Ken Burns with a pan: the same region changes over the scene.
    let scene1_end = (rep.frames as f64 / FPS) - 2.0;
    let late = mean_rgb(&out, scene1_end.max(blue_t + 0.8), 0, 0, W / 4, H / 2);
    let early = mean_rgb(&out, blue_t, 0, 0, W / 4, H / 2);
    assert!((late[2] - early[2]).abs() > 5.0, "the crop moves: {early:?} -> {late:?}");

    // Subtitles: white/yellow text pixels in the bottom band while the narration plays, none at the top.
    let frame = ffmpeg::frame_rgb_at(&out, blue_t).unwrap();
    let bottom = (0, H * 2 / 3, W, H);
    let top = (0, 0, W, H / 3);
    let text_px = count_near(&frame, bottom, [255, 255, 255], 40) + count_near(&frame, bottom, [255, 255, 0], 40);
    assert!(text_px > 100, "subtitle pixels in the bottom band: {text_px}");
    assert_eq!(count_near(&frame, top, [255, 255, 255], 40) + count_near(&frame, top, [255, 255, 0], 40), 0);
    // The red card has no narration, so no subtitle.
    let red_frame = ffmpeg::frame_rgb_at(&out, 0.5).unwrap();
    assert_eq!(count_near(&red_frame, bottom, [255, 255, 255], 40), 0);

    // Loudness near the -16 LUFS default target, as players play it: a mono track on both
    // speakers at full level (FFmpeg's own upmix would lower it by 3 dB).
    let mono_track = ffmpeg::decode_audio(&out, 48_000, 1, None, 60.0).unwrap();
    let stereo: Vec<f32> = mono_track.iter().flat_map(|&s| [s, s]).collect();
    let lufs = reelsmith_media::audio::integrated_loudness(&stereo, 2, 48_000).unwrap();
    assert!((lufs + 16.0).abs() < 1.5, "loudness {lufs}");

    // Music ducks under the narration: the 1 kHz tone is weaker while the voice speaks (the
    // blue scene) than on the silent red card.
    let mono = audio_mono(&out);
    let free = tone_amplitude(&mono, 1000.0, 0.3, 1.0);
    let ducked = tone_amplitude(&mono, 1000.0, blue_t - 0.2, blue_t + 0.3);
    assert!(free > 0.01, "music audible: {free}");
    assert!(ducked < free * 0.4, "ducked {ducked} vs free {free}");

    // The report accounts for every stage.
    for stage in ["narration", "canvas", "audio", "segments", "concat"] {
        assert!(rep.stages.contains_key(stage), "{stage} in report");
    }
    assert_eq!(rep.stages["narration"].runs, 2);
    assert_eq!(rep.segments_encoded, rep.segments_total);
    assert!(rep.peak_tree_rss_mb > 1.0);
}

/// Two one-second colour cards joined by `kind`; returns the rendered video and its report.
fn two_cards(
    f: &Fixture,
    a: &str,
    b: &str,
    kind: &str,
    seconds: f64,
) -> (std::path::PathBuf, reelsmith_engine::Report) {
    let spec = f.write_spec(
        "spec.json",
        &json!({
            "version": 1,
            "output": { "width": W, "height": H, "fps": 25 },
            "scenes": [
                { "background": { "color": a }, "duration": 1.0, "transition": { "type": kind, "duration": seconds } },
                { "background": { "color": b }, "duration": 1.0 }
            ]
        }),
    );
    let out = f.path("out.mp4");
    let rep = render(&f.path("cache"), &spec, &out);
    (out, rep)
}

#[test]
fn fade_black_goes_through_black() {
    let f = Fixture::new();
    let (out, rep) = two_cards(&f, "#ffffff", "#ffffff", "fade-black", 0.8);
    assert_eq!(rep.frames, 25 + 25 - 20);
    // The transition spans frames 5..25; its middle (frame 15 = 0.6 s) is black.
    let mid = mean_rgb(&out, 0.6, 0, 0, W, H);
    assert!(mid.iter().all(|&c| c < 30.0), "black at the midpoint: {mid:?}");
    let edge = mean_rgb(&out, 0.1, 0, 0, W, H);
    assert!(edge.iter().all(|&c| c > 225.0), "white before: {edge:?}");
}

#[test]
fn slide_shows_both_scenes_side_by_side() {
    let f = Fixture::new();
    let (out, _) = two_cards(&f, "#ff0000", "#0000ff", "slide", 0.76);
    // Mid-slide (frame 6 + 9 of 19): red on the left, blue on the right.
    let t = (6.0 + 9.0) / 25.0;
    let left = mean_rgb(&out, t, 0, 0, W / 8, H);
    let right = mean_rgb(&out, t, W - W / 8, 0, W, H);
    assert!(left[0] > 200.0 && left[2] < 50.0, "{left:?}");
    assert!(right[2] > 200.0 && right[0] < 50.0, "{right:?}");
}

#[test]
fn rerender_is_cached_and_an_edit_touches_one_scene() {
    let f = Fixture::new();
    let spec = f.write_spec("spec.json", &storyboard(&f, "Hello there, this is the blue scene."));
    let cache = f.path("cache");
    let first = render(&cache, &spec, &f.path("a.mp4"));
    assert_eq!(first.segments_total, 6, "3 bodies, the crossfade and the fade-black's two halves");

    // Identical spec: no speech synthesis, no encoding.
    let again = render(&cache, &spec, &f.path("b.mp4"));
    assert_eq!(again.stages["narration"].runs, 0);
    assert_eq!(again.stages["canvas"].runs, 0);
    assert_eq!(again.stages["audio"].runs, 0);
    assert_eq!(again.segments_encoded, 0);
    assert_eq!(again.encoded_frames, 0);
    assert_eq!(again.cache_misses, 0);
    assert_eq!(ffmpeg::probe(&f.path("b.mp4")).unwrap().video().unwrap().frames, first.frames);

    // New narration for scene 1: one synthesis, its body, the crossfade and its own half of the
    // fade through black re-encoded; scenes 0 and 2 keep their segments, and scene 2 its half
    // of the fade.
    let edited = f.write_spec(
        "edited.json",
        &storyboard(&f, "A different and noticeably longer sentence for the blue scene now."),
    );
    let third = render(&cache, &edited, &f.path("c.mp4"));
    assert_eq!(third.stages["narration"].runs, 1);
    // Scenes 0 and 2 are one short body each; everything else shows scene 1.
    assert_eq!(third.stages["segments"].cache_hits, 3, "bodies of scenes 0 and 2 and scene 2's fade-in reused");
    assert_eq!(third.segments_encoded, third.segments_total - 3, "scene 1's body chunks, crossfade and fade-out");
    assert!(third.segments_encoded >= 3);
    assert!(third.frames > first.frames, "longer narration, longer video");
    // The soundtrack is re-encoded only where its sound changed: the first scene's span is kept.
    let audio = &third.stages["audio"];
    assert!(audio.runs >= 1 && audio.runs < audio.items, "spans encoded {} of {}", audio.runs, audio.items);
    let v = ffmpeg::probe(&f.path("c.mp4")).unwrap();
    assert_eq!(v.video().unwrap().frames, third.frames);
}

/// An edit that makes a scene longer moves every later scene's sound by whole AAC frames, so
/// their soundtrack spans come from the cache; only the edited scene's sound is encoded again.
#[test]
fn a_longer_scene_leaves_the_sound_after_it_in_the_cache() {
    let f = Fixture::new();
    let spec = |first: f64| {
        json!({
            "version": 1,
            "output": { "width": W, "height": H, "fps": FPS as u32, "quality": { "preset": "ultrafast", "crf": 28 } },
            "scenes": [
                { "background": { "color": "#ff0000" }, "narration": { "text": "Hello there." }, "duration": first },
                { "background": { "color": "#0000ff" }, "narration": { "text": "The second scene speaks." }, "padding": 1.0 },
                { "background": { "color": "#00c000" }, "narration": { "text": "And a green ending." }, "padding": 1.0 }
            ]
        })
    };
    let cache = f.path("cache");
    let first = render(&cache, &f.write_spec("a.json", &spec(2.0)), &f.path("a.mp4"));
    assert_eq!(first.stages["audio"].items, 3, "one span under each scene");
    let second = render(&cache, &f.write_spec("b.json", &spec(2.52)), &f.path("b.mp4"));
    let longer = second.frames - first.frames;
    // At 25 fps a frame is 1920 samples: only a multiple of 8 frames keeps the AAC grid.
    assert!(!longer.is_multiple_of(8), "the edit moves the later scenes off the grid ({longer} frames)");
    assert_eq!(second.stages["audio"].runs, 1, "only the first scene's span is encoded again");
    let a = ffmpeg::probe(&f.path("b.mp4")).unwrap();
    let sound = a.audio().unwrap().duration;
    assert!((sound - second.duration_s).abs() < 0.05, "sound {sound} s for {} s of video", second.duration_s);
}

#[test]
fn a_live_stream_grows_piece_by_piece_and_plays_what_the_mp4_plays() {
    let f = Fixture::new();
    let spec = f.write_spec("spec.json", &storyboard(&f, "Hello there, this is the blue scene."));
    let stream = f.path("stream");
    std::fs::create_dir_all(&stream).unwrap();
    let handed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, usize)>::new()));
    let opts = RenderOptions {
        live: Some(reelsmith_engine::LiveOptions {
            dir: f.path("live-work"),
            uri_prefix: String::new(),
            publish: {
                let (handed, stream) = (handed.clone(), stream.clone());
                std::sync::Arc::new(move |name: &str, file: &std::path::Path| {
                    let text = std::fs::read_to_string(file).unwrap_or_default();
                    handed.lock().unwrap().push((name.to_string(), text.matches("#EXTINF").count()));
                    std::fs::rename(file, stream.join(name)).unwrap();
                })
            },
        }),
        ..Default::default()
    };
    let out = f.path("out.mp4");
    let rep = engine(&f.path("cache")).render_file(&spec, &out, &opts).unwrap();
    let n = rep.segments_total as usize;

    // Pieces in order, each handed over before the playlist that first lists it.
    let handed = handed.lock().unwrap().clone();
    let names: Vec<&str> = handed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "init.mp4");
    for i in 0..n {
        let piece = names.iter().position(|x| *x == format!("seg-{i}.m4s")).unwrap();
        let listed = handed.iter().position(|(x, count)| x == "stream.m3u8" && *count == i + 1).unwrap();
        assert!(piece < listed, "seg-{i} before the playlist listing it: {names:?}");
    }
    let playlists: Vec<usize> = handed.iter().filter(|(x, _)| x == "stream.m3u8").map(|(_, c)| *c).collect();
    assert_eq!(playlists, (1..=n).collect::<Vec<_>>(), "the playlist grows one piece at a time");
    let text = std::fs::read_to_string(stream.join("stream.m3u8")).unwrap();
    assert!(text.starts_with("#EXTM3U") && text.contains("#EXT-X-MAP:URI=\"init.mp4\""), "{text}");
    assert!(text.trim_end().ends_with("#EXT-X-ENDLIST"), "{text}");
    let listed: f64 = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(|l| l.trim_end_matches(',').parse::<f64>().unwrap())
        .sum();
    assert!((listed - rep.frames as f64 / FPS).abs() < 1e-3, "pieces last {listed} s");

    // Each piece's pictures and sound start where its segment starts: the sound at the AAC
    // frame nearest the segment's start counted from its scene's origin, itself the AAC frame
    // nearest the scene's first picture (so within one AAC frame).
    let scales = reelsmith_media::fmp4::tracks(&std::fs::read(stream.join("init.mp4")).unwrap()).unwrap();
    let scale = |track: u32| scales.iter().find(|t| t.0 == track).unwrap().1 as f64;
    assert_eq!(scale(2), 48000.0);
    let mut frame = 0u64;
    for i in 0..n {
        let media = std::fs::read(stream.join(format!("seg-{i}.m4s"))).unwrap();
        let times = reelsmith_media::fmp4::decode_times(&media).unwrap();
        let video = times.iter().find(|t| t.0 == 1).unwrap().1 as f64 / scale(1);
        let audio = times.iter().find(|t| t.0 == 2).unwrap().1 as f64 / scale(2);
        let want = frame as f64 / FPS;
        assert!((video - want).abs() < 1e-9, "piece {i} pictures at {video}, want {want}");
        assert!((audio - want).abs() <= 1024.0 / 48000.0 + 1e-9, "piece {i} sound at {audio}, pictures at {want}");
        frame += rep.segments[i].frames;
    }

    // FFmpeg, reading the playlist as an HLS client, gets the MP4's very pictures and its sound.
    let hls = stream.join("stream.m3u8");
    let hls = hls.to_str().unwrap();
    assert_eq!(picture_sums(hls), picture_sums(out.to_str().unwrap()), "frame-exact");
    let (live, whole) = (decoded_sound(hls), decoded_sound(out.to_str().unwrap()));
    assert!(live.len().min(whole.len()) as f64 >= (rep.frames as f64 / FPS - 0.05) * 48000.0);
    let snr = sound_match_db(&live, &whole);
    assert!(snr > 30.0, "the live sound is the MP4's, in step: {snr:.1} dB");
}

#[test]
fn plan_and_segment_scopes_split_a_render_for_other_workers() {
    use reelsmith_engine::Scope;
    let f = Fixture::new();
    let spec = f.write_spec("spec.json", &storyboard(&f, "Hello there, this is the blue scene."));
    let engine = engine(&f.path("cache"));
    let scope = |scope| RenderOptions { scope, ..Default::default() };
    // Plan: narration and canvases only; every segment listed, none cached, no video written.
    let plan = engine.render_file(&spec, &f.path("plan.mp4"), &scope(Scope::Plan)).unwrap();
    assert_eq!(plan.segments.len(), 6);
    assert!(plan.segments.iter().all(|s| !s.cached && s.frames > 0 && s.key.len() == 64));
    assert_eq!(plan.segments.iter().filter(|s| s.transition).count(), 3, "a crossfade, a fade in two halves");
    assert_eq!(plan.encoded_frames, 0);
    assert!(!f.path("plan.mp4").exists());
    // Two segments rendered as another worker would: only those are encoded.
    let part = engine.render_file(&spec, &f.path("part.mp4"), &scope(Scope::Segments(vec![0, 3]))).unwrap();
    assert_eq!(part.segments_encoded, 2);
    assert_eq!(part.stages["narration"].runs, 0, "the plan's narration is reused");
    assert!(!part.stages.contains_key("audio") && !part.stages.contains_key("concat"));
    assert!(!f.path("part.mp4").exists());
    let cached: Vec<usize> = engine
        .render_file(&spec, &f.path("plan2.mp4"), &scope(Scope::Plan))
        .unwrap()
        .segments
        .iter()
        .filter(|s| s.cached)
        .map(|s| s.index)
        .collect();
    assert_eq!(cached, [0, 3]);
    // The assembly encodes only what is missing, and the video is whole.
    let full = engine.render_file(&spec, &f.path("full.mp4"), &RenderOptions::default()).unwrap();
    assert_eq!(full.segments_encoded, 4);
    assert_eq!(ffmpeg::probe(&f.path("full.mp4")).unwrap().video().unwrap().frames, full.frames);
    // A segment that does not exist is an error naming it.
    let e = engine.render_file(&spec, &f.path("x.mp4"), &scope(Scope::Segments(vec![9]))).unwrap_err();
    assert!(e.to_string().contains("segment 9 does not exist"), "{e}");
}

#[test]
fn no_cache_keeps_nothing() {
    let f = Fixture::new();
    let spec = f.write_spec(
        "spec.json",
        &json!({ "version": 1, "output": { "width": W, "height": H }, "scenes": [{ "duration": 0.5 }] }),
    );
    let scratch = f.path("scratch");
    let engine = reelsmith_engine::Engine::new(reelsmith_engine::Cache::disabled(&scratch).unwrap()).unwrap();
    let opts = reelsmith_engine::RenderOptions::default();
    let a = engine.render_file(&spec, &f.path("a.mp4"), &opts).unwrap();
    let b = engine.render_file(&spec, &f.path("b.mp4"), &opts).unwrap();
    assert_eq!(a.segments_encoded, 1);
    assert_eq!(b.segments_encoded, 1, "a disabled cache never hits");
    assert_eq!(b.cache_hits, 0);
    assert_eq!(b.cache_misses, a.cache_misses, "counts are per render, not cumulative");
}

#[test]
fn recording_narration_sets_duration_speed_and_subtitles() {
    let f = Fixture::new();
    f.tone_wav("voice.wav", 300.0, 2.0, 0.4);
    let scene = |speed: f32| {
        json!({
            "version": 1,
            "output": { "width": W, "height": H, "fps": 25 },
            "subtitles": { "font": { "size": 0.1, "color": "#ffffff" }, "style": "lines" },
            "scenes": [{ "background": { "color": "#000000" }, "padding": 0.2,
                         "narration": { "audio": "voice.wav", "transcript": "one two three four", "speed": speed } }]
        })
    };
    let normal = render(&f.path("cache"), &f.write_spec("a.json", &scene(1.0)), &f.path("a.mp4"));
    assert!((normal.duration_s - 2.2).abs() < 0.05, "recording + padding: {}", normal.duration_s);
    let fast = render(&f.path("cache"), &f.write_spec("b.json", &scene(2.0)), &f.path("b.mp4"));
    assert!((fast.duration_s - 1.2).abs() < 0.08, "twice the tempo: {}", fast.duration_s);
    // The transcript shows as a subtitle while the recording plays.
    let frame = ffmpeg::frame_rgb_at(&f.path("a.mp4"), 1.0).unwrap();
    assert!(count_near(&frame, (0, H / 2, W, H), [255, 255, 255], 40) > 50);
    let a = audio_mono(&f.path("a.mp4"));
    assert!(tone_amplitude(&a, 300.0, 0.5, 1.5) > 0.05, "the recording is in the soundtrack");
}

#[test]
fn title_card_overlay_and_fit_modes() {
    let f = Fixture::new();
    f.solid_png("tall.png", 90, 180, [255, 0, 0]);
    let spec = f.write_spec(
        "spec.json",
        &json!({
            "version": 1,
            "output": { "size": "360p", "fps": 25, "background": "#0000ff" },
            "subtitles": { "enabled": false },
            "scenes": [
                { "background": { "color": "#000000" }, "title": "Title", "duration": 1,
                  "overlay": { "text": "corner", "position": "top-right", "font": { "size": 0.08, "color": "#00ff00" } } },
                { "image": "tall.png", "fit": "contain", "duration": 1 },
                { "image": "tall.png", "fit": "contain-blur", "duration": 1 },
                { "image": "tall.png", "fit": "cover", "duration": 1 }
            ]
        }),
    );
    let out = f.path("out.mp4");
    render(&f.path("cache"), &spec, &out);
    let (w, h) = (640u32, 360u32);
    let title = ffmpeg::frame_rgb_at(&out, 0.5).unwrap();
    assert!(count_near(&title, (w / 4, h / 3, w * 3 / 4, h * 2 / 3), [255, 255, 255], 40) > 200, "title in the middle");
    assert!(count_near(&title, (w / 2, 0, w, h / 4), [0, 255, 0], 60) > 50, "overlay top right");
    assert_eq!(count_near(&title, (0, h / 2, w / 2, h), [0, 255, 0], 60), 0, "nothing bottom left");
    // contain: red picture in the middle, the output background (blue) at the sides.
    let side = mean_rgb(&out, 1.5, 0, 0, 40, h);
    let middle = mean_rgb(&out, 1.5, w / 2 - 20, 0, w / 2 + 20, h);
    assert!(side[2] > 200.0 && side[0] < 40.0, "blue bars {side:?}");
    assert!(middle[0] > 200.0 && middle[2] < 40.0, "red picture {middle:?}");
    // contain-blur: the bars are a darkened blur of the red picture, not blue.
    let blur_side = mean_rgb(&out, 2.5, 0, 0, 40, h);
    assert!(blur_side[0] > 100.0 && blur_side[2] < 60.0, "blurred bars {blur_side:?}");
    // cover: red everywhere.
    let cover = mean_rgb(&out, 3.5, 0, 0, w, h);
    assert!(cover[0] > 200.0 && cover[2] < 40.0, "{cover:?}");
}

#[test]
fn vertical_preset_renders_portrait() {
    let f = Fixture::new();
    let spec = f.write_spec(
        "spec.json",
        &json!({ "version": 1, "output": { "size": "vertical", "fps": 10, "quality": { "preset": "ultrafast" } },
                 "scenes": [{ "duration": 0.3 }] }),
    );
    let out = f.path("out.mp4");
    render(&f.path("cache"), &spec, &out);
    let v = ffmpeg::probe(&out).unwrap();
    let v = v.video().unwrap();
    assert_eq!((v.width, v.height, v.frames), (1080, 1920, 3));
}

/// The Piper neural voice (models from `scripts/models.sh`) narrates a scene: the video lasts as
/// long as the speech, the subtitles follow it, and a speech recogniser hears the words.
#[test]
fn piper_voice_is_recognisable_speech_of_the_right_length() {
    let f = Fixture::new();
    let text = "Hello! This is a self-hosted talking photo engine, speaking with a Piper voice.";
    let spec = json!({
        "version": 1,
        "output": {"width": 320, "height": 180, "fps": 15},
        "voice": {"engine": "piper", "name": "en_US-joe-medium"},
        "scenes": [{"title": "Piper", "narration": {"text": text}, "padding": 0.3}]
    });
    let p = f.write_spec("piper.json", &spec);
    let out = f.path("piper.mp4");
    let rep = render(&f.path("cache"), &p, &out);
    assert_eq!(rep.stages["narration"].runs, 1);
    // ~13 words at 2.5-4 words/s, plus the padding.
    assert!((3.0..7.0).contains(&rep.duration_s), "{}", rep.duration_s);
    let speech_end = rep.captions.last().expect("captions").end_s;
    assert!(speech_end <= rep.duration_s && speech_end > rep.duration_s - 1.0, "{speech_end} vs {}", rep.duration_s);
    let wav = f.path("piper16.wav");
    let ok = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&out)
        .args(["-ac", "1", "-ar", "16000"])
        .arg(&wav)
        .status()
        .unwrap();
    assert!(ok.success());
    let asr = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/asr.py"))
        .arg(&wav)
        .output()
        .unwrap();
    assert!(
        asr.status.success(),
        "pocketsphinx (scripts/test.sh installs it): {}",
        String::from_utf8_lossy(&asr.stderr)
    );
    let heard = String::from_utf8_lossy(&asr.stdout).to_lowercase();
    let expected = ["hello", "this", "is", "talking", "engine", "speaking", "with", "piper"];
    let found = expected.iter().filter(|w| heard.split_whitespace().any(|h| h == **w)).count();
    // Piper (VITS) samples noise inside the model on every synthesis, so each run speaks a
    // little differently and the recogniser hears 5-8 of the words; silence, noise or the wrong
    // text hear none or one.
    assert!(found >= 5, "heard {heard:?}: {found} of {expected:?}");
    // The same words through espeak-ng give a different (cached separately) narration.
    let espeak = json!({
        "version": 1,
        "output": {"width": 320, "height": 180, "fps": 15},
        "scenes": [{"title": "Piper", "narration": {"text": text}, "padding": 0.3}]
    });
    let rep2 = render(&f.path("cache"), &f.write_spec("espeak.json", &espeak), &f.path("espeak.mp4"));
    assert_eq!(rep2.stages["narration"].runs, 1, "not served from the Piper entry");
}

/// A photo speaks: the mouth region darkens and moves while the narration plays and rests in
/// the silence after it; the rest of the face stays still.
#[test]
fn talking_head_moves_the_mouth_with_speech_only() {
    let f = Fixture::new();
    f.astronaut();
    let spec = json!({
        "version": 1,
        "output": {"width": 320, "height": 320, "fps": 25},
        "subtitles": {"enabled": false},
        // The mouth alone: no blinks or head motion to move other pixels.
        "scenes": [{"image": "astronaut.jpg", "motion": {"type": "talking-head", "blink": false, "head_motion": 0},
            "narration": {"text": "Hello there! I am talking to you from a photo."}, "padding": 1.2}]
    });
    let out = f.path("talk.mp4");
    let rep = render(&f.path("cache"), &f.write_spec("talk.json", &spec), &out);
    let speech_end = rep.duration_s - 1.2;
    assert!(speech_end > 1.5, "{}", rep.duration_s);
    // The mouth is at about (137, 91) on the 320x320 frame (219, 146 on the 512 px photo).
    let mouth = |t: f64| {
        let [r, g, b] = mean_rgb(&out, t, 122, 86, 152, 106);
        (r + g + b) / 3.0
    };
    let forehead = |t: f64| {
        let [r, g, b] = mean_rgb(&out, t, 120, 40, 160, 55);
        (r + g + b) / 3.0
    };
    let closed = mouth(rep.duration_s - 0.2);
    let during: Vec<f64> = (1..12).map(|k| mouth(speech_end * k as f64 / 12.0)).collect();
    let darkest = during.iter().copied().fold(f64::MAX, f64::min);
    assert!(darkest < closed - 8.0, "the mouth opens while speaking: {during:?} vs closed {closed}");
    assert!((mouth(rep.duration_s - 0.6) - closed).abs() < 2.0, "still in the silence after");
    let still = forehead(rep.duration_s - 0.2);
    for k in 1..6 {
        let t = speech_end * k as f64 / 6.0;
        assert!((forehead(t) - still).abs() < 2.0, "the forehead does not move at {t}");
    }
    // A scene without a face says so.
    let plain = f.solid_png("plain.png", 64, 64, [30, 120, 200]);
    let _ = plain;
    let bad = json!({"version": 1, "output": {"width": 160, "height": 160},
        "scenes": [{"image": "plain.png", "motion": {"type": "talking-head"}, "narration": {"text": "Hi."}}]});
    let err =
        engine(&f.path("cache")).render_file(&f.write_spec("bad.json", &bad), &f.path("bad.mp4"), &Default::default());
    let msg = err.unwrap_err().to_string();
    assert!(msg.contains("scenes[0].image") && msg.contains("no face found"), "{msg}");
}

/// Blinks and idle head motion on by default, and `framing: face`: a portrait headshot cropped
/// around the face. Checked with the face models on the rendered frames.
#[test]
fn talking_head_blinks_sways_and_frames_a_headshot() {
    use reelsmith_models::face::{FaceDetector, FaceMesh, choose, mesh};
    let f = Fixture::new();
    f.astronaut();
    let spec = json!({
        "version": 1,
        "output": {"width": 180, "height": 320, "fps": 25},
        "subtitles": {"enabled": false},
        "scenes": [{"image": "astronaut.jpg", "motion": {"type": "talking-head", "framing": "face"},
            "narration": {"text": "I blink now and then, and my head moves a little while I talk to you."}, "padding": 1.0}]
    });
    let out = f.path("headshot.mp4");
    let rep = render(&f.path("cache"), &f.write_spec("headshot.json", &spec), &out);
    let (w, h, rgb) = ffmpeg::frame_rgb_at(&out, 0.0).unwrap();
    assert_eq!((w, h), (180, 320));
    let detector = FaceDetector::discover().unwrap();
    let face_mesh = FaceMesh::discover().unwrap();
    let face = choose(&detector.detect(w, h, &rgb).unwrap(), None).unwrap();
    let [bx, _, bw, bh] = face.bbox;
    let centre = (bx + bw / 2.0) / w as f32;
    assert!((centre - 0.5).abs() < 0.06, "the face is centred: {centre}");
    let share = bh / h as f32;
    assert!((0.3..0.5).contains(&share), "a headshot: the face is {share} of the height");

    // Every frame's luma, to watch the eyes.
    let raw = f.path("frames.yuv");
    ffmpeg::decode_to_raw(&out, &raw).unwrap();
    let bytes = std::fs::read(&raw).unwrap();
    let frame_len = (w * h + 2 * w.div_ceil(2) * h.div_ceil(2)) as usize;
    let frames: Vec<&[u8]> = bytes.chunks_exact(frame_len).map(|c| &c[..(w * h) as usize]).collect();
    assert_eq!(frames.len() as u64, rep.frames);
    let lm = face_mesh.landmarks(w, h, &rgb, &face).unwrap();
    let p = |i: usize| lm.points[i];
    let eye_box = |a: usize, b: usize, up: usize, low: usize| {
        let (x0, x1) = (p(a)[0].min(p(b)[0]), p(a)[0].max(p(b)[0]));
        (x0 as u32, (x1.ceil() as u32).max(x0 as u32 + 1), (p(up)[1] - 1.0) as u32, (p(low)[1] + 1.0).ceil() as u32)
    };
    let eyes = [
        eye_box(mesh::RIGHT_EYE_OUTER, mesh::RIGHT_EYE_INNER, mesh::RIGHT_EYE_UPPER, mesh::RIGHT_EYE_LOWER),
        eye_box(mesh::LEFT_EYE_OUTER, mesh::LEFT_EYE_INNER, mesh::LEFT_EYE_UPPER, mesh::LEFT_EYE_LOWER),
    ];
    let mean = |fr: &[u8], (x0, x1, y0, y1): (u32, u32, u32, u32)| {
        let mut s = 0.0;
        for y in y0..y1 {
            for x in x0..x1 {
                s += fr[(y * w + x) as usize] as f64;
            }
        }
        s / ((x1 - x0) * (y1 - y0)).max(1) as f64
    };
    let eye_luma: Vec<f64> = frames.iter().map(|fr| eyes.iter().map(|e| mean(fr, *e)).sum::<f64>() / 2.0).collect();
    let mut sorted = eye_luma.clone();
    sorted.sort_by(f64::total_cmp);
    let open = sorted[sorted.len() / 2];
    // A closed lid shows skin, lighter than the eye it covers.
    let shut: Vec<bool> = eye_luma.iter().map(|l| l - open > 10.0).collect();
    let runs: Vec<usize> = shut.split(|s| !s).map(<[bool]>::len).filter(|&n| n > 0).collect();
    assert!(!runs.is_empty(), "at least one blink in {:.1} s: {eye_luma:?}", rep.duration_s);
    assert!(runs.iter().all(|&n| n <= 8), "blinks are brief: {runs:?} frames");
    assert!(shut.iter().filter(|&&s| s).count() < frames.len() / 6, "eyes open most of the time");

    // The head sways a little: the nose tip moves by a few pixels over the scene.
    let noses: Vec<[f32; 3]> = (0..8)
        .map(|k| {
            let t = rep.duration_s * k as f64 / 8.0;
            let (_, _, rgb) = ffmpeg::frame_rgb_at(&out, t).unwrap();
            let face = choose(&detector.detect(w, h, &rgb).unwrap(), None).unwrap();
            face_mesh.landmarks(w, h, &rgb, &face).unwrap().points[mesh::NOSE_TIP]
        })
        .collect();
    let span = |axis: usize| {
        let v: Vec<f32> = noses.iter().map(|n| n[axis]).collect();
        v.iter().copied().fold(f32::MIN, f32::max) - v.iter().copied().fold(f32::MAX, f32::min)
    };
    let moved = span(0).max(span(1));
    assert!(moved > 0.4 && moved < 8.0, "slight head motion: {moved} px ({noses:?})");
}

/// `replace_background`: the person (face, hair, suit) stays, the studio backdrop becomes a
/// colour, another picture, or a blur; a scene without a picture is refused.
#[test]
fn background_is_replaced_behind_the_person_only() {
    let f = Fixture::new();
    f.astronaut();
    // A replacement picture: blue on the left half, yellow on the right.
    image::RgbImage::from_fn(
        64,
        64,
        |x, _| if x < 32 { image::Rgb([20, 40, 220]) } else { image::Rgb([230, 210, 20]) },
    )
    .save(f.path("beach.png"))
    .unwrap();
    let scene = |with: serde_json::Value| {
        json!({"version": 1, "output": {"width": 256, "height": 256, "fps": 10}, "subtitles": {"enabled": false},
            "scenes": [{"image": "astronaut.jpg", "duration": 0.5, "replace_background": with}]})
    };
    let original = f.path("original.mp4");
    let plain = json!({"version": 1, "output": {"width": 256, "height": 256, "fps": 10},
        "scenes": [{"image": "astronaut.jpg", "duration": 0.5}]});
    render(&f.path("cache"), &f.write_spec("plain.json", &plain), &original);
    let (face, suit, corner_l, corner_r) =
        ((100, 60, 120, 80), (100, 210, 150, 240), (0, 0, 24, 24), (232, 0, 256, 24));
    let at = |video: &std::path::Path, r: (u32, u32, u32, u32)| mean_rgb(video, 0.2, r.0, r.1, r.2, r.3);
    let near = |a: [f64; 3], b: [f64; 3], tol: f64| (0..3).all(|c| (a[c] - b[c]).abs() <= tol);

    let green = f.path("green.mp4");
    render(&f.path("cache"), &f.write_spec("green.json", &scene(json!({"color": "#00c000"}))), &green);
    for corner in [corner_l, corner_r] {
        assert!(near(at(&green, corner), [0.0, 192.0, 0.0], 12.0), "backdrop is green: {:?}", at(&green, corner));
    }
    for person in [face, suit] {
        assert!(
            near(at(&green, person), at(&original, person), 6.0),
            "the person stays: {:?} vs {:?}",
            at(&green, person),
            at(&original, person)
        );
    }

    let beach = f.path("beach.mp4");
    render(&f.path("cache"), &f.write_spec("beach.json", &scene(json!({"image": "beach.png"}))), &beach);
    assert!(near(at(&beach, corner_l), [20.0, 40.0, 220.0], 14.0), "{:?}", at(&beach, corner_l));
    assert!(near(at(&beach, corner_r), [230.0, 210.0, 20.0], 14.0), "{:?}", at(&beach, corner_r));
    assert!(near(at(&beach, face), at(&original, face), 6.0));

    let blur = f.path("blur.mp4");
    render(&f.path("cache"), &f.write_spec("blur.json", &scene(json!({"blur": 20}))), &blur);
    assert!(near(at(&blur, face), at(&original, face), 6.0), "the face is not blurred");
    // Blurring mixes the suit's colours into the backdrop beside the shoulders.
    let beside = (0, 200, 30, 256);
    let diff: f64 = (0..3).map(|c| (at(&blur, beside)[c] - at(&original, beside)[c]).abs()).sum();
    assert!(diff > 6.0, "the backdrop beside the shoulders changed: {diff}");

    // Without a picture there is nobody to cut out.
    let bad = json!({"version": 1, "scenes": [{"duration": 1, "replace_background": {"blur": 5}}]});
    let msg = engine(&f.path("cache"))
        .render_file(&f.write_spec("bad.json", &bad), &f.path("bad.mp4"), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("scenes[0].replace_background") && msg.contains("needs an image"), "{msg}");
}

/// A 4:3 clip, 160x120 at 30 fps: red for 1 s, then blue for 1 s; a 600 Hz tone when `sound`.
fn clip(f: &Fixture, name: &str, sound: bool) -> std::path::PathBuf {
    let p = f.path(name);
    let mut cmd = std::process::Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y"]).args(["-f", "lavfi", "-i", "color=red:size=160x120:rate=30:duration=1"]).args([
        "-f",
        "lavfi",
        "-i",
        "color=blue:size=160x120:rate=30:duration=1",
    ]);
    if sound {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=600:duration=2", "-map", "2:a", "-c:a", "aac"]);
    }
    let ok = cmd
        .args(["-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]"])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(&p)
        .status()
        .unwrap();
    assert!(ok.success());
    p
}

/// Scenes whose picture is a video clip: fitted (contain on the scene's background, cover),
/// playing in time, looped, trimmed, under a title, with the clip's own sound; a silent clip
/// scene lasts as long as the clip; unchanged clip scenes are not encoded again.
#[test]
fn video_clip_scenes_play_fitted_looped_trimmed_and_with_their_sound() {
    let f = Fixture::new();
    clip(&f, "clip.mp4", true);
    let spec = |loop_seconds: f64| {
        json!({
            "version": 1,
            "output": { "width": W, "height": H, "fps": FPS as u32, "quality": { "preset": "ultrafast", "crf": 28 } },
            "scenes": [
                { "video": { "file": "clip.mp4" }, "fit": "contain", "background": { "color": "#00c000" } },
                { "video": { "file": "clip.mp4", "loop": true }, "duration": loop_seconds,
                  "motion": { "type": "ken-burns", "zoom_from": 1.0, "zoom_to": 1.5 } },
                { "video": { "file": "clip.mp4", "start": 1.0, "audio": true }, "title": "Clip" }
            ]
        })
    };
    let p = f.write_spec("clips.json", &spec(3.0));
    let out = f.path("clips.mp4");
    let cache = f.path("cache");
    let rep = render(&cache, &p, &out);

    // 2 s (the whole clip) + 3 s (looped) + 1 s (from 1 s to the end).
    let info = ffmpeg::probe(&out).unwrap();
    let v = info.video().unwrap();
    assert_eq!((v.width, v.height), (W, H));
    assert!((v.duration - 6.0).abs() <= 1.0 / FPS + 1e-6, "duration {}", v.duration);
    assert_eq!(rep.frames, 150);

    // Contain: the 4:3 clip is 240 px wide in the middle, the green background either side.
    let mid = |t: f64| mean_rgb(&out, t, 120, 40, 200, 140);
    let red = |c: [f64; 3]| c[0] > 180.0 && c[2] < 70.0;
    let blue = |c: [f64; 3]| c[2] > 180.0 && c[0] < 70.0;
    let bar = mean_rgb(&out, 0.5, 0, 0, 30, H);
    assert!(bar[1] > 150.0 && bar[0] < 40.0 && bar[2] < 40.0, "green beside a contained clip: {bar:?}");
    assert!(red(mid(0.5)), "clip time 0.5 s is red: {:?}", mid(0.5));
    assert!(blue(mid(1.5)), "clip time 1.5 s is blue: {:?}", mid(1.5));
    // Cover, looped: red, blue, red again; the whole frame is the clip.
    let whole = |t: f64| mean_rgb(&out, t, 0, 0, W, H);
    assert!(
        red(whole(2.5)) && blue(whole(3.5)) && red(whole(4.5)),
        "loop: {:?} {:?} {:?}",
        whole(2.5),
        whole(3.5),
        whole(4.5)
    );
    // Trimmed to its second half: blue, with the title drawn over it.
    assert!(blue(mean_rgb(&out, 5.5, 0, 0, 40, H)), "trimmed clip starts at 1 s");
    let frame = ffmpeg::frame_rgb_at(&out, 5.5).unwrap();
    let title_px = count_near(&frame, (0, H / 4, W, H * 3 / 4), [255, 255, 255], 40);
    assert!(title_px > 100, "title pixels over the clip: {title_px}");

    // The clip's sound plays in its scene only.
    let mono = audio_mono(&out);
    let tone_in = tone_amplitude(&mono, 600.0, 5.1, 5.9);
    let tone_out = tone_amplitude(&mono, 600.0, 0.2, 4.8);
    assert!(tone_in > 0.05 && tone_out < 0.005, "clip sound {tone_in} in its scene, {tone_out} elsewhere");

    // Identical: nothing encoded. The looped scene edited: only its own segments are.
    let again = render(&cache, &p, &out);
    assert_eq!(again.segments_encoded, 0);
    let p2 = f.write_spec("clips2.json", &spec(2.5));
    let edited = render(&cache, &p2, &f.path("clips2.mp4"));
    let redone: Vec<usize> = edited
        .segments
        .iter()
        .filter(|s| !s.cached)
        .map(|s| s.scene)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(redone, vec![1], "only the edited clip scene is encoded: {:?}", edited.segments);
}

/// Clips that cannot play give errors naming the scene and the problem.
#[test]
fn bad_video_clips_are_clear_errors() {
    let f = Fixture::new();
    clip(&f, "silent.mp4", false);
    std::fs::write(f.path("corrupt.mp4"), b"this is not a video at all").unwrap();
    let cases = [
        (json!({ "file": "corrupt.mp4" }), "scenes[0].video: corrupt.mp4 is not a readable video"),
        (json!({ "file": "silent.mp4", "start": 5 }), "scenes[0].video: start is 5 s but silent.mp4 lasts 2.00 s"),
        (json!({ "file": "silent.mp4", "audio": true }), "scenes[0].video.audio: silent.mp4 has no sound"),
    ];
    let e = engine(&f.path("cache"));
    for (clip, want) in cases {
        let spec =
            json!({ "version": 1, "output": { "width": W, "height": H, "fps": 10 }, "scenes": [{ "video": clip }] });
        let p = f.write_spec("bad.json", &spec);
        let err = e.render_file(&p, &f.path("bad.mp4"), &Default::default()).unwrap_err().to_string();
        assert!(err.contains(want), "{want:?} not in {err:?}");
    }
    // A D-ID talking head needs the service.
    f.ramp_png("face.png", 64, 64, [200, 150, 120]);
    let spec = json!({ "version": 1, "scenes": [{ "image": "face.png", "narration": { "text": "Hi." },
        "motion": { "type": "talking-head", "provider": "d-id" } }] });
    let p = f.write_spec("did.json", &spec);
    let err = e.render_file(&p, &f.path("did.mp4"), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("scenes[0].motion.provider: d-id talking heads are rendered through the service"), "{err}");
}

/// Every example spec in `examples/` validates and renders (at a small size, its own frame
/// rate and everything else as shipped): a shipped example that does not render is a bug.
#[test]
fn every_example_renders() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let f = Fixture::new();
    let e = engine(&f.path("cache"));
    let mut n = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = file.unwrap().path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let folder = p.parent().unwrap().canonicalize().unwrap();
            let mut spec = reelsmith_spec::parse(&std::fs::read_to_string(&p).unwrap()).unwrap();
            e.validate(&spec, &folder).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
            // Small: the longest side 320 px, the shape kept.
            let (w, h) = spec.output.dimensions();
            let k = 320.0 / w.max(h) as f64;
            let even = |x: u32| ((x as f64 * k / 2.0).round() as u32 * 2).max(16);
            spec.output.size = None;
            (spec.output.width, spec.output.height) = (Some(even(w)), Some(even(h)));
            spec.output.quality.preset = reelsmith_spec::X264Preset::Ultrafast;
            for (_, _, file) in spec.files_mut() {
                *file = folder.join(&*file).display().to_string();
            }
            let small = f.write_spec(&format!("example-{n}.json"), &serde_json::to_value(&spec).unwrap());
            let out = f.path(&format!("example-{n}.mp4"));
            e.render_file(&small, &out, &Default::default()).unwrap_or_else(|err| panic!("{}: {err}", p.display()));
            let info = ffmpeg::probe(&out).unwrap();
            let v = info.video().unwrap_or_else(|| panic!("{}: no video", p.display()));
            assert_eq!((v.width, v.height), (even(w), even(h)), "{}", p.display());
            assert!(info.audio().is_some(), "{}: no audio", p.display());
            assert!(info.duration > 1.0, "{}: {} s", p.display(), info.duration);
            // The last frame decodes (a clip's last frame holds to the end).
            let (_, _, px) = ffmpeg::frame_rgb_at(&out, info.duration - 0.1).unwrap();
            assert_eq!(px.len(), (v.width * v.height * 3) as usize);
            n += 1;
        }
    }
    assert!(n >= 3, "{n} example specs");
}

/// One render may not write more than the whole stage cache: it fails, saying so, instead of
/// filling the disk (the cache used to be trimmed only after a run).
#[test]
fn a_render_that_needs_more_than_the_cache_fails_clearly() {
    let f = Fixture::new();
    let e = reelsmith_engine::Engine::new(reelsmith_engine::Cache::open(f.path("cache"), 400_000).unwrap()).unwrap();
    let scenes: Vec<serde_json::Value> = (0..6)
        .map(|i| {
            json!({ "duration": 0.5, "background": { "color": format!("#{:02x}0000", i * 40) },
                "motion": { "type": "ken-burns", "zoom_from": 2, "zoom_to": 2 } })
        })
        .collect();
    let spec = json!({ "version": 1, "output": { "width": 320, "height": 180, "fps": 10 },
        "subtitles": { "enabled": false }, "scenes": scenes });
    let p = f.write_spec("big.json", &spec);
    let err = e.render_file(&p, &f.path("big.mp4"), &Default::default()).unwrap_err().to_string();
    assert!(err.contains("needs more than the whole stage cache"), "{err}");
    assert!(e.cache.stats().bytes <= 400_000, "{} bytes left in the cache", e.cache.stats().bytes);
    // A share of a larger cache (the service divides its cache among the renders it runs at
    // once) holds a render back the same way; a large enough share lets it through.
    let big =
        reelsmith_engine::Engine::new(reelsmith_engine::Cache::open(f.path("cache2"), 100 << 20).unwrap()).unwrap();
    let share = |bytes: u64| reelsmith_engine::RenderOptions { cache_share: Some(bytes), ..Default::default() };
    let err = big.render_file(&p, &f.path("big2.mp4"), &share(400_000)).unwrap_err().to_string();
    assert!(err.contains("needs more than its share of the stage cache"), "{err}");
    big.render_file(&p, &f.path("big3.mp4"), &share(50 << 20)).unwrap();
}

/// A spec's own font file draws its text (through a renderer made for that render: see
/// `text::tests::a_specs_fonts_stay_in_its_own_renderer`).
#[test]
fn spec_font_files_are_used_for_that_render_only() {
    let mono = std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf");
    let f = Fixture::new();
    std::fs::copy(mono, f.path("own.ttf")).unwrap();
    let e = engine(&f.path("cache"));
    let spec = json!({ "version": 1, "output": { "width": 320, "height": 180, "fps": 10 },
        "scenes": [{ "duration": 1, "background": { "color": "#000000" },
            "overlay": { "text": "MONO", "position": "center", "font": { "file": "own.ttf", "family": "DejaVu Sans Mono", "size": 0.2 } } }] });
    let p = f.write_spec("font.json", &spec);
    let out = f.path("font.mp4");
    e.render_file(&p, &out, &Default::default()).unwrap();
    // White text in the middle of a black frame.
    let [r, g, b] = mean_rgb(&out, 0.5, 100, 60, 220, 120);
    assert!(r + g + b > 60.0, "no text drawn: {r} {g} {b}");
}

/// A cancel stops every stage, not only the frame loops: cancelled as the canvases start, the
/// render builds none of them and encodes nothing.
#[test]
fn a_cancel_stops_the_stage_in_progress() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let f = Fixture::new();
    let e = engine(&f.path("cache"));
    let scenes: Vec<serde_json::Value> = (0..12)
        .map(|i| json!({ "duration": 0.5, "background": { "color": format!("#0000{:02x}", i * 20) } }))
        .collect();
    let spec = json!({ "version": 1, "output": { "width": 320, "height": 180, "fps": 10 },
        "subtitles": { "enabled": false }, "scenes": scenes });
    let p = f.write_spec("cancel.json", &spec);
    let cancel = Arc::new(AtomicBool::new(false));
    let stages = Arc::new(std::sync::Mutex::new(vec![]));
    let (c, st) = (cancel.clone(), stages.clone());
    let opts = reelsmith_engine::RenderOptions {
        cancel: Some(cancel.clone()),
        progress: Some(Arc::new(move |p| {
            if let reelsmith_engine::Progress::Stage { name, .. } = p {
                st.lock().unwrap().push(name);
                if name == "canvas" {
                    c.store(true, Ordering::Relaxed);
                }
            }
        })),
        ..Default::default()
    };
    let err = e.render_file(&p, &f.path("cancel.mp4"), &opts).unwrap_err();
    assert!(matches!(err, reelsmith_engine::RenderError::Cancelled), "{err}");
    assert_eq!(*stages.lock().unwrap(), vec!["narration", "canvas"], "no stage after the cancel");
    assert_eq!(e.cache.stats().entries, 0, "canvases were built after the cancel");
    assert!(!f.path("cancel.mp4").exists());
}
