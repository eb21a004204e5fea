//! Packaging throughput: CMAF part muxing (`moof`+`mdat` from samples) and
//! the whole segmenter path (frames in, parts and segments out), in MB/s of
//! media.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use streamd::llhls::segmenter::{InSample, Segmenter};
use streamd::media::cmaf::{self, Sample};
use streamd::media::{AvcConfig, CodecConfig};

/// Frame sizes like a 2.5 Mbps 30 fps stream: a 60 kB keyframe, then
/// 8-12 kB inter frames.
fn frames(n: usize) -> Vec<(bool, Bytes)> {
    (0..n)
        .map(|i| {
            let key = i % 30 == 0;
            let size = if key {
                60_000
            } else {
                8_000 + (i * 977) % 4_000
            };
            (key, Bytes::from(vec![(i % 251) as u8; size]))
        })
        .collect()
}

fn part_muxing(c: &mut Criterion) {
    let samples: Vec<Sample> = frames(6)
        .into_iter()
        .map(|(keyframe, data)| Sample {
            duration: 3000,
            composition_offset: 6000,
            keyframe,
            data,
        })
        .collect();
    let bytes: usize = samples.iter().map(|s| s.data.len()).sum();
    let mut g = c.benchmark_group("packaging");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("cmaf_part_6_frames", |b| {
        let mut seq = 0u32;
        b.iter(|| {
            seq += 1;
            cmaf::fragment(seq, i64::from(seq) * 18_000, &samples).unwrap()
        })
    });
    g.finish();
}

fn segmenter(c: &mut Criterion) {
    let avcc = {
        let d = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/clip-160x120-2s.flv"
        ))
        .unwrap();
        // The first video tag is the AVC sequence header: its body after 5 bytes.
        let mut pos = 13;
        loop {
            let size = u32::from_be_bytes([0, d[pos + 1], d[pos + 2], d[pos + 3]]) as usize;
            if d[pos] == 9 {
                break Bytes::copy_from_slice(&d[pos + 11 + 5..pos + 11 + size]);
            }
            pos += 11 + size + 4;
        }
    };
    let config = Arc::new(CodecConfig::H264(AvcConfig::parse(avcc).unwrap()));
    let input = frames(300);
    let bytes: usize = input.iter().map(|f| f.1.len()).sum();
    let mut g = c.benchmark_group("packaging");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("segmenter_10s_30fps", |b| {
        b.iter(|| {
            let mut seg = Segmenter::new(90_000, Duration::from_millis(200), true);
            seg.set_frame_duration(3000);
            let mut out = Vec::new();
            for (i, (keyframe, data)) in input.iter().enumerate() {
                let sample = InSample {
                    dts: i as i64 * 3000,
                    composition_offset: 6000,
                    keyframe: *keyframe,
                    data: data.clone(),
                    program_date_time: SystemTime::UNIX_EPOCH,
                    received: Instant::now(),
                    starts_segment: *keyframe,
                    discontinuity: false,
                    config: config.clone(),
                    msn: None,
                };
                seg.push(sample, &mut out).unwrap();
            }
            seg.flush(&mut out).unwrap();
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, part_muxing, segmenter);
criterion_main!(benches);
