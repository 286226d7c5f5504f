//! Writing ISO BMFF (MP4) boxes: the pieces both the segment writer (`x264`) and the join
//! (`mp4join`) put together.

pub(crate) fn mp4_box(kind: &[u8; 4], parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum::<usize>() + 8;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&(len as u32).to_be_bytes());
    b.extend_from_slice(kind);
    for p in parts {
        b.extend_from_slice(p);
    }
    b
}

pub(crate) fn full_box(kind: &[u8; 4], version: u8, flags: u32, parts: &[&[u8]]) -> Vec<u8> {
    let mut head = flags.to_be_bytes();
    head[0] = version;
    let mut all: Vec<&[u8]> = vec![&head];
    all.extend_from_slice(parts);
    mp4_box(kind, &all)
}

/// Run-length `(count, value)` pairs of a sequence.
fn runs<T: PartialEq + Copy>(values: impl IntoIterator<Item = T>) -> Vec<(u32, T)> {
    let mut out: Vec<(u32, T)> = vec![];
    for v in values {
        match out.last_mut() {
            Some((n, last)) if *last == v => *n += 1,
            _ => out.push((1, v)),
        }
    }
    out
}

fn entries(rows: &[(u32, u32)]) -> Vec<u8> {
    let mut b = (rows.len() as u32).to_be_bytes().to_vec();
    for (a, c) in rows {
        b.extend_from_slice(&a.to_be_bytes());
        b.extend_from_slice(&c.to_be_bytes());
    }
    b
}

/// A track's sample tables for samples laid out in `chunks` (each: file offset, sample count).
pub(crate) fn sample_tables(
    stsd: &[u8],
    deltas: &[u32],
    sizes: &[u32],
    chunks: &[(u64, u32)],
    extra: &[Vec<u8>],
) -> Vec<u8> {
    let stts = full_box(b"stts", 0, 0, &[&entries(&runs(deltas.iter().copied()))]);
    let per_chunk = runs(chunks.iter().map(|c| c.1));
    let mut stsc_rows = vec![];
    let mut chunk = 1u32;
    for (n, per) in per_chunk {
        stsc_rows.push([chunk, per, 1]);
        chunk += n;
    }
    let mut stsc = (stsc_rows.len() as u32).to_be_bytes().to_vec();
    for r in stsc_rows {
        for v in r {
            stsc.extend_from_slice(&v.to_be_bytes());
        }
    }
    let stsc = full_box(b"stsc", 0, 0, &[&stsc]);
    let mut stsz = 0u32.to_be_bytes().to_vec();
    stsz.extend_from_slice(&(sizes.len() as u32).to_be_bytes());
    for s in sizes {
        stsz.extend_from_slice(&s.to_be_bytes());
    }
    let stsz = full_box(b"stsz", 0, 0, &[&stsz]);
    let wide = chunks.last().is_some_and(|c| c.0 > u32::MAX as u64);
    let mut co = (chunks.len() as u32).to_be_bytes().to_vec();
    for c in chunks {
        if wide {
            co.extend_from_slice(&c.0.to_be_bytes());
        } else {
            co.extend_from_slice(&(c.0 as u32).to_be_bytes());
        }
    }
    let co = full_box(if wide { b"co64" } else { b"stco" }, 0, 0, &[&co]);
    let mut parts: Vec<&[u8]> = vec![stsd, &stts];
    for e in extra {
        parts.push(e);
    }
    parts.extend_from_slice(&[&stsc, &stsz, &co]);
    mp4_box(b"stbl", &parts)
}

/// 32.32 → movie timescale (1000).
pub(crate) fn to_movie(t: u64, timescale: u32) -> u64 {
    t * 1000 / timescale.max(1) as u64
}

pub(crate) fn dinf() -> Vec<u8> {
    let url = full_box(b"url ", 0, 1, &[]);
    let dref = full_box(b"dref", 0, 0, &[&1u32.to_be_bytes(), &url]);
    mp4_box(b"dinf", &[&dref])
}

pub(crate) fn mdhd(timescale: u32, duration: u64) -> Vec<u8> {
    // Version 1: creation and modification times (zero), timescale, duration, language "und".
    full_box(b"mdhd", 1, 0, &[&[0u8; 16], &timescale.to_be_bytes(), &duration.to_be_bytes(), &[0x55, 0xC4, 0, 0]])
}

pub(crate) fn elst(duration_movie: u64, media_time: i64) -> Vec<u8> {
    let mut p = 1u32.to_be_bytes().to_vec();
    p.extend_from_slice(&duration_movie.to_be_bytes());
    p.extend_from_slice(&media_time.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0]);
    mp4_box(b"edts", &[&full_box(b"elst", 1, 0, &[&p])])
}

/// A track header (version 1) with the given id, duration (movie timescale) and the rest of a
/// version-0 `tkhd` body copied from `like` when given.
pub(crate) fn tkhd(id: u32, duration: u64, like: Option<&[u8]>, audio: bool) -> Vec<u8> {
    let mut p = vec![0u8; 16]; // creation, modification
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0u8; 4]);
    p.extend_from_slice(&duration.to_be_bytes());
    // reserved(8) layer(2) alternate group(2) volume(2) reserved(2) matrix(36) width(4) height(4)
    // After the times, id and duration: 60 bytes, from byte 32 of a version-0 box, 44 of a version-1 one.
    let copied = like.and_then(|b| match b.get(8) {
        Some(0) => b.get(32..92),
        Some(1) => b.get(44..104),
        _ => None,
    });
    let tail: Vec<u8> = match copied {
        Some(t) => t.to_vec(),
        None => {
            let mut t = vec![0u8; 8 + 2 + 2];
            t.extend_from_slice(&(if audio { 0x0100u16 } else { 0 }).to_be_bytes());
            t.extend_from_slice(&[0, 0]);
            for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
                t.extend_from_slice(&v.to_be_bytes());
            }
            t.extend_from_slice(&[0u8; 8]);
            t
        }
    };
    p.extend_from_slice(&tail);
    full_box(b"tkhd", 1, 3, &[&p])
}

/// `ftyp` as FFmpeg's MP4 muxer writes it.
pub(crate) fn ftyp() -> Vec<u8> {
    mp4_box(b"ftyp", &[b"isom", &512u32.to_be_bytes(), b"isomiso2avc1mp41"])
}

/// Composition offsets, one per sample, run-length coded (version 1 when any is negative).
pub(crate) fn ctts(offsets: &[i32]) -> Vec<u8> {
    let rows = runs(offsets.iter().copied());
    let mut p = (rows.len() as u32).to_be_bytes().to_vec();
    for (count, o) in rows {
        p.extend_from_slice(&count.to_be_bytes());
        p.extend_from_slice(&o.to_be_bytes());
    }
    full_box(b"ctts", offsets.iter().any(|&o| o < 0) as u8, 0, &[&p])
}

/// The sync samples (1-based sample numbers).
pub(crate) fn stss(sync: &[u32]) -> Vec<u8> {
    let mut p = (sync.len() as u32).to_be_bytes().to_vec();
    for n in sync {
        p.extend_from_slice(&n.to_be_bytes());
    }
    full_box(b"stss", 0, 0, &[&p])
}

/// The movie header (version 1): timescale 1000, `duration` in it, unit rate, volume and
/// matrix, and the next free track id.
pub(crate) fn mvhd(duration: u64, next_track_id: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b.extend_from_slice(&1000u32.to_be_bytes());
    b.extend_from_slice(&duration.to_be_bytes());
    b.extend_from_slice(&0x0001_0000u32.to_be_bytes());
    b.extend_from_slice(&0x0100u16.to_be_bytes());
    b.extend_from_slice(&[0u8; 10]);
    for v in [0x0001_0000u32, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(&[0u8; 24]);
    b.extend_from_slice(&next_track_id.to_be_bytes());
    full_box(b"mvhd", 1, 0, &[&b])
}
