//! The FFmpeg calls, behind small safe types: a source decoder (H.264, HEVC
//! or AV1), a scaler and
//! libx264 encoder per rung, and AAC ↔ Opus. Everything FFmpeg allocates is
//! owned by a value here and freed when it drops.
//!
//! The few raw accesses (extradata, VBV buffer size, a zero-copy frame
//! reference) are the fields ffmpeg-next does not expose; each is commented.

use std::sync::Once;

use bytes::Bytes;
use ff::ffi;
use ffmpeg_next as ff;

use crate::media::h264::{NAL_PPS, NAL_SPS, annexb_nalus, annexb_to_avcc, nal_type};
use crate::media::{AacConfig, AvcConfig, CodecConfig, OpusConfig};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("FFmpeg has no {0}")]
    Missing(&'static str),
    #[error("{what}: {source}")]
    Ffmpeg {
        what: &'static str,
        source: ff::Error,
    },
    #[error("the encoder's parameter sets are unusable: {0}")]
    Headers(String),
}

fn ff_err(what: &'static str) -> impl FnOnce(ff::Error) -> CodecError {
    move |source| CodecError::Ffmpeg { what, source }
}

/// Initialises FFmpeg once per process, logging only errors: x264's banner
/// and per-encoder statistics are not for our logs.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Error);
    });
}

/// FFmpeg's names for the software codecs streamd opens by name.
const LIBDAV1D: &str = "libdav1d";
const LIBX264: &str = "libx264";
const LIBOPUS: &str = "libopus";
const AAC_ENCODER: &str = "aac";

/// An FFmpeg codec the transcoder opens. The openers find their codecs
/// here, and `missing()` checks the same list, so the check cannot drift
/// from what is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wanted {
    H264Decoder,
    HevcDecoder,
    /// FFmpeg's own AV1 decoder needs a hardware accelerator; libdav1d
    /// decodes in software.
    Av1Decoder,
    AacDecoder,
    OpusDecoder,
    X264Encoder,
    OpusEncoder,
    AacEncoder,
}

impl Wanted {
    const ALL: [Wanted; 8] = [
        Wanted::H264Decoder,
        Wanted::HevcDecoder,
        Wanted::Av1Decoder,
        Wanted::AacDecoder,
        Wanted::OpusDecoder,
        Wanted::X264Encoder,
        Wanted::OpusEncoder,
        Wanted::AacEncoder,
    ];

    /// As `streamd check-config` and the errors name it.
    fn name(self) -> &'static str {
        match self {
            Wanted::H264Decoder => "H.264 decoder",
            Wanted::HevcDecoder => "HEVC decoder",
            Wanted::Av1Decoder => "libdav1d AV1 decoder",
            Wanted::AacDecoder => "AAC decoder",
            Wanted::OpusDecoder => "Opus decoder",
            Wanted::X264Encoder => "libx264 encoder",
            Wanted::OpusEncoder => "libopus encoder",
            Wanted::AacEncoder => "AAC encoder",
        }
    }

    fn find(self) -> Result<ff::Codec, CodecError> {
        let found = match self {
            Wanted::H264Decoder => ff::decoder::find(ff::codec::Id::H264),
            Wanted::HevcDecoder => ff::decoder::find(ff::codec::Id::HEVC),
            Wanted::Av1Decoder => ff::decoder::find_by_name(LIBDAV1D),
            Wanted::AacDecoder => ff::decoder::find(ff::codec::Id::AAC),
            Wanted::OpusDecoder => ff::decoder::find(ff::codec::Id::OPUS),
            Wanted::X264Encoder => ff::encoder::find_by_name(LIBX264),
            Wanted::OpusEncoder => ff::encoder::find_by_name(LIBOPUS),
            Wanted::AacEncoder => ff::encoder::find_by_name(AAC_ENCODER),
        };
        found.ok_or(CodecError::Missing(self.name()))
    }
}

/// Every FFmpeg codec the transcoder opens that the linked FFmpeg lacks,
/// as `streamd check-config` names them: an FFmpeg built without one (the
/// container image builds its own) is caught before a stream needs it.
pub fn missing() -> Vec<&'static str> {
    init();
    Wanted::ALL
        .into_iter()
        .filter(|w| w.find().is_err())
        .map(Wanted::name)
        .collect()
}

/// Copies `data` into a new extradata buffer on `ctx` (FFmpeg frees it).
///
/// # Safety
/// `ctx` must be a valid, unopened codec context.
unsafe fn set_extradata(ctx: *mut ffi::AVCodecContext, data: &[u8]) {
    unsafe {
        let size = data.len();
        let buf = ffi::av_mallocz(size + ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize).cast::<u8>();
        if buf.is_null() {
            return;
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, size);
        (*ctx).extradata = buf;
        (*ctx).extradata_size = size as i32;
    }
}

/// A new reference to the same picture buffers (no pixel copy), with its own
/// properties (so one rung's picture type does not leak to another).
pub fn frame_ref(src: &ff::frame::Video) -> ff::frame::Video {
    let mut dst = ff::frame::Video::empty();
    // SAFETY: both frames are valid; av_frame_ref adds references to src's
    // buffers and copies its properties into the empty dst.
    let rc = unsafe { ffi::av_frame_ref(dst.as_mut_ptr(), src.as_ptr()) };
    if rc < 0 {
        // Out of memory: fall back to a copy.
        return src.clone();
    }
    dst
}

/// Decodes the source video: H.264 or HEVC (length-prefixed NAL units,
/// its avcC or hvcC as extradata) or AV1 (OBUs, its av1C).
pub struct VideoDecoder {
    decoder: ff::decoder::Video,
    packet: ff::Packet,
}

impl VideoDecoder {
    /// The FFmpeg decoder for a source's codec, and its extradata (the
    /// configuration record).
    pub fn decoder_for(config: &CodecConfig) -> Result<(ff::Codec, &Bytes), CodecError> {
        match config {
            CodecConfig::H264(c) => Ok((Wanted::H264Decoder.find()?, &c.raw)),
            CodecConfig::Hevc(c) => Ok((Wanted::HevcDecoder.find()?, &c.raw)),
            CodecConfig::Av1(c) => Ok((Wanted::Av1Decoder.find()?, &c.raw)),
            CodecConfig::Aac(_) | CodecConfig::Opus(_) => {
                Err(CodecError::Missing("video decoder for audio"))
            }
        }
    }

    pub fn new(config: &CodecConfig, time_base: ff::Rational) -> Result<VideoDecoder, CodecError> {
        let (codec, extradata) = Self::decoder_for(config)?;
        let mut ctx = ff::codec::Context::new_with_codec(codec);
        // SAFETY: a fresh, unopened context.
        unsafe {
            set_extradata(ctx.as_mut_ptr(), extradata);
            (*ctx.as_mut_ptr()).pkt_timebase = time_base.into();
        }
        // One thread: frame threading would add a frame of delay per thread,
        // and the encoders already keep both cores busy.
        ctx.set_threading(ff::codec::threading::Config {
            kind: ff::codec::threading::Type::Slice,
            count: 1,
            ..Default::default()
        });
        let decoder = ctx
            .decoder()
            .video()
            .map_err(ff_err("opening the source video decoder"))?;
        Ok(VideoDecoder {
            decoder,
            packet: ff::Packet::empty(),
        })
    }

    pub fn send(
        &mut self,
        data: &[u8],
        pts: i64,
        dts: i64,
        keyframe: bool,
    ) -> Result<(), CodecError> {
        let mut packet = ff::Packet::copy(data);
        packet.set_pts(Some(pts));
        packet.set_dts(Some(dts));
        if keyframe {
            packet.set_flags(ff::packet::Flags::KEY);
        }
        self.packet = packet;
        self.decoder
            .send_packet(&self.packet)
            .map_err(ff_err("decoding the source video"))
    }

    /// The next decoded picture, if one is ready.
    pub fn receive(&mut self) -> Option<ff::frame::Video> {
        let mut frame = ff::frame::Video::empty();
        self.decoder.receive_frame(&mut frame).ok()?;
        Some(frame)
    }

    /// Pictures still held for reordering, at the end of a stream.
    pub fn drain(&mut self) -> Vec<ff::frame::Video> {
        let _ = self.decoder.send_eof();
        std::iter::from_fn(|| self.receive()).collect()
    }
}

/// What one rung's encoder is asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct EncoderParams {
    pub width: u32,
    pub height: u32,
    pub bitrate: u32,
    pub preset: String,
    pub profile: String,
    pub threads: usize,
    pub frame_rate: ff::Rational,
    pub time_base: ff::Rational,
    /// x264's own keyframe limit, in frames (forced IDRs come first).
    pub gop: u32,
}

/// One encoded access unit, in AVCC form.
pub struct EncodedFrame {
    pub data: Bytes,
    pub pts: i64,
    pub dts: i64,
    pub keyframe: bool,
}

/// Scales (when needed) and encodes one rung with libx264.
pub struct VideoEncoder {
    encoder: ff::encoder::Video,
    scaler: Option<(
        ff::software::scaling::Context,
        (ff::format::Pixel, u32, u32),
    )>,
    pub params: EncoderParams,
    pub config: AvcConfig,
}

impl VideoEncoder {
    pub fn new(params: EncoderParams) -> Result<VideoEncoder, CodecError> {
        let codec = Wanted::X264Encoder.find()?;
        let mut enc = ff::codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(ff_err("creating the libx264 encoder"))?;
        enc.set_width(params.width);
        enc.set_height(params.height);
        enc.set_format(ff::format::Pixel::YUV420P);
        enc.set_time_base(params.time_base);
        enc.set_frame_rate(Some(params.frame_rate));
        enc.set_bit_rate(params.bitrate as usize);
        enc.set_max_bit_rate(params.bitrate as usize);
        enc.set_gop(params.gop.max(1));
        enc.set_max_b_frames(0);
        enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
        // SAFETY: an unopened context; rc_buffer_size (the VBV buffer) has
        // no setter. One second of the bitrate: CBR-like.
        unsafe {
            (*enc.as_mut_ptr()).rc_buffer_size = params.bitrate as i32;
            (*enc.as_mut_ptr()).thread_count = params.threads as i32;
        }
        let mut opts = ff::Dictionary::new();
        opts.set("preset", &params.preset);
        opts.set("tune", "zerolatency");
        opts.set("profile", &params.profile);
        // Forced keyframes are IDRs, and x264 places no keyframes of its own
        // on scene cuts: rungs stay aligned.
        opts.set("forced-idr", "1");
        opts.set("x264-params", "scenecut=0:bframes=0:open-gop=0");
        let encoder = enc
            .open_with(opts)
            .map_err(ff_err("opening the libx264 encoder"))?;
        // SAFETY: an opened encoder; with GLOBAL_HEADER libx264 writes its
        // SPS and PPS (Annex-B) to extradata.
        let extradata = unsafe {
            let ctx = encoder.as_ptr();
            if (*ctx).extradata.is_null() || (*ctx).extradata_size <= 0 {
                &[][..]
            } else {
                std::slice::from_raw_parts((*ctx).extradata, (*ctx).extradata_size as usize)
            }
        };
        let nals = annexb_nalus(extradata);
        let sps: Vec<&[u8]> = nals
            .iter()
            .copied()
            .filter(|n| nal_type(n) == Some(NAL_SPS))
            .collect();
        let pps: Vec<&[u8]> = nals
            .iter()
            .copied()
            .filter(|n| nal_type(n) == Some(NAL_PPS))
            .collect();
        let config = AvcConfig::from_parameter_sets(&sps, &pps)
            .map_err(|e| CodecError::Headers(e.to_string()))?;
        Ok(VideoEncoder {
            encoder,
            scaler: None,
            params,
            config,
        })
    }

    /// Encodes one source picture at `pts`; an IDR when `force_idr`.
    pub fn encode(
        &mut self,
        source: &ff::frame::Video,
        pts: i64,
        force_idr: bool,
        out: &mut Vec<EncodedFrame>,
    ) -> Result<(), CodecError> {
        let (w, h) = (self.params.width, self.params.height);
        let same = source.width() == w
            && source.height() == h
            && source.format() == ff::format::Pixel::YUV420P;
        let mut picture = if same {
            frame_ref(source)
        } else {
            let key = (source.format(), source.width(), source.height());
            if self.scaler.as_ref().is_none_or(|(_, k)| *k != key) {
                let ctx = ff::software::scaling::Context::get(
                    key.0,
                    key.1,
                    key.2,
                    ff::format::Pixel::YUV420P,
                    w,
                    h,
                    ff::software::scaling::Flags::BILINEAR,
                )
                .map_err(ff_err("creating a scaler"))?;
                self.scaler = Some((ctx, key));
            }
            let mut scaled = ff::frame::Video::empty();
            if let Some((ctx, _)) = self.scaler.as_mut() {
                ctx.run(source, &mut scaled).map_err(ff_err("scaling"))?;
            }
            scaled
        };
        picture.set_pts(Some(pts));
        picture.set_kind(if force_idr {
            ff::picture::Type::I
        } else {
            ff::picture::Type::None
        });
        self.encoder
            .send_frame(&picture)
            .map_err(ff_err("encoding H.264"))?;
        self.receive(out);
        Ok(())
    }

    /// Drains what the encoder still holds.
    pub fn finish(&mut self, out: &mut Vec<EncodedFrame>) {
        let _ = self.encoder.send_eof();
        self.receive(out);
    }

    fn receive(&mut self, out: &mut Vec<EncodedFrame>) {
        let mut packet = ff::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            let pts = packet.pts().unwrap_or(0);
            out.push(EncodedFrame {
                data: Bytes::from(annexb_to_avcc(data)),
                pts,
                dts: packet.dts().unwrap_or(pts),
                keyframe: packet.is_key(),
            });
        }
    }
}

/// One encoded audio packet, timed at 48 kHz.
pub struct AudioPacket {
    pub data: Bytes,
    pub pts: i64,
    pub duration: i64,
}

/// What [`AudioTranscoder`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AudioTarget {
    /// Opus for WebRTC (from an RTMP publisher's AAC).
    Opus,
    /// AAC-LC for LL-HLS and recordings (from a WHIP publisher's Opus).
    Aac,
}

/// The one rate both targets run at: Opus's, and a rate every AAC player
/// takes.
const AUDIO_RATE: u32 = OpusConfig::CLOCK_RATE;

/// AAC or Opus in, the other out at 48 kHz stereo, with exact sample
/// accounting: the caller gives each input frame's time, output times
/// count samples from an anchor, gaps are filled with silence and only a
/// real jump moves the anchor.
pub struct AudioTranscoder {
    decoder: ff::decoder::Audio,
    resampler: Option<(
        ff::software::resampling::Context,
        (ff::format::Sample, u64, u32),
    )>,
    encoder: ff::encoder::Audio,
    /// The encoder takes planar samples (AAC) rather than interleaved (Opus).
    planar: bool,
    /// What the output track is configured with.
    pub config: crate::media::CodecConfig,
    /// Interleaved stereo f32 waiting to fill an encoder frame.
    fifo: Vec<f32>,
    /// 48 kHz time of fifo[0].
    fifo_start: Option<i64>,
    /// The 48 kHz time the next input should start at.
    expected: Option<i64>,
    frame_size: usize,
    last_pts: Option<i64>,
    /// One input frame in 48 kHz ticks.
    input_frame: i64,
}

impl AudioTranscoder {
    /// Decodes `source` (AAC or Opus) and encodes `target` at `bitrate`.
    pub fn new(
        source: &crate::media::CodecConfig,
        target: AudioTarget,
        bitrate: u32,
    ) -> Result<AudioTranscoder, CodecError> {
        use crate::media::CodecConfig;
        let (decoder, extradata, input_frame) = match source {
            CodecConfig::Aac(aac) => (
                Wanted::AacDecoder,
                aac.raw.to_vec(),
                (i64::from(aac.samples_per_frame) * i64::from(AUDIO_RATE)
                    / i64::from(aac.sample_rate.max(1)))
                .max(1),
            ),
            // WebRTC's Opus frames are 20 ms.
            CodecConfig::Opus(opus) => (Wanted::OpusDecoder, opus.head(), 960),
            CodecConfig::H264(_) | CodecConfig::Hevc(_) | CodecConfig::Av1(_) => {
                return Err(CodecError::Missing("audio decoder for video"));
            }
        };
        let dec_codec = decoder.find()?;
        let mut dctx = ff::codec::Context::new_with_codec(dec_codec);
        // SAFETY: a fresh, unopened context; the AudioSpecificConfig (AAC)
        // or OpusHead (Opus) is the decoder's extradata.
        unsafe { set_extradata(dctx.as_mut_ptr(), &extradata) };
        let decoder = dctx
            .decoder()
            .audio()
            .map_err(ff_err("opening the audio decoder"))?;

        let (encoder, sample) = match target {
            AudioTarget::Opus => (
                Wanted::OpusEncoder,
                ff::format::Sample::F32(ff::format::sample::Type::Packed),
            ),
            AudioTarget::Aac => (
                Wanted::AacEncoder,
                ff::format::Sample::F32(ff::format::sample::Type::Planar),
            ),
        };
        let enc_codec = encoder.find()?;
        let mut enc = ff::codec::Context::new_with_codec(enc_codec)
            .encoder()
            .audio()
            .map_err(ff_err("creating the audio encoder"))?;
        enc.set_rate(AUDIO_RATE as i32);
        enc.set_channel_layout(ff::ChannelLayout::STEREO);
        enc.set_format(sample);
        enc.set_bit_rate(bitrate as usize);
        enc.set_time_base(ff::Rational::new(1, AUDIO_RATE as i32));
        let mut opts = ff::Dictionary::new();
        if target == AudioTarget::Opus {
            opts.set("application", "lowdelay");
        } else {
            // The AudioSpecificConfig out of band, for the esds box.
            enc.set_flags(ff::codec::Flags::GLOBAL_HEADER);
            // The fast coder: FFmpeg 5.1's default two-loop search spent
            // 1.27 s of CPU per minute of stereo 128 kbps, this 1.06 s
            // (benches/README.md, `whip`).
            opts.set("aac_coder", "fast");
        }
        let encoder = enc
            .open_with(opts)
            .map_err(ff_err("opening the audio encoder"))?;
        let frame_size = (encoder.frame_size() as usize).max(120);
        let config = match target {
            AudioTarget::Opus => {
                // SAFETY: an opened encoder; initial_padding is libopus's
                // lookahead, OpusHead's pre-skip.
                let pre_skip =
                    unsafe { (*encoder.as_ptr()).initial_padding }.clamp(0, 65_535) as u16;
                CodecConfig::Opus(OpusConfig {
                    channels: 2,
                    pre_skip,
                    input_sample_rate: match source {
                        CodecConfig::Aac(a) => a.sample_rate,
                        _ => AUDIO_RATE,
                    },
                })
            }
            AudioTarget::Aac => {
                // SAFETY: an opened encoder with GLOBAL_HEADER: extradata is
                // the AudioSpecificConfig it made (or null).
                let asc = unsafe {
                    let p = encoder.as_ptr();
                    if (*p).extradata.is_null() || (*p).extradata_size <= 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts((*p).extradata, (*p).extradata_size as usize)
                            .to_vec()
                    }
                };
                CodecConfig::Aac(
                    AacConfig::parse(Bytes::from(asc))
                        .map_err(|e| CodecError::Headers(e.to_string()))?,
                )
            }
        };
        Ok(AudioTranscoder {
            decoder,
            resampler: None,
            encoder,
            planar: target == AudioTarget::Aac,
            config,
            fifo: Vec::new(),
            fifo_start: None,
            expected: None,
            frame_size,
            last_pts: None,
            input_frame,
        })
    }

    /// Takes one input frame whose first sample is at `pts48` (48 kHz
    /// ticks).
    pub fn push(
        &mut self,
        data: &[u8],
        pts48: i64,
        out: &mut Vec<AudioPacket>,
    ) -> Result<(), CodecError> {
        let mut packet = ff::Packet::copy(data);
        packet.set_pts(Some(pts48));
        self.decoder
            .send_packet(&packet)
            .map_err(ff_err("decoding audio"))?;
        let mut decoded = ff::frame::Audio::empty();
        while self.decoder.receive_frame(&mut decoded).is_ok() {
            // Where this input belongs. Within 1.5 input frames of where the
            // sample count says, the count wins (millisecond timestamps
            // round; samples do not). Later than that, up to a second, is
            // a gap (dropped or missing frames): it is filled with silence
            // so what follows keeps its time. Anything else re-anchors.
            let tolerance = self.input_frame * 3 / 2;
            let start = match self.expected {
                Some(e) if (pts48 - e).abs() <= tolerance => e,
                Some(e) if pts48 > e && pts48 - e <= i64::from(AUDIO_RATE) => {
                    if self.fifo_start.is_none() {
                        self.fifo_start = Some(e);
                    }
                    let gap = (pts48 - e) as usize;
                    self.fifo.resize(self.fifo.len() + gap * 2, 0.0);
                    pts48
                }
                _ => {
                    self.fifo.clear();
                    self.fifo_start = None;
                    if self.last_pts.is_some_and(|l| pts48 <= l) {
                        // The source's clock went back: a new timeline.
                        self.last_pts = None;
                    }
                    pts48
                }
            };
            let resampled = self.resample(&decoded)?;
            let n = resampled.len() / 2;
            if self.fifo_start.is_none() {
                self.fifo_start = Some(start);
            }
            self.fifo.extend_from_slice(&resampled);
            self.expected = Some(start + n as i64);
            self.encode_ready(out)?;
        }
        Ok(())
    }

    fn resample(&mut self, frame: &ff::frame::Audio) -> Result<Vec<f32>, CodecError> {
        let mut layout = frame.channel_layout();
        if layout.is_empty() {
            layout = ff::ChannelLayout::default(i32::from(frame.channels().max(1)));
        }
        let key = (frame.format(), layout.bits(), frame.rate());
        if self.resampler.as_ref().is_none_or(|(_, k)| *k != key) {
            let ctx = ff::software::resampling::Context::get(
                frame.format(),
                layout,
                frame.rate(),
                ff::format::Sample::F32(ff::format::sample::Type::Packed),
                ff::ChannelLayout::STEREO,
                AUDIO_RATE,
            )
            .map_err(ff_err("creating a resampler"))?;
            self.resampler = Some((ctx, key));
        }
        let Some((ctx, _)) = self.resampler.as_mut() else {
            return Ok(Vec::new());
        };
        let capacity = frame.samples() * AUDIO_RATE as usize / frame.rate().max(1) as usize + 256;
        let mut output = ff::frame::Audio::empty();
        // SAFETY: allocates the output buffer the resampler writes into.
        unsafe {
            output.alloc(
                ff::format::Sample::F32(ff::format::sample::Type::Packed),
                capacity,
                ff::ChannelLayout::STEREO,
            );
        }
        let mut input = frame.clone();
        // The decoder's layout may be unset; the resampler needs it.
        input.set_channel_layout(layout);
        ctx.run(&input, &mut output).map_err(ff_err("resampling"))?;
        let samples = output.samples();
        let data = output.data(0);
        let floats = samples * 2;
        let mut v = Vec::with_capacity(floats);
        for c in data[..floats * 4].chunks_exact(4) {
            v.push(f32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
        }
        Ok(v)
    }

    fn encode_ready(&mut self, out: &mut Vec<AudioPacket>) -> Result<(), CodecError> {
        let n = self.frame_size;
        while self.fifo.len() >= n * 2 {
            let Some(start) = self.fifo_start else { break };
            if self.last_pts.is_some_and(|l| start <= l) {
                // Behind what was already encoded (a backwards jump): drop.
                self.fifo.drain(..n * 2);
                self.fifo_start = Some(start + n as i64);
                continue;
            }
            let mut frame = ff::frame::Audio::new(
                ff::format::Sample::F32(if self.planar {
                    ff::format::sample::Type::Planar
                } else {
                    ff::format::sample::Type::Packed
                }),
                n,
                ff::ChannelLayout::STEREO,
            );
            frame.set_rate(AUDIO_RATE);
            if self.planar {
                let samples: Vec<f32> = self.fifo.drain(..n * 2).collect();
                for ch in 0..2 {
                    let dst = frame.data_mut(ch);
                    for (d, s) in dst
                        .chunks_exact_mut(4)
                        .zip(samples.iter().skip(ch).step_by(2))
                    {
                        d.copy_from_slice(&s.to_ne_bytes());
                    }
                }
            } else {
                let dst = frame.data_mut(0);
                for (d, s) in dst.chunks_exact_mut(4).zip(self.fifo.drain(..n * 2)) {
                    d.copy_from_slice(&s.to_ne_bytes());
                }
            }
            frame.set_pts(Some(start));
            self.last_pts = Some(start);
            self.fifo_start = Some(start + n as i64);
            self.encoder
                .send_frame(&frame)
                .map_err(ff_err("encoding audio"))?;
            self.receive(out);
        }
        Ok(())
    }

    /// Encodes what is left (the last partial frame, padded with silence,
    /// and the encoder's lookahead). The transcoder is done after this.
    pub fn finish(&mut self, out: &mut Vec<AudioPacket>) {
        if !self.fifo.is_empty() {
            let n = self.frame_size * 2;
            let len = self.fifo.len().div_ceil(n) * n;
            self.fifo.resize(len, 0.0);
            let _ = self.encode_ready(out);
        }
        let _ = self.encoder.send_eof();
        self.receive(out);
    }

    fn receive(&mut self, out: &mut Vec<AudioPacket>) {
        let mut packet = ff::Packet::empty();
        while self.encoder.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            out.push(AudioPacket {
                data: Bytes::copy_from_slice(data),
                pts: packet.pts().unwrap_or(0),
                duration: packet.duration().max(self.frame_size as i64),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_linked_ffmpeg_has_every_codec_the_transcoder_opens() {
        assert_eq!(super::missing(), Vec::<&str>::new());
    }
}
