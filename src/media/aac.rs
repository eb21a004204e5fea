//! AAC AudioSpecificConfig (ISO 14496-3 §1.6.2.1): object type, sample rate,
//! channels and frame length, parsed from untrusted bytes.

use bytes::Bytes;

use super::bits::BitReader;

const SAMPLE_RATES: [u32; 13] = [
    96_000, 88_200, 64_000, 48_000, 44_100, 32_000, 24_000, 22_050, 16_000, 12_000, 11_025, 8_000,
    7_350,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AacError {
    #[error("AudioSpecificConfig is truncated at {0}")]
    Truncated(&'static str),
    #[error("AudioSpecificConfig has reserved sampling frequency index {0}")]
    SampleRateIndex(u32),
    #[error("AudioSpecificConfig sample rate {0} Hz is out of range")]
    SampleRate(u32),
    #[error("AudioSpecificConfig object type {0} is not an AAC type streamd carries")]
    ObjectType(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct AacConfig {
    /// The AudioSpecificConfig bytes, verbatim (they go into the esds box).
    pub raw: Bytes,
    /// Audio object type: 2 = AAC-LC, 5 = SBR (HE-AAC), 29 = PS (HE-AACv2).
    pub object_type: u32,
    /// The core sampling rate in Hz (the rate of the AAC frames).
    pub sample_rate: u32,
    /// Channel configuration; 0 means "defined in-band by a PCE".
    pub channels: u8,
    /// PCM samples per AAC frame: 1024 (or 960).
    pub samples_per_frame: u32,
}

impl AacConfig {
    pub fn parse(raw: Bytes) -> Result<AacConfig, AacError> {
        let mut r = BitReader::new(&raw);
        let mut object_type = read_object_type(&mut r)?;
        let sample_rate = read_sample_rate(&mut r)?;
        let channels = r
            .bits(4)
            .ok_or(AacError::Truncated("channelConfiguration"))? as u8;
        if object_type == 5 || object_type == 29 {
            // Explicit SBR/PS: the extension rate, then the core object type.
            read_sample_rate(&mut r)?;
            object_type = read_object_type(&mut r)?;
        }
        let samples_per_frame = match object_type {
            1..=4 | 6 | 7 | 17 | 19..=22 => {
                if r.bit().ok_or(AacError::Truncated("frameLengthFlag"))? {
                    960
                } else {
                    1024
                }
            }
            other => return Err(AacError::ObjectType(other)),
        };
        // The codec string keeps the signalled type (2 for implicit SBR).
        let signalled = match raw.first() {
            Some(b) => u32::from(b >> 3),
            None => return Err(AacError::Truncated("audioObjectType")),
        };
        Ok(AacConfig {
            object_type: if signalled == 31 {
                object_type
            } else {
                signalled
            },
            sample_rate,
            channels,
            samples_per_frame,
            raw,
        })
    }

    /// The RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }
}

fn read_object_type(r: &mut BitReader<'_>) -> Result<u32, AacError> {
    let t = r.bits(5).ok_or(AacError::Truncated("audioObjectType"))?;
    if t == 31 {
        Ok(32 + r.bits(6).ok_or(AacError::Truncated("audioObjectTypeExt"))?)
    } else {
        Ok(t)
    }
}

fn read_sample_rate(r: &mut BitReader<'_>) -> Result<u32, AacError> {
    let index = r
        .bits(4)
        .ok_or(AacError::Truncated("samplingFrequencyIndex"))?;
    let rate = match index {
        15 => r.bits(24).ok_or(AacError::Truncated("samplingFrequency"))?,
        i if (i as usize) < SAMPLE_RATES.len() => SAMPLE_RATES[i as usize],
        i => return Err(AacError::SampleRateIndex(i)),
    };
    if !(1000..=192_000).contains(&rate) {
        return Err(AacError::SampleRate(rate));
    }
    Ok(rate)
}

/// One ADTS frame's header (ISO 13818-7 §6.2), as MPEG-TS carries AAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Adts {
    /// The AudioSpecificConfig this header stands for (2 bytes).
    pub config: [u8; 2],
    /// Bytes of header (7, or 9 with a CRC) before the raw frame.
    pub header_len: usize,
    /// The whole frame's length, header included.
    pub frame_len: usize,
    pub sample_rate: u32,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdtsError {
    #[error("no ADTS sync word")]
    Sync,
    #[error("ADTS header is truncated")]
    Truncated,
    #[error("ADTS layer {0} is not 0")]
    Layer(u8),
    #[error("ADTS frame length {0} is shorter than its header")]
    Length(usize),
    #[error("ADTS has reserved sampling frequency index {0}")]
    SampleRateIndex(u8),
    #[error("ADTS frames holding {0} raw data blocks are not carried")]
    Blocks(u8),
}

impl Adts {
    /// The ADTS header at the start of `data` (which may hold less than the
    /// whole frame: see [`Adts::frame_len`]).
    pub fn parse(data: &[u8]) -> Result<Adts, AdtsError> {
        if data.len() >= 2 && (data[0] != 0xff || data[1] & 0xf0 != 0xf0) {
            return Err(AdtsError::Sync);
        }
        let h: &[u8; 7] = data
            .get(..7)
            .and_then(|h| h.try_into().ok())
            .ok_or(AdtsError::Truncated)?;
        let layer = (h[1] >> 1) & 0x3;
        if layer != 0 {
            return Err(AdtsError::Layer(layer));
        }
        let protection_absent = h[1] & 1 == 1;
        let profile = h[2] >> 6;
        let index = (h[2] >> 2) & 0xf;
        let sample_rate = *SAMPLE_RATES
            .get(usize::from(index))
            .ok_or(AdtsError::SampleRateIndex(index))?;
        let channels = ((h[2] & 1) << 2) | (h[3] >> 6);
        let frame_len =
            (usize::from(h[3] & 0x3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        let blocks = h[6] & 0x3;
        let header_len = if protection_absent { 7 } else { 9 };
        if frame_len <= header_len {
            return Err(AdtsError::Length(frame_len));
        }
        if blocks != 0 {
            return Err(AdtsError::Blocks(blocks + 1));
        }
        // audioObjectType = profile + 1, 5 bits; index, 4; channels, 4.
        let asc =
            (u16::from(profile + 1) << 11) | (u16::from(index) << 7) | (u16::from(channels) << 3);
        Ok(Adts {
            config: asc.to_be_bytes(),
            header_len,
            frame_len,
            sample_rate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ADTS header: AAC-LC, 44.1 kHz, stereo, `len` bytes in all.
    pub(crate) fn adts_header(len: usize) -> [u8; 7] {
        [
            0xff,
            0xf1,
            (1 << 6) | (4 << 2),
            (2 << 6) | ((len >> 11) as u8 & 0x3),
            (len >> 3) as u8,
            ((len as u8 & 0x7) << 5) | 0x1f,
            0xfc,
        ]
    }

    #[test]
    fn adts_gives_the_audio_specific_config() {
        let h = Adts::parse(&adts_header(100)).unwrap();
        assert_eq!((h.header_len, h.frame_len, h.sample_rate), (7, 100, 44_100));
        assert_eq!(h.config, [0x12, 0x10]);
        let cfg = AacConfig::parse(Bytes::copy_from_slice(&h.config)).unwrap();
        assert_eq!((cfg.object_type, cfg.channels), (2, 2));
        assert_eq!(Adts::parse(&[0xff, 0xf1, 0x50]), Err(AdtsError::Truncated));
        assert_eq!(
            Adts::parse(&[0x47, 0x40, 0, 0, 0, 0, 0]),
            Err(AdtsError::Sync)
        );
        assert_eq!(Adts::parse(&adts_header(7)), Err(AdtsError::Length(7)));
        let mut reserved = adts_header(100);
        reserved[2] = (1 << 6) | (13 << 2);
        assert_eq!(Adts::parse(&reserved), Err(AdtsError::SampleRateIndex(13)));
        let mut blocks = adts_header(100);
        blocks[6] |= 1;
        assert_eq!(Adts::parse(&blocks), Err(AdtsError::Blocks(2)));
    }

    #[test]
    fn parses_lc_stereo_44k() {
        let cfg = AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert_eq!(cfg.object_type, 2);
        assert_eq!(cfg.sample_rate, 44_100);
        assert_eq!(cfg.channels, 2);
        assert_eq!(cfg.samples_per_frame, 1024);
        assert_eq!(cfg.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn parses_ffmpeg_aac_with_sync_extension() {
        // What ffmpeg's native AAC encoder writes for mono 44.1 kHz.
        let cfg = AacConfig::parse(Bytes::from_static(&[0x12, 0x08, 0x56, 0xe5, 0x00])).unwrap();
        assert_eq!(
            (cfg.object_type, cfg.sample_rate, cfg.channels),
            (2, 44_100, 1)
        );
    }

    #[test]
    fn parses_lc_mono_48k_960() {
        // type 2, index 3 (48k), channels 1, frameLengthFlag 1
        let cfg = AacConfig::parse(Bytes::from_static(&[0x11, 0x8c])).unwrap();
        assert_eq!(
            (cfg.sample_rate, cfg.channels, cfg.samples_per_frame),
            (48_000, 1, 960)
        );
    }

    #[test]
    fn parses_explicit_he_aac() {
        // type 5, index 6 (24k core), channels 2, ext index 3 (48k), core type 2
        let cfg = AacConfig::parse(Bytes::from_static(&[0x2b, 0x11, 0x88, 0x00])).unwrap();
        assert_eq!(cfg.object_type, 5);
        assert_eq!(cfg.sample_rate, 24_000);
    }

    #[test]
    fn rejects_bad_configs() {
        assert_eq!(
            AacConfig::parse(Bytes::new()),
            Err(AacError::Truncated("audioObjectType"))
        );
        assert_eq!(
            AacConfig::parse(Bytes::from_static(&[0x16, 0x90])),
            Err(AacError::SampleRateIndex(13))
        );
        assert_eq!(
            AacConfig::parse(Bytes::from_static(&[0x12])),
            Err(AacError::Truncated("samplingFrequencyIndex"))
        );
        // Escaped (explicit 24-bit) rate, one bit short.
        assert_eq!(
            AacConfig::parse(Bytes::from_static(&[0x17, 0x80, 0x00, 0x00])),
            Err(AacError::Truncated("samplingFrequency"))
        );
        // object type 0 (null)
        assert_eq!(
            AacConfig::parse(Bytes::from_static(&[0x02, 0x10])),
            Err(AacError::ObjectType(0))
        );
    }
}
