//! H.264 configuration: the avcC record (AVCDecoderConfigurationRecord, ISO
//! 14496-15 §5.3.3), the SPS fields a server needs (size, profile, level,
//! frame rate, reordering), and length-prefixed NAL unit iteration.
//!
//! Pure parsing of untrusted bytes: every length is checked against what is
//! really there, and every failure is an [`H264Error`] naming what lied.

use bytes::Bytes;

use super::bits::{BitReader, nal_to_rbsp};

/// Largest picture dimension accepted from an SPS (H.264 level 6.2 tops out at
/// 8192; 16384 leaves room and still rejects garbage).
const MAX_DIMENSION: u32 = 16_384;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum H264Error {
    #[error("avcC record is {0} bytes, shorter than its 7-byte header")]
    AvccTooShort(usize),
    #[error("avcC configurationVersion is {0}, expected 1")]
    AvccVersion(u8),
    #[error("avcC lengthSizeMinusOne gives a NAL length size of 3 bytes, which is invalid")]
    AvccLengthSize,
    #[error("avcC {what} #{index} claims {claimed} bytes but only {available} remain")]
    AvccParameterSetLength {
        what: &'static str,
        index: usize,
        claimed: usize,
        available: usize,
    },
    #[error("avcC has no {0}")]
    AvccMissing(&'static str),
    #[error("SPS is truncated or malformed at {0}")]
    SpsMalformed(&'static str),
    #[error("SPS NAL unit type is {0}, expected 7")]
    SpsNalType(u8),
    #[error("SPS picture size {width}x{height} is out of range")]
    SpsDimensions { width: u32, height: u32 },
    #[error(
        "NAL unit length {claimed} at offset {offset} exceeds the {available} bytes left in the frame"
    )]
    NalLength {
        offset: usize,
        claimed: usize,
        available: usize,
    },
}

/// A parsed avcC record. `raw` is kept verbatim: it goes into the fMP4 init
/// segment as is.
#[derive(Clone, Debug, PartialEq)]
pub struct AvcConfig {
    pub raw: Bytes,
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    /// Size in bytes of each NAL unit's length prefix in frames: 1, 2 or 4.
    pub nal_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    /// Parsed from the first SPS.
    pub info: SpsInfo,
}

impl AvcConfig {
    pub fn parse(raw: Bytes) -> Result<AvcConfig, H264Error> {
        let d = &raw[..];
        if d.len() < 7 {
            return Err(H264Error::AvccTooShort(d.len()));
        }
        if d[0] != 1 {
            return Err(H264Error::AvccVersion(d[0]));
        }
        let nal_length_size = (d[4] & 0x03) + 1;
        if nal_length_size == 3 {
            return Err(H264Error::AvccLengthSize);
        }
        let mut pos = 5;
        let num_sps = usize::from(d[pos] & 0x1f);
        pos += 1;
        let mut sps = Vec::with_capacity(num_sps);
        for index in 0..num_sps {
            sps.push(take_parameter_set(&raw, &mut pos, "SPS", index)?);
        }
        let num_pps = usize::from(*d.get(pos).ok_or(H264Error::AvccParameterSetLength {
            what: "PPS count",
            index: 0,
            claimed: 1,
            available: 0,
        })?);
        pos += 1;
        let mut pps = Vec::with_capacity(num_pps);
        for index in 0..num_pps {
            pps.push(take_parameter_set(&raw, &mut pos, "PPS", index)?);
        }
        let first_sps = sps.first().ok_or(H264Error::AvccMissing("SPS"))?;
        if pps.is_empty() {
            return Err(H264Error::AvccMissing("PPS"));
        }
        let info = SpsInfo::parse(first_sps)?;
        Ok(AvcConfig {
            profile: d[1],
            compatibility: d[2],
            level: d[3],
            nal_length_size,
            sps,
            pps,
            info,
            raw,
        })
    }

    /// The RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!(
            "avc1.{:02x}{:02x}{:02x}",
            self.profile, self.compatibility, self.level
        )
    }

    /// The NAL units of one length-prefixed frame.
    pub fn nalus<'a>(&self, frame: &'a [u8]) -> Nalus<'a> {
        Nalus::new(frame, self.nal_length_size)
    }
}

fn take_parameter_set(
    raw: &Bytes,
    pos: &mut usize,
    what: &'static str,
    index: usize,
) -> Result<Bytes, H264Error> {
    let d = &raw[..];
    let available = d.len().saturating_sub(*pos);
    if available < 2 {
        return Err(H264Error::AvccParameterSetLength {
            what,
            index,
            claimed: 2,
            available,
        });
    }
    let len = usize::from(u16::from_be_bytes([d[*pos], d[*pos + 1]]));
    *pos += 2;
    let available = d.len() - *pos;
    if len == 0 || len > available {
        return Err(H264Error::AvccParameterSetLength {
            what,
            index,
            claimed: len,
            available,
        });
    }
    let out = raw.slice(*pos..*pos + len);
    *pos += len;
    Ok(out)
}

/// What the SPS tells a server.
#[derive(Clone, Debug, PartialEq)]
pub struct SpsInfo {
    pub profile_idc: u8,
    pub level_idc: u8,
    pub width: u32,
    pub height: u32,
    /// Frames per second from VUI timing info, when the encoder wrote it.
    pub frame_rate: Option<f64>,
    /// `max_num_reorder_frames` from the VUI bitstream restriction, when present.
    /// Zero means no B-frame reordering.
    pub max_num_reorder_frames: Option<u32>,
}

impl SpsInfo {
    pub fn parse(nal: &[u8]) -> Result<SpsInfo, H264Error> {
        use H264Error::SpsMalformed as M;
        let header = *nal.first().ok_or(M("NAL header"))?;
        if header & 0x1f != 7 {
            return Err(H264Error::SpsNalType(header & 0x1f));
        }
        let rbsp = nal_to_rbsp(&nal[1..]);
        let mut r = BitReader::new(&rbsp);
        let profile_idc = r.bits(8).ok_or(M("profile_idc"))? as u8;
        r.skip(8).ok_or(M("constraint flags"))?;
        let level_idc = r.bits(8).ok_or(M("level_idc"))? as u8;
        r.ue().ok_or(M("seq_parameter_set_id"))?;
        let mut chroma_format_idc = 1;
        if matches!(
            profile_idc,
            100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135
        ) {
            chroma_format_idc = r.ue().ok_or(M("chroma_format_idc"))?;
            if chroma_format_idc > 3 {
                return Err(M("chroma_format_idc"));
            }
            if chroma_format_idc == 3 {
                r.skip(1).ok_or(M("separate_colour_plane_flag"))?;
            }
            r.ue().ok_or(M("bit_depth_luma"))?;
            r.ue().ok_or(M("bit_depth_chroma"))?;
            r.skip(1).ok_or(M("qpprime_y_zero_transform_bypass_flag"))?;
            if r.bit().ok_or(M("seq_scaling_matrix_present_flag"))? {
                let lists = if chroma_format_idc == 3 { 12 } else { 8 };
                for i in 0..lists {
                    if r.bit().ok_or(M("seq_scaling_list_present_flag"))? {
                        skip_scaling_list(&mut r, if i < 6 { 16 } else { 64 })?;
                    }
                }
            }
        }
        r.ue().ok_or(M("log2_max_frame_num_minus4"))?;
        match r.ue().ok_or(M("pic_order_cnt_type"))? {
            0 => {
                r.ue().ok_or(M("log2_max_pic_order_cnt_lsb_minus4"))?;
            }
            1 => {
                r.skip(1).ok_or(M("delta_pic_order_always_zero_flag"))?;
                r.se().ok_or(M("offset_for_non_ref_pic"))?;
                r.se().ok_or(M("offset_for_top_to_bottom_field"))?;
                let n = r.ue().ok_or(M("num_ref_frames_in_pic_order_cnt_cycle"))?;
                if n > 255 {
                    return Err(M("num_ref_frames_in_pic_order_cnt_cycle"));
                }
                for _ in 0..n {
                    r.se().ok_or(M("offset_for_ref_frame"))?;
                }
            }
            2 => {}
            _ => return Err(M("pic_order_cnt_type")),
        }
        r.ue().ok_or(M("max_num_ref_frames"))?;
        r.skip(1).ok_or(M("gaps_in_frame_num_value_allowed_flag"))?;
        let width_mbs = u64::from(r.ue().ok_or(M("pic_width_in_mbs_minus1"))?) + 1;
        let height_map_units = u64::from(r.ue().ok_or(M("pic_height_in_map_units_minus1"))?) + 1;
        let frame_mbs_only = r.bit().ok_or(M("frame_mbs_only_flag"))?;
        if !frame_mbs_only {
            r.skip(1).ok_or(M("mb_adaptive_frame_field_flag"))?;
        }
        r.skip(1).ok_or(M("direct_8x8_inference_flag"))?;
        let (mut crop_l, mut crop_r, mut crop_t, mut crop_b) = (0u64, 0u64, 0u64, 0u64);
        if r.bit().ok_or(M("frame_cropping_flag"))? {
            crop_l = u64::from(r.ue().ok_or(M("frame_crop_left_offset"))?);
            crop_r = u64::from(r.ue().ok_or(M("frame_crop_right_offset"))?);
            crop_t = u64::from(r.ue().ok_or(M("frame_crop_top_offset"))?);
            crop_b = u64::from(r.ue().ok_or(M("frame_crop_bottom_offset"))?);
        }
        let field_factor = if frame_mbs_only { 1 } else { 2 };
        let (crop_unit_x, crop_unit_y) = match chroma_format_idc {
            0 => (1, field_factor),
            1 => (2, 2 * field_factor),
            2 => (2, field_factor),
            _ => (1, field_factor),
        };
        let full_w = width_mbs * 16;
        let full_h = height_map_units * 16 * field_factor;
        let crop_w = (crop_l + crop_r) * crop_unit_x;
        let crop_h = (crop_t + crop_b) * crop_unit_y;
        let width = full_w.saturating_sub(crop_w);
        let height = full_h.saturating_sub(crop_h);
        if width == 0
            || height == 0
            || width > u64::from(MAX_DIMENSION)
            || height > u64::from(MAX_DIMENSION)
        {
            return Err(H264Error::SpsDimensions {
                width: width.min(u64::from(u32::MAX)) as u32,
                height: height.min(u64::from(u32::MAX)) as u32,
            });
        }
        let mut info = SpsInfo {
            profile_idc,
            level_idc,
            width: width as u32,
            height: height as u32,
            frame_rate: None,
            max_num_reorder_frames: None,
        };
        // VUI is optional, and many encoders truncate what follows timing
        // info; a short VUI leaves the optional fields unset rather than
        // failing a stream that decodes fine.
        if r.bit() == Some(true) {
            parse_vui(&mut r, &mut info);
        }
        Ok(info)
    }
}

fn skip_scaling_list(r: &mut BitReader<'_>, size: usize) -> Result<(), H264Error> {
    let mut last = 8i32;
    let mut next = 8i32;
    for _ in 0..size {
        if next != 0 {
            let delta = r
                .se()
                .ok_or(H264Error::SpsMalformed("scaling list delta"))?;
            // delta_scale is -128..=127 (H.264 7.4.2.1.1.1); anything else
            // is malformed, not a value to wrap.
            if !(-128..=127).contains(&delta) {
                return Err(H264Error::SpsMalformed("scaling list delta out of range"));
            }
            next = (last + delta + 256).rem_euclid(256);
        }
        if next != 0 {
            last = next;
        }
    }
    Ok(())
}

fn parse_vui(r: &mut BitReader<'_>, info: &mut SpsInfo) -> Option<()> {
    if r.bit()? {
        // aspect_ratio_info_present_flag
        if r.bits(8)? == 255 {
            r.skip(32)?; // sar_width, sar_height
        }
    }
    if r.bit()? {
        r.skip(1)?; // overscan_appropriate_flag
    }
    if r.bit()? {
        r.skip(4)?; // video_format, video_full_range_flag
        if r.bit()? {
            r.skip(24)?; // colour_primaries, transfer, matrix
        }
    }
    if r.bit()? {
        r.ue()?;
        r.ue()?; // chroma_sample_loc_type top/bottom
    }
    if r.bit()? {
        let num_units_in_tick = r.bits(32)?;
        let time_scale = r.bits(32)?;
        r.skip(1)?; // fixed_frame_rate_flag
        if num_units_in_tick > 0 && time_scale > 0 {
            // Frame rate = time_scale / (2 * num_units_in_tick) for progressive video.
            let fps = f64::from(time_scale) / (2.0 * f64::from(num_units_in_tick));
            if (0.5..=1000.0).contains(&fps) {
                info.frame_rate = Some(fps);
            }
        }
    }
    let nal_hrd = r.bit()?;
    if nal_hrd {
        skip_hrd(r)?;
    }
    let vcl_hrd = r.bit()?;
    if vcl_hrd {
        skip_hrd(r)?;
    }
    if nal_hrd || vcl_hrd {
        r.skip(1)?; // low_delay_hrd_flag
    }
    r.skip(1)?; // pic_struct_present_flag
    if r.bit()? {
        // bitstream_restriction_flag
        r.skip(1)?; // motion_vectors_over_pic_boundaries_flag
        r.ue()?; // max_bytes_per_pic_denom
        r.ue()?; // max_bits_per_mb_denom
        r.ue()?; // log2_max_mv_length_horizontal
        r.ue()?; // log2_max_mv_length_vertical
        info.max_num_reorder_frames = Some(r.ue()?);
    }
    Some(())
}

fn skip_hrd(r: &mut BitReader<'_>) -> Option<()> {
    let cpb_cnt = r.ue()? + 1;
    if cpb_cnt > 32 {
        return None;
    }
    r.skip(8)?; // bit_rate_scale, cpb_size_scale
    for _ in 0..cpb_cnt {
        r.ue()?;
        r.ue()?;
        r.skip(1)?;
    }
    r.skip(20)?; // four 5-bit length fields
    Some(())
}

/// The NAL unit type of a NAL unit (its first byte's low 5 bits).
/// Splits an Annex-B byte stream (NAL units behind 3- or 4-byte start codes,
/// as encoders write them) into NAL units, without their start codes.
pub fn annexb_nalus(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(starts.len());
    for (n, &(_, begin)) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |&(code, _)| code);
        // A 4-byte start code's leading zero (and trailing_zero_8bits)
        // belong to neither NAL unit.
        while end > begin && data[end - 1] == 0 {
            end -= 1;
        }
        if end > begin {
            out.push(&data[begin..end]);
        }
    }
    out
}

/// Annex-B to AVCC (4-byte lengths), dropping parameter sets, AUDs and SEI
/// that belong out of band, so a frame carries only its slices.
pub fn annexb_to_avcc(data: &[u8]) -> Vec<u8> {
    annexb_to_length_prefixed(data, |nal| {
        !matches!(nal_type(nal), Some(NAL_SPS | NAL_PPS | NAL_AUD))
    })
}

/// Annex-B to 4-byte length-prefixed NAL units, keeping those `keep` says
/// (H.264's and HEVC's frames on the bus).
pub fn annexb_to_length_prefixed(data: &[u8], keep: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    for nal in annexb_nalus(data).into_iter().filter(|n| keep(n)) {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    out
}

impl AvcConfig {
    /// Builds the avcC record for these parameter sets (an encoder's
    /// out-of-band headers), with 4-byte NAL lengths.
    pub fn from_parameter_sets(sps: &[&[u8]], pps: &[&[u8]]) -> Result<AvcConfig, H264Error> {
        let first = sps.first().ok_or(H264Error::AvccMissing("SPS"))?;
        if first.len() < 4 {
            return Err(H264Error::SpsMalformed("header"));
        }
        // avcC counts SPSs in 5 bits and PPSs in 8, and sizes each in 16.
        let sps_count = u8::try_from(sps.len())
            .ok()
            .filter(|n| *n < 32)
            .ok_or(H264Error::SpsMalformed("more than 31 SPSs"))?;
        let pps_count =
            u8::try_from(pps.len()).map_err(|_| H264Error::SpsMalformed("more than 255 PPSs"))?;
        let mut raw = vec![1, first[1], first[2], first[3], 0xff, 0xe0 | sps_count];
        for s in sps {
            let len =
                u16::try_from(s.len()).map_err(|_| H264Error::SpsMalformed("SPS over 64 KiB"))?;
            raw.extend_from_slice(&len.to_be_bytes());
            raw.extend_from_slice(s);
        }
        raw.push(pps_count);
        for p in pps {
            let len =
                u16::try_from(p.len()).map_err(|_| H264Error::SpsMalformed("PPS over 64 KiB"))?;
            raw.extend_from_slice(&len.to_be_bytes());
            raw.extend_from_slice(p);
        }
        AvcConfig::parse(Bytes::from(raw))
    }

    /// The parameter sets in Annex-B form, as a decoder's extradata.
    pub fn annexb_parameter_sets(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for n in self.sps.iter().chain(&self.pps) {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(n);
        }
        out
    }
}

pub fn nal_type(nal: &[u8]) -> Option<u8> {
    nal.first().map(|b| b & 0x1f)
}

pub const NAL_IDR: u8 = 5;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;

/// Iterates the NAL units of a frame in AVCC form (each prefixed by its
/// big-endian length). Yields an error, then stops, if a length lies.
pub struct Nalus<'a> {
    data: &'a [u8],
    pos: usize,
    len_size: usize,
    failed: bool,
}

impl<'a> Nalus<'a> {
    pub fn new(data: &'a [u8], nal_length_size: u8) -> Self {
        Nalus {
            data,
            pos: 0,
            len_size: usize::from(nal_length_size),
            failed: false,
        }
    }
}

impl<'a> Iterator for Nalus<'a> {
    type Item = Result<&'a [u8], H264Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let available = self.data.len() - self.pos;
        if available < self.len_size {
            self.failed = true;
            return Some(Err(H264Error::NalLength {
                offset: self.pos,
                claimed: self.len_size,
                available,
            }));
        }
        let mut len = 0usize;
        for &b in &self.data[self.pos..self.pos + self.len_size] {
            len = (len << 8) | usize::from(b);
        }
        let start = self.pos + self.len_size;
        let available = self.data.len() - start;
        if len > available {
            self.failed = true;
            return Some(Err(H264Error::NalLength {
                offset: self.pos,
                claimed: len,
                available,
            }));
        }
        self.pos = start + len;
        Some(Ok(&self.data[start..start + len]))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// avcC written by libx264 (High profile, level 3.0, 320x240, 25 fps, VUI with
    /// timing and bitstream restriction) via ffmpeg's FLV muxer.
    pub(crate) const AVCC_320X240: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41,
        0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0x20, 0xf1,
        0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0, 0xfd, 0xf8, 0xf8,
        0x00,
    ];

    #[test]
    fn parses_x264_avcc() {
        let cfg = AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap();
        assert_eq!(cfg.codec_string(), "avc1.64000d");
        assert_eq!(cfg.nal_length_size, 4);
        assert_eq!((cfg.info.width, cfg.info.height), (320, 240));
        assert_eq!(cfg.info.frame_rate, Some(25.0));
        assert_eq!(cfg.sps.len(), 1);
        assert_eq!(cfg.pps.len(), 1);
    }

    /// Exp-Golomb bits for hand-made SPSs.
    #[derive(Default)]
    struct Bits(Vec<bool>);

    impl Bits {
        fn put(&mut self, v: u64, n: u32) -> &mut Self {
            for i in (0..n).rev() {
                self.0.push((v >> i) & 1 == 1);
            }
            self
        }
        fn ue(&mut self, v: u64) -> &mut Self {
            let x = v + 1;
            let n = 63 - x.leading_zeros();
            self.put(0, n).put(x, n + 1)
        }
        fn se(&mut self, v: i64) -> &mut Self {
            self.ue(if v > 0 {
                2 * v as u64 - 1
            } else {
                (-2 * v) as u64
            })
        }
        fn bytes(&self) -> Vec<u8> {
            let mut out = vec![0x67];
            for chunk in self.0.chunks(8) {
                let mut b = 0u8;
                for (i, bit) in chunk.iter().enumerate() {
                    b |= u8::from(*bit) << (7 - i);
                }
                out.push(b);
            }
            out.extend_from_slice(&[0xff; 8]);
            out
        }
    }

    /// A High-profile SPS whose first scaling list starts with `delta`.
    fn sps_with_scaling_delta(delta: i64) -> Vec<u8> {
        let mut b = Bits::default();
        b.put(100, 8).put(0, 8).put(30, 8).ue(0);
        b.ue(1).ue(0).ue(0).put(0, 1); // chroma 4:2:0, 8-bit, no bypass
        b.put(1, 1).put(1, 1).se(delta); // scaling matrix, list 0, delta
        b.bytes()
    }

    #[test]
    fn scaling_list_deltas_out_of_range_are_errors_not_overflows() {
        // i32::MAX overflowed `last + delta + 256` (a panic in debug
        // builds); 1000 is merely out of range. Both are malformed.
        for delta in [i64::from(i32::MAX), 1000, -129] {
            assert_eq!(
                SpsInfo::parse(&sps_with_scaling_delta(delta)),
                Err(H264Error::SpsMalformed("scaling list delta out of range")),
                "{delta}"
            );
        }
        // An in-range delta gets past the scaling lists (and fails later
        // on this truncated SPS for another reason).
        assert_ne!(
            SpsInfo::parse(&sps_with_scaling_delta(-8)),
            Err(H264Error::SpsMalformed("scaling list delta out of range"))
        );
    }

    #[test]
    fn avcc_counts_that_do_not_fit_are_errors() {
        let sps: &[u8] = &AVCC_320X240[8..8 + 0x19];
        let many = vec![sps; 32];
        assert!(matches!(
            AvcConfig::from_parameter_sets(&many, &[]),
            Err(H264Error::SpsMalformed("more than 31 SPSs"))
        ));
        let huge = vec![0x67u8; 70_000];
        assert!(matches!(
            AvcConfig::from_parameter_sets(&[&huge], &[]),
            Err(H264Error::SpsMalformed("SPS over 64 KiB"))
        ));
    }

    #[test]
    fn rejects_lying_sps_length() {
        let mut raw = AVCC_320X240.to_vec();
        raw[7] = 0xff; // SPS length 0x00ff, more than the record holds
        assert!(matches!(
            AvcConfig::parse(Bytes::from(raw)),
            Err(H264Error::AvccParameterSetLength { what: "SPS", .. })
        ));
    }

    #[test]
    fn rejects_truncated_pps() {
        let raw = &AVCC_320X240[..AVCC_320X240.len() - 6];
        assert!(matches!(
            AvcConfig::parse(Bytes::copy_from_slice(raw)),
            Err(H264Error::AvccParameterSetLength { what: "PPS", .. })
        ));
    }

    #[test]
    fn rejects_short_and_wrong_version() {
        assert_eq!(
            AvcConfig::parse(Bytes::from_static(&[1, 2, 3])),
            Err(H264Error::AvccTooShort(3))
        );
        let mut raw = AVCC_320X240.to_vec();
        raw[0] = 0;
        assert_eq!(
            AvcConfig::parse(Bytes::from(raw)),
            Err(H264Error::AvccVersion(0))
        );
        let mut raw = AVCC_320X240.to_vec();
        raw[4] = 0xfe; // length size 3
        assert_eq!(
            AvcConfig::parse(Bytes::from(raw)),
            Err(H264Error::AvccLengthSize)
        );
    }

    #[test]
    fn rejects_missing_parameter_sets() {
        let raw = [1, 0x64, 0, 0x0d, 0xff, 0xe0, 0x00];
        assert_eq!(
            AvcConfig::parse(Bytes::copy_from_slice(&raw)),
            Err(H264Error::AvccMissing("SPS"))
        );
    }

    #[test]
    fn rejects_non_sps_nal() {
        assert_eq!(SpsInfo::parse(&[0x68, 0xeb]), Err(H264Error::SpsNalType(8)));
        assert!(matches!(
            SpsInfo::parse(&[0x67, 0x64]),
            Err(H264Error::SpsMalformed(_))
        ));
    }

    #[test]
    fn iterates_nalus_and_catches_lies() {
        let frame = [0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x41];
        let nalus: Vec<_> = Nalus::new(&frame, 4).collect::<Result<_, _>>().unwrap();
        assert_eq!(nalus, vec![&[0x65, 0xaa][..], &[0x41][..]]);
        let lying = [0, 0, 0, 9, 0x65];
        let mut it = Nalus::new(&lying, 4);
        assert!(matches!(
            it.next(),
            Some(Err(H264Error::NalLength { claimed: 9, .. }))
        ));
        assert!(it.next().is_none());
    }

    #[test]
    fn annexb_round_trips_through_avcc_and_parameter_sets() {
        let cfg = AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap();
        let sps: Vec<&[u8]> = cfg.sps.iter().map(|b| &b[..]).collect();
        let pps: Vec<&[u8]> = cfg.pps.iter().map(|b| &b[..]).collect();
        let rebuilt = AvcConfig::from_parameter_sets(&sps, &pps).unwrap();
        assert_eq!(rebuilt.info, cfg.info);
        assert_eq!(rebuilt.codec_string(), cfg.codec_string());

        // An access unit as x264 writes it: AUD, SPS, PPS behind 4-byte start
        // codes, then two slices behind 3-byte ones, one ending in zeros.
        let mut au = vec![0, 0, 0, 1, 0x09, 0xf0];
        au.extend_from_slice(&cfg.annexb_parameter_sets());
        au.extend_from_slice(&[0, 0, 1, 0x65, 0xaa, 0xbb, 0, 0, 1, 0x65, 0xcc, 0x00, 0x00]);
        let avcc = annexb_to_avcc(&au);
        let nals: Vec<&[u8]> = Nalus::new(&avcc, 4).map(|n| n.unwrap()).collect();
        assert_eq!(nals, vec![&[0x65, 0xaa, 0xbb][..], &[0x65, 0xcc][..]]);
        assert!(annexb_nalus(&[0, 0, 0, 0]).is_empty());
        assert!(annexb_to_avcc(&[1, 2, 3]).is_empty());
    }
}
