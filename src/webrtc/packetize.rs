//! RTP payloads for H.264 (RFC 6184, packetization-mode 1) and Opus
//! (RFC 7587), made once per frame of a rendition and shared by every viewer
//! of it: per viewer only the RTP header, SRTP and the send remain.
//!
//! Sans-IO: frames in, payloads out. Never reads a clock or touches a socket.

use std::sync::Arc;

use crate::media::AvcConfig;
use crate::media::h264::{NAL_AUD, NAL_IDR, NAL_PPS, NAL_SPS, nal_type};

/// Largest RTP payload. With the 12-byte RTP header, str0m's header
/// extensions (up to ~40 bytes) and the 10-byte SRTP tag, packets stay
/// under the 1200 bytes that traverse any path WebRTC runs on.
pub const MAX_PAYLOAD: usize = 1100;

const STAP_A: u8 = 24;
const FU_A: u8 = 28;

/// One RTP packet's payload and marker bit. The payload is shared: every
/// viewer's send queue and retransmission cache holds the same allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    pub data: Arc<[u8]>,
    /// Set on the last packet of a frame.
    pub marker: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PacketizeError {
    #[error("frame NAL units are malformed: {0}")]
    Nal(#[from] crate::media::H264Error),
    #[error("frame has no NAL units to send")]
    Empty,
}

/// Packetises one H.264 frame (AVCC, lengths of `config.nal_length_size`).
///
/// An IDR frame is preceded by the SPS and PPS in one STAP-A, so a viewer
/// can start (or switch rendition) at any keyframe. Access unit delimiters
/// and in-band parameter sets are dropped (the STAP-A carries the current
/// ones). NAL units larger than `max` go out as FU-A fragments; small ones
/// are aggregated into STAP-A packets.
pub fn h264(config: &AvcConfig, frame: &[u8], max: usize) -> Result<Vec<Payload>, PacketizeError> {
    let mut nals: Vec<&[u8]> = Vec::new();
    let mut idr = false;
    for nal in config.nalus(frame) {
        let nal = nal?;
        match nal_type(nal) {
            None | Some(NAL_AUD) | Some(NAL_SPS) | Some(NAL_PPS) => {}
            Some(t) => {
                idr |= t == NAL_IDR;
                nals.push(nal);
            }
        }
    }
    if nals.is_empty() {
        return Err(PacketizeError::Empty);
    }
    let mut units: Vec<&[u8]> = Vec::with_capacity(nals.len() + 2);
    if idr {
        units.extend(config.sps.iter().map(|s| &s[..]));
        units.extend(config.pps.iter().map(|p| &p[..]));
    }
    units.extend(nals);

    let mut out = Vec::new();
    let mut i = 0;
    while i < units.len() {
        let nal = units[i];
        if nal.len() > max {
            fragment(nal, max, &mut out);
            i += 1;
            continue;
        }
        // Aggregate as many following small units as fit.
        let mut size = 1 + 2 + nal.len();
        let mut j = i + 1;
        while j < units.len() && units[j].len() <= max && size + 2 + units[j].len() <= max {
            size += 2 + units[j].len();
            j += 1;
        }
        if j == i + 1 {
            out.push(Payload {
                data: Arc::from(nal),
                marker: false,
            });
        } else {
            let group = &units[i..j];
            // F is the OR of the Fs, NRI the largest NRI (RFC 6184 5.7.1).
            let f = group.iter().fold(0, |a, n| a | (n[0] & 0x80));
            let nri = group.iter().map(|n| n[0] & 0x60).max().unwrap_or(0);
            let mut b = Vec::with_capacity(size);
            b.push(f | nri | STAP_A);
            for n in group {
                b.extend_from_slice(&(n.len() as u16).to_be_bytes());
                b.extend_from_slice(n);
            }
            out.push(Payload {
                data: b.into(),
                marker: false,
            });
        }
        i = j;
    }
    if let Some(last) = out.last_mut() {
        last.marker = true;
    }
    Ok(out)
}

fn fragment(nal: &[u8], max: usize, out: &mut Vec<Payload>) {
    let header = nal[0];
    let indicator = (header & 0xe0) | FU_A;
    let kind = header & 0x1f;
    let body = &nal[1..];
    let chunk = max - 2;
    let count = body.len().div_ceil(chunk);
    for (k, piece) in body.chunks(chunk).enumerate() {
        let mut fu_header = kind;
        if k == 0 {
            fu_header |= 0x80;
        }
        if k + 1 == count {
            fu_header |= 0x40;
        }
        let mut b = Vec::with_capacity(2 + piece.len());
        b.push(indicator);
        b.push(fu_header);
        b.extend_from_slice(piece);
        out.push(Payload {
            data: b.into(),
            marker: false,
        });
    }
}

/// Reassembles payloads made by [`h264`] into Annex-B NAL units (for tests
/// and the load tool, which check what a viewer would decode).
#[derive(Default)]
pub struct H264Depacketizer {
    fu: Vec<u8>,
    frame: Vec<u8>,
}

impl H264Depacketizer {
    /// Feeds one payload; returns the Annex-B access unit when `marker`.
    pub fn push(&mut self, payload: &[u8], marker: bool) -> Option<Vec<u8>> {
        let &first = payload.first()?;
        match first & 0x1f {
            STAP_A => {
                let mut rest = &payload[1..];
                while rest.len() >= 2 {
                    let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
                    let Some(nal) = rest.get(2..2 + len) else {
                        break;
                    };
                    self.frame.extend_from_slice(&[0, 0, 0, 1]);
                    self.frame.extend_from_slice(nal);
                    rest = &rest[2 + len..];
                }
            }
            FU_A if payload.len() >= 2 => {
                let fu = payload[1];
                if fu & 0x80 != 0 {
                    self.fu.clear();
                    self.fu.push((first & 0xe0) | (fu & 0x1f));
                }
                if !self.fu.is_empty() {
                    self.fu.extend_from_slice(&payload[2..]);
                }
                if fu & 0x40 != 0 && !self.fu.is_empty() {
                    self.frame.extend_from_slice(&[0, 0, 0, 1]);
                    self.frame.append(&mut self.fu);
                }
            }
            _ => {
                self.frame.extend_from_slice(&[0, 0, 0, 1]);
                self.frame.extend_from_slice(payload);
            }
        }
        marker.then(|| std::mem::take(&mut self.frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::annexb_nalus;

    fn config() -> AvcConfig {
        // 64x64 High profile parameter sets, as x264 writes them.
        let sps = [
            0x67, 0x64, 0x00, 0x0a, 0xac, 0xd9, 0x44, 0x26, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00,
            0x04, 0x00, 0x00, 0x03, 0x00, 0xc8, 0x3c, 0x48, 0x96, 0x58,
        ];
        let pps = [0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];
        AvcConfig::from_parameter_sets(&[&sps], &[&pps]).unwrap()
    }

    fn avcc(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for n in nals {
            out.extend_from_slice(&(n.len() as u32).to_be_bytes());
            out.extend_from_slice(n);
        }
        out
    }

    fn roundtrip(payloads: &[Payload]) -> Vec<Vec<u8>> {
        let mut d = H264Depacketizer::default();
        let mut au = None;
        for p in payloads {
            assert!(p.data.len() <= 1100);
            au = d.push(&p.data, p.marker);
        }
        let au = au.expect("marker on the last packet");
        annexb_nalus(&au).into_iter().map(|n| n.to_vec()).collect()
    }

    #[test]
    fn idr_gets_parameter_sets_and_fragments() {
        let c = config();
        let mut idr = vec![0x65];
        idr.extend((0..5000u32).map(|i| (i % 251) as u8));
        let sei = [0x06, 0x05, 0x01, 0x80];
        let aud = [0x09, 0xf0];
        let frame = avcc(&[&aud, &sei, &idr]);
        let p = h264(&c, &frame, MAX_PAYLOAD).unwrap();
        // STAP-A (SPS, PPS, SEI), then FU-As.
        assert_eq!(p[0].data[0] & 0x1f, STAP_A);
        assert!(p[1..].iter().all(|p| p.data[0] & 0x1f == FU_A));
        assert_eq!(p.iter().filter(|p| p.marker).count(), 1);
        assert!(p.last().unwrap().marker);
        let nals = roundtrip(&p);
        assert_eq!(
            nals,
            vec![
                c.sps[0].to_vec(),
                c.pps[0].to_vec(),
                sei.to_vec(),
                idr.clone()
            ]
        );
    }

    #[test]
    fn small_non_idr_frame_is_one_packet_and_ignores_inband_sps() {
        let c = config();
        let p_frame = [0x41, 1, 2, 3];
        let frame = avcc(&[&c.sps[0], &p_frame]);
        let p = h264(&c, &frame, MAX_PAYLOAD).unwrap();
        assert_eq!(
            p,
            vec![Payload {
                data: Arc::from(&p_frame[..]),
                marker: true
            }]
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        let c = config();
        assert_eq!(
            h264(&c, &avcc(&[&[0x09, 0xf0]]), 1100),
            Err(PacketizeError::Empty)
        );
        assert!(matches!(
            h264(&c, &[0, 0, 0, 9, 0x41], 1100),
            Err(PacketizeError::Nal(_))
        ));
    }

    #[test]
    fn exact_fragment_boundaries_roundtrip() {
        let c = config();
        for len in [1099, 1100, 1101, 2197, 2198, 2199] {
            let mut nal = vec![0x41];
            nal.extend((1..len).map(|i| i as u8));
            let p = h264(&c, &avcc(&[&nal]), 1100).unwrap();
            assert_eq!(roundtrip(&p), vec![nal], "len {len}");
        }
    }
}
