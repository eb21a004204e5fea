//! Property tests: random and mutated bytes into every parser that sees
//! network input. None may panic; each returns a value or an error.

mod common;

use bytes::Bytes;
use proptest::prelude::*;
use streamd::ingest::flv;
use streamd::ingest::rtmp::RtmpConnection;
use streamd::media::{AacConfig, Av1Config, AvcConfig, HevcConfig, av1, h264};

/// The tags of a fixture FLV file.
fn fixture(name: &str) -> Vec<common::rtmp::Tag> {
    common::rtmp::read_flv(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
}

/// Real inputs to mutate: the fixtures' tag bodies, H.264 in legacy FLV,
/// HEVC and AV1 in Enhanced RTMP's.
fn seeds() -> Vec<Bytes> {
    let mut out = Vec::new();
    for name in [
        "clip-160x120-2s.flv",
        "clip-hevc-160x120-1s.flv",
        "clip-av1-160x120-1s.flv",
    ] {
        out.extend(
            fixture(name)
                .into_iter()
                .filter(|t| (t.kind == 8 || t.kind == 9) && t.body.len() < 4096)
                .take(20)
                .map(|t| t.body),
        );
    }
    out
}

/// The video sequence headers' records (avcC, hvcC, av1C).
fn records() -> Vec<Bytes> {
    seeds()
        .into_iter()
        .flat_map(|b| flv::parse_video(b).unwrap_or_default())
        .filter_map(|(_, tag)| match tag {
            flv::VideoTag::SequenceHeader(_, raw) => Some(raw),
            _ => None,
        })
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
        for (_, tag) in flv::parse_video(b.clone()).unwrap_or_default() {
            match tag {
                flv::VideoTag::SequenceHeader(flv::VideoCodec::H264, raw) => { let _ = AvcConfig::parse(raw); }
                flv::VideoTag::SequenceHeader(flv::VideoCodec::Hevc, raw) => { let _ = HevcConfig::parse(raw); }
                flv::VideoTag::SequenceHeader(flv::VideoCodec::Av1, raw) => { let _ = Av1Config::parse(raw); }
                flv::VideoTag::Frame { codec: flv::VideoCodec::Av1, data, .. } => { let _ = av1::check_frame(data); }
                flv::VideoTag::Frame { data, .. } => {
                    for n in h264::Nalus::new(&data, 4) {
                        if n.is_err() { break; }
                    }
                }
                _ => {}
            }
        }
        if let Ok(flv::AudioTag::SequenceHeader(raw)) = flv::parse_audio(b) {
            let _ = AacConfig::parse(raw);
        }
    }

    #[test]
    fn codec_configs_never_panic(data in prop::collection::vec(any::<u8>(), 0..96)) {
        let _ = AvcConfig::parse(Bytes::from(data.clone()));
        let _ = HevcConfig::parse(Bytes::from(data.clone()));
        let _ = Av1Config::parse(Bytes::from(data.clone()));
        let _ = av1::check_frame(Bytes::from(data.clone()));
        let _ = h264::SpsInfo::parse(&data);
        let _ = AacConfig::parse(Bytes::from(data));
    }

    /// Real hvcC and av1C records with bytes changed and cut: every
    /// length and every SPS / sequence header branch they reach.
    #[test]
    fn mutated_video_records_never_panic(
        pick in any::<usize>(),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let records = records();
        let mut v = records[pick % records.len()].to_vec();
        for (at, b) in flips {
            let n = v.len();
            v[at % n] = b;
        }
        v.truncate(cut % (v.len() + 1));
        let _ = AvcConfig::parse(Bytes::from(v.clone()));
        let _ = HevcConfig::parse(Bytes::from(v.clone()));
        let _ = Av1Config::parse(Bytes::from(v.clone()));
        let _ = Av1Config::from_sequence_header(v.get(4..).unwrap_or_default());
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

/// RFC 4571 framing of `payloads`: a 2-byte big-endian length before each.
fn framed(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    /// ICE-TCP: however the reads cut a framed stream, the deframer gives
    /// back exactly the frames that were sent, in order, and holds only
    /// the unfinished tail.
    #[test]
    fn ice_tcp_frames_survive_any_cutting(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..1500), 0..12),
        step in 1usize..700,
    ) {
        let wire = framed(&payloads);
        let mut d = streamd::ice_tcp::Deframer::default();
        let mut got = Vec::new();
        for read in wire.chunks(step) {
            d.push(read);
            while let Some(f) = d.next_frame() {
                got.push(f.to_vec());
            }
            prop_assert!(d.pending() < 2 + 1500 + step);
        }
        prop_assert_eq!(d.pending(), 0);
        prop_assert_eq!(got, payloads);
    }

    /// OME signalling: any text is a message or an error, never a panic;
    /// a change_rendition keeps the name and flag it was sent with.
    #[test]
    fn signalling_parses_what_it_is_sent(
        noise in ".{0,200}",
        name in "[ -~]{0,40}",
        auto in any::<Option<bool>>(),
        id in any::<u32>(),
    ) {
        use streamd::webrtc::signal::{ClientMessage, parse};
        let _ = parse(&noise, None);
        let _ = parse(&noise, Some(id));
        let mut msg = serde_json::json!({"command": "change_rendition", "id": id, "rendition_name": name});
        if let Some(a) = auto {
            msg["auto"] = serde_json::Value::Bool(a);
        }
        match parse(&msg.to_string(), Some(id)) {
            Ok(ClientMessage::ChangeRendition { rendition, auto: got }) => {
                prop_assert_eq!(rendition.as_deref(), Some(name.as_str()));
                prop_assert_eq!(got, auto);
            }
            other => prop_assert!(false, "{msg} parsed as {other:?}"),
        }
    }

    /// An admission backend's answer: any bytes decide or fail, never
    /// panic; a well-formed answer means what it says, its reason cut to
    /// 200 characters and a lifetime of 0 meaning none.
    #[test]
    fn admission_answers_mean_what_they_say(
        noise in prop::collection::vec(any::<u8>(), 0..300),
        allowed in any::<bool>(),
        reason in ".{0,300}",
        lifetime in any::<u64>(),
        new_url in "[a-z:/0-9.]{0,40}",
    ) {
        use streamd::auth::admission::{Decision, decide};
        let _ = decide(&noise);
        let answer = serde_json::json!({
            "allowed": allowed, "reason": reason, "lifetime": lifetime, "new_url": new_url,
        });
        match decide(answer.to_string().as_bytes()) {
            Ok(Decision::Allowed { new_url: url, lifetime: life }) => {
                prop_assert!(allowed);
                prop_assert_eq!(url, (!new_url.is_empty()).then(|| new_url.clone()));
                prop_assert_eq!(life, (lifetime > 0).then(|| std::time::Duration::from_millis(lifetime)));
            }
            Ok(Decision::Denied(why)) => {
                prop_assert!(!allowed);
                prop_assert_eq!(why, reason.chars().take(200).collect::<String>());
            }
            Err(e) => prop_assert!(false, "a well-formed answer failed: {e}"),
        }
    }
}
