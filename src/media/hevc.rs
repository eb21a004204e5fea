//! HEVC configuration: the hvcC record (HEVCDecoderConfigurationRecord, ISO
//! 14496-15 §8.3.3.1), the SPS fields a server needs (picture size), and the
//! RFC 6381 codec string (ISO 14496-15 Annex E.3).
//!
//! Pure parsing of untrusted bytes, as [`super::h264`]: every length is
//! checked against what is there and every failure names what lied.
//! Frames are length-prefixed NAL units, as H.264's, and are walked with
//! [`super::h264::Nalus`].

use bytes::Bytes;

use super::bits::{BitReader, nal_to_rbsp};
use super::h264::Nalus;

/// Largest picture dimension accepted (HEVC level 6.2 tops out at 8192).
const MAX_DIMENSION: u32 = 16_384;
/// The hvcC fields before its arrays.
const HEADER_LEN: usize = 23;

pub const NAL_VPS: u8 = 32;
pub const NAL_SPS: u8 = 33;
pub const NAL_PPS: u8 = 34;
pub const NAL_AUD: u8 = 35;

/// The NAL unit type of an HEVC NAL unit (its 2-byte header's bits 1-6).
pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| (b >> 1) & 0x3f)
}

/// An IRAP picture (BLA, IDR, CRA: types 16-23): decoding can start here.
pub fn is_irap(nal_type: u8) -> bool {
    (16..=23).contains(&nal_type)
}

/// Annex-B to 4-byte length-prefixed NAL units, without the parameter sets
/// and access unit delimiters, which travel in the hvcC.
pub fn annexb_to_hvcc(data: &[u8]) -> Vec<u8> {
    super::h264::annexb_to_length_prefixed(data, |nal| {
        !matches!(nal_type(nal), Some(NAL_VPS | NAL_SPS | NAL_PPS | NAL_AUD))
    })
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HevcError {
    #[error("hvcC record is {0} bytes, shorter than its 23-byte header")]
    TooShort(usize),
    #[error("hvcC configurationVersion is {0}, expected 1")]
    Version(u8),
    #[error("hvcC lengthSizeMinusOne gives a NAL length size of 3 bytes, which is invalid")]
    LengthSize,
    #[error("hvcC array #{array} is cut short at {what} ({need} bytes needed, {available} left)")]
    Truncated {
        array: usize,
        what: &'static str,
        need: usize,
        available: usize,
    },
    #[error("hvcC has an empty NAL unit in array #{0}")]
    EmptyNal(usize),
    #[error("hvcC has no {0}")]
    Missing(&'static str),
    #[error("HEVC SPS is truncated or malformed at {0}")]
    SpsMalformed(&'static str),
    #[error("HEVC SPS picture size {width}x{height} is out of range")]
    SpsDimensions { width: u32, height: u32 },
}

/// A parsed hvcC record. `raw` is kept verbatim for decoders; the fields
/// make the codec string and the CMAF sample entry.
#[derive(Clone, Debug, PartialEq)]
pub struct HevcConfig {
    pub raw: Bytes,
    pub profile_space: u8,
    pub high_tier: bool,
    pub profile_idc: u8,
    pub compatibility: u32,
    pub constraints: [u8; 6],
    pub level_idc: u8,
    pub chroma_format_idc: u8,
    pub bit_depth_luma: u8,
    pub bit_depth_chroma: u8,
    /// Size in bytes of each NAL unit's length prefix in frames: 1, 2 or 4.
    pub nal_length_size: u8,
    /// The parameter-set arrays as they came: (completeness, NAL type, NAL units).
    pub arrays: Vec<(bool, u8, Vec<Bytes>)>,
    pub width: u32,
    pub height: u32,
}

impl HevcConfig {
    pub fn parse(raw: Bytes) -> Result<HevcConfig, HevcError> {
        let d = &raw[..];
        if d.len() < HEADER_LEN {
            return Err(HevcError::TooShort(d.len()));
        }
        if d[0] != 1 {
            return Err(HevcError::Version(d[0]));
        }
        let nal_length_size = (d[21] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(HevcError::LengthSize);
        }
        let num_arrays = usize::from(d[22]);
        let mut pos = HEADER_LEN;
        // Bounded by the bytes present: each array takes at least 3.
        let mut arrays = Vec::with_capacity(num_arrays.min((d.len() - pos) / 3));
        for array in 0..num_arrays {
            let need = |what, need: usize, pos: usize| {
                let available = d.len().saturating_sub(pos);
                if available < need {
                    Err(HevcError::Truncated {
                        array,
                        what,
                        need,
                        available,
                    })
                } else {
                    Ok(())
                }
            };
            need("its header", 3, pos)?;
            let complete = d[pos] & 0x80 != 0;
            let nal_type = d[pos] & 0x3f;
            let count = usize::from(u16::from_be_bytes([d[pos + 1], d[pos + 2]]));
            pos += 3;
            let mut nalus = Vec::with_capacity(count.min((d.len() - pos) / 3));
            for _ in 0..count {
                need("a NAL unit's length", 2, pos)?;
                let len = usize::from(u16::from_be_bytes([d[pos], d[pos + 1]]));
                pos += 2;
                if len == 0 {
                    return Err(HevcError::EmptyNal(array));
                }
                need("a NAL unit", len, pos)?;
                nalus.push(raw.slice(pos..pos + len));
                pos += len;
            }
            arrays.push((complete, nal_type, nalus));
        }
        let first = |t: u8| {
            arrays
                .iter()
                .filter(|(_, nt, _)| *nt == t)
                .flat_map(|(_, _, n)| n.first())
                .next()
                .cloned()
        };
        first(NAL_VPS).ok_or(HevcError::Missing("VPS"))?;
        first(NAL_PPS).ok_or(HevcError::Missing("PPS"))?;
        let sps = first(NAL_SPS).ok_or(HevcError::Missing("SPS"))?;
        let SpsFields { width, height, .. } = SpsFields::parse(&sps)?;
        Ok(HevcConfig {
            profile_space: d[1] >> 6,
            high_tier: d[1] & 0x20 != 0,
            profile_idc: d[1] & 0x1f,
            compatibility: u32::from_be_bytes([d[2], d[3], d[4], d[5]]),
            constraints: [d[6], d[7], d[8], d[9], d[10], d[11]],
            level_idc: d[12],
            chroma_format_idc: d[16] & 0x03,
            bit_depth_luma: (d[17] & 0x07) + 8,
            bit_depth_chroma: (d[18] & 0x07) + 8,
            nal_length_size,
            arrays,
            width,
            height,
            raw,
        })
    }

    /// The RFC 6381 codec string, e.g. `hvc1.1.6.L93.B0`.
    pub fn codec_string(&self) -> String {
        let space = ["", "A", "B", "C"][usize::from(self.profile_space & 3)];
        let mut s = format!(
            "hvc1.{space}{}.{:X}.{}{}",
            self.profile_idc,
            self.compatibility.reverse_bits(),
            if self.high_tier { 'H' } else { 'L' },
            self.level_idc
        );
        let used = self
            .constraints
            .iter()
            .rposition(|b| *b != 0)
            .map_or(0, |i| i + 1);
        for b in &self.constraints[..used] {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }

    /// The NAL units of one length-prefixed frame.
    pub fn nalus<'a>(&self, frame: &'a [u8]) -> Nalus<'a> {
        Nalus::new(frame, self.nal_length_size)
    }

    /// Builds the hvcC record for in-band parameter sets (what an MPEG-TS
    /// publisher sends), with 4-byte NAL lengths. The profile, tier and
    /// level come from the first SPS.
    pub fn from_parameter_sets(
        vps: &[&[u8]],
        sps: &[&[u8]],
        pps: &[&[u8]],
    ) -> Result<HevcConfig, HevcError> {
        use HevcError::SpsMalformed as M;
        let first = sps.first().ok_or(HevcError::Missing("SPS"))?;
        let fields = SpsFields::parse(first)?;
        let rbsp = nal_to_rbsp(first.get(2..).unwrap_or_default());
        // After the byte of VPS id and sub-layer count: the general
        // profile_tier_level, 12 bytes, as hvcC carries them.
        let ptl = rbsp.get(1..13).ok_or(M("profile_tier_level"))?;
        let mut raw = vec![1];
        raw.extend_from_slice(ptl);
        raw.extend_from_slice(&[
            0xf0,
            0x00,
            0xfc,
            0xfc | fields.chroma_format_idc,
            0xf8 | (fields.bit_depth_luma - 8),
            0xf8 | (fields.bit_depth_chroma - 8),
            0,
            0,
            // numTemporalLayers, temporalIdNested, 4-byte NAL lengths.
            ((fields.sub_layers + 1) << 3) | (u8::from(fields.temporal_id_nesting) << 2) | 3,
            3,
        ]);
        for (nal_type, nalus) in [(NAL_VPS, vps), (NAL_SPS, sps), (NAL_PPS, pps)] {
            let count = u16::try_from(nalus.len()).map_err(|_| M("too many parameter sets"))?;
            raw.push(0x80 | nal_type);
            raw.extend_from_slice(&count.to_be_bytes());
            for n in nalus {
                let len = u16::try_from(n.len()).map_err(|_| M("a parameter set over 64 KiB"))?;
                raw.extend_from_slice(&len.to_be_bytes());
                raw.extend_from_slice(n);
            }
        }
        HevcConfig::parse(Bytes::from(raw))
    }

    /// The parameter sets, as a list per NAL type.
    pub fn parameter_sets(&self, nal_type: u8) -> impl Iterator<Item = &Bytes> {
        self.arrays
            .iter()
            .filter(move |(_, t, _)| *t == nal_type)
            .flat_map(|(_, _, n)| n)
    }
}

/// What the SPS tells a server (H.265 7.3.2.2, up to the bit depths).
struct SpsFields {
    width: u32,
    height: u32,
    sub_layers: u8,
    temporal_id_nesting: bool,
    chroma_format_idc: u8,
    bit_depth_luma: u8,
    bit_depth_chroma: u8,
}

impl SpsFields {
    /// The picture size (after the conformance window), sub-layers and bit depths.
    fn parse(nal: &[u8]) -> Result<SpsFields, HevcError> {
        use HevcError::SpsMalformed as M;
        if nal.len() < 2 || (nal[0] >> 1) & 0x3f != NAL_SPS {
            return Err(M("NAL header"));
        }
        let rbsp = nal_to_rbsp(&nal[2..]);
        let mut r = BitReader::new(&rbsp);
        r.skip(4).ok_or(M("sps_video_parameter_set_id"))?;
        let sub_layers = r.bits(3).ok_or(M("sps_max_sub_layers_minus1"))? as usize;
        if sub_layers > 6 {
            return Err(M("sps_max_sub_layers_minus1"));
        }
        let temporal_id_nesting = r.bit().ok_or(M("sps_temporal_id_nesting_flag"))?;
        // profile_tier_level: the general profile (88 bits) and level (8).
        r.skip(96).ok_or(M("profile_tier_level"))?;
        let mut present = [(false, false); 7];
        for p in present.iter_mut().take(sub_layers) {
            let profile = r.bit().ok_or(M("sub_layer_profile_present_flag"))?;
            let level = r.bit().ok_or(M("sub_layer_level_present_flag"))?;
            *p = (profile, level);
        }
        if sub_layers > 0 {
            r.skip(2 * (8 - sub_layers))
                .ok_or(M("reserved_zero_2bits"))?;
        }
        for (profile, level) in present.iter().take(sub_layers) {
            if *profile {
                r.skip(88).ok_or(M("sub_layer profile"))?;
            }
            if *level {
                r.skip(8).ok_or(M("sub_layer_level_idc"))?;
            }
        }
        r.ue().ok_or(M("sps_seq_parameter_set_id"))?;
        let chroma = r.ue().ok_or(M("chroma_format_idc"))?;
        if chroma > 3 {
            return Err(M("chroma_format_idc"));
        }
        let mut separate_planes = false;
        if chroma == 3 {
            separate_planes = r.bit().ok_or(M("separate_colour_plane_flag"))?;
        }
        let width = u64::from(r.ue().ok_or(M("pic_width_in_luma_samples"))?);
        let height = u64::from(r.ue().ok_or(M("pic_height_in_luma_samples"))?);
        let (mut crop_w, mut crop_h) = (0u64, 0u64);
        if r.bit().ok_or(M("conformance_window_flag"))? {
            let left = u64::from(r.ue().ok_or(M("conf_win_left_offset"))?);
            let right = u64::from(r.ue().ok_or(M("conf_win_right_offset"))?);
            let top = u64::from(r.ue().ok_or(M("conf_win_top_offset"))?);
            let bottom = u64::from(r.ue().ok_or(M("conf_win_bottom_offset"))?);
            let (sub_w, sub_h) = match (chroma, separate_planes) {
                (1, _) => (2, 2),
                (2, _) => (2, 1),
                _ => (1, 1),
            };
            crop_w = (left + right) * sub_w;
            crop_h = (top + bottom) * sub_h;
        }
        let w = width.saturating_sub(crop_w);
        let h = height.saturating_sub(crop_h);
        let max = u64::from(MAX_DIMENSION);
        if w == 0 || h == 0 || w > max || h > max {
            return Err(HevcError::SpsDimensions {
                width: w.min(u64::from(u32::MAX)) as u32,
                height: h.min(u64::from(u32::MAX)) as u32,
            });
        }
        let luma = r.ue().ok_or(M("bit_depth_luma_minus8"))?;
        let chroma_depth = r.ue().ok_or(M("bit_depth_chroma_minus8"))?;
        // Up to 15 bits: what hvcC's 3-bit fields hold.
        if luma > 7 || chroma_depth > 7 {
            return Err(M("bit depth"));
        }
        Ok(SpsFields {
            width: w as u32,
            height: h as u32,
            sub_layers: sub_layers as u8,
            temporal_id_nesting,
            chroma_format_idc: chroma as u8,
            bit_depth_luma: luma as u8 + 8,
            bit_depth_chroma: chroma_depth as u8 + 8,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The hvcC libx265 (FFmpeg 9, `info=0`) writes for 320x240 Main 8-bit.
    pub const HVCC_320X240: &str = "0101600000009000000000003cf000fcfdf8f800000f03200001001840010c01ffff01600000030090000003000003003c928090210001002942010101600000030090000003000003003ca00a080f16592a4932bc05a020000003002000000303c122000100074401c172b46240";
    /// The same encoder at 1920x1080, Main 10 (its SPS crops 1088 to 1080).
    pub const HVCC_1080P_MAIN10: &str = "01022000000090000000000078f000fcfdfafa00000f03200001001840010c01ffff022000000300900000030000030078959809210001002c420101022000000300900000030000030078a003c08010e4d96566924caf016808000003000800000300f04022000100074401c172b46240";

    pub fn hex(s: &str) -> Bytes {
        Bytes::from(
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>(),
        )
    }

    #[test]
    fn parses_x265_records() {
        let c = HevcConfig::parse(hex(HVCC_320X240)).unwrap();
        assert_eq!((c.width, c.height), (320, 240));
        assert_eq!(c.nal_length_size, 4);
        assert_eq!(c.codec_string(), "hvc1.1.6.L60.90");
        assert_eq!(c.arrays.len(), 3);
        let c = HevcConfig::parse(hex(HVCC_1080P_MAIN10)).unwrap();
        assert_eq!((c.width, c.height), (1920, 1080));
        assert_eq!(c.bit_depth_luma, 10);
        assert_eq!(c.codec_string(), "hvc1.2.4.L120.90");
    }

    #[test]
    fn codec_string_forms() {
        let mut c = HevcConfig::parse(hex(HVCC_320X240)).unwrap();
        c.high_tier = true;
        c.profile_space = 1;
        c.level_idc = 153;
        c.constraints = [0xb0, 0, 0x01, 0, 0, 0];
        assert_eq!(c.codec_string(), "hvc1.A1.6.H153.B0.0.1");
        c.constraints = [0; 6];
        assert_eq!(c.codec_string(), "hvc1.A1.6.H153");
    }

    #[test]
    fn records_rebuild_from_in_band_parameter_sets() {
        for record in [HVCC_320X240, HVCC_1080P_MAIN10] {
            let c = HevcConfig::parse(hex(record)).unwrap();
            let sets = |t| c.parameter_sets(t).map(|b| &b[..]).collect::<Vec<_>>();
            let rebuilt =
                HevcConfig::from_parameter_sets(&sets(NAL_VPS), &sets(NAL_SPS), &sets(NAL_PPS))
                    .unwrap();
            assert_eq!(rebuilt.codec_string(), c.codec_string());
            assert_eq!((rebuilt.width, rebuilt.height), (c.width, c.height));
            assert_eq!(rebuilt.bit_depth_luma, c.bit_depth_luma);
            assert_eq!(rebuilt.chroma_format_idc, c.chroma_format_idc);
            assert_eq!(rebuilt.nal_length_size, 4);
            // x265 writes the same header bytes (it has no SEI array here).
            assert_eq!(rebuilt.raw[..22], c.raw[..22]);
        }
        assert_eq!(
            HevcConfig::from_parameter_sets(&[], &[], &[]),
            Err(HevcError::Missing("SPS"))
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = hex(HVCC_320X240);
        for len in 0..full.len() {
            assert!(
                HevcConfig::parse(full.slice(..len)).is_err(),
                "{len} bytes parsed"
            );
        }
    }

    #[test]
    fn lies_are_named() {
        let full = hex(HVCC_320X240).to_vec();
        let mut v = full.clone();
        v[0] = 0;
        assert_eq!(
            HevcConfig::parse(Bytes::from(v)),
            Err(HevcError::Version(0))
        );
        let mut v = full.clone();
        v[21] = (v[21] & !3) | 2;
        assert_eq!(
            HevcConfig::parse(Bytes::from(v)),
            Err(HevcError::LengthSize)
        );
        // An array claiming 65535 NAL units is refused without allocating for them.
        let mut v = full[..HEADER_LEN].to_vec();
        v[22] = 1;
        v.extend_from_slice(&[0xa0, 0xff, 0xff, 0, 1]);
        assert!(matches!(
            HevcConfig::parse(Bytes::from(v)),
            Err(HevcError::Truncated { array: 0, .. })
        ));
        // No arrays at all.
        let mut v = full[..HEADER_LEN].to_vec();
        v[22] = 0;
        assert_eq!(
            HevcConfig::parse(Bytes::from(v)),
            Err(HevcError::Missing("VPS"))
        );
    }
}
