//! Reading FLV files in benchmarks (shared by the ingest and transcode
//! benches; the tests have their own in tests/common/rtmp.rs).

use std::path::Path;

use bytes::Bytes;

/// One FLV tag: 8 audio, 9 video, 18 script data.
pub struct Tag {
    pub kind: u8,
    pub ts: u32,
    pub body: Bytes,
}

/// The tags of an FLV file (a truncated last tag is left out), and the
/// file's size in bytes.
pub fn read_tags(path: &Path) -> (Vec<Tag>, usize) {
    let d = std::fs::read(path).unwrap();
    let mut pos = 13;
    let mut tags = vec![];
    while pos + 11 <= d.len() {
        let size = u32::from_be_bytes([0, d[pos + 1], d[pos + 2], d[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([d[pos + 7], d[pos + 4], d[pos + 5], d[pos + 6]]);
        if pos + 11 + size > d.len() {
            break;
        }
        tags.push(Tag {
            kind: d[pos],
            ts,
            body: Bytes::copy_from_slice(&d[pos + 11..pos + 11 + size]),
        });
        pos += 11 + size + 4;
    }
    (tags, d.len())
}
