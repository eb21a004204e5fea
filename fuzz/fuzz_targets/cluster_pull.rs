//! What an edge reads from an origin: a track's pull (CMAF, a `prft` and a
//! `moof` + `mdat` per frame, init segments between) in pieces the input
//! chooses, and a stream's JSON description. Half the runs start from a
//! valid pull the input shapes (frame sizes, key frames, times, a new
//! configuration, group starts) and then corrupt it where the input says, so the reader
//! is driven deep into its boxes as well as fed noise.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use streamd::bus::Frame;
use streamd::cluster::wire::{StreamInfo, TrackReader, TrackWriter};
use streamd::media::{AacConfig, CodecConfig};
use streamd::time::MediaTime;

fn read(bytes: &[u8], chunk: usize) {
    let mut reader = TrackReader::default();
    for piece in bytes.chunks(chunk.max(1)) {
        reader.push(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => {
                    let _ = f.data.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(mode >> 1) + 1;
    if mode & 1 == 0 {
        read(rest, chunk);
        let _ = serde_json::from_slice::<StreamInfo>(rest);
        return;
    }
    // A valid pull shaped by the input: each 4 bytes are a frame (size,
    // key frame and time step, a configuration change), then corrupted.
    let configs = [
        Arc::new(CodecConfig::Aac(
            AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap(),
        )),
        Arc::new(CodecConfig::Aac(
            AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap(),
        )),
    ];
    let mut writer = TrackWriter::default();
    let mut bytes = Vec::new();
    let mut t = 0i64;
    let (frames, tail) = rest.split_at(rest.len().min(64) / 4 * 4);
    for f in frames.chunks(4) {
        t += i64::from(f[1]);
        let frame = Frame {
            dts: MediaTime::from_millis(t),
            pts: MediaTime::from_millis(t + i64::from(f[2] & 0x7f)),
            keyframe: f[2] & 0x80 != 0,
            data: Bytes::from(vec![f[0]; usize::from(f[0])]),
            wallclock: std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_millis(t.unsigned_abs()),
            received: std::time::Instant::now(),
        };
        let config = &configs[usize::from(f[3] & 1)];
        if let Ok(b) = writer.frame(config, &frame, f[3] & 2 != 0) {
            bytes.extend_from_slice(&b);
        }
    }
    // The tail says where to flip bytes and where to cut.
    for pair in tail.chunks(3) {
        if let [hi, lo, value] = *pair
            && !bytes.is_empty()
        {
            let at = (usize::from(hi) << 8 | usize::from(lo)) % bytes.len();
            bytes[at] = value;
        }
    }
    if let Some(&cut) = tail.first()
        && cut & 1 == 1
    {
        bytes.truncate(bytes.len() * usize::from(cut) / 256);
    }
    read(&bytes, chunk);
});
