//! AV1 configuration: the av1C record (AV1 Codec ISO Media File Format
//! Binding §2.3), the sequence header OBU it carries (AV1 §5.5, for the
//! picture size), the RFC 6381 codec string, and the OBU walk that checks
//! a frame before it goes on the bus.
//!
//! Pure parsing of untrusted bytes: every size is checked against what is
//! there and every failure is an [`Av1Error`] naming what lied.

use bytes::Bytes;

use super::bits::BitReader;

const MAX_DIMENSION: u32 = 16_384;

pub const OBU_SEQUENCE_HEADER: u8 = 1;
pub const OBU_TEMPORAL_DELIMITER: u8 = 2;
pub const OBU_FRAME_HEADER: u8 = 3;
pub const OBU_FRAME: u8 = 6;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Av1Error {
    #[error("av1C record is {0} bytes, shorter than its 4-byte header")]
    TooShort(usize),
    #[error("av1C marker/version byte is {0:#04x}, expected 0x81")]
    Version(u8),
    #[error("av1C carries no sequence header OBU")]
    NoSequenceHeader,
    #[error("AV1 sequence header is truncated or malformed at {0}")]
    SequenceHeader(&'static str),
    #[error("AV1 frame size {width}x{height} is out of range")]
    Dimensions { width: u32, height: u32 },
    #[error("OBU at offset {offset}: {what}")]
    Obu { offset: usize, what: &'static str },
}

/// A parsed av1C record, `raw` verbatim for decoders and the sample entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Av1Config {
    pub raw: Bytes,
    pub seq_profile: u8,
    pub seq_level_idx_0: u8,
    pub seq_tier_0: bool,
    pub high_bitdepth: bool,
    pub twelve_bit: bool,
    pub monochrome: bool,
    pub chroma_subsampling_x: bool,
    pub chroma_subsampling_y: bool,
    pub chroma_sample_position: u8,
    pub initial_presentation_delay: Option<u8>,
    /// The configOBUs (a sequence header, maybe metadata).
    pub config_obus: Bytes,
    /// The sequence header's reduced_still_picture_header: every frame is
    /// a key frame.
    pub reduced_still_picture_header: bool,
    pub width: u32,
    pub height: u32,
}

impl Av1Config {
    pub fn parse(raw: Bytes) -> Result<Av1Config, Av1Error> {
        let d = &raw[..];
        if d.len() < 4 {
            return Err(Av1Error::TooShort(d.len()));
        }
        if d[0] != 0x81 {
            return Err(Av1Error::Version(d[0]));
        }
        let config_obus = raw.slice(4..);
        let mut header = None;
        for obu in Obus::new(&config_obus) {
            let obu = obu?;
            if obu.kind == OBU_SEQUENCE_HEADER {
                header = Some(SequenceHeader::parse(obu.payload, false)?);
                break;
            }
        }
        let h = header.ok_or(Av1Error::NoSequenceHeader)?;
        let (width, height) = (h.width, h.height);
        Ok(Av1Config {
            seq_profile: d[1] >> 5,
            seq_level_idx_0: d[1] & 0x1f,
            seq_tier_0: d[2] & 0x80 != 0,
            high_bitdepth: d[2] & 0x40 != 0,
            twelve_bit: d[2] & 0x20 != 0,
            monochrome: d[2] & 0x10 != 0,
            chroma_subsampling_x: d[2] & 0x08 != 0,
            chroma_subsampling_y: d[2] & 0x04 != 0,
            chroma_sample_position: d[2] & 0x03,
            initial_presentation_delay: (d[3] & 0x10 != 0).then_some((d[3] & 0x0f) + 1),
            config_obus,
            reduced_still_picture_header: h.reduced,
            width,
            height,
            raw,
        })
    }

    pub fn bit_depth(&self) -> u8 {
        match (self.seq_profile, self.high_bitdepth, self.twelve_bit) {
            (2, true, true) => 12,
            (_, true, _) => 10,
            _ => 8,
        }
    }

    /// The RFC 6381 codec string (the short form), e.g. `av01.0.04M.08`.
    pub fn codec_string(&self) -> String {
        format!(
            "av01.{}.{:02}{}.{:02}",
            self.seq_profile,
            self.seq_level_idx_0,
            if self.seq_tier_0 { 'H' } else { 'M' },
            self.bit_depth()
        )
    }
}

/// Checks that a frame is a well-formed sequence of OBUs, and returns it
/// without a leading temporal delimiter (ISO BMFF samples carry none).
pub fn check_frame(frame: Bytes) -> Result<Bytes, Av1Error> {
    let mut skip = 0;
    for (i, obu) in Obus::new(&frame).enumerate() {
        let obu = obu?;
        if i == 0 && obu.kind == OBU_TEMPORAL_DELIMITER {
            skip = obu.len;
        }
    }
    if skip == frame.len() {
        return Err(Av1Error::Obu {
            offset: skip,
            what: "the frame has no OBU but a temporal delimiter",
        });
    }
    Ok(frame.slice(skip..))
}

/// One OBU of a low-overhead bitstream.
pub struct Obu<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
    /// The whole OBU's length, header included.
    pub len: usize,
}

/// Iterates the OBUs of a buffer (AV1 §5.3). Yields an error, then stops,
/// when a header or size lies.
pub struct Obus<'a> {
    data: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Obus<'a> {
    pub fn new(data: &'a [u8]) -> Obus<'a> {
        Obus {
            data,
            pos: 0,
            failed: false,
        }
    }

    fn next_obu(&mut self) -> Result<Obu<'a>, Av1Error> {
        let offset = self.pos;
        let err = |what| Av1Error::Obu { offset, what };
        let d = &self.data[offset..];
        let header = d[0];
        if header & 0x80 != 0 {
            return Err(err("obu_forbidden_bit is set"));
        }
        let kind = (header >> 3) & 0x0f;
        let mut at = if header & 0x04 != 0 { 2 } else { 1 };
        if d.len() < at {
            return Err(err("the extension header is missing"));
        }
        let size = if header & 0x02 != 0 {
            let (size, n) =
                leb128(&d[at..]).ok_or_else(|| err("obu_size is truncated or over 32 bits"))?;
            at += n;
            usize::try_from(size).map_err(|_| err("obu_size is too large"))?
        } else {
            // No size field: the OBU runs to the end.
            d.len() - at
        };
        if size > d.len() - at {
            return Err(err("obu_size runs past the end of the frame"));
        }
        self.pos += at + size;
        Ok(Obu {
            kind,
            payload: &d[at..at + size],
            len: at + size,
        })
    }
}

impl<'a> Iterator for Obus<'a> {
    type Item = Result<Obu<'a>, Av1Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.data.len() {
            return None;
        }
        let r = self.next_obu();
        self.failed = r.is_err();
        Some(r)
    }
}

/// An unsigned LEB128 of at most 8 bytes (AV1 §4.10.5), and its length.
fn leb128(d: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in d.iter().take(8).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value <= u64::from(u32::MAX)).then_some((value, i + 1));
        }
    }
    None
}

/// What a sequence header OBU says (AV1 §5.5): what av1C repeats and the
/// maximum frame size.
struct SequenceHeader {
    profile: u8,
    reduced: bool,
    level0: u8,
    tier0: bool,
    width: u32,
    height: u32,
    high_bitdepth: bool,
    twelve_bit: bool,
    monochrome: bool,
    subsampling_x: bool,
    subsampling_y: bool,
    chroma_sample_position: u8,
}

impl SequenceHeader {
    /// Reads up to the frame size; with `color`, on through color_config().
    fn parse(payload: &[u8], color: bool) -> Result<SequenceHeader, Av1Error> {
        use Av1Error::SequenceHeader as M;
        let mut r = BitReader::new(payload);
        let profile = r.bits(3).ok_or(M("seq_profile"))? as u8;
        if profile > 2 {
            // 3-7 are reserved (AV1 6.4.1).
            return Err(M("seq_profile"));
        }
        r.skip(1).ok_or(M("still_picture"))?;
        let reduced = r.bit().ok_or(M("reduced_still_picture_header"))?;
        let (mut level0, mut tier0) = (0, false);
        if reduced {
            level0 = r.bits(5).ok_or(M("seq_level_idx"))? as u8;
        } else {
            let timing = r.bit().ok_or(M("timing_info_present_flag"))?;
            let mut decoder_model = false;
            let mut buffer_delay_len = 0;
            if timing {
                r.skip(64).ok_or(M("timing_info"))?;
                if r.bit().ok_or(M("equal_picture_interval"))? {
                    r.uvlc().ok_or(M("num_ticks_per_picture_minus_1"))?;
                }
                decoder_model = r.bit().ok_or(M("decoder_model_info_present_flag"))?;
                if decoder_model {
                    buffer_delay_len =
                        r.bits(5).ok_or(M("buffer_delay_length_minus_1"))? as usize + 1;
                    r.skip(42).ok_or(M("decoder_model_info"))?;
                }
            }
            let display_delay = r.bit().ok_or(M("initial_display_delay_present_flag"))?;
            let points = r.bits(5).ok_or(M("operating_points_cnt_minus_1"))? + 1;
            for i in 0..points {
                r.skip(12).ok_or(M("operating_point_idc"))?;
                let level = r.bits(5).ok_or(M("seq_level_idx"))? as u8;
                let tier = level > 7 && r.bit().ok_or(M("seq_tier"))?;
                if i == 0 {
                    (level0, tier0) = (level, tier);
                }
                if decoder_model && r.bit().ok_or(M("decoder_model_present_for_this_op"))? {
                    r.skip(2 * buffer_delay_len + 1)
                        .ok_or(M("operating_parameters_info"))?;
                }
                if display_delay
                    && r.bit()
                        .ok_or(M("initial_display_delay_present_for_this_op"))?
                {
                    r.skip(4).ok_or(M("initial_display_delay_minus_1"))?;
                }
            }
        }
        let w_bits = r.bits(4).ok_or(M("frame_width_bits_minus_1"))? + 1;
        let h_bits = r.bits(4).ok_or(M("frame_height_bits_minus_1"))? + 1;
        let width = r.bits(w_bits).ok_or(M("max_frame_width_minus_1"))? + 1;
        let height = r.bits(h_bits).ok_or(M("max_frame_height_minus_1"))? + 1;
        if width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(Av1Error::Dimensions { width, height });
        }
        let mut h = SequenceHeader {
            profile,
            reduced,
            level0,
            tier0,
            width,
            height,
            high_bitdepth: false,
            twelve_bit: false,
            monochrome: false,
            subsampling_x: true,
            subsampling_y: true,
            chroma_sample_position: 0,
        };
        if color {
            h.color_config(&mut r, reduced)?;
        }
        Ok(h)
    }

    /// The tools flags up to color_config() (AV1 §5.5.1), then
    /// color_config() itself (§5.5.2).
    fn color_config(&mut self, r: &mut BitReader<'_>, reduced: bool) -> Result<(), Av1Error> {
        use Av1Error::SequenceHeader as M;
        if !reduced && r.bit().ok_or(M("frame_id_numbers_present_flag"))? {
            r.skip(7).ok_or(M("frame id lengths"))?;
        }
        // use_128x128_superblock, enable_filter_intra, enable_intra_edge_filter
        r.skip(3).ok_or(M("superblock and intra flags"))?;
        if !reduced {
            // interintra, masked compound, warped motion, dual filter
            r.skip(4).ok_or(M("inter tool flags"))?;
            let order_hint = r.bit().ok_or(M("enable_order_hint"))?;
            if order_hint {
                r.skip(2)
                    .ok_or(M("enable_jnt_comp, enable_ref_frame_mvs"))?;
            }
            let force_screen_content = if r.bit().ok_or(M("seq_choose_screen_content_tools"))? {
                2
            } else {
                u32::from(r.bit().ok_or(M("seq_force_screen_content_tools"))?)
            };
            if force_screen_content > 0 && !r.bit().ok_or(M("seq_choose_integer_mv"))? {
                r.skip(1).ok_or(M("seq_force_integer_mv"))?;
            }
            if order_hint {
                r.skip(3).ok_or(M("order_hint_bits_minus_1"))?;
            }
        }
        // enable_superres, enable_cdef, enable_restoration
        r.skip(3).ok_or(M("filter flags"))?;
        self.high_bitdepth = r.bit().ok_or(M("high_bitdepth"))?;
        if self.profile == 2 && self.high_bitdepth {
            self.twelve_bit = r.bit().ok_or(M("twelve_bit"))?;
        }
        self.monochrome = self.profile != 1 && r.bit().ok_or(M("mono_chrome"))?;
        let (mut primaries, mut transfer, mut matrix) = (2, 2, 2);
        if r.bit().ok_or(M("color_description_present_flag"))? {
            primaries = r.bits(8).ok_or(M("color_primaries"))?;
            transfer = r.bits(8).ok_or(M("transfer_characteristics"))?;
            matrix = r.bits(8).ok_or(M("matrix_coefficients"))?;
        }
        if self.monochrome {
            (self.subsampling_x, self.subsampling_y) = (true, true);
            return Ok(());
        }
        if (primaries, transfer, matrix) == (1, 13, 0) {
            // sRGB: 4:4:4, full range.
            (self.subsampling_x, self.subsampling_y) = (false, false);
            return Ok(());
        }
        r.skip(1).ok_or(M("color_range"))?;
        (self.subsampling_x, self.subsampling_y) = match self.profile {
            0 => (true, true),
            1 => (false, false),
            _ if self.twelve_bit => {
                let x = r.bit().ok_or(M("subsampling_x"))?;
                (x, x && r.bit().ok_or(M("subsampling_y"))?)
            }
            _ => (true, false),
        };
        if self.subsampling_x && self.subsampling_y {
            self.chroma_sample_position = r.bits(2).ok_or(M("chroma_sample_position"))? as u8;
        }
        Ok(())
    }
}

impl Av1Config {
    /// Builds the av1C record for a sequence header OBU sent in band (what
    /// a WebRTC publisher sends), the OBU as its configOBUs.
    pub fn from_sequence_header(obu: &[u8]) -> Result<Av1Config, Av1Error> {
        let Some(Ok(parsed)) = Obus::new(obu).next() else {
            return Err(Av1Error::NoSequenceHeader);
        };
        if parsed.kind != OBU_SEQUENCE_HEADER {
            return Err(Av1Error::NoSequenceHeader);
        }
        let h = SequenceHeader::parse(parsed.payload, true)?;
        let mut raw = vec![
            0x81,
            (h.profile << 5) | (h.level0 & 0x1f),
            (u8::from(h.tier0) << 7)
                | (u8::from(h.high_bitdepth) << 6)
                | (u8::from(h.twelve_bit) << 5)
                | (u8::from(h.monochrome) << 4)
                | (u8::from(h.subsampling_x) << 3)
                | (u8::from(h.subsampling_y) << 2)
                | h.chroma_sample_position,
            0,
        ];
        raw.extend_from_slice(&obu[..parsed.len]);
        Av1Config::parse(Bytes::from(raw))
    }
}

/// Whether a temporal unit is a sync point: its first frame (or frame
/// header) OBU is a shown key frame (AV1 5.9.2). Under a reduced still
/// picture header (`reduced`) every frame is one.
pub fn is_key_frame(frame: &[u8], reduced: bool) -> bool {
    Obus::new(frame)
        .map_while(Result::ok)
        .find(|o| o.kind == OBU_FRAME || o.kind == OBU_FRAME_HEADER)
        .and_then(|o| o.payload.first().copied())
        // show_existing_frame = 0, frame_type = 0 (KEY_FRAME), show_frame = 1.
        .is_some_and(|b| reduced || b & 0xf0 == 0x10)
}

/// The sequence header OBU of a temporal unit, whole, if it has one.
pub fn sequence_header_obu(frame: &[u8]) -> Option<&[u8]> {
    let mut at = 0;
    for obu in Obus::new(frame) {
        let obu = obu.ok()?;
        if obu.kind == OBU_SEQUENCE_HEADER {
            return Some(&frame[at..at + obu.len]);
        }
        at += obu.len;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::media::hevc::tests::hex;

    /// The av1C FFmpeg 9 writes for SVT-AV1 at 320x240, 8-bit 4:2:0.
    pub const AV1C_320X240: &str = "81000c000a0b0200000521e7fde017c002";

    #[test]
    fn parses_svt_av1_record() {
        let c = Av1Config::parse(hex(AV1C_320X240)).unwrap();
        assert_eq!((c.width, c.height), (320, 240));
        assert_eq!(c.codec_string(), "av01.0.00M.08");
        assert!(c.chroma_subsampling_x && c.chroma_subsampling_y);
        let mut c = c;
        c.seq_profile = 2;
        c.high_bitdepth = true;
        c.twelve_bit = true;
        c.seq_level_idx_0 = 13;
        c.seq_tier_0 = true;
        assert_eq!(c.codec_string(), "av01.2.13H.12");
    }

    #[test]
    fn records_rebuild_from_an_in_band_sequence_header() {
        let c = Av1Config::parse(hex(AV1C_320X240)).unwrap();
        let rebuilt = Av1Config::from_sequence_header(&c.config_obus).unwrap();
        assert_eq!(rebuilt, c);
        assert!(Av1Config::from_sequence_header(&hex("12")).is_err());
        assert!(Av1Config::from_sequence_header(&hex("1200")).is_err());
        assert!(Av1Config::from_sequence_header(&[]).is_err());
        // Cut anywhere: an error, never a panic.
        for len in 0..c.config_obus.len() {
            assert!(Av1Config::from_sequence_header(&c.config_obus[..len]).is_err());
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let full = hex(AV1C_320X240);
        for len in 0..full.len() {
            assert!(Av1Config::parse(full.slice(..len)).is_err(), "{len} bytes");
        }
    }

    #[test]
    fn lies_are_named() {
        assert_eq!(Av1Config::parse(hex("01000c00")), Err(Av1Error::Version(1)));
        assert_eq!(
            Av1Config::parse(hex("81000c00")),
            Err(Av1Error::NoSequenceHeader)
        );
        // A sequence header claiming 2^32 bytes.
        assert!(matches!(
            Av1Config::parse(hex("81000c000a8080808010")),
            Err(Av1Error::Obu { offset: 0, .. })
        ));
        // A LEB128 that never ends.
        assert!(matches!(
            Av1Config::parse(hex("81000c000affffffffffffffffff")),
            Err(Av1Error::Obu { .. })
        ));
    }

    #[test]
    fn key_frames_are_shown_key_frames() {
        // OBU_FRAME (0x32), size 1: show_existing 0, KEY, show_frame 1.
        assert!(is_key_frame(&hex("320110"), false));
        // A hidden key frame, an inter frame, a shown existing frame.
        assert!(!is_key_frame(&hex("320100"), false));
        assert!(!is_key_frame(&hex("320130"), false));
        assert!(!is_key_frame(&hex("320180"), false));
        // OBU_FRAME_HEADER (0x1a) counts too; a TD alone does not.
        assert!(is_key_frame(&hex("12001a0110"), false));
        assert!(!is_key_frame(&hex("1200"), false));
        // Under a reduced still picture header, every frame.
        assert!(is_key_frame(&hex("320180"), true));
        // Reserved profiles are refused.
        assert!(matches!(
            Av1Config::from_sequence_header(&hex("0a0b6000000521e7fde017c002")),
            Err(Av1Error::SequenceHeader("seq_profile"))
        ));
    }

    #[test]
    fn frames_lose_their_temporal_delimiter() {
        // TD (size 0), then a frame OBU of 2 bytes.
        let f = hex("12003202aabb");
        assert_eq!(check_frame(f).unwrap(), hex("3202aabb"));
        // No TD: as it came.
        assert_eq!(check_frame(hex("3202aabb")).unwrap(), hex("3202aabb"));
        // A size that runs past the end, and a forbidden bit.
        assert!(check_frame(hex("3205aabb")).is_err());
        assert!(check_frame(hex("b200")).is_err());
        // Nothing but a temporal delimiter, or nothing at all.
        assert!(check_frame(hex("1200")).is_err());
        assert!(check_frame(Bytes::new()).is_err());
        // Without a size field the OBU runs to the end.
        assert_eq!(check_frame(hex("30aabb")).unwrap(), hex("30aabb"));
    }
}
