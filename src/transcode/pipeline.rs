//! The threads of one stream's transcoder: decode, one per rung, audio.
//! They are plain OS threads (FFmpeg calls block), fed through bounded
//! channels, and they end when their input channel closes, after draining
//! their encoders: dropping a [`Pipeline`] joins nothing, [`Pipeline::close`]
//! does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use ffmpeg_next as ff;
use tokio::sync::mpsc;

use super::PlannedRung;
pub use super::codec::AudioTarget;
use super::codec::{AudioTranscoder, EncoderParams, VideoDecoder, VideoEncoder, frame_ref};
use crate::bus::{BroadcastConsumer, Frame, FrameEvent, TrackInfo, TrackProducer};
use crate::media::CodecConfig;
use crate::ratelimit::LogLimiter;
use crate::time::{MediaTime, Timescale};

/// Pictures queued per rung before the decode thread starts dropping:
/// about 270 ms at 30 fps. With 4, opening four x264 encoders at a 1080p
/// stream's first picture dropped two pictures; with 8, none. The queues
/// hold references to the same decoded pictures, not copies.
const RUNG_QUEUE: usize = 8;
/// Packets queued for the decode thread before the reader skips a GOP:
/// about a second at 30 fps, within the second LL-HLS holds audio for the
/// leading rung (so audio segments still line up with video).
pub(super) const DECODE_QUEUE: usize = 30;
/// AAC frames queued for the audio thread before the reader drops one.
pub(super) const AUDIO_QUEUE: usize = 200;
/// On-demand keyframes are at most this often per rung.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_secs(1);

/// Counts a live FFmpeg context or thread in a gauge while it exists.
pub(super) struct Live(&'static str);

impl Live {
    pub(super) fn new(gauge: &'static str) -> Live {
        metrics::gauge!(gauge).increment(1.0);
        Live(gauge)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        metrics::gauge!(self.0).decrement(1.0);
    }
}

pub(super) fn dropped(stage: &'static str, n: u64) {
    metrics::counter!("streamd_transcode_dropped_frames_total", "stage" => stage).increment(n);
}

/// What the server holds of the transcoders: fault injection for tests and
/// the fault bench. (Keyframe requests reach an encoder through its bus
/// track: [`TrackProducer::keyframe_requested`].)
#[derive(Default)]
pub struct Transcoders {
    /// The least time, in microseconds, each picture takes.
    encode_floor: Arc<AtomicU64>,
}

impl Transcoders {
    /// Fault injection, for tests and the fault bench: every rung encoder
    /// takes at least `per_picture` for each picture from now on (zero
    /// turns it off), as on a machine too slow for the ladder. The decode
    /// thread then drops pictures as it would under real overload. A long
    /// floor stalls the encoders until it is set back to zero.
    pub fn slow_encoders(&self, per_picture: Duration) {
        let micros = u64::try_from(per_picture.as_micros()).unwrap_or(u64::MAX);
        self.encode_floor.store(micros, Ordering::Release);
    }

    pub(super) fn encode_floor(&self) -> Arc<AtomicU64> {
        self.encode_floor.clone()
    }
}

/// Where the decode thread puts segment boundaries.
#[derive(Clone, Copy, Debug)]
pub(super) enum Boundaries {
    /// Every interval of PTS from the session's first picture.
    Every(Duration),
    /// At the source's keyframes (the top rung bypasses: the others align
    /// with it).
    SourceKeyframes,
}

pub(super) enum VideoIn {
    Frame(FrameEvent),
    Interrupted,
}

pub(super) enum AudioIn {
    Frame(FrameEvent),
    Interrupted,
}

enum RungIn {
    Picture(Picture),
    Interrupted,
    /// The source's clock went back: drain the encoder, start a new one
    /// (and a new group) at the next picture.
    Reset,
}

struct Picture {
    picture: ff::frame::Video,
    pts: i64,
    boundary: bool,
    session: u32,
    wallclock: SystemTime,
    received: Instant,
}

/// What every thread of a stream shares.
#[derive(Clone)]
pub(super) struct StreamContext {
    pub broadcast: BroadcastConsumer,
    /// The source's timescale: rung frames keep the source's timestamps.
    pub timescale: Timescale,
    pub frame_rate: f64,
    pub boundaries: Boundaries,
    /// Wait for the encoders instead of dropping pictures (offline runs).
    pub lossless: bool,
}

/// A running stream transcoder's threads and inputs.
pub(super) struct Pipeline {
    pub video: Option<mpsc::Sender<VideoIn>>,
    pub audio: Option<mpsc::Sender<AudioIn>>,
    threads: Vec<JoinHandle<()>>,
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline {
            video: None,
            audio: None,
            threads: Vec::new(),
        }
    }

    /// Starts the decode thread and one thread per encoded rung.
    /// `producers` are the rungs' bus tracks, created by the caller so they
    /// appear on the bus in ladder order.
    pub fn start_video(
        &mut self,
        ctx: StreamContext,
        rungs: Vec<(PlannedRung, TrackProducer, Arc<AtomicU64>)>,
    ) -> std::io::Result<()> {
        let mut links = Vec::new();
        for (rung, producer, encode_floor) in rungs {
            let (tx, rx) = sync_channel(RUNG_QUEUE);
            let inflight = Arc::new(AtomicUsize::new(0));
            let link_inflight = inflight.clone();
            let ctx = ctx.clone();
            let name = format!("streamd-x264-{}", rung.config.name);
            self.threads
                .push(std::thread::Builder::new().name(name).spawn(move || {
                    RungWorker::new(rung, producer, encode_floor, ctx, inflight).run(rx)
                })?);
            links.push(RungLink {
                tx,
                inflight: link_inflight,
            });
        }
        let (tx, rx) = mpsc::channel(DECODE_QUEUE);
        self.threads.push(
            std::thread::Builder::new()
                .name("streamd-decode".into())
                .spawn(move || Decoder::new(ctx, links).run(rx))?,
        );
        self.video = Some(tx);
        Ok(())
    }

    pub fn start_audio(
        &mut self,
        broadcast: BroadcastConsumer,
        target: AudioTarget,
        bitrate: u32,
    ) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel(AUDIO_QUEUE);
        let name = match target {
            AudioTarget::Opus => "streamd-opus",
            AudioTarget::Aac => "streamd-aac",
        };
        self.threads.push(
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || audio_thread(rx, broadcast, target, bitrate))?,
        );
        self.audio = Some(tx);
        Ok(())
    }

    /// Closes the inputs and waits for every thread to drain and exit.
    pub fn close(mut self) {
        self.video = None;
        self.audio = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct RungLink {
    tx: SyncSender<RungIn>,
    inflight: Arc<AtomicUsize>,
}

/// Decodes the source once and hands every picture to every rung.
struct Decoder {
    ctx: StreamContext,
    rungs: Vec<RungLink>,
    decoder: Option<(VideoDecoder, Arc<CodecConfig>)>,
    session: Option<u32>,
    /// Next boundary PTS (Every), or None: the next picture is one.
    next_boundary: Option<i64>,
    /// A boundary picture was dropped: the next one sent carries it.
    boundary_pending: bool,
    /// Source keyframe PTS not yet decoded (SourceKeyframes).
    keyframes: VecDeque<i64>,
    /// Ingest times by PTS, for pictures in flight in the decoder.
    times: VecDeque<(i64, SystemTime, Instant)>,
    last_pts: Option<i64>,
    /// The newest input decode time, to see the source's clock go back.
    last_dts: Option<i64>,
    /// After a decode error: skip to the next keyframe.
    skipping: bool,
    log: LogLimiter,
    _live: Live,
}

impl Decoder {
    fn new(ctx: StreamContext, rungs: Vec<RungLink>) -> Decoder {
        Decoder {
            ctx,
            rungs,
            decoder: None,
            session: None,
            next_boundary: None,
            boundary_pending: false,
            keyframes: VecDeque::new(),
            times: VecDeque::new(),
            last_pts: None,
            last_dts: None,
            skipping: false,
            log: LogLimiter::new(Duration::from_secs(5)),
            _live: Live::new("streamd_transcode_decoders"),
        }
    }

    fn run(mut self, mut rx: mpsc::Receiver<VideoIn>) {
        while let Some(input) = rx.blocking_recv() {
            match input {
                VideoIn::Frame(ev) => self.frame(ev),
                VideoIn::Interrupted => {
                    self.drain();
                    for r in &self.rungs {
                        let _ = r.tx.send(RungIn::Interrupted);
                    }
                }
            }
        }
        self.drain();
    }

    /// Ends the current decoder: its held pictures go out, and the next
    /// picture starts a new boundary grid.
    fn drain(&mut self) {
        if let Some((mut d, _)) = self.decoder.take() {
            for p in d.drain() {
                self.emit(p);
            }
        }
        self.next_boundary = None;
        self.keyframes.clear();
        self.times.clear();
        self.last_pts = None;
    }

    fn frame(&mut self, ev: FrameEvent) {
        if !ev.group.config.is_video() {
            return;
        }
        let session = ev.group.session;
        if self.session != Some(session) {
            self.drain();
            self.session = Some(session);
            self.last_dts = None;
        }
        let pts = ev.frame.pts.ticks();
        let dts = ev.frame.dts.ticks();
        let back = MediaTime::from_duration(Duration::from_secs(1), self.ctx.timescale).ticks();
        if self.last_dts.is_some_and(|l| dts + back < l) {
            // The publisher's clock went back (an encoder restart without a
            // reconnect): a new timeline for the decoder and every encoder.
            self.drain();
            for r in &self.rungs {
                let _ = r.tx.send(RungIn::Reset);
            }
            if let Some(suppressed) = self.log.check(Instant::now()) {
                tracing::warn!(
                    suppressed,
                    "the source's timestamps went back; restarting the encoders"
                );
            }
        }
        self.last_dts = Some(dts);
        if self
            .decoder
            .as_ref()
            .is_none_or(|(_, c)| **c != *ev.group.config)
        {
            // New parameters (a resolution change, say): a fresh decoder,
            // and a boundary at its first picture.
            self.drain();
            if !ev.frame.keyframe {
                return;
            }
            let time_base = ff::Rational::new(1, self.ctx.timescale.hz() as i32);
            match VideoDecoder::new(&ev.group.config, time_base) {
                Ok(d) => {
                    self.decoder = Some((d, ev.group.config.clone()));
                    self.skipping = false;
                }
                Err(e) => {
                    if let Some(suppressed) = self.log.check(Instant::now()) {
                        tracing::error!(error = %e, suppressed, "cannot decode the source video");
                    }
                    return;
                }
            }
        }
        if self.skipping {
            if !ev.frame.keyframe {
                dropped("decode", 1);
                return;
            }
            self.skipping = false;
        }
        if ev.frame.keyframe {
            self.keyframes.push_back(pts);
            if self.keyframes.len() > 64 {
                self.keyframes.pop_front();
            }
        }
        self.times
            .push_back((pts, ev.frame.wallclock, ev.frame.received));
        if self.times.len() > 64 {
            self.times.pop_front();
        }
        let Some((d, _)) = self.decoder.as_mut() else {
            return;
        };
        if let Err(e) = d.send(&ev.frame.data, pts, dts, ev.frame.keyframe) {
            dropped("decode", 1);
            self.skipping = true;
            if let Some(suppressed) = self.log.check(Instant::now()) {
                tracing::warn!(error = %e, suppressed, "corrupt source video; continuing at the next keyframe");
            }
            return;
        }
        while let Some(p) = self.decoder.as_mut().and_then(|(d, _)| d.receive()) {
            self.emit(p);
        }
    }

    fn emit(&mut self, picture: ff::frame::Video) {
        let Some(pts) = picture.timestamp().or(picture.pts()) else {
            return;
        };
        if self.last_pts.is_some_and(|l| pts <= l) {
            dropped("decode", 1);
            return;
        }
        self.last_pts = Some(pts);
        let (wallclock, received) = match self.times.iter().position(|t| t.0 == pts) {
            Some(i) => {
                let t = self.times[i];
                self.times.remove(i);
                (t.1, t.2)
            }
            None => (SystemTime::now(), Instant::now()),
        };
        let mut boundary = match self.ctx.boundaries {
            Boundaries::Every(interval) => {
                let step = MediaTime::from_duration(interval, self.ctx.timescale)
                    .ticks()
                    .max(1);
                match self.next_boundary {
                    None => {
                        self.next_boundary = Some(pts + step);
                        true
                    }
                    Some(next) if pts >= next => {
                        // The next multiple of the interval after this one.
                        let behind = (pts - next) / step + 1;
                        self.next_boundary = Some(next + behind * step);
                        true
                    }
                    Some(_) => false,
                }
            }
            Boundaries::SourceKeyframes => {
                let first = self.next_boundary.is_none();
                self.next_boundary = Some(pts);
                let key = match self.keyframes.iter().position(|&k| k == pts) {
                    Some(i) => {
                        self.keyframes.drain(..=i);
                        true
                    }
                    None => false,
                };
                first || key
            }
        };
        boundary |= std::mem::take(&mut self.boundary_pending);
        // Every rung gets the picture, or none does: dropping for all keeps
        // the rungs' pictures (and so their segments) identical.
        if !self.ctx.lossless
            && self
                .rungs
                .iter()
                .any(|r| r.inflight.load(Ordering::Acquire) >= RUNG_QUEUE)
        {
            self.boundary_pending = boundary;
            dropped("encode", 1);
            if let Some(suppressed) = self.log.check(Instant::now()) {
                tracing::warn!(
                    suppressed,
                    "the encoders are behind; dropping pictures (the ladder costs more CPU than this machine has)"
                );
            }
            return;
        }
        let session = self.session.unwrap_or(0);
        for r in &self.rungs {
            r.inflight.fetch_add(1, Ordering::AcqRel);
            let msg = RungIn::Picture(Picture {
                picture: frame_ref(&picture),
                pts,
                boundary,
                session,
                wallclock,
                received,
            });
            if r.tx.send(msg).is_err() {
                r.inflight.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

/// One rung: scale, encode, publish.
struct RungWorker {
    rung: PlannedRung,
    info: TrackInfo,
    ctx: StreamContext,
    /// Fault injection: the least time, in microseconds, each picture takes.
    encode_floor: Arc<AtomicU64>,
    inflight: Arc<AtomicUsize>,
    encoder: Option<(VideoEncoder, Live)>,
    producer: Option<TrackProducer>,
    session: Option<u32>,
    /// Per picture in the encoder: (pts, boundary, wallclock, received).
    pending: VecDeque<(i64, bool, SystemTime, Instant)>,
    last_kept: Option<i64>,
    last_keyframe: Option<i64>,
    log: LogLimiter,
    out: Vec<super::codec::EncodedFrame>,
    /// From a source frame's arrival to its encoded picture published
    /// (`streamd_transcode_lag_seconds{rung}`).
    lag: metrics::Histogram,
}

impl RungWorker {
    fn new(
        rung: PlannedRung,
        producer: TrackProducer,
        encode_floor: Arc<AtomicU64>,
        ctx: StreamContext,
        inflight: Arc<AtomicUsize>,
    ) -> RungWorker {
        RungWorker {
            lag: metrics::histogram!("streamd_transcode_lag_seconds", "rung" => producer.info().name.clone()),
            info: producer.info().clone(),
            session: None,
            producer: Some(producer),
            rung,
            ctx,
            encode_floor,
            inflight,
            encoder: None,
            pending: VecDeque::new(),
            last_kept: None,
            last_keyframe: None,
            log: LogLimiter::new(Duration::from_secs(5)),
            out: Vec::new(),
        }
    }

    fn run(mut self, rx: Receiver<RungIn>) {
        while let Ok(input) = rx.recv() {
            match input {
                RungIn::Picture(p) => {
                    let started = Instant::now();
                    self.picture(p);
                    // (Re-read while waiting: setting the floor back to
                    // zero releases a stalled encoder at once.)
                    loop {
                        let floor = self.encode_floor.load(Ordering::Acquire);
                        let left = Duration::from_micros(floor).saturating_sub(started.elapsed());
                        if left.is_zero() {
                            break;
                        }
                        std::thread::sleep(left.min(Duration::from_millis(10)));
                    }
                    self.inflight.fetch_sub(1, Ordering::AcqRel);
                }
                RungIn::Interrupted => {
                    self.finish();
                    // Dropping the producer marks the interruption on the bus.
                    self.producer = None;
                }
                RungIn::Reset => self.finish(),
            }
        }
        self.finish();
    }

    fn finish(&mut self) {
        if let Some((mut e, _live)) = self.encoder.take() {
            let mut out = std::mem::take(&mut self.out);
            e.finish(&mut out);
            self.publish(&mut out);
            self.out = out;
        }
        self.pending.clear();
        self.last_kept = None;
    }

    fn picture(&mut self, p: Picture) {
        if self.session != Some(p.session) {
            self.finish();
            if self.session.is_some() {
                self.producer = None;
            }
            self.session = Some(p.session);
        }
        if self.producer.is_none() {
            self.producer = self
                .ctx
                .broadcast
                .derived_track(self.info.clone(), p.session);
            if self.producer.is_none() {
                return; // the broadcast ended
            }
        }
        let scale = self.ctx.timescale.hz() as f64;
        // Frame-rate cap: boundaries are always kept, so rungs stay aligned.
        let max_fps = self.rung.config.max_fps;
        if max_fps > 0.0
            && !p.boundary
            && let Some(last) = self.last_kept
            && ((p.pts - last) as f64) < 0.9 * scale / max_fps
        {
            return;
        }
        self.last_kept = Some(p.pts);

        let (w, h) = if self.rung.bypass {
            (self.rung.width, self.rung.height)
        } else {
            super::rung_size(
                (p.picture.width(), p.picture.height()),
                (self.rung.config.width, self.rung.config.height),
            )
        };
        let mut boundary = p.boundary;
        if self
            .encoder
            .as_ref()
            .is_some_and(|(e, _)| (e.params.width, e.params.height) != (w, h))
        {
            // The source changed size: a new encoder (and SPS) for this rung.
            self.finish();
            self.last_kept = Some(p.pts);
        }
        if self.encoder.is_none() {
            let fps = self
                .ctx
                .frame_rate
                .min(if max_fps > 0.0 { max_fps } else { f64::MAX });
            let params = EncoderParams {
                width: w,
                height: h,
                bitrate: self.rung.config.bitrate_kbps * 1000,
                preset: self.rung.config.preset.clone(),
                profile: self.rung.config.profile.clone(),
                threads: self.rung.config.threads,
                frame_rate: rational_fps(fps),
                time_base: ff::Rational::new(1, self.ctx.timescale.hz() as i32),
                gop: (fps * 10.0).ceil() as u32,
            };
            match VideoEncoder::new(params) {
                Ok(e) => {
                    if let Some(producer) = self.producer.as_mut() {
                        producer.set_config(CodecConfig::H264(e.config.clone()));
                    }
                    self.encoder = Some((e, Live::new("streamd_transcode_encoders")));
                    boundary = true;
                }
                Err(e) => {
                    if let Some(suppressed) = self.log.check(Instant::now()) {
                        tracing::error!(rung = %self.rung.config.name, error = %e, suppressed, "cannot start the encoder");
                    }
                    return;
                }
            }
        }
        // A consumer's keyframe request (WebRTC: a join, a switch, a PLI)
        // is answered at once, or a second after the last keyframe; the
        // keyframe written answers every request made before it.
        let mut force = boundary;
        if !boundary
            && self
                .producer
                .as_ref()
                .is_some_and(|p| p.keyframe_requested())
        {
            let min_gap =
                MediaTime::from_duration(KEYFRAME_REQUEST_INTERVAL, self.ctx.timescale).ticks();
            if self.last_keyframe.is_none_or(|k| p.pts - k >= min_gap) {
                metrics::counter!("streamd_transcode_requested_keyframes_total").increment(1);
                force = true;
            }
        }
        if force {
            self.last_keyframe = Some(p.pts);
        }
        self.pending
            .push_back((p.pts, boundary, p.wallclock, p.received));
        if self.pending.len() > 64 {
            self.pending.pop_front();
        }
        let mut out = std::mem::take(&mut self.out);
        let result = match self.encoder.as_mut() {
            Some((e, _)) => e.encode(&p.picture, p.pts, force, &mut out),
            None => Ok(()),
        };
        if let Err(e) = result {
            if let Some(suppressed) = self.log.check(Instant::now()) {
                tracing::warn!(rung = %self.rung.config.name, error = %e, suppressed, "encoding failed; restarting the encoder");
            }
            self.finish();
        }
        self.publish(&mut out);
        self.out = out;
    }

    fn publish(&mut self, out: &mut Vec<super::codec::EncodedFrame>) {
        for f in out.drain(..) {
            let (boundary, wallclock, received) =
                match self.pending.iter().position(|p| p.0 == f.pts) {
                    Some(i) => {
                        let p = self.pending[i];
                        self.pending.drain(..=i);
                        (p.1, p.2, p.3)
                    }
                    None => (false, SystemTime::now(), Instant::now()),
                };
            let Some(producer) = self.producer.as_mut() else {
                continue;
            };
            self.lag.record(received.elapsed().as_secs_f64());
            let frame = Frame {
                dts: MediaTime::new(f.dts, self.ctx.timescale),
                pts: MediaTime::new(f.pts, self.ctx.timescale),
                keyframe: f.keyframe,
                data: f.data,
                wallclock,
                received,
            };
            // A group per boundary IDR; an on-demand IDR stays inside its
            // group so segments line up across rungs.
            if producer.write(frame, boundary && f.keyframe).is_err() {
                dropped("encode", 1);
            }
        }
    }
}

fn rational_fps(fps: f64) -> ff::Rational {
    let fps = if fps.is_finite() && fps >= 1.0 {
        fps
    } else {
        30.0
    };
    // 29.97 and friends as n/1001, others to the millisecond.
    let ntsc = fps * 1001.0 / 1000.0;
    if (ntsc - ntsc.round()).abs() < 0.01 && (fps - fps.round()).abs() > 0.01 {
        ff::Rational::new((ntsc.round() as i32) * 1000, 1001)
    } else {
        ff::Rational::new((fps * 1000.0).round() as i32, 1000)
    }
}

/// AAC → Opus (for WebRTC) or Opus → AAC (for LL-HLS) for one stream,
/// across publisher sessions.
fn audio_thread(
    mut rx: mpsc::Receiver<AudioIn>,
    broadcast: BroadcastConsumer,
    target: AudioTarget,
    bitrate: u32,
) {
    let _live = Live::new("streamd_transcode_audio");
    let name = match target {
        AudioTarget::Opus => "opus",
        AudioTarget::Aac => super::catalog::AAC_TRACK,
    };
    let info = TrackInfo::derived(name, crate::bus::TrackKind::Audio);
    let mut transcoder: Option<(AudioTranscoder, Arc<CodecConfig>)> = None;
    let mut producer: Option<TrackProducer> = None;
    let mut session = None;
    let mut log = LogLimiter::new(Duration::from_secs(5));
    let mut out = Vec::new();
    let scale = Timescale::new(crate::media::OpusConfig::CLOCK_RATE).unwrap_or(Timescale::MPEG);
    while let Some(input) = rx.blocking_recv() {
        let ev = match input {
            AudioIn::Frame(ev) => ev,
            AudioIn::Interrupted => {
                if let (Some((t, _)), Some(p)) = (transcoder.as_mut(), producer.as_mut()) {
                    t.finish(&mut out);
                    write_audio(p, &mut out, scale, SystemTime::now(), Instant::now());
                }
                transcoder = None;
                producer = None;
                continue;
            }
        };
        let takes = match target {
            AudioTarget::Opus => matches!(&*ev.group.config, CodecConfig::Aac(_)),
            AudioTarget::Aac => matches!(&*ev.group.config, CodecConfig::Opus(_)),
        };
        if !takes {
            continue;
        }
        if session != Some(ev.group.session) {
            transcoder = None;
            producer = None;
            session = Some(ev.group.session);
        }
        if transcoder
            .as_ref()
            .is_none_or(|(_, c)| **c != *ev.group.config)
        {
            match AudioTranscoder::new(&ev.group.config, target, bitrate) {
                Ok(t) => transcoder = Some((t, ev.group.config.clone())),
                Err(e) => {
                    if let Some(suppressed) = log.check(Instant::now()) {
                        tracing::error!(error = %e, suppressed, to = name, "cannot transcode audio");
                    }
                    continue;
                }
            }
        }
        let Some((t, _)) = transcoder.as_mut() else {
            continue;
        };
        if producer.is_none() {
            producer = broadcast.derived_track(info.clone(), ev.group.session);
            if producer.is_some() && target == AudioTarget::Opus {
                broadcast.update_catalog(|c| {
                    c.webrtc_audio = Some(info.name.clone());
                    c.complete = super::catalog::ladder_complete(c, true);
                });
            }
            // An AAC track is listed from the broadcast's tracks by the
            // stage's catalog (the new track wakes it).
        }
        let Some(p) = producer.as_mut() else {
            break; // the broadcast ended
        };
        p.set_config(t.config.clone());
        let pts48 = ev.frame.pts.rescale(scale).ticks();
        if let Err(e) = t.push(&ev.frame.data, pts48, &mut out) {
            dropped("audio", 1);
            if let Some(suppressed) = log.check(Instant::now()) {
                tracing::warn!(error = %e, suppressed, "corrupt source audio frame dropped");
            }
        }
        write_audio(p, &mut out, scale, ev.frame.wallclock, ev.frame.received);
    }
    if let (Some((t, _)), Some(p)) = (transcoder.as_mut(), producer.as_mut()) {
        t.finish(&mut out);
        write_audio(p, &mut out, scale, SystemTime::now(), Instant::now());
    }
}

fn write_audio(
    p: &mut TrackProducer,
    out: &mut Vec<super::codec::AudioPacket>,
    scale: Timescale,
    wallclock: SystemTime,
    received: Instant,
) {
    for packet in out.drain(..) {
        let time = MediaTime::new(packet.pts, scale);
        let frame = Frame {
            dts: time,
            pts: time,
            keyframe: true,
            data: packet.data,
            wallclock,
            received,
        };
        let _ = p.write(frame, true);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::TryRecvError;

    use super::*;
    use crate::bus::{Registry, Retention, StreamPath};

    fn picture(pts: i64) -> ff::frame::Video {
        let mut f = ff::frame::Video::new(ff::format::Pixel::YUV420P, 16, 16);
        f.set_pts(Some(pts));
        f
    }

    fn next(rx: &Receiver<RungIn>) -> Option<(i64, bool)> {
        match rx.try_recv() {
            Ok(RungIn::Picture(p)) => Some((p.pts, p.boundary)),
            Ok(_) => panic!("not a picture"),
            Err(TryRecvError::Empty) => None,
            Err(e) => panic!("{e}"),
        }
    }

    /// When one rung is behind, the picture is dropped for every rung, and
    /// a boundary that fell on it moves to the next picture sent, so the
    /// rungs keep identical pictures and aligned IDRs.
    #[test]
    fn behind_encoders_drop_for_every_rung_and_keep_the_boundary() {
        let registry = Registry::new(Duration::ZERO, Retention::default());
        let producer = registry
            .publish(StreamPath::new("t", "drop").unwrap())
            .unwrap();
        let ctx = StreamContext {
            broadcast: producer.consumer(),
            timescale: Timescale::MILLIS,
            frame_rate: 30.0,
            boundaries: Boundaries::Every(Duration::from_secs(2)),
            lossless: false,
        };
        let (tx1, rx1) = sync_channel(RUNG_QUEUE);
        let (tx2, rx2) = sync_channel(RUNG_QUEUE);
        let (in1, in2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut d = Decoder::new(
            ctx,
            vec![
                RungLink {
                    tx: tx1,
                    inflight: in1.clone(),
                },
                RungLink {
                    tx: tx2,
                    inflight: in2.clone(),
                },
            ],
        );
        d.session = Some(0);
        d.emit(picture(0));
        d.emit(picture(1967));
        assert_eq!((next(&rx1), next(&rx2)), (Some((0, true)), Some((0, true))));
        assert_eq!(
            (next(&rx1), next(&rx2)),
            (Some((1967, false)), Some((1967, false)))
        );
        // Rung 2's queue is full: the boundary picture at 2 s goes to nobody.
        in2.store(RUNG_QUEUE, Ordering::Release);
        d.emit(picture(2000));
        assert_eq!((next(&rx1), next(&rx2)), (None, None));
        // It caught up: the next picture carries the boundary, to both.
        in2.store(0, Ordering::Release);
        d.emit(picture(2033));
        assert_eq!(
            (next(&rx1), next(&rx2)),
            (Some((2033, true)), Some((2033, true)))
        );
        d.emit(picture(2067));
        assert_eq!(
            (next(&rx1), next(&rx2)),
            (Some((2067, false)), Some((2067, false)))
        );
        // Pictures going backwards in a run are dropped, not sent.
        d.emit(picture(2050));
        assert_eq!((next(&rx1), next(&rx2)), (None, None));
        drop(producer);
    }
}
