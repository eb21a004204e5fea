//! A recording as one MP4 file (sans-IO): the recorded renditions' init
//! segments merged into one `moov` (a track each), then their fragments
//! interleaved, each `moof` given its track's id and a running sequence
//! number. Nothing is re-muxed: the samples are the recorded bytes, and
//! the file is the sum of the segments' sizes (plus the merged header),
//! so it can be streamed with its length known up front.

use bytes::Bytes;
use mp4_atom::{Any, Decode, Encode, Ftyp, Moov};

#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    #[error("an init segment does not decode: {0}")]
    Init(String),
    #[error("no init segment")]
    Empty,
}

/// One `ftyp` + `moov` holding the first track of each of `inits`, as
/// tracks 1, 2, ... in order.
pub fn merge_inits(inits: &[Bytes]) -> Result<Bytes, Mp4Error> {
    let mut ftyp: Option<Ftyp> = None;
    let mut merged: Option<Moov> = None;
    for (i, init) in inits.iter().enumerate() {
        let track_id = i as u32 + 1;
        let mut buf = &init[..];
        let mut moov = None;
        while !buf.is_empty() {
            match Any::decode(&mut buf).map_err(|e| Mp4Error::Init(e.to_string()))? {
                Any::Ftyp(f) => {
                    ftyp.get_or_insert(f);
                }
                Any::Moov(m) => moov = Some(m),
                _ => {}
            }
        }
        let mut moov = moov.ok_or_else(|| Mp4Error::Init("no moov".into()))?;
        let mut trak = moov
            .trak
            .drain(..1)
            .next()
            .ok_or_else(|| Mp4Error::Init("no trak".into()))?;
        trak.tkhd.track_id = track_id;
        let mut trex = moov
            .mvex
            .take()
            .and_then(|m| m.trex.into_iter().next())
            .ok_or_else(|| Mp4Error::Init("no trex".into()))?;
        trex.track_id = track_id;
        match &mut merged {
            None => {
                moov.trak = vec![trak];
                moov.mvex = Some(mp4_atom::Mvex {
                    mehd: None,
                    trex: vec![trex],
                });
                merged = Some(moov);
            }
            Some(m) => {
                m.trak.push(trak);
                if let Some(mvex) = &mut m.mvex {
                    mvex.trex.push(trex);
                }
            }
        }
    }
    let mut moov = merged.ok_or(Mp4Error::Empty)?;
    moov.mvhd.next_track_id = moov.trak.len() as u32 + 1;
    let mut out = Vec::with_capacity(2048);
    if let Some(f) = ftyp {
        f.encode(&mut out)
            .map_err(|e| Mp4Error::Init(e.to_string()))?;
    }
    moov.encode(&mut out)
        .map_err(|e| Mp4Error::Init(e.to_string()))?;
    Ok(Bytes::from(out))
}

/// Rewrites, in place, every fragment of a recorded segment for the
/// merged file: each `tfhd` gets `track_id`, each `mfhd` the next number
/// of `sequence`. Box sizes are checked, never trusted; what does not
/// parse is left as it is.
pub fn retrack(segment: &mut [u8], track_id: u32, sequence: &mut u32) {
    for_each_box(segment, &mut |kind, body| {
        if kind == b"moof" {
            for_each_box(body, &mut |kind, body| match kind {
                b"mfhd" if body.len() >= 8 => {
                    *sequence += 1;
                    body[4..8].copy_from_slice(&sequence.to_be_bytes());
                }
                b"traf" => for_each_box(body, &mut |kind, body| {
                    if kind == b"tfhd" && body.len() >= 8 {
                        body[4..8].copy_from_slice(&track_id.to_be_bytes());
                    }
                }),
                _ => {}
            });
        }
    });
}

/// Calls `f` with each whole box's type and body (after its header).
fn for_each_box(mut data: &mut [u8], f: &mut dyn FnMut(&[u8; 4], &mut [u8])) {
    while data.len() >= 8 {
        let size = u32::from_be_bytes(data[..4].try_into().expect("4 bytes")) as usize;
        let kind: [u8; 4] = data[4..8].try_into().expect("4 bytes");
        let (len, header) = match size {
            1 if data.len() >= 16 => (
                usize::try_from(u64::from_be_bytes(data[8..16].try_into().expect("8 bytes")))
                    .unwrap_or(usize::MAX),
                16,
            ),
            0 | 1 => return,
            n => (n, 8),
        };
        if len < header || len > data.len() {
            return;
        }
        let (this, rest) = data.split_at_mut(len);
        f(&kind, &mut this[header..]);
        data = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::cmaf::{Sample, fragment, init_segment};
    use crate::media::{AacConfig, AvcConfig, CodecConfig};

    fn avc() -> CodecConfig {
        CodecConfig::H264(
            AvcConfig::parse(Bytes::from_static(crate::media::h264::tests::AVCC_320X240)).unwrap(),
        )
    }

    fn aac() -> CodecConfig {
        CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap())
    }

    #[test]
    fn inits_merge_into_one_movie_with_a_track_each() {
        let video = init_segment(&avc(), 90_000).unwrap();
        let audio = init_segment(&aac(), 44_100).unwrap();
        let merged = merge_inits(&[video, audio]).unwrap();
        let mut buf = &merged[..];
        assert!(matches!(Any::decode(&mut buf).unwrap(), Any::Ftyp(_)));
        let Any::Moov(moov) = Any::decode(&mut buf).unwrap() else {
            panic!("no moov")
        };
        assert!(buf.is_empty());
        let ids: Vec<_> = moov.trak.iter().map(|t| t.tkhd.track_id).collect();
        assert_eq!(ids, [1, 2]);
        let scales: Vec<_> = moov.trak.iter().map(|t| t.mdia.mdhd.timescale).collect();
        assert_eq!(scales, [90_000, 44_100]);
        let trex: Vec<_> = moov.mvex.unwrap().trex.iter().map(|t| t.track_id).collect();
        assert_eq!(trex, [1, 2]);
        assert_eq!(moov.mvhd.next_track_id, 3);
        assert!(matches!(merge_inits(&[]), Err(Mp4Error::Empty)));
        assert!(merge_inits(&[Bytes::from_static(b"\0\0\0\x10moovjunkjunk")]).is_err());
    }

    #[test]
    fn fragments_take_their_track_and_the_next_sequence() {
        let sample = Sample {
            duration: 1024,
            composition_offset: 0,
            keyframe: true,
            data: Bytes::from_static(b"aac!"),
        };
        let mut seg = fragment(7, 0, std::slice::from_ref(&sample))
            .unwrap()
            .to_vec();
        seg.extend_from_slice(&fragment(8, 1024, &[sample]).unwrap());
        let before = seg.len();
        let mut sequence = 41;
        retrack(&mut seg, 2, &mut sequence);
        assert_eq!((seg.len(), sequence), (before, 43));
        let mut buf = &seg[..];
        let mut seen = Vec::new();
        while !buf.is_empty() {
            if let Any::Moof(m) = Any::decode(&mut buf).unwrap() {
                seen.push((m.mfhd.sequence_number, m.traf[0].tfhd.track_id));
            }
        }
        assert_eq!(seen, [(42, 2), (43, 2)]);
        // Garbage and torn boxes are left alone, without a panic.
        let mut junk = vec![0, 0, 0, 9, b'm', b'o', b'o', b'f', 0, 0, 0, 0, 1];
        retrack(&mut junk, 1, &mut sequence);
        retrack(&mut [0, 0, 0, 1, b'm', b'o', b'o', b'f'], 1, &mut sequence);
    }
}
