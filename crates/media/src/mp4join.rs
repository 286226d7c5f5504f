//! Joins the engine's H.264 segment MP4s and its ADTS soundtrack into one MP4 without FFmpeg:
//! the segments' sample tables are read and concatenated, the soundtrack's frames become an AAC
//! track, and the file is written `moov` first (fast start) with each segment's pictures and its
//! span of sound as one chunk each, so a player streaming it reads both in step. The sample
//! bytes are copied as they are, so the result is frame-exact with FFmpeg's concat demuxer
//! joining the same files; unlike it, nothing is decoded to probe the segments.

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::fmp4::{BoxAt, boxes, child};
use crate::mp4box::{ctts, dinf, elst, ftyp, full_box, mdhd, mp4_box, mvhd, sample_tables, stss, tkhd, to_movie};

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("{file}: {what}")]
    Format { file: String, what: String },
    #[error("join i/o: {0}")]
    Io(#[from] std::io::Error),
}

fn bad(file: &Path, what: impl Into<String>) -> JoinError {
    JoinError::Format {
        file: file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        what: what.into(),
    }
}

/// One segment's video track: what its `moov` says about its samples.
struct Segment {
    path: PathBuf,
    timescale: u32,
    /// (file offset, size) of each sample, in decode order.
    samples: Vec<(u64, u32)>,
    deltas: Vec<u32>,
    /// Composition offsets (signed), one per sample; empty when the file has none.
    offsets: Vec<i32>,
    /// 1-based sample numbers of the sync samples; `None` when every sample is one.
    sync: Option<Vec<u32>>,
    /// The first segment's boxes, reused for the joined track.
    tkhd: Vec<u8>,
    hdlr: Vec<u8>,
    vmhd: Vec<u8>,
    stsd: Vec<u8>,
    /// The edit list's media time (the decoder delay of B-frames), in the track's timescale.
    media_time: i64,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
}

/// Entries of a full box whose payload is `count` then `count` records of `width` bytes.
fn table<'a>(b: &'a [u8], x: &BoxAt, width: usize) -> Option<Vec<&'a [u8]>> {
    let count = be32(b, x.body + 4)? as usize;
    let start = x.body + 8;
    let bytes = b.get(start..start.checked_add(count.checked_mul(width)?)?)?;
    Some(bytes.chunks_exact(width).collect())
}

/// Reads the `moov` of a segment file (wherever it is in the file).
fn read_moov(path: &Path) -> Result<Vec<u8>, JoinError> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let mut at = 0u64;
    while at + 8 <= len {
        let mut head = [0u8; 16];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut head[..8])?;
        let mut size = u32::from_be_bytes(head[..4].try_into().expect("4")) as u64;
        if size == 1 {
            f.read_exact(&mut head[8..16])?;
            size = u64::from_be_bytes(head[8..16].try_into().expect("8"));
        } else if size == 0 {
            size = len - at;
        }
        if size < 8 || at + size > len {
            return Err(bad(path, format!("a box at byte {at} claims {size} bytes")));
        }
        if &head[4..8] == b"moov" {
            if size > 64 << 20 {
                return Err(bad(path, "moov larger than 64 MB"));
            }
            let mut moov = vec![0u8; size as usize];
            f.seek(SeekFrom::Start(at))?;
            f.read_exact(&mut moov)?;
            return Ok(moov);
        }
        at += size;
    }
    Err(bad(path, "no moov box"))
}

fn read_segment(path: &Path) -> Result<Segment, JoinError> {
    let b = read_moov(path)?;
    let err = |what: &str| bad(path, what.to_string());
    let top = boxes(&b, 0, b.len()).map_err(|e| bad(path, e.to_string()))?;
    let moov = top.first().ok_or_else(|| err("empty moov"))?;
    let traks: Vec<BoxAt> = boxes(&b, moov.body, moov.end)
        .map_err(|e| bad(path, e.to_string()))?
        .into_iter()
        .filter(|x| &x.kind == b"trak")
        .collect();
    let [trak] = traks[..] else { return Err(err("a segment must hold exactly one track")) };
    let c = |parent: &BoxAt, kind: &[u8; 4]| -> Result<BoxAt, JoinError> {
        child(&b, parent, kind)
            .map_err(|e| bad(path, e.to_string()))?
            .ok_or_else(|| bad(path, format!("no {} box", String::from_utf8_lossy(kind))))
    };
    let tkhd = c(&trak, b"tkhd")?;
    let mdia = c(&trak, b"mdia")?;
    let mdhd = c(&mdia, b"mdhd")?;
    let hdlr = c(&mdia, b"hdlr")?;
    if b.get(hdlr.body + 8..hdlr.body + 12) != Some(b"vide") {
        return Err(err("the segment's track is not video"));
    }
    let minf = c(&mdia, b"minf")?;
    let vmhd = c(&minf, b"vmhd")?;
    let stbl = c(&minf, b"stbl")?;
    let v1 = b.get(mdhd.body) == Some(&1);
    let timescale = be32(&b, mdhd.body + if v1 { 20 } else { 12 }).ok_or_else(|| err("mdhd cut short"))?;
    let media_time = match child(&b, &trak, b"edts").ok().flatten().and_then(|e| child(&b, &e, b"elst").ok().flatten())
    {
        Some(elst) => {
            let v1 = b.get(elst.body) == Some(&1);
            let count = be32(&b, elst.body + 4).unwrap_or(0);
            // The first entry that is not an empty edit.
            let mut t = 0i64;
            for i in 0..count as usize {
                let (media, empty) = if v1 {
                    let at = elst.body + 8 + i * 20 + 8;
                    let m = be64(&b, at).ok_or_else(|| err("elst cut short"))? as i64;
                    (m, m == -1)
                } else {
                    let at = elst.body + 8 + i * 12 + 4;
                    let m = be32(&b, at).ok_or_else(|| err("elst cut short"))? as i32 as i64;
                    (m, m == -1)
                };
                if !empty {
                    t = media;
                    break;
                }
            }
            t
        }
        None => 0,
    };
    let stsz = c(&stbl, b"stsz")?;
    let fixed = be32(&b, stsz.body + 4).ok_or_else(|| err("stsz cut short"))?;
    let n = be32(&b, stsz.body + 8).ok_or_else(|| err("stsz cut short"))? as usize;
    if n > 10_000_000 {
        return Err(err("too many samples"));
    }
    let sizes: Vec<u32> = if fixed != 0 {
        vec![fixed; n]
    } else {
        let at = stsz.body + 12;
        let bytes = b.get(at..at + n * 4).ok_or_else(|| err("stsz cut short"))?;
        bytes.chunks_exact(4).map(|s| u32::from_be_bytes(s.try_into().expect("4"))).collect()
    };
    let chunk_offsets: Vec<u64> =
        match (child(&b, &stbl, b"stco").ok().flatten(), child(&b, &stbl, b"co64").ok().flatten()) {
            (Some(x), _) => table(&b, &x, 4)
                .ok_or_else(|| err("stco cut short"))?
                .iter()
                .map(|e| be32(e, 0).unwrap_or(0) as u64)
                .collect(),
            (None, Some(x)) => {
                table(&b, &x, 8).ok_or_else(|| err("co64 cut short"))?.iter().map(|e| be64(e, 0).unwrap_or(0)).collect()
            }
            _ => return Err(err("no chunk offsets")),
        };
    let stsc: Vec<(u32, u32)> = table(&b, &c(&stbl, b"stsc")?, 12)
        .ok_or_else(|| err("stsc cut short"))?
        .iter()
        .map(|e| (be32(e, 0).unwrap_or(0), be32(e, 4).unwrap_or(0)))
        .collect();
    let mut samples = Vec::with_capacity(n);
    let mut next = 0usize;
    for (ci, &offset) in chunk_offsets.iter().enumerate() {
        let chunk = ci as u32 + 1;
        let per = stsc.iter().rev().find(|(first, _)| *first <= chunk).map_or(0, |e| e.1);
        let mut at = offset;
        for _ in 0..per {
            let Some(&size) = sizes.get(next) else { break };
            samples.push((at, size));
            at += size as u64;
            next += 1;
        }
    }
    if samples.len() != n {
        return Err(err("the chunk tables do not cover every sample"));
    }
    let mut deltas = Vec::with_capacity(n);
    for e in table(&b, &c(&stbl, b"stts")?, 8).ok_or_else(|| err("stts cut short"))? {
        let (count, delta) = (be32(e, 0).unwrap_or(0), be32(e, 4).unwrap_or(0));
        deltas.extend(std::iter::repeat_n(delta, (count as usize).min(n - deltas.len().min(n))));
    }
    if deltas.len() != n {
        return Err(err("stts does not cover every sample"));
    }
    let mut offsets = vec![];
    if let Some(ctts) = child(&b, &stbl, b"ctts").ok().flatten() {
        for e in table(&b, &ctts, 8).ok_or_else(|| err("ctts cut short"))? {
            let (count, off) = (be32(e, 0).unwrap_or(0), be32(e, 4).unwrap_or(0) as i32);
            offsets.extend(std::iter::repeat_n(off, (count as usize).min(n - offsets.len().min(n))));
        }
        if offsets.len() != n {
            return Err(err("ctts does not cover every sample"));
        }
    }
    let sync = match child(&b, &stbl, b"stss").ok().flatten() {
        Some(x) => Some(
            table(&b, &x, 4).ok_or_else(|| err("stss cut short"))?.iter().map(|e| be32(e, 0).unwrap_or(0)).collect(),
        ),
        None => None,
    };
    let copy = |x: &BoxAt| b[x.start..x.end].to_vec();
    Ok(Segment {
        path: path.to_path_buf(),
        timescale,
        samples,
        deltas,
        offsets,
        sync,
        tkhd: copy(&tkhd),
        hdlr: copy(&hdlr),
        vmhd: copy(&vmhd),
        stsd: copy(&c(&stbl, b"stsd")?),
        media_time,
    })
}

/// The sample entry's codec and its decoder configuration box (`avcC`…), without the rest.
fn codec_setup(stsd: &[u8]) -> Option<(&[u8], &[u8])> {
    let fourcc = stsd.get(20..24)?;
    let at = stsd.windows(4).position(|w| w == b"avcC" || w == b"hvcC")?.checked_sub(4)?;
    let len = be32(stsd, at)? as usize;
    Some((fourcc, stsd.get(at..at + len)?))
}

/// The soundtrack's AAC frames (ADTS headers off) and their decoder configuration.
struct Sound {
    /// (offset in the ADTS file, size) of each raw frame.
    frames: Vec<(u64, u32)>,
    rate: u32,
    channels: u16,
    config: [u8; 2],
}

fn read_sound(path: &Path) -> Result<Sound, JoinError> {
    const RATES: [u32; 13] = [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];
    let bytes = std::fs::read(path)?;
    let mut frames = vec![];
    let mut at = 0usize;
    let mut first: Option<[u8; 4]> = None;
    while at < bytes.len() {
        let h = bytes.get(at..at + 7).ok_or_else(|| bad(path, format!("ADTS header cut short at byte {at}")))?;
        if h[0] != 0xFF || h[1] & 0xF6 != 0xF0 {
            return Err(bad(path, format!("not an ADTS frame at byte {at}")));
        }
        let header = if h[1] & 1 == 1 { 7 } else { 9 };
        let len = ((h[3] as usize & 3) << 11) | ((h[4] as usize) << 3) | (h[5] as usize >> 5);
        if len <= header || at + len > bytes.len() {
            return Err(bad(path, format!("ADTS frame at byte {at} claims {len} bytes")));
        }
        first.get_or_insert([h[0], h[1], h[2], h[3]]);
        frames.push(((at + header) as u64, (len - header) as u32));
        at += len;
    }
    let h = first.ok_or_else(|| bad(path, "no AAC frames"))?;
    let object = (h[2] >> 6) + 1;
    let rate_index = (h[2] >> 2) & 0xF;
    let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
    let rate = *RATES.get(rate_index as usize).ok_or_else(|| bad(path, "unknown ADTS sample rate"))?;
    let asc = ((object as u16) << 11) | ((rate_index as u16) << 7) | ((channels as u16) << 3);
    Ok(Sound { frames, rate, channels: channels as u16, config: asc.to_be_bytes() })
}

fn descriptor(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut d = vec![tag];
    // Four-byte length form, as FFmpeg writes it.
    let n = body.len() as u32;
    d.extend_from_slice(&[
        0x80 | ((n >> 21) & 0x7F) as u8,
        0x80 | ((n >> 14) & 0x7F) as u8,
        0x80 | ((n >> 7) & 0x7F) as u8,
        (n & 0x7F) as u8,
    ]);
    d.extend_from_slice(body);
    d
}

fn mp4a(sound: &Sound, bitrate: u32) -> Vec<u8> {
    let dsi = descriptor(5, &sound.config);
    let mut dcd = vec![0x40, 0x15, 0, 0, 0];
    dcd.extend_from_slice(&bitrate.to_be_bytes());
    dcd.extend_from_slice(&bitrate.to_be_bytes());
    dcd.extend_from_slice(&dsi);
    let dcd = descriptor(4, &dcd);
    let mut es = vec![0, 1, 0];
    es.extend_from_slice(&dcd);
    es.extend_from_slice(&descriptor(6, &[2]));
    let esds = full_box(b"esds", 0, 0, &[&descriptor(3, &es)]);
    let mut entry = vec![0u8; 6];
    entry.extend_from_slice(&1u16.to_be_bytes());
    entry.extend_from_slice(&[0u8; 8]);
    entry.extend_from_slice(&sound.channels.to_be_bytes());
    entry.extend_from_slice(&16u16.to_be_bytes());
    entry.extend_from_slice(&[0u8; 4]);
    entry.extend_from_slice(&((sound.rate.min(65535)) << 16).to_be_bytes());
    let mp4a = mp4_box(b"mp4a", &[&entry, &esds]);
    full_box(b"stsd", 0, 0, &[&1u32.to_be_bytes(), &mp4a])
}

/// Joins `segments` (in order) and the ADTS soundtrack that starts with one priming frame into
/// `out`. `spans[i]` is how many of the soundtrack's frames go with segment `i` (the first
/// includes the priming frame); their sum must be the soundtrack's frame count.
pub fn join(segments: &[PathBuf], sound: &Path, spans: &[usize], out: &Path) -> Result<(), JoinError> {
    if segments.is_empty() || spans.len() != segments.len() {
        return Err(bad(out, "a sound span per segment is needed"));
    }
    let segs: Vec<Segment> = segments.iter().map(|p| read_segment(p)).collect::<Result<_, _>>()?;
    let first = &segs[0];
    // The decoder setup must match (the first segment's is the joined track's); the bitrate
    // box beside it may differ.
    if segs.iter().any(|s| {
        s.timescale != first.timescale
            || codec_setup(&s.stsd) != codec_setup(&first.stsd)
            || s.media_time != first.media_time
    }) {
        return Err(bad(out, "the segments were not encoded alike (timescale, codec setup or delay differ)"));
    }
    let audio = read_sound(sound)?;
    if spans.iter().sum::<usize>() != audio.frames.len() {
        return Err(bad(
            sound,
            format!("{} frames, the spans name {}", audio.frames.len(), spans.iter().sum::<usize>()),
        ));
    }

    // Video tables, all segments end to end.
    let deltas: Vec<u32> = segs.iter().flat_map(|s| s.deltas.iter().copied()).collect();
    let vsizes: Vec<u32> = segs.iter().flat_map(|s| s.samples.iter().map(|x| x.1)).collect();
    let any_offsets = segs.iter().any(|s| !s.offsets.is_empty());
    let offsets: Vec<i32> = segs
        .iter()
        .flat_map(|s| if s.offsets.is_empty() { vec![0; s.samples.len()] } else { s.offsets.clone() })
        .collect();
    let mut sync = vec![];
    let mut base = 0u32;
    let mut all_sync = true;
    for s in &segs {
        match &s.sync {
            Some(list) => {
                all_sync = false;
                sync.extend(list.iter().map(|n| n + base));
            }
            None => sync.extend((1..=s.samples.len() as u32).map(|n| n + base)),
        }
        base += s.samples.len() as u32;
    }
    let vduration: u64 = deltas.iter().map(|&d| d as u64).sum();
    // The edit starts at the first picture (after the B-frame delay) and shows every frame.
    let presented = vduration;
    let adeltas = vec![1024u32; audio.frames.len()];
    let asizes: Vec<u32> = audio.frames.iter().map(|f| f.1).collect();
    let aduration = audio.frames.len() as u64 * 1024;
    let apresented = aduration.saturating_sub(1024);

    // Layout: after ftyp and moov, one chunk of pictures then one of sound per segment.
    let ftyp = ftyp();
    // Each track's chunks (file offset, samples) and where the media ends.
    type Layout = (Vec<(u64, u32)>, Vec<(u64, u32)>, u64);
    let layout = |moov_len: u64| -> Layout {
        let mut at = ftyp.len() as u64 + moov_len + 16; // 64-bit mdat header
        let (mut v, mut a) = (vec![], vec![]);
        let mut frame = 0usize;
        for (s, &n) in segs.iter().zip(spans) {
            v.push((at, s.samples.len() as u32));
            at += s.samples.iter().map(|x| x.1 as u64).sum::<u64>();
            if n > 0 {
                a.push((at, n as u32));
                at += audio.frames[frame..frame + n].iter().map(|x| x.1 as u64).sum::<u64>();
            }
            frame += n;
        }
        (v, a, at)
    };
    let moov_for = |vchunks: &[(u64, u32)], achunks: &[(u64, u32)]| -> Vec<u8> {
        let mut extra = vec![];
        if any_offsets {
            extra.push(ctts(&offsets));
        }
        if !all_sync {
            extra.push(stss(&sync));
        }
        let vstbl = sample_tables(&first.stsd, &deltas, &vsizes, vchunks, &extra);
        let vminf = mp4_box(b"minf", &[&first.vmhd, &dinf(), &vstbl]);
        let vmdia = mp4_box(b"mdia", &[&mdhd(first.timescale, vduration), &first.hdlr, &vminf]);
        let vmovie = to_movie(presented, first.timescale);
        let vtrak =
            mp4_box(b"trak", &[&tkhd(1, vmovie, Some(&first.tkhd), false), &elst(vmovie, first.media_time), &vmdia]);
        let astbl = sample_tables(&mp4a(&audio, 0), &adeltas, &asizes, achunks, &[]);
        let smhd = full_box(b"smhd", 0, 0, &[&[0u8; 4]]);
        let ahdlr = full_box(b"hdlr", 0, 0, &[&[0u8; 4], b"soun", &[0u8; 12], b"SoundHandler\0"]);
        let aminf = mp4_box(b"minf", &[&smhd, &dinf(), &astbl]);
        let amdia = mp4_box(b"mdia", &[&mdhd(audio.rate, aduration), &ahdlr, &aminf]);
        let amovie = to_movie(apresented, audio.rate);
        let atrak = mp4_box(b"trak", &[&tkhd(2, amovie, None, true), &elst(amovie, 1024), &amdia]);
        mp4_box(b"moov", &[&mvhd(vmovie.max(amovie), 3), &vtrak, &atrak])
    };
    // The moov's size depends on whether offsets need 64 bits, which depends on its size:
    // lay out twice.
    let (v0, a0, _) = layout(0);
    let guess = moov_for(&v0, &a0).len() as u64;
    let (vchunks, achunks, end) = layout(guess);
    let moov = moov_for(&vchunks, &achunks);
    if moov.len() as u64 != guess {
        // Crossing 4 GB changed the offsets' width: once more settles it.
        let (v, a, _) = layout(moov.len() as u64);
        if moov_for(&v, &a).len() != moov.len() {
            return Err(bad(out, "could not lay out the file"));
        }
    }
    let mdat_start = ftyp.len() as u64 + moov.len() as u64;

    let tmp = out.with_extension("joining");
    let mut w = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
    w.write_all(&ftyp)?;
    w.write_all(&moov)?;
    w.write_all(&1u32.to_be_bytes())?;
    w.write_all(b"mdat")?;
    w.write_all(&(end - mdat_start).to_be_bytes())?;
    let mut sound_file = File::open(sound)?;
    let mut frame = 0usize;
    let mut buf = vec![];
    for (s, &n) in segs.iter().zip(spans) {
        let mut f = File::open(&s.path)?;
        copy_samples(&mut f, &s.samples, &mut w, &mut buf)?;
        copy_samples(&mut sound_file, &audio.frames[frame..frame + n], &mut w, &mut buf)?;
        frame += n;
    }
    w.flush()?;
    drop(w);
    std::fs::rename(&tmp, out)?;
    Ok(())
}

/// Copies `(offset, size)` ranges of `from` to `to`, merging adjacent ones into one read.
fn copy_samples(from: &mut File, ranges: &[(u64, u32)], to: &mut impl Write, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut i = 0;
    while i < ranges.len() {
        let start = ranges[i].0;
        let mut end = start + ranges[i].1 as u64;
        let mut j = i + 1;
        while j < ranges.len() && ranges[j].0 == end && end - start < 8 << 20 {
            end += ranges[j].1 as u64;
            j += 1;
        }
        buf.resize((end - start) as usize, 0);
        from.seek(SeekFrom::Start(start))?;
        from.read_exact(buf)?;
        to.write_all(buf)?;
        i = j;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aac::{AAC_FRAME, AacSpanEncoder, AacStretch};
    use crate::ffmpeg::{self, H264Encoder, VideoEncoder, VideoSettings};
    use crate::frame::Yuv420;

    fn ffmpeg_lines(args: &[&str]) -> String {
        let out = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    /// Each picture's checksum, in order.
    fn pictures(path: &Path) -> Vec<String> {
        ffmpeg_lines(&["-i", path.to_str().unwrap(), "-map", "0:v", "-f", "framemd5", "-"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit(',').next().unwrap().trim().to_string())
            .collect()
    }

    #[test]
    fn joins_like_ffmpeg_concat_frame_for_frame_with_the_sound_in_place_and_moov_first() {
        let dir = tempfile::tempdir().unwrap();
        // veryfast: B-frames, so composition offsets and an edit list are in play.
        let settings = VideoSettings {
            width: 64,
            height: 48,
            fps: 25,
            encoder: H264Encoder::Libx264,
            preset: "veryfast".into(),
            crf: 23,
            threads: Some(1),
        };
        let mut segments = vec![];
        for (i, frames) in [30u32, 7, 45].into_iter().enumerate() {
            let out = dir.path().join(format!("s{i}.mp4"));
            let mut enc = VideoEncoder::start(&settings, &out).unwrap();
            for k in 0..frames {
                enc.write_frame(&Yuv420::solid(64, 48, [(k * 8) as u8, 40 * i as u8, 200])).unwrap();
            }
            segments.push(enc.finish().unwrap());
        }
        // Sound spans as the engine makes them: at the AAC frame nearest each segment's start.
        let bounds = [0u64, 57 * 1024, 66 * 1024, 156_000];
        let total = 160 * 1024;
        let pcm: Vec<f32> = (0..total)
            .map(|i| ((i as f32 / 48000.0) * (300.0 + i as f32 / 300.0) * std::f32::consts::TAU).sin() * 0.3)
            .collect();
        let mut enc = AacSpanEncoder::start(48000, 1, 96).unwrap();
        let mut spans = vec![];
        let mut counts = vec![];
        for k in 0..3 {
            let (from, to) = (bounds[k], bounds[k + 1].div_ceil(AAC_FRAME) * AAC_FRAME);
            let start = from as i64 - 2048;
            let len = to - from + 4096;
            let keep = if k == 0 { 1024 } else { 2048 }..2048 + (to - from);
            counts.push(((keep.end - keep.start) / AAC_FRAME) as usize);
            let out = dir.path().join(format!("a{k}.aac"));
            enc.stretch(AacStretch { samples: len, keep, out: out.clone() }).unwrap();
            let window: Vec<f32> = (start..start + len as i64)
                .map(|t| if t < 0 || t as usize >= pcm.len() { 0.0 } else { pcm[t as usize] })
                .collect();
            enc.write(&window).unwrap();
            spans.push(out);
        }
        enc.finish().unwrap();
        let sound = dir.path().join("sound.aac");
        std::fs::write(&sound, spans.iter().flat_map(|s| std::fs::read(s).unwrap()).collect::<Vec<u8>>()).unwrap();

        let native = dir.path().join("native.mp4");
        join(&segments, &sound, &counts, &native).unwrap();
        let reference = dir.path().join("ffmpeg.mp4");
        ffmpeg::concat(&segments, Some(ffmpeg::Soundtrack { path: &sound, rate: 48000 }), &reference, dir.path())
            .unwrap();

        let (a, b) = (ffmpeg::probe(&native).unwrap(), ffmpeg::probe(&reference).unwrap());
        assert_eq!(a.video().unwrap().frames, 82);
        assert_eq!(a.video().unwrap().frames, b.video().unwrap().frames);
        assert!((a.video().unwrap().duration - 82.0 / 25.0).abs() < 1e-3, "{:?}", a.video());
        assert_eq!((a.audio().unwrap().channels, a.audio().unwrap().sample_rate), (1, 48000));
        assert_eq!(pictures(&native), pictures(&reference), "frame for frame");
        let (x, y) = (
            ffmpeg::decode_audio(&native, 48000, 1, None, 10.0).unwrap(),
            ffmpeg::decode_audio(&reference, 48000, 1, None, 10.0).unwrap(),
        );
        assert_eq!(x.len(), y.len());
        assert!(x.iter().zip(&y).all(|(p, q)| (p - q).abs() < 1e-6), "the same sound, from the same first sample");
        // Fast start: the moov comes before the media.
        let bytes = std::fs::read(&native).unwrap();
        let kinds: Vec<[u8; 4]> = boxes(&bytes, 0, bytes.len()).unwrap().iter().map(|b| b.kind).collect();
        assert_eq!(kinds, [*b"ftyp", *b"moov", *b"mdat"]);
    }

    #[test]
    fn mismatched_inputs_are_named_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.mp4");
        std::fs::write(&junk, b"\0\0\0\x10ftypisom\0\0\0\0").unwrap();
        let sound = dir.path().join("s.aac");
        std::fs::write(&sound, b"").unwrap();
        let err = join(std::slice::from_ref(&junk), &sound, &[0], &dir.path().join("o.mp4")).unwrap_err().to_string();
        assert!(err.contains("junk.mp4") && err.contains("moov"), "{err}");
        assert!(join(&[junk], &sound, &[], &dir.path().join("o.mp4")).is_err());
    }
}
