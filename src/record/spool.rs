//! The spool's segment files, read back after a crash (sans-IO).
//!
//! A spooled segment is a run of ISO BMFF boxes as the LL-HLS packager
//! writes them: optionally an init section (`ftyp`, `moov`) or a `styp`,
//! then fragments, each a `moof` followed by its `mdat` (with `prft`,
//! `emsg` or `sidx` boxes allowed between). A write cut short by a crash
//! leaves a last box that is incomplete, or a `moof` without its `mdat`.

/// The length of the longest prefix of `data` that ends with a complete
/// fragment (a `moof` and the `mdat` after it, both whole); 0 if there is
/// none. Everything after it is a torn write. Box sizes are checked
/// against the bytes present, never trusted: a size below the header's,
/// or reaching past the end, ends the scan (a size of 0, "to the end of
/// the file", too: a spool file never holds an open-ended box).
pub fn complete_prefix(data: &[u8]) -> usize {
    let mut at = 0usize;
    let mut complete = 0usize;
    let mut moof_seen = false;
    while let Some((kind, len)) = next_box(&data[at..]) {
        match &kind {
            b"moof" => moof_seen = true,
            b"mdat" if moof_seen => {
                moof_seen = false;
                complete = at + len;
            }
            _ => {}
        }
        at += len;
    }
    complete
}

/// The decode times the fragments of `data` span, in their track's
/// timescale: where the first starts (`tfdt`) and where the last ends
/// (its `tfdt` plus its samples' durations). None if no `moof` decodes.
/// For a repaired segment, whose duration was never journalled.
pub fn span(data: &[u8]) -> Option<(u64, u64)> {
    use mp4_atom::{Any, Decode};
    let mut at = 0usize;
    let mut first = None;
    let mut end = 0u64;
    while let Some((kind, len)) = next_box(&data[at..]) {
        if &kind == b"moof"
            && let Ok(Any::Moof(moof)) = Any::decode(&mut &data[at..at + len])
        {
            for traf in &moof.traf {
                let Some(tfdt) = &traf.tfdt else { continue };
                let base = tfdt.base_media_decode_time;
                let default = traf.tfhd.default_sample_duration.unwrap_or(0);
                let total: u64 = traf
                    .trun
                    .iter()
                    .flat_map(|t| t.samples.iter())
                    .map(|s| u64::from(s.duration.unwrap_or(default)))
                    .sum();
                first.get_or_insert(base);
                end = end.max(base.saturating_add(total));
            }
        }
        at += len;
    }
    first.map(|f| (f, end.max(f)))
}

/// The type and whole length of the box at the start of `data`, if it is
/// all there.
fn next_box(data: &[u8]) -> Option<([u8; 4], usize)> {
    let size = u32::from_be_bytes(data.get(..4)?.try_into().ok()?);
    let kind: [u8; 4] = data.get(4..8)?.try_into().ok()?;
    let (len, header) = match size {
        0 => return None,
        1 => {
            let large = u64::from_be_bytes(data.get(8..16)?.try_into().ok()?);
            (usize::try_from(large).ok()?, 16)
        }
        n => (n as usize, 8),
    };
    (len >= header && len <= data.len()).then_some((kind, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((8 + body.len()) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    /// An init section, then fragments with `bodies` as their mdat payloads;
    /// the file, and where each fragment ends.
    fn segment(bodies: &[Vec<u8>]) -> (Vec<u8>, Vec<usize>) {
        let mut file = boxed(b"ftyp", b"iso6cmfc");
        file.extend(boxed(b"moov", &[0; 40]));
        let mut ends = Vec::new();
        for (i, body) in bodies.iter().enumerate() {
            file.extend(boxed(b"moof", &[i as u8; 24]));
            file.extend(boxed(b"mdat", body));
            ends.push(file.len());
        }
        (file, ends)
    }

    /// The packager's own fragments: the span runs from the first
    /// fragment's decode time to the last one's end.
    #[test]
    fn the_span_of_real_fragments() {
        use crate::media::cmaf::{Sample, fragment};
        let sample = |d: u32| Sample {
            duration: d,
            composition_offset: 0,
            keyframe: true,
            data: bytes::Bytes::from_static(b"frame"),
        };
        let mut file = fragment(1, 90_000, &[sample(3000), sample(3000)])
            .unwrap()
            .to_vec();
        file.extend_from_slice(&fragment(2, 96_000, &[sample(3000)]).unwrap());
        assert_eq!(span(&file), Some((90_000, 99_000)));
        assert_eq!(
            span(&file[..complete_prefix(&file[..file.len() - 1])]),
            Some((90_000, 96_000))
        );
        assert_eq!(span(b"garbage"), None);
    }

    #[test]
    fn a_whole_segment_is_kept_whole() {
        let (file, ends) = segment(&[vec![1; 100], vec![2; 5000], vec![]]);
        assert_eq!(complete_prefix(&file), *ends.last().unwrap());
    }

    #[test]
    fn a_moof_without_its_mdat_is_torn() {
        let (mut file, ends) = segment(&[vec![1; 100]]);
        file.extend(boxed(b"moof", &[0; 24]));
        assert_eq!(complete_prefix(&file), ends[0]);
    }

    #[test]
    fn a_64_bit_mdat_size_is_read() {
        let (mut file, _) = segment(&[]);
        file.extend(boxed(b"moof", &[0; 24]));
        let mut mdat = 1u32.to_be_bytes().to_vec();
        mdat.extend_from_slice(b"mdat");
        mdat.extend_from_slice(&(16u64 + 10).to_be_bytes());
        mdat.extend_from_slice(&[7; 10]);
        file.extend(&mdat);
        assert_eq!(complete_prefix(&file), file.len());
    }

    #[test]
    fn sizes_that_lie_end_the_scan() {
        let (mut file, ends) = segment(&[vec![1; 10]]);
        // Claims 4 GiB; and a box smaller than its own header.
        file.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, b'm', b'o', b'o', b'f']);
        assert_eq!(complete_prefix(&file), ends[0]);
        let (mut file, ends) = segment(&[vec![1; 10]]);
        file.extend_from_slice(&[0, 0, 0, 4, b'm', b'o', b'o', b'f']);
        file.extend(boxed(b"mdat", &[0; 4]));
        assert_eq!(complete_prefix(&file), ends[0]);
        assert_eq!(complete_prefix(&[]), 0);
    }

    /// The packager's own fragments (what the recorder will spool): kept
    /// whole, and a write torn anywhere inside one drops only that one.
    #[test]
    fn the_packagers_fragments_are_read_back() {
        use crate::media::cmaf::{Sample, fragment};
        let mut file = Vec::new();
        let mut ends = Vec::new();
        for f in 0..5u32 {
            let samples: Vec<Sample> = (0..6)
                .map(|i| Sample {
                    duration: 3000,
                    composition_offset: 0,
                    keyframe: i == 0,
                    data: bytes::Bytes::from(vec![f as u8; 700 + 50 * i]),
                })
                .collect();
            file.extend_from_slice(&fragment(f + 1, i64::from(f) * 18_000, &samples).unwrap());
            ends.push(file.len());
        }
        assert_eq!(complete_prefix(&file), file.len());
        for w in ends.windows(2) {
            for cut in [w[0] + 1, (w[0] + w[1]) / 2, w[1] - 1] {
                assert_eq!(complete_prefix(&file[..cut]), w[0]);
            }
        }
    }

    proptest! {
        /// Cut anywhere, a segment keeps exactly the fragments wholly
        /// before the cut.
        #[test]
        fn any_cut_keeps_the_whole_fragments_before_it(
            sizes in prop::collection::vec(0usize..3000, 0..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let bodies: Vec<Vec<u8>> = sizes.iter().map(|n| vec![0xab; *n]).collect();
            let (file, ends) = segment(&bodies);
            let cut = cut.index(file.len() + 1);
            let want = ends.iter().copied().filter(|e| *e <= cut).max().unwrap_or(0);
            prop_assert_eq!(complete_prefix(&file[..cut]), want);
        }

        /// Any bytes: an answer within them, never a panic.
        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
            prop_assert!(complete_prefix(&data) <= data.len());
        }
    }
}
