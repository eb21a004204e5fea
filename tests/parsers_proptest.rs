//! Property tests: random and mutated bytes into every parser that sees
//! network input. None may panic; each returns a value or an error.

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use streamd::ingest::flv;
use streamd::ingest::rtmp::RtmpConnection;
use streamd::media::{AacConfig, AvcConfig, h264};

/// Real inputs to mutate: the fixture's tag bodies.
fn seeds() -> Vec<Bytes> {
    common::rtmp::fixture()
        .into_iter()
        .filter(|t| t.kind == 8 || t.kind == 9)
        .take(40)
        .map(|t| t.body)
        .collect()
}

fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seeds();
    (
        0..seeds.len(),
        prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
    )
        .prop_map(move |(i, flips, cut)| {
            let mut v = seeds[i].to_vec();
            for (at, byte) in flips {
                if !v.is_empty() {
                    let n = v.len();
                    v[at % n] = byte;
                }
            }
            let keep = if v.is_empty() { 0 } else { cut % (v.len() + 1) };
            v.truncate(keep.max(v.len() / 2));
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn flv_tags_never_panic(data in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = flv::parse_video(Bytes::from(data.clone()));
        let _ = flv::parse_audio(Bytes::from(data));
    }

    #[test]
    fn mutated_flv_tags_never_panic(data in mutated()) {
        let b = Bytes::from(data);
        if let Ok(flv::VideoTag::SequenceHeader(raw)) = flv::parse_video(b.clone()) {
            let _ = AvcConfig::parse(raw);
        }
        if let Ok(flv::VideoTag::Frame { data, .. }) = flv::parse_video(b.clone()) {
            for n in h264::Nalus::new(&data, 4) {
                if n.is_err() { break; }
            }
        }
        if let Ok(flv::AudioTag::SequenceHeader(raw)) = flv::parse_audio(b) {
            let _ = AacConfig::parse(raw);
        }
    }

    #[test]
    fn codec_configs_never_panic(data in prop::collection::vec(any::<u8>(), 0..96)) {
        let _ = AvcConfig::parse(Bytes::from(data.clone()));
        let _ = h264::SpsInfo::parse(&data);
        let _ = AacConfig::parse(Bytes::from(data));
    }

    #[test]
    fn mutated_sps_never_panics(flips in prop::collection::vec((0usize..25, any::<u8>()), 0..6)) {
        // The fixture's SPS, with bytes changed: exercises every SPS branch.
        let header = common::rtmp::fixture().into_iter().find(|t| t.kind == 9).unwrap();
        let avcc = &header.body[5..];
        let len = usize::from(u16::from_be_bytes([avcc[6], avcc[7]]));
        let mut sps = avcc[8..8 + len].to_vec();
        for (at, b) in flips {
            let n = sps.len();
            sps[1 + at % (n - 1)] = b;
        }
        let _ = h264::SpsInfo::parse(&sps);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Random bytes at the RTMP port, before and after a valid handshake.
    #[test]
    fn rtmp_connection_never_panics(noise in prop::collection::vec(any::<u8>(), 0..4096), handshake in any::<bool>()) {
        let mut conn = RtmpConnection::new();
        if handshake {
            // C0 + C1 (simple handshake: time, zero, random) and an echo as C2.
            let mut c0c1 = vec![3u8];
            c0c1.extend_from_slice(&[0u8; 1536]);
            let out = conn.feed(&c0c1);
            prop_assert!(out.is_ok());
            let s0s1s2 = out.unwrap().send;
            prop_assume!(s0s1s2.len() > 1536 * 2);
            let _ = conn.feed(&s0s1s2[1..1 + 1536]);
        }
        let _ = conn.feed(&noise);
        let _ = conn.feed(&noise);
    }
}
