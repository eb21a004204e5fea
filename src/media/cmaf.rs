//! CMAF (fragmented MP4) boxes for one track, written with mp4-atom: the
//! init segment (`ftyp` + `moov`) and media fragments (`moof` + `mdat`),
//! and read back ([`read_init`], [`read_fragment`]) by a cluster edge that
//! pulls a track from its origin.
//!
//! Sans-IO and allocation-light: a fragment is one buffer holding the `moof`
//! and the samples' bytes, copied once. Reading trusts nothing: every
//! length is checked against the bytes present.

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{
    Audio, Av01, Av1c, Avc1, Avcc, Codec, Dinf, Dref, DrefEntry, Encode, Ftyp, Hdlr, Hvc1, Hvcc,
    Mdhd, Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsc, Stsd, Stsz, Stts,
    Tfdt, Tfhd, Tkhd, Traf, Trak, Trex, Trun, TrunEntry, TrunSamples, Url, Visual, Vmhd,
};

use crate::media::{AacConfig, Av1Config, AvcConfig, CodecConfig, HevcConfig, OpusConfig};

/// Every CMAF track streamd writes is alone in its file, as track 1.
pub const TRACK_ID: u32 = 1;

/// `sample_depends_on = 2` (an I-frame: depends on nothing).
const FLAGS_SYNC: u32 = 0x0200_0000;
/// `sample_depends_on = 1`, `sample_is_non_sync_sample = 1`.
const FLAGS_NON_SYNC: u32 = 0x0101_0000;

#[derive(Debug, thiserror::Error)]
pub enum CmafError {
    #[error("mp4 encoding failed: {0}")]
    Encode(#[from] mp4_atom::Error),
    #[error("fragment of {0} bytes does not fit a 32-bit box")]
    TooLarge(usize),
    #[error("sample decode time {0} is negative")]
    NegativeTime(i64),
    #[error("{0} is not carried in CMAF here")]
    Unsupported(&'static str),
    #[error("malformed CMAF: {0}")]
    Malformed(String),
}

fn malformed(what: impl std::fmt::Display) -> CmafError {
    CmafError::Malformed(what.to_string())
}

/// One sample of a fragment, in the track's timescale.
#[derive(Clone, Debug)]
pub struct Sample {
    pub duration: u32,
    /// PTS - DTS.
    pub composition_offset: i32,
    pub keyframe: bool,
    pub data: Bytes,
}

/// The init segment for a track with timescale `timescale`.
pub fn init_segment(config: &CodecConfig, timescale: u32) -> Result<Bytes, CmafError> {
    let codec = match config {
        CodecConfig::H264(avc) => Codec::Avc1(avc1(avc)),
        CodecConfig::Hevc(hevc) => Codec::Hvc1(hvc1(hevc)),
        CodecConfig::Av1(av1) => Codec::Av01(av01(av1)),
        CodecConfig::Aac(aac) => Codec::Mp4a(mp4a(aac)),
        CodecConfig::Opus(opus) => Codec::Opus(opus_entry(opus)),
    };
    let video = config.is_video();
    let (handler, name) = if video {
        (b"vide", "streamd video")
    } else {
        (b"soun", "streamd audio")
    };
    let (vmhd, smhd) = (video.then(Vmhd::default), (!video).then(Smhd::default));
    let (width, height) = config.video_size().unwrap_or_default();
    let trak = Trak {
        tkhd: Tkhd {
            track_id: TRACK_ID,
            enabled: true,
            in_movie: true,
            volume: if config.is_video() {
                0.into()
            } else {
                mp4_atom::FixedPoint::new(1, 0)
            },
            width: mp4_atom::FixedPoint::new(u16::try_from(width).unwrap_or(u16::MAX), 0),
            height: mp4_atom::FixedPoint::new(u16::try_from(height).unwrap_or(u16::MAX), 0),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd {
                timescale,
                language: "und".into(),
                ..Default::default()
            },
            hdlr: Hdlr {
                handler: handler.into(),
                name: name.into(),
            },
            minf: Minf {
                vmhd,
                smhd,
                dinf: Dinf {
                    dref: Dref {
                        entries: vec![DrefEntry::Url(Url::default())],
                    },
                },
                stbl: Stbl {
                    stsd: Stsd {
                        codecs: vec![codec],
                    },
                    stts: Stts::default(),
                    stsc: Stsc::default(),
                    stsz: Stsz::default(),
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    };
    let moov = Moov {
        mvhd: Mvhd {
            timescale: 1000,
            rate: mp4_atom::FixedPoint::new(1, 0),
            volume: mp4_atom::FixedPoint::new(1, 0),
            next_track_id: TRACK_ID + 1,
            ..Default::default()
        },
        mvex: Some(Mvex {
            mehd: None,
            trex: vec![Trex {
                track_id: TRACK_ID,
                default_sample_description_index: 1,
                default_sample_duration: 0,
                default_sample_size: 0,
                default_sample_flags: 0,
            }],
        }),
        trak: vec![trak],
        ..Default::default()
    };
    let ftyp = Ftyp {
        major_brand: b"iso6".into(),
        minor_version: 0,
        compatible_brands: vec![b"iso6".into(), b"cmfc".into(), b"mp41".into()],
    };
    let mut out = Vec::with_capacity(1024);
    ftyp.encode(&mut out)?;
    moov.encode(&mut out)?;
    Ok(Bytes::from(out))
}

fn avc1(avc: &AvcConfig) -> Avc1 {
    // The avcC record goes in verbatim when mp4-atom can read it back (it
    // keeps the high-profile extension); otherwise from the parameter sets.
    let avcc = decode_avcc(&avc.raw).unwrap_or_else(|| Avcc {
        configuration_version: 1,
        avc_profile_indication: avc.profile,
        profile_compatibility: avc.compatibility,
        avc_level_indication: avc.level,
        length_size: avc.nal_length_size,
        sequence_parameter_sets: avc.sps.iter().map(|s| s.to_vec()).collect(),
        picture_parameter_sets: avc.pps.iter().map(|s| s.to_vec()).collect(),
        ext: None,
    });
    Avc1 {
        visual: visual(avc.info.width, avc.info.height),
        avcc,
        ..Default::default()
    }
}

fn decode_avcc(raw: &[u8]) -> Option<Avcc> {
    decode_record(raw)
}

/// A configuration record (a box's body) read back by mp4-atom.
fn decode_record<T: mp4_atom::Atom>(raw: &[u8]) -> Option<T> {
    use mp4_atom::Decode;
    let mut boxed = Vec::with_capacity(raw.len() + 8);
    boxed.extend_from_slice(&u32::try_from(raw.len() + 8).ok()?.to_be_bytes());
    boxed.extend_from_slice(&<[u8; 4]>::from(T::KIND));
    boxed.extend_from_slice(raw);
    T::decode(&mut boxed.as_slice()).ok()
}

fn visual(width: u32, height: u32) -> Visual {
    Visual {
        data_reference_index: 1,
        width: u16::try_from(width).unwrap_or(u16::MAX),
        height: u16::try_from(height).unwrap_or(u16::MAX),
        ..Default::default()
    }
}

/// `hvc1`: the parameter sets are in the sample entry (and may repeat in
/// band), as Apple's HLS authoring rules ask.
fn hvc1(hevc: &HevcConfig) -> Hvc1 {
    // The record is already validated; mp4-atom re-encodes it as it came.
    let hvcc = decode_record::<Hvcc>(&hevc.raw).unwrap_or_else(|| Hvcc {
        configuration_version: 1,
        general_profile_space: hevc.profile_space,
        general_tier_flag: hevc.high_tier,
        general_profile_idc: hevc.profile_idc,
        general_profile_compatibility_flags: hevc.compatibility.to_be_bytes(),
        general_constraint_indicator_flags: hevc.constraints,
        general_level_idc: hevc.level_idc,
        chroma_format_idc: hevc.chroma_format_idc,
        bit_depth_luma_minus8: hevc.bit_depth_luma - 8,
        bit_depth_chroma_minus8: hevc.bit_depth_chroma - 8,
        length_size_minus_one: hevc.nal_length_size - 1,
        arrays: hevc
            .arrays
            .iter()
            .map(|(completeness, nal_unit_type, nalus)| mp4_atom::HvcCArray {
                completeness: *completeness,
                nal_unit_type: *nal_unit_type,
                nalus: nalus.iter().map(|n| n.to_vec()).collect(),
            })
            .collect(),
        ..Default::default()
    });
    Hvc1 {
        visual: visual(hevc.width, hevc.height),
        hvcc,
        ..Default::default()
    }
}

fn av01(av1: &Av1Config) -> Av01 {
    Av01 {
        visual: visual(av1.width, av1.height),
        av1c: Av1c {
            seq_profile: av1.seq_profile,
            seq_level_idx_0: av1.seq_level_idx_0,
            seq_tier_0: av1.seq_tier_0,
            high_bitdepth: av1.high_bitdepth,
            twelve_bit: av1.twelve_bit,
            monochrome: av1.monochrome,
            chroma_subsampling_x: av1.chroma_subsampling_x,
            chroma_subsampling_y: av1.chroma_subsampling_y,
            chroma_sample_position: av1.chroma_sample_position,
            initial_presentation_delay: av1.initial_presentation_delay,
            config_obus: av1.config_obus.to_vec(),
        },
        ..Default::default()
    }
}

fn mp4a(aac: &AacConfig) -> Mp4a {
    use mp4_atom::esds::{DecoderConfig, DecoderSpecific, EsDescriptor, SLConfig};
    let asc = &aac.raw;
    Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(aac.channels.max(1)),
            sample_size: 16,
            sample_rate: mp4_atom::FixedPoint::new(u16::try_from(aac.sample_rate).unwrap_or(0), 0),
        },
        esds: mp4_atom::Esds {
            es_desc: EsDescriptor {
                es_id: 1,
                depends_on_es_id: None,
                url: None,
                ocr_es_id: None,
                stream_priority: 0,
                dec_config: DecoderConfig {
                    object_type_indication: 0x40, // MPEG-4 Audio
                    stream_type: 0x05,            // audio
                    up_stream: 0,
                    buffer_size_db: Default::default(),
                    max_bitrate: 0,
                    avg_bitrate: 0,
                    dec_specific: Some(DecoderSpecific {
                        profile: asc.first().map(|b| b >> 3).unwrap_or(2),
                        freq_index: 0,
                        chan_conf: aac.channels,
                        raw: asc.to_vec(),
                    }),
                },
                sl_config: SLConfig {},
            },
        },
        btrt: None,
        taic: None,
    }
}

/// `Opus` with its `dOps` (the Opus-in-ISOBMFF encapsulation).
fn opus_entry(opus: &OpusConfig) -> mp4_atom::Opus {
    mp4_atom::Opus {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(opus.channels.max(1)),
            sample_size: 16,
            sample_rate: mp4_atom::FixedPoint::new(48_000, 0),
        },
        dops: mp4_atom::Dops {
            output_channel_count: opus.channels,
            pre_skip: opus.pre_skip,
            input_sample_rate: opus.input_sample_rate,
            output_gain: 0,
            channel_mapping: None,
        },
        btrt: None,
    }
}

/// A `prft` box: the frame of the next fragment whose decode time is
/// `media_time` (track timescale) was taken in at `wallclock`.
pub fn producer_reference_time(
    wallclock: std::time::SystemTime,
    media_time: u64,
) -> Result<Bytes, CmafError> {
    let prft = mp4_atom::Prft {
        reference_track_id: TRACK_ID,
        ntp_timestamp: to_ntp(wallclock),
        media_time,
        utc_time_semantics: mp4_atom::ReferenceTime::Input,
    };
    let mut out = Vec::with_capacity(32);
    prft.encode(&mut out)?;
    Ok(Bytes::from(out))
}

/// Seconds between 1900 (NTP's epoch) and 1970.
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

fn to_ntp(t: std::time::SystemTime) -> u64 {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    // NTP seconds wrap in 2036 (era 1): the low 32 bits, as RFC 4330 says.
    let secs = (d.as_secs() + NTP_UNIX_OFFSET) & 0xffff_ffff;
    // Rounded both ways: a nanosecond time comes back as it went.
    let frac = ((u64::from(d.subsec_nanos()) << 32) + 500_000_000) / 1_000_000_000;
    (secs << 32) | frac
}

/// The time an NTP timestamp names (1970 to 2104; earlier is the epoch).
pub fn from_ntp(ntp: u64) -> std::time::SystemTime {
    // Seconds below 2^31 are era 1 (after February 2036), as RFC 4330
    // reads them.
    let mut secs = ntp >> 32;
    if secs < 1 << 31 {
        secs += 1 << 32;
    }
    let nanos = ((ntp & 0xffff_ffff) * 1_000_000_000 + (1 << 31)) >> 32;
    // Before 1970 (a peer's word): the epoch.
    secs.checked_sub(NTP_UNIX_OFFSET)
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(std::time::Duration::new(s, nanos as u32)))
        .unwrap_or(std::time::UNIX_EPOCH)
}

/// The type and total size of the box starting at `buf`, once its header
/// is there (`None` until then). Sizes of 0 (to the end of the file) and
/// 64-bit sizes are refused: a stream of fragments uses neither.
pub fn box_header(buf: &[u8]) -> Result<Option<([u8; 4], usize)>, CmafError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let size = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let kind = [buf[4], buf[5], buf[6], buf[7]];
    if size < 8 {
        return Err(malformed(format_args!(
            "box {} has size {size}",
            String::from_utf8_lossy(&kind)
        )));
    }
    Ok(Some((kind, size)))
}

/// The codec configuration and timescale of a one-track init segment
/// (`ftyp` + `moov`, as [`init_segment`] writes them).
pub fn read_init(data: &[u8]) -> Result<(CodecConfig, u32), CmafError> {
    use mp4_atom::{Any, Decode};
    let mut buf = data;
    let mut moov = None;
    while !buf.is_empty() {
        match Any::decode(&mut buf).map_err(malformed)? {
            Any::Moov(m) => moov = Some(m),
            Any::Ftyp(_) => {}
            other => {
                return Err(malformed(format_args!(
                    "{:?} in an init segment",
                    other.kind()
                )));
            }
        }
    }
    let moov = moov.ok_or_else(|| malformed("no moov"))?;
    let [trak] = moov.trak.as_slice() else {
        return Err(malformed(format_args!("{} tracks", moov.trak.len())));
    };
    let timescale = trak.mdia.mdhd.timescale;
    if timescale == 0 {
        return Err(malformed("timescale 0"));
    }
    let [codec] = trak.mdia.minf.stbl.stsd.codecs.as_slice() else {
        return Err(malformed("not one sample entry"));
    };
    fn body(atom: &impl Encode) -> Result<Bytes, CmafError> {
        let mut out = Vec::new();
        atom.encode(&mut out)?;
        Ok(Bytes::from(out).slice(8..))
    }
    let config = match codec {
        Codec::Avc1(a) => CodecConfig::H264(AvcConfig::parse(body(&a.avcc)?).map_err(malformed)?),
        Codec::Hvc1(h) => CodecConfig::Hevc(HevcConfig::parse(body(&h.hvcc)?).map_err(malformed)?),
        Codec::Av01(a) => CodecConfig::Av1(Av1Config::parse(body(&a.av1c)?).map_err(malformed)?),
        Codec::Mp4a(m) => {
            let asc = m
                .esds
                .es_desc
                .dec_config
                .dec_specific
                .as_ref()
                .ok_or_else(|| malformed("mp4a without a decoder config"))?;
            CodecConfig::Aac(AacConfig::parse(Bytes::from(asc.raw.clone())).map_err(malformed)?)
        }
        Codec::Opus(o) => CodecConfig::Opus(OpusConfig {
            channels: o.dops.output_channel_count,
            pre_skip: o.dops.pre_skip,
            input_sample_rate: o.dops.input_sample_rate,
        }),
        _ => return Err(CmafError::Unsupported("this sample entry")),
    };
    Ok((config, timescale))
}

/// The most samples [`read_fragment`] takes from one fragment (streamd
/// writes a part's worth, a few dozen; a cluster pull, one).
pub const MAX_FRAGMENT_SAMPLES: usize = 1024;

/// The decode time of the first sample and the samples of one `moof` +
/// `mdat` pair (`data`, the two boxes back to back, as [`fragment`] writes
/// them). Samples share `data`'s buffer.
pub fn read_fragment(data: &Bytes) -> Result<(u64, Vec<Sample>), CmafError> {
    use mp4_atom::Decode;
    let (kind, moof_size) = box_header(data)?.ok_or_else(|| malformed("short fragment"))?;
    if &kind != b"moof" || moof_size > data.len() {
        return Err(malformed("a fragment must start with a whole moof"));
    }
    let moof = Moof::decode(&mut &data[..moof_size]).map_err(malformed)?;
    let (mdat_kind, mdat_size) =
        box_header(&data[moof_size..])?.ok_or_else(|| malformed("no mdat after the moof"))?;
    if &mdat_kind != b"mdat" || moof_size + mdat_size != data.len() {
        return Err(malformed(
            "the moof must be followed by its whole mdat, alone",
        ));
    }
    let [traf] = moof.traf.as_slice() else {
        return Err(malformed("not one traf"));
    };
    let base = traf
        .tfdt
        .as_ref()
        .ok_or_else(|| malformed("no tfdt"))?
        .base_media_decode_time;
    let mut samples = Vec::new();
    for trun in &traf.trun {
        let offset = trun
            .data_offset
            .and_then(|o| usize::try_from(o).ok())
            .ok_or_else(|| malformed("trun without a data offset"))?;
        let mut at = offset;
        // Only per-sample entries name sizes: a bare count (which may
        // claim four billion samples) is refused before anything is made.
        let TrunSamples::Explicit(entries) = &trun.samples else {
            return Err(malformed("trun without per-sample sizes"));
        };
        if samples.len() + entries.len() > MAX_FRAGMENT_SAMPLES {
            return Err(malformed(format_args!(
                "more than {MAX_FRAGMENT_SAMPLES} samples in a fragment"
            )));
        }
        for e in entries {
            let size = e.size.ok_or_else(|| malformed("sample without a size"))? as usize;
            let end = at
                .checked_add(size)
                .filter(|end| *end <= data.len() && at >= moof_size + 8)
                .ok_or_else(|| malformed("a sample lies outside the mdat"))?;
            let flags = e.flags.unwrap_or(FLAGS_NON_SYNC);
            samples.push(Sample {
                duration: e.duration.unwrap_or(0),
                composition_offset: i32::try_from(e.cts.unwrap_or(0))
                    .map_err(|_| malformed("composition offset out of range"))?,
                keyframe: flags & 0x0001_0000 == 0,
                data: data.slice(at..end),
            });
            at = end;
        }
    }
    Ok((base, samples))
}

/// A `moof` + `mdat` holding `samples`, whose first sample decodes at
/// `base_decode_time` (track timescale).
pub fn fragment(
    sequence: u32,
    base_decode_time: i64,
    samples: &[Sample],
) -> Result<Bytes, CmafError> {
    let base =
        u64::try_from(base_decode_time).map_err(|_| CmafError::NegativeTime(base_decode_time))?;
    let payload: usize = samples.iter().map(|s| s.data.len()).sum();
    let entries = samples
        .iter()
        .map(|s| TrunEntry {
            duration: Some(s.duration),
            size: Some(s.data.len() as u32),
            flags: Some(if s.keyframe {
                FLAGS_SYNC
            } else {
                FLAGS_NON_SYNC
            }),
            cts: Some(i64::from(s.composition_offset)),
        })
        .collect();
    let mut moof = Moof {
        mfhd: Mfhd {
            sequence_number: sequence,
        },
        traf: vec![Traf {
            tfhd: Tfhd {
                track_id: TRACK_ID,
                default_base_is_moof: true,
                ..Default::default()
            },
            tfdt: Some(Tfdt {
                base_media_decode_time: base,
            }),
            trun: vec![Trun {
                data_offset: Some(0),
                samples: TrunSamples::Explicit(entries),
            }],
            ..Default::default()
        }],
    };
    // The data offset counts from the start of the moof to the first sample
    // byte; the moof's size does not depend on the offset's value.
    let mut head = Vec::with_capacity(128 + samples.len() * 16);
    moof.encode(&mut head)?;
    let offset = head.len() + 8;
    moof.traf[0].trun[0].data_offset =
        Some(i32::try_from(offset).map_err(|_| CmafError::TooLarge(offset))?);
    head.clear();
    moof.encode(&mut head)?;

    let mdat_size = payload + 8;
    let mdat_size32 = u32::try_from(mdat_size).map_err(|_| CmafError::TooLarge(mdat_size))?;
    let mut out = BytesMut::with_capacity(head.len() + mdat_size);
    out.put_slice(&head);
    out.put_u32(mdat_size32);
    out.put_slice(b"mdat");
    for s in samples {
        out.put_slice(&s.data);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mp4_atom::{Any, Decode};

    fn avc() -> CodecConfig {
        CodecConfig::H264(
            AvcConfig::parse(Bytes::from_static(crate::media::h264::tests::AVCC_320X240)).unwrap(),
        )
    }

    #[test]
    fn init_segment_round_trips() {
        let init = init_segment(&avc(), 90_000).unwrap();
        let mut buf = &init[..];
        let ftyp = Any::decode(&mut buf).unwrap();
        assert!(matches!(ftyp, Any::Ftyp(_)));
        let Any::Moov(moov) = Any::decode(&mut buf).unwrap() else {
            panic!("no moov")
        };
        assert!(buf.is_empty());
        let trak = &moov.trak[0];
        assert_eq!(trak.mdia.mdhd.timescale, 90_000);
        let Codec::Avc1(avc1) = &trak.mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not avc1")
        };
        assert_eq!((avc1.visual.width, avc1.visual.height), (320, 240));
        assert_eq!(avc1.avcc.avc_profile_indication, 0x64);
        assert!(avc1.avcc.ext.is_some(), "high-profile extension kept");
        assert_eq!(moov.mvex.unwrap().trex[0].track_id, TRACK_ID);

        let aac = CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap());
        let init = init_segment(&aac, 44_100).unwrap();
        let mut buf = &init[..];
        Any::decode(&mut buf).unwrap();
        let Any::Moov(moov) = Any::decode(&mut buf).unwrap() else {
            panic!()
        };
        let Codec::Mp4a(mp4a) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
            panic!("not mp4a")
        };
        assert_eq!(mp4a.audio.channel_count, 2);
        let dec = mp4a.esds.es_desc.dec_config.dec_specific.as_ref().unwrap();
        assert_eq!(dec.raw, vec![0x12, 0x10]);
    }

    #[test]
    fn hevc_and_av1_sample_entries_carry_their_records() {
        use crate::media::av1::tests::AV1C_320X240;
        use crate::media::hevc::tests::{HVCC_320X240, hex};
        let hevc = HevcConfig::parse(hex(HVCC_320X240)).unwrap();
        let av1 = Av1Config::parse(hex(AV1C_320X240)).unwrap();
        for config in [CodecConfig::Hevc(hevc), CodecConfig::Av1(av1)] {
            let init = init_segment(&config, 90_000).unwrap();
            let mut buf = &init[..];
            let _ftyp = Any::decode(&mut buf).unwrap();
            let Any::Moov(moov) = Any::decode(&mut buf).unwrap() else {
                panic!("no moov")
            };
            let trak = &moov.trak[0];
            assert_eq!(trak.mdia.hdlr.handler, b"vide".into());
            assert!(trak.mdia.minf.vmhd.is_some());
            let entry = &trak.mdia.minf.stbl.stsd.codecs[0];
            // The record comes back as it went in.
            let mut record = Vec::new();
            match (entry, &config) {
                (Codec::Hvc1(h), CodecConfig::Hevc(c)) => {
                    assert_eq!((h.visual.width, h.visual.height), (320, 240));
                    h.hvcc.encode(&mut record).unwrap();
                    assert_eq!(&record[8..], &c.raw[..]);
                }
                (Codec::Av01(a), CodecConfig::Av1(c)) => {
                    assert_eq!((a.visual.width, a.visual.height), (320, 240));
                    a.av1c.encode(&mut record).unwrap();
                    assert_eq!(&record[8..], &c.raw[..]);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn init_segments_read_back_as_their_config() {
        use crate::media::av1::tests::AV1C_320X240;
        use crate::media::hevc::tests::{HVCC_320X240, hex};
        let configs = [
            avc(),
            CodecConfig::Hevc(HevcConfig::parse(hex(HVCC_320X240)).unwrap()),
            CodecConfig::Av1(Av1Config::parse(hex(AV1C_320X240)).unwrap()),
            CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap()),
            CodecConfig::Opus(OpusConfig {
                channels: 2,
                pre_skip: 312,
                input_sample_rate: 44_100,
            }),
        ];
        for config in configs {
            let init = init_segment(&config, 48_000).unwrap();
            let (back, timescale) = read_init(&init).unwrap();
            assert_eq!(back, config);
            assert_eq!(timescale, 48_000);
            // Every cut is an error, not a panic or a partial config.
            for cut in 0..init.len() {
                assert!(read_init(&init[..cut]).is_err() || cut == 0, "cut at {cut}");
            }
        }
        assert!(read_init(&[]).is_err());
    }

    #[test]
    fn fragments_read_back_and_cuts_are_refused() {
        let samples = vec![Sample {
            duration: 0,
            composition_offset: 3000,
            keyframe: true,
            data: Bytes::from_static(b"frame"),
        }];
        let frag = fragment(3, 123_456, &samples).unwrap();
        let (base, back) = read_fragment(&frag).unwrap();
        assert_eq!(base, 123_456);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].data, samples[0].data);
        assert_eq!(back[0].composition_offset, 3000);
        assert!(back[0].keyframe);
        let delta = fragment(
            4,
            0,
            &[Sample {
                keyframe: false,
                ..samples[0].clone()
            }],
        )
        .unwrap();
        assert!(!read_fragment(&delta).unwrap().1[0].keyframe);
        for cut in 0..frag.len() {
            assert!(read_fragment(&frag.slice(..cut)).is_err(), "cut at {cut}");
        }
        // A sample claiming more than the mdat holds.
        let mut lying = frag.to_vec();
        let mdat_at = lying.len() - 5 - 8;
        lying[mdat_at..mdat_at + 4].copy_from_slice(&100u32.to_be_bytes());
        assert!(read_fragment(&Bytes::from(lying)).is_err());
    }

    #[test]
    fn a_trun_without_sizes_is_refused_before_anything_is_made() {
        let mut moof = Moof {
            mfhd: Mfhd { sequence_number: 1 },
            traf: vec![Traf {
                tfhd: Tfhd {
                    track_id: TRACK_ID,
                    default_base_is_moof: true,
                    ..Default::default()
                },
                tfdt: Some(Tfdt {
                    base_media_decode_time: 0,
                }),
                trun: vec![Trun {
                    data_offset: Some(0),
                    samples: TrunSamples::Inherited {
                        count: u32::MAX,
                        first_flags: None,
                    },
                }],
                ..Default::default()
            }],
        };
        let mut b = Vec::new();
        moof.encode(&mut b).unwrap();
        moof.traf[0].trun[0].data_offset = Some(b.len() as i32 + 8);
        b.clear();
        moof.encode(&mut b).unwrap();
        b.extend_from_slice(&[0, 0, 0, 8, b'm', b'd', b'a', b't']);
        let err = read_fragment(&Bytes::from(b)).unwrap_err();
        assert!(err.to_string().contains("per-sample"), "{err}");
    }

    #[test]
    fn ntp_times_round_trip() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_800_000_000, 123_456_789);
        let back = from_ntp(to_ntp(t));
        assert_eq!(back, t);
        let prft = producer_reference_time(t, 90_000).unwrap();
        assert_eq!(&prft[4..8], b"prft");
        // After NTP's seconds wrap in 2036.
        let later = std::time::UNIX_EPOCH + std::time::Duration::new(2_200_000_000, 5);
        assert_eq!(from_ntp(to_ntp(later)), later);
        // Before 1970, and every extreme (the fuzzer's first find).
        for ntp in [
            0x9000_0000 << 32,
            1 << 63,
            u64::MAX,
            0,
            0x8000_0000_ffff_ffff,
        ] {
            let _ = from_ntp(ntp);
        }
        assert_eq!(from_ntp(0x8000_0000 << 32), std::time::UNIX_EPOCH);
    }

    #[test]
    fn fragment_points_at_its_samples() {
        let samples = vec![
            Sample {
                duration: 3000,
                composition_offset: 6000,
                keyframe: true,
                data: Bytes::from_static(b"first"),
            },
            Sample {
                duration: 3000,
                composition_offset: -3000,
                keyframe: false,
                data: Bytes::from_static(b"second!"),
            },
        ];
        let frag = fragment(7, 900_000, &samples).unwrap();
        let mut buf = &frag[..];
        let Any::Moof(moof) = Any::decode(&mut buf).unwrap() else {
            panic!()
        };
        let traf = &moof.traf[0];
        assert_eq!(moof.mfhd.sequence_number, 7);
        assert_eq!(traf.tfdt.as_ref().unwrap().base_media_decode_time, 900_000);
        let offset = traf.trun[0].data_offset.unwrap() as usize;
        assert_eq!(&frag[offset..offset + 5], b"first");
        assert_eq!(&frag[offset + 5..], b"second!");
        let e: Vec<_> = traf.trun[0].samples.iter().collect();
        assert_eq!(e[1].cts, Some(-3000));
        assert_eq!(e[0].flags, Some(FLAGS_SYNC));
        assert!(matches!(
            fragment(1, -1, &samples),
            Err(CmafError::NegativeTime(-1))
        ));
    }
}
