//! Fragmented MP4 (CMAF-style) pieces for HLS: an FFmpeg-fragmented file split into its
//! initialisation part (`ftyp` + `moov`) and its media part (`moof` + `mdat` pairs), and the
//! media part moved to its place on the stream's timeline (each track's `tfdt`) with the
//! stream's fragment sequence numbers (`mfhd`).

/// Why a fragmented file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("fragmented MP4: {0}")]
pub struct Fmp4Error(String);

fn err(msg: impl Into<String>) -> Fmp4Error {
    Fmp4Error(msg.into())
}

/// A box: its type, where it starts, where its payload starts, where it ends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BoxAt {
    pub(crate) kind: [u8; 4],
    pub(crate) start: usize,
    pub(crate) body: usize,
    pub(crate) end: usize,
}

/// The boxes in `b[from..to]`, in order.
pub(crate) fn boxes(b: &[u8], from: usize, to: usize) -> Result<Vec<BoxAt>, Fmp4Error> {
    let mut out = vec![];
    let mut at = from;
    while at < to {
        if to - at < 8 {
            return Err(err(format!("a box header is cut short at byte {at}")));
        }
        let size32 = u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = b[at + 4..at + 8].try_into().expect("4 bytes");
        let (size, body) = match size32 {
            0 => (to - at, at + 8),
            1 => {
                if to - at < 16 {
                    return Err(err(format!("a large box header is cut short at byte {at}")));
                }
                (u64::from_be_bytes(b[at + 8..at + 16].try_into().expect("8 bytes")) as usize, at + 16)
            }
            n => (n, at + 8),
        };
        if size < body - at || size > to - at {
            return Err(err(format!("box {:?} at byte {at} claims {size} bytes", String::from_utf8_lossy(&kind))));
        }
        out.push(BoxAt { kind, start: at, body, end: at + size });
        at += size;
    }
    Ok(out)
}

pub(crate) fn child(b: &[u8], parent: &BoxAt, kind: &[u8; 4]) -> Result<Option<BoxAt>, Fmp4Error> {
    Ok(boxes(b, parent.body, parent.end)?.into_iter().find(|x| &x.kind == kind))
}

fn read_u32(b: &[u8], at: usize) -> Result<u32, Fmp4Error> {
    b.get(at..at + 4)
        .map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
        .ok_or_else(|| err("a box is cut short"))
}

/// A fragmented file, split.
#[derive(Debug)]
pub struct Fragmented {
    /// `ftyp` and `moov`: what a player needs before any media part.
    pub init: Vec<u8>,
    /// The `moof` and `mdat` boxes.
    pub media: Vec<u8>,
    /// Each track's id and timescale (ticks per second), from the `moov`.
    pub tracks: Vec<(u32, u32)>,
}

/// Splits an FFmpeg-fragmented MP4 (`-movflags +frag_keyframe+empty_moov+default_base_moof`).
pub fn split(file: &[u8]) -> Result<Fragmented, Fmp4Error> {
    let top = boxes(file, 0, file.len())?;
    let moov = top.iter().find(|x| &x.kind == b"moov").ok_or_else(|| err("no moov box"))?;
    let first_moof = top.iter().position(|x| &x.kind == b"moof").ok_or_else(|| err("no moof box: not fragmented"))?;
    let mut init = vec![];
    for x in top[..first_moof].iter().filter(|x| matches!(&x.kind, b"ftyp" | b"moov")) {
        init.extend_from_slice(&file[x.start..x.end]);
    }
    let mut media = vec![];
    for x in top[first_moof..].iter().filter(|x| matches!(&x.kind, b"moof" | b"mdat")) {
        media.extend_from_slice(&file[x.start..x.end]);
    }
    Ok(Fragmented { init, media, tracks: tracks_in(file, moov)? })
}

/// Each track's id and timescale in an initialisation part (or a whole file).
pub fn tracks(init: &[u8]) -> Result<Vec<(u32, u32)>, Fmp4Error> {
    let top = boxes(init, 0, init.len())?;
    let moov = top.iter().find(|x| &x.kind == b"moov").ok_or_else(|| err("no moov box"))?;
    tracks_in(init, moov)
}

fn tracks_in(file: &[u8], moov: &BoxAt) -> Result<Vec<(u32, u32)>, Fmp4Error> {
    let mut tracks = vec![];
    for trak in boxes(file, moov.body, moov.end)?.iter().filter(|x| &x.kind == b"trak") {
        let tkhd = child(file, trak, b"tkhd")?.ok_or_else(|| err("a track without tkhd"))?;
        let v1 = file.get(tkhd.body) == Some(&1);
        let id = read_u32(file, tkhd.body + if v1 { 20 } else { 12 })?;
        let mdia = child(file, trak, b"mdia")?.ok_or_else(|| err("a track without mdia"))?;
        let mdhd = child(file, &mdia, b"mdhd")?.ok_or_else(|| err("a track without mdhd"))?;
        let v1 = file.get(mdhd.body) == Some(&1);
        let timescale = read_u32(file, mdhd.body + if v1 { 20 } else { 12 })?;
        tracks.push((id, timescale));
    }
    Ok(tracks)
}

/// Moves a media part along the timeline: each track's decode times by `offset(track id)`
/// ticks, and numbers its fragments from `*sequence` on (advancing it).
pub fn retime(media: &mut [u8], sequence: &mut u32, offset: impl Fn(u32) -> u64) -> Result<(), Fmp4Error> {
    let len = media.len();
    for moof in boxes(media, 0, len)?.into_iter().filter(|x| &x.kind == b"moof") {
        for x in boxes(media, moof.body, moof.end)? {
            match &x.kind {
                b"mfhd" => {
                    let at = x.body + 4;
                    media
                        .get_mut(at..at + 4)
                        .ok_or_else(|| err("mfhd cut short"))?
                        .copy_from_slice(&sequence.to_be_bytes());
                    *sequence += 1;
                }
                b"traf" => {
                    let tfhd = child(media, &x, b"tfhd")?.ok_or_else(|| err("a traf without tfhd"))?;
                    let track = read_u32(media, tfhd.body + 4)?;
                    let tfdt = child(media, &x, b"tfdt")?.ok_or_else(|| err("a traf without tfdt"))?;
                    let add = offset(track);
                    let at = tfdt.body + 4;
                    if media.get(tfdt.body) == Some(&1) {
                        let slot = media.get_mut(at..at + 8).ok_or_else(|| err("tfdt cut short"))?;
                        let t = u64::from_be_bytes((&*slot).try_into().expect("8 bytes")) + add;
                        slot.copy_from_slice(&t.to_be_bytes());
                    } else {
                        let slot = media.get_mut(at..at + 4).ok_or_else(|| err("tfdt cut short"))?;
                        let t = u32::from_be_bytes((&*slot).try_into().expect("4 bytes")) as u64 + add;
                        let t = u32::try_from(t).map_err(|_| err("a 32-bit tfdt overflows"))?;
                        slot.copy_from_slice(&t.to_be_bytes());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Each track's decode time in the media part (track id, ticks), fragment by fragment.
pub fn decode_times(media: &[u8]) -> Result<Vec<(u32, u64)>, Fmp4Error> {
    let mut out = vec![];
    for moof in boxes(media, 0, media.len())?.into_iter().filter(|x| &x.kind == b"moof") {
        for traf in boxes(media, moof.body, moof.end)?.into_iter().filter(|x| &x.kind == b"traf") {
            let tfhd = child(media, &traf, b"tfhd")?.ok_or_else(|| err("a traf without tfhd"))?;
            let tfdt = child(media, &traf, b"tfdt")?.ok_or_else(|| err("a traf without tfdt"))?;
            let t = if media.get(tfdt.body) == Some(&1) {
                u64::from_be_bytes(media[tfdt.body + 4..tfdt.body + 12].try_into().expect("8 bytes"))
            } else {
                read_u32(media, tfdt.body + 4)? as u64
            };
            out.push((read_u32(media, tfhd.body + 4)?, t));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    fn full(kind: &[u8; 4], version: u8, rest: &[u8]) -> Vec<u8> {
        let mut body = vec![version, 0, 0, 0];
        body.extend_from_slice(rest);
        mp4_box(kind, &body)
    }

    fn traf(track: u32, tfdt: u64) -> Vec<u8> {
        let tfhd = full(b"tfhd", 0, &track.to_be_bytes());
        let tfdt = full(b"tfdt", 1, &tfdt.to_be_bytes());
        mp4_box(b"traf", &[tfhd, tfdt].concat())
    }

    fn trak(id: u32, timescale: u32) -> Vec<u8> {
        let mut tkhd = vec![0u8; 8];
        tkhd.extend_from_slice(&id.to_be_bytes());
        let mut mdhd = vec![0u8; 8];
        mdhd.extend_from_slice(&timescale.to_be_bytes());
        let mdia = mp4_box(b"mdia", &full(b"mdhd", 0, &mdhd));
        mp4_box(b"trak", &[full(b"tkhd", 0, &tkhd), mdia].concat())
    }

    #[test]
    fn splits_and_moves_fragments_along_the_timeline() {
        let moof =
            |seq: u32| mp4_box(b"moof", &[full(b"mfhd", 0, &seq.to_be_bytes()), traf(1, 0), traf(2, 0)].concat());
        let file = [
            mp4_box(b"ftyp", b"isom"),
            mp4_box(b"moov", &[trak(1, 12288), trak(2, 48000)].concat()),
            moof(1),
            mp4_box(b"mdat", b"frames"),
            moof(2),
            mp4_box(b"mdat", b"more"),
            mp4_box(b"mfra", b"index"),
        ]
        .concat();
        let f = split(&file).unwrap();
        assert_eq!(f.tracks, [(1, 12288), (2, 48000)]);
        assert_eq!(tracks(&f.init).unwrap(), f.tracks);
        assert!(f.init.starts_with(&mp4_box(b"ftyp", b"isom")) && f.init.len() < file.len() / 2);
        let mut media = f.media;
        assert!(!media.windows(4).any(|w| w == b"mfra"), "the index is left out");
        let mut seq = 7;
        retime(&mut media, &mut seq, |t| if t == 1 { 98_304 } else { 96_256 }).unwrap();
        assert_eq!(seq, 9);
        assert_eq!(decode_times(&media).unwrap(), [(1, 98_304), (2, 96_256), (1, 98_304), (2, 96_256)]);
        assert_eq!(&media[20..24], &7u32.to_be_bytes(), "first mfhd numbered from 7");
    }

    #[test]
    fn broken_boxes_are_errors_not_panics() {
        assert!(split(b"").is_err());
        assert!(split(&[0, 0, 0, 200, b'm', b'o', b'o', b'v']).is_err());
        assert!(split(&mp4_box(b"moov", &[])).unwrap_err().to_string().contains("no moof"));
        let mut short = mp4_box(b"moof", &full(b"mfhd", 0, &[]));
        assert!(retime(&mut short, &mut 1, |_| 0).is_err());
    }
}
