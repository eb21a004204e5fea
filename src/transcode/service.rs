//! Shapes every broadcast's outputs: a transcoder for each broadcast of an
//! app that transcodes, fed from the bus (the reader task below, then the
//! threads of [`super::pipeline`]); for the others, the source passed
//! through. Either way this stage publishes the broadcast's catalog.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream, SelectAll};
use tokio::sync::mpsc::error::TrySendError;
use tracing::Instrument;

use super::catalog::{
    RateMeter, aac_pending, ladder_complete, source_audio, source_catalog, source_track, with_rates,
};
use super::pipeline::{
    AudioIn, AudioTarget, Boundaries, Pipeline, StreamContext, Transcoders, VideoIn, dropped,
};
use super::{PlannedRung, plan};
use crate::bus::{
    BroadcastConsumer, BroadcastStatus, BroadcastUpdate, FrameEvent, Registry, StartAt,
    TrackConsumer, TrackEvent, TrackInfo, TrackKind, TrackProducer, VideoEntry,
};
use crate::config::TranscodeConfig;
use crate::media::CodecConfig;
use crate::ratelimit::LogLimiter;
use crate::shutdown::Shutdown;
use crate::time::MediaTime;

/// Runs until `shutdown`: a task per broadcast, transcoding when its app
/// does.
pub async fn run(
    registry: Registry,
    config: TranscodeConfig,
    transcoders: Arc<Transcoders>,
    shutdown: Shutdown,
) {
    super::codec::init();
    registry
        .for_each_broadcast(
            shutdown,
            // Broadcasts end at shutdown; transcoders drain their encoders.
            Duration::from_secs(5),
            |b| {
                // A relay's tracks are already the origin's outputs, and
                // its catalog is the origin's.
                if b.relayed() {
                    return None;
                }
                let span = tracing::info_span!("transcode", stream = %b.path());
                let config = config.clone();
                let transcoders = transcoders.clone();
                let task = async move {
                    let transcodes = config.enabled_for(b.path().app());
                    // The publisher's session decides: simulcast layers
                    // are passed through, anything else is transcoded where
                    // the app does; a publisher that resumes the broadcast
                    // the other way switches it.
                    let mut from = 0;
                    loop {
                        let next = if transcodes && !b.snapshot().meta.simulcast {
                            transcode(b.clone(), config.clone(), transcoders.clone(), from).await
                        } else {
                            pass_through(b.clone(), transcodes, from).await
                        };
                        match next {
                            Next::Ended => break,
                            Next::Switch { session } => from = session,
                        }
                    }
                }
                .instrument(span);
                Some((task, ()))
            },
            |(), error| {
                if let Some(e) = error {
                    tracing::error!(error = %e, "a transcoder task failed");
                }
            },
        )
        .await;
}

/// How a stage's task for a broadcast ended.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// The broadcast ended.
    Ended,
    /// A publisher resumed the broadcast the other way (simulcast or not)
    /// as publisher session `session`: the other stage takes over from it.
    Switch { session: u32 },
}

/// Whether a frame of publisher session `session` is one for a stage that
/// took over from session `from` (what earlier sessions left on the bus
/// was served by the other stage).
fn current(session: u32, from: u32) -> bool {
    session >= from
}

/// Publishes the source as the catalog, as its tracks appear, until the
/// broadcast ends, or (where the app `transcodes`, and this serves a
/// simulcast publisher) until a publisher that is not simulcast resumes
/// it. A WHIP publisher's Opus is still transcoded to AAC, as LL-HLS and
/// recordings carry no Opus. Frames of publisher sessions before `from`
/// are left alone.
async fn pass_through(mut broadcast: BroadcastConsumer, transcodes: bool, from: u32) -> Next {
    let mut update = broadcast.snapshot();
    let mut aac: Option<(Pipeline, TrackConsumer)> = None;
    // Each source video track's codec and the publisher session it was
    // last seen in, from its frames (WebRTC takes H.264 only; a multitrack
    // publisher's renditions are listed once known, and only those of the
    // current session), and the consumers watching for changes.
    let mut seen: HashMap<String, (u32, Arc<CodecConfig>)> = HashMap::new();
    // Each source video track's measured bitrate.
    let mut rates: HashMap<String, u32> = HashMap::new();
    let mut watched: HashSet<String> = HashSet::new();
    let mut changes: SelectAll<BoxStream<'static, (String, TrackNote)>> = SelectAll::new();
    let mut next = Next::Ended;
    loop {
        if transcodes
            && !update.meta.simulcast
            && let BroadcastStatus::Live { session } = update.status
        {
            tracing::info!("the publisher sends no simulcast layers: transcoding");
            next = Next::Switch { session };
            break;
        }
        let session = seen.values().map(|(s, _)| *s).max();
        let configs: HashMap<String, Arc<CodecConfig>> = seen
            .iter()
            .filter(|(_, (s, _))| Some(*s) == session)
            .map(|(name, (_, c))| (name.clone(), c.clone()))
            .collect();
        broadcast.publish_catalog(with_rates(source_catalog(&update, &configs, None), &rates));
        if update.status == BroadcastStatus::Ended {
            break;
        }
        for t in update
            .tracks
            .iter()
            .filter(|t| !t.derived && t.kind == TrackKind::Video)
        {
            if watched.insert(t.name.clone())
                && let Some(consumer) = broadcast.subscribe_at(&t.name, StartAt::Oldest, None)
            {
                changes.push(track_notes(t.name.clone(), consumer, from));
            }
        }
        if aac.is_none()
            && update.meta.opus_audio
            && let Some(name) = source_track(&update, TrackKind::Audio)
            && let Some(consumer) = broadcast.subscribe_at(&name, StartAt::Oldest, None)
        {
            let mut pipeline = Pipeline::new();
            match pipeline.start_audio(broadcast.clone(), AudioTarget::Aac, AAC_BITRATE) {
                Ok(()) => aac = Some((pipeline, consumer)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the audio transcoder's thread");
                    break;
                }
            }
        }
        // Forward the Opus until something about the broadcast changes.
        let forward = async {
            let Some((pipeline, consumer)) = aac.as_mut() else {
                return std::future::pending().await;
            };
            while let Some(ev) = consumer.next().await {
                let input = match ev {
                    TrackEvent::Frame(ev) if !current(ev.group.session, from) => continue,
                    TrackEvent::Frame(ev) => AudioIn::Frame(ev),
                    TrackEvent::Interrupted => AudioIn::Interrupted,
                };
                if let Some(tx) = &pipeline.audio
                    && let Err(TrySendError::Full(_)) = tx.try_send(input)
                {
                    dropped("audio", 1);
                }
            }
            std::future::pending().await
        };
        tokio::select! {
            u = broadcast.update() => update = u,
            () = forward => {}
            Some((name, note)) = changes.next(), if !changes.is_empty() => match note {
                TrackNote::Config(session, config) => {
                    // A new publisher session is measured anew.
                    if seen.get(&name).is_some_and(|(s, _)| *s != session) {
                        rates.remove(&name);
                    }
                    seen.insert(name, (session, config));
                }
                TrackNote::Rate(bps) => {
                    rates.insert(name, bps);
                }
            },
        }
    }
    if let Some((pipeline, _)) = aac {
        let _ = tokio::task::spawn_blocking(move || pipeline.close()).await;
    }
    next
}

/// What a source video track's frames say, as it changes.
enum TrackNote {
    /// Its configuration and publisher session (read at group starts).
    Config(u32, Arc<CodecConfig>),
    /// Its measured bitrate ([`RateMeter`]).
    Rate(u32),
}

/// A source video track's notes: its configuration and publisher session
/// each time either changes, and its bitrate each time that moves.
fn track_notes(
    name: String,
    consumer: TrackConsumer,
    from: u32,
) -> BoxStream<'static, (String, TrackNote)> {
    struct State {
        consumer: TrackConsumer,
        last: Option<(u32, Arc<CodecConfig>)>,
        rate: RateMeter,
        /// A frame can say both: the rate waits its turn.
        pending: Option<u32>,
    }
    let state = State {
        consumer,
        last: None,
        rate: RateMeter::default(),
        pending: None,
    };
    stream::unfold(state, move |mut st: State| {
        let name = name.clone();
        async move {
            loop {
                if let Some(bps) = st.pending.take() {
                    return Some(((name, TrackNote::Rate(bps)), st));
                }
                let TrackEvent::Frame(f) = st.consumer.next().await? else {
                    continue;
                };
                let session = f.group.session;
                if !current(session, from) {
                    continue;
                }
                st.pending = st.rate.frame(session, f.frame.dts, f.frame.data.len());
                if !f.group_start && st.last.is_some() {
                    continue;
                }
                let changed = st
                    .last
                    .as_ref()
                    .is_none_or(|(s, config)| *s != session || **config != *f.group.config);
                if changed {
                    st.last = Some((session, f.group.config.clone()));
                    let note = TrackNote::Config(session, f.group.config.clone());
                    return Some(((name, note), st));
                }
            }
        }
    })
    .boxed()
}

/// The AAC a WHIP publisher's Opus is transcoded to, for LL-HLS and
/// recordings: AAC-LC stereo at 48 kHz.
const AAC_BITRATE: u32 = 128_000;

/// A transcoded broadcast whose publisher sends audio and no video has its
/// audio listed after this much of it (media time), so that LL-HLS serves
/// it; before, the video that a publisher usually sends with it is waited
/// for, as the packager's first video track must lead.
const AUDIO_ONLY_AFTER: MediaTime = MediaTime::from_millis(2000);

type Events = SelectAll<BoxStream<'static, (TrackKind, TrackEvent)>>;

/// A source track's events, without the frames of publisher sessions
/// before `from`.
fn track_events(
    kind: TrackKind,
    consumer: crate::bus::TrackConsumer,
    from: u32,
) -> BoxStream<'static, (TrackKind, TrackEvent)> {
    stream::unfold(consumer, move |mut c| async move {
        loop {
            match c.next().await? {
                TrackEvent::Frame(f) if !current(f.group.session, from) => continue,
                ev => return Some(((kind, ev), c)),
            }
        }
    })
    .boxed()
}

/// The source passed through as the top rung.
struct Bypass {
    info: TrackInfo,
    producer: Option<TrackProducer>,
    session: Option<u32>,
    config: Option<Arc<CodecConfig>>,
}

impl Bypass {
    fn forward(&mut self, broadcast: &BroadcastConsumer, ev: &FrameEvent) {
        // An H.264 rung carries H.264 only: a publisher that comes back
        // with HEVC or AV1 leaves it empty until the ladder is planned again.
        if !matches!(*ev.group.config, CodecConfig::H264(_)) {
            return;
        }
        if self.session != Some(ev.group.session) {
            self.producer = None;
            self.session = Some(ev.group.session);
        }
        if self.producer.is_none() {
            self.producer = broadcast.derived_track(self.info.clone(), ev.group.session);
            self.config = None;
        }
        let Some(p) = self.producer.as_mut() else {
            return;
        };
        if self
            .config
            .as_ref()
            .is_none_or(|c| !Arc::ptr_eq(c, &ev.group.config))
        {
            p.set_config((*ev.group.config).clone());
            self.config = Some(ev.group.config.clone());
        }
        let _ = p.write(ev.frame.clone(), ev.group_start);
    }
}

struct Reader {
    broadcast: BroadcastConsumer,
    config: TranscodeConfig,
    transcoders: Arc<Transcoders>,
    pipeline: Pipeline,
    planned: bool,
    audio_started: bool,
    bypass: Option<Bypass>,
    /// The decoder fell behind: skip to the next keyframe.
    skipping: bool,
    /// Why the ladder could not be built: the catalog lists the source.
    fallback: Option<String>,
    /// The source video's configuration, from its first frame.
    source_video: Option<Arc<CodecConfig>>,
    /// The first audio frame's time while no video was planned, and
    /// whether that audio has been listed on its own.
    first_audio: Option<MediaTime>,
    audio_listed: bool,
    log: LogLimiter,
    lossless: bool,
}

impl Reader {
    fn new(
        broadcast: BroadcastConsumer,
        config: TranscodeConfig,
        transcoders: Arc<Transcoders>,
        lossless: bool,
    ) -> Reader {
        Reader {
            broadcast,
            config,
            transcoders,
            pipeline: Pipeline::new(),
            planned: false,
            audio_started: false,
            bypass: None,
            skipping: false,
            fallback: None,
            source_video: None,
            first_audio: None,
            audio_listed: false,
            log: LogLimiter::new(Duration::from_secs(5)),
            lossless,
        }
    }

    /// Keeps the catalog in step with the source's tracks: the audio it
    /// lists, or all of it when the ladder fell back to the source.
    fn refresh_catalog(&self, update: &BroadcastUpdate) {
        let opus = self.config.opus;
        if let Some(reason) = &self.fallback {
            let configs = source_track(update, TrackKind::Video)
                .zip(self.source_video.clone())
                .into_iter()
                .collect();
            let source = source_catalog(update, &configs, Some(reason.clone()));
            self.broadcast.update_catalog(|c| {
                let webrtc_audio = c.webrtc_audio.take();
                *c = source;
                // The publisher's own Opus, or the transcoder's.
                c.webrtc_audio = c.webrtc_audio.take().or(webrtc_audio);
                c.complete = c.complete && ladder_complete(c, opus) && !aac_pending(update, c);
            });
        } else if self.planned {
            let (audio, source_opus) = source_audio(update);
            self.broadcast.update_catalog(|c| {
                c.audio = audio;
                if source_opus.is_some() {
                    c.webrtc_audio = source_opus;
                }
                c.complete = ladder_complete(c, opus) && !aac_pending(update, c);
            });
        }
    }

    /// The outputs carry the source, because the ladder cannot be built.
    fn fall_back(&mut self, reason: &str) {
        tracing::warn!(reason, "not transcoding; the source is served as it is");
        self.planned = true;
        self.fallback = Some(reason.to_owned());
        self.refresh_catalog(&self.broadcast.snapshot());
    }

    fn start_video(&mut self, ev: &FrameEvent) {
        self.source_video = Some(ev.group.config.clone());
        let config = &*ev.group.config;
        let Some((width, height)) = config.video_size() else {
            self.fall_back("the source video track carries no video");
            return;
        };
        if let Err(e) = super::codec::VideoDecoder::decoder_for(config) {
            // An FFmpeg built without this codec's decoder.
            self.fall_back(&format!("the source video cannot be decoded: {e}"));
            return;
        }
        let avc = match config {
            CodecConfig::H264(avc) => Some(avc),
            _ => None,
        };
        self.planned = true;
        let meta = self.broadcast.snapshot().meta;
        // Only an H.264 source can stand in for a rung (bypass): without a
        // declared bitrate, no rung bypasses.
        let rungs = plan(
            width,
            height,
            meta.video_bitrate_kbps.filter(|_| avc.is_some()),
            &self.config.ladder,
        );
        let frame_rate = avc
            .and_then(|a| a.info.frame_rate)
            .or(meta.frame_rate)
            .filter(|f| (1.0..=240.0).contains(f))
            .unwrap_or(30.0);
        let session = ev.group.session;
        let no_reorder = avc
            .is_some_and(|a| a.info.max_num_reorder_frames == Some(0) || a.info.profile_idc == 66);
        let mut encoded = Vec::new();
        let mut entries = Vec::new();
        for r in &rungs {
            let info = TrackInfo::derived(&r.config.name, TrackKind::Video);
            entries.push(VideoEntry {
                name: r.config.name.clone(),
                track: r.config.name.clone(),
                bitrate: r.config.bitrate_kbps * 1000,
                width: r.width,
                height: r.height,
                passthrough: r.bypass,
                webrtc_safe: !r.bypass || no_reorder,
            });
            // Created now, in ladder order, so consumers see every rung at
            // once and the largest first.
            let Some(producer) = self.broadcast.derived_track(info.clone(), session) else {
                return;
            };
            if r.bypass {
                drop(producer);
                self.bypass = Some(Bypass {
                    info,
                    producer: None,
                    session: None,
                    config: None,
                });
            } else {
                let encode_floor = self.transcoders.encode_floor();
                let mut r = r.clone();
                if r.config.threads == 0 {
                    r.config.threads = auto_threads(encoded.is_empty());
                }
                encoded.push((r, producer, encode_floor));
            }
        }
        if avc.is_none()
            && let Some(track) = source_track(&self.broadcast.snapshot(), TrackKind::Video)
        {
            // HEVC or AV1: the rungs are H.264 for WebRTC and every player,
            // and the source is offered beside them to players that can
            // decode it.
            entries.push(VideoEntry {
                name: "source".into(),
                track,
                bitrate: meta.video_bitrate_kbps.map_or(0, |k| k * 1000),
                width,
                height,
                passthrough: true,
                webrtc_safe: false,
            });
        }
        tracing::info!(
            source = %format!("{} {width}x{height}@{frame_rate:.2}", config.codec_string()),
            ladder = %describe(&rungs),
            "transcoding"
        );
        let ctx = StreamContext {
            broadcast: self.broadcast.clone(),
            timescale: ev.frame.pts.timescale(),
            frame_rate,
            boundaries: if self.bypass.is_some() {
                Boundaries::SourceKeyframes
            } else {
                Boundaries::Every(self.config.keyframe_interval)
            },
            lossless: self.lossless,
        };
        if !encoded.is_empty()
            && let Err(e) = self.pipeline.start_video(ctx, encoded)
        {
            tracing::error!(error = %e, "cannot start the transcoder's threads");
            self.bypass = None;
            self.fall_back("the transcoder's threads could not start");
            return;
        }
        self.broadcast.update_catalog(|c| {
            c.video = entries;
            c.fallback = None;
        });
        self.refresh_catalog(&self.broadcast.snapshot());
    }

    async fn video(&mut self, event: TrackEvent) {
        let ev = match event {
            TrackEvent::Frame(ev) => ev,
            TrackEvent::Interrupted => {
                if let Some(b) = self.bypass.as_mut() {
                    b.producer = None;
                }
                if let Some(tx) = &self.pipeline.video {
                    let _ = tx.send(VideoIn::Interrupted).await;
                }
                self.skipping = false;
                return;
            }
        };
        if !self.planned {
            self.start_video(&ev);
        }
        if let Some(b) = self.bypass.as_mut() {
            b.forward(&self.broadcast, &ev);
        }
        let Some(tx) = &self.pipeline.video else {
            return;
        };
        if self.skipping {
            if !ev.group_start {
                dropped("input", 1);
                return;
            }
            self.skipping = false;
        }
        match tx.try_send(VideoIn::Frame(ev)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.skipping = true;
                dropped("input", 1);
                if let Some(suppressed) = self.log.check(Instant::now()) {
                    tracing::warn!(
                        suppressed,
                        "the decoder is behind; skipping to the next keyframe"
                    );
                }
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    async fn audio(&mut self, event: TrackEvent) {
        if !self.planned
            && !self.audio_listed
            && let TrackEvent::Frame(ev) = &event
        {
            self.audio_only(ev.frame.dts);
        }
        let ev = match event {
            TrackEvent::Frame(ev) => ev,
            TrackEvent::Interrupted => {
                if let Some(tx) = &self.pipeline.audio {
                    let _ = tx.send(AudioIn::Interrupted).await;
                }
                return;
            }
        };
        if !self.audio_started {
            // A WHIP publisher's Opus needs AAC for LL-HLS (and serves
            // WebRTC as it is); an RTMP publisher's AAC needs Opus for
            // WebRTC, unless that is off.
            let (target, bitrate) = match &*ev.group.config {
                CodecConfig::Opus(_) => (AudioTarget::Aac, AAC_BITRATE),
                _ if self.config.opus => (AudioTarget::Opus, self.config.opus_bitrate_kbps * 1000),
                _ => return,
            };
            self.audio_started = true;
            if let Err(e) = self
                .pipeline
                .start_audio(self.broadcast.clone(), target, bitrate)
            {
                tracing::error!(error = %e, "cannot start the audio transcoder's thread");
            }
        }
        if let Some(tx) = &self.pipeline.audio
            && let Err(TrySendError::Full(_)) = tx.try_send(AudioIn::Frame(ev))
        {
            dropped("audio", 1);
        }
    }
}

impl Reader {
    /// Lists the audio of a publisher that sends no video, once it has
    /// sent [`AUDIO_ONLY_AFTER`] of audio.
    fn audio_only(&mut self, dts: MediaTime) {
        let first = *self.first_audio.get_or_insert(dts);
        if dts - first < AUDIO_ONLY_AFTER {
            return;
        }
        let update = self.broadcast.snapshot();
        if source_track(&update, TrackKind::Video).is_some() {
            return;
        }
        let (audio, source_opus) = source_audio(&update);
        let opus = self.config.opus;
        self.audio_listed = true;
        tracing::info!("no video after 2 s of audio: serving the audio alone");
        self.broadcast.update_catalog(|c| {
            c.audio = audio;
            if source_opus.is_some() {
                c.webrtc_audio = source_opus;
            }
            c.complete = ladder_complete(c, opus) && !aac_pending(&update, c);
        });
    }
}

/// x264 threads for a rung left at `threads = 0`: the largest encoded rung
/// (the most work, and so the one the others wait for) gets a thread per
/// core; the others one each, as every rung already has its own thread.
/// Measured on 2 cores (benches/README.md): 1.33x the ffmpeg CLI's
/// throughput on the 1080p ladder, against 1.24x with x264 choosing for
/// every rung.
fn auto_threads(largest: bool) -> usize {
    if largest {
        std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8))
    } else {
        1
    }
}

fn describe(rungs: &[PlannedRung]) -> String {
    rungs
        .iter()
        .map(|r| {
            format!(
                "{} {}x{} {} kbps{}",
                r.config.name,
                r.width,
                r.height,
                r.config.bitrate_kbps,
                if r.bypass { " (bypass)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Transcodes the broadcast until it ends, or until a simulcast publisher
/// resumes it (ingest marks a simulcast session before it makes any
/// track; a few of its frames may still reach the ladder before the mark
/// is seen). Frames of publisher sessions before `from` are left alone.
async fn transcode(
    broadcast: BroadcastConsumer,
    config: TranscodeConfig,
    transcoders: Arc<Transcoders>,
    from: u32,
) -> Next {
    let _live = super::pipeline::Live::new("streamd_transcode_streams");
    let mut reader = Reader::new(broadcast.clone(), config, transcoders, false);
    let mut events: Events = SelectAll::new();
    let mut subscribed: HashSet<TrackKind> = HashSet::new();
    let subscribe = |events: &mut Events, subscribed: &mut HashSet<TrackKind>| {
        for info in broadcast.snapshot().tracks {
            if info.derived || subscribed.contains(&info.kind) {
                continue;
            }
            // From the oldest keyframe held, like the packagers: rungs then
            // cover everything the source does.
            if let Some(c) = broadcast.subscribe_at(&info.name, StartAt::Oldest, None) {
                subscribed.insert(info.kind);
                events.push(track_events(info.kind, c, from));
            }
        }
    };
    let mut watch = broadcast.clone();
    subscribe(&mut events, &mut subscribed);
    let mut ended = broadcast.status() == BroadcastStatus::Ended;
    let mut next = Next::Ended;
    while !(ended && events.is_empty()) {
        tokio::select! {
            update = watch.update(), if !ended => {
                if update.meta.simulcast {
                    tracing::info!("the publisher sends simulcast layers: serving them as they come");
                    let (BroadcastStatus::Live { session } | BroadcastStatus::Interrupted { session }) =
                        update.status
                    else {
                        break;
                    };
                    next = Next::Switch { session };
                    break;
                }
                ended = update.status == BroadcastStatus::Ended;
                subscribe(&mut events, &mut subscribed);
                reader.refresh_catalog(&update);
            }
            item = events.next(), if !events.is_empty() => {
                let Some((kind, event)) = item else { continue };
                match kind {
                    TrackKind::Video => reader.video(event).await,
                    TrackKind::Audio => reader.audio(event).await,
                }
            }
        }
    }
    let pipeline = std::mem::replace(&mut reader.pipeline, Pipeline::new());
    drop(reader);
    let _ = tokio::task::spawn_blocking(move || pipeline.close()).await;
    tracing::info!("transcoder stopped");
    next
}

/// The ladder without a server or a clock: video frames are pushed with
/// backpressure and nothing is dropped, so a file transcodes as fast as the
/// machine allows. For benchmarks and tools; the rungs are written to
/// `broadcast` like a live transcoder's.
pub struct OfflineLadder {
    reader: Reader,
}

impl OfflineLadder {
    pub fn new(broadcast: BroadcastConsumer, config: TranscodeConfig) -> OfflineLadder {
        super::codec::init();
        OfflineLadder {
            reader: Reader::new(broadcast, config, Arc::new(Transcoders::default()), true),
        }
    }

    /// Blocks while the decoder's queue is full (not for async contexts).
    pub fn push_video(&mut self, ev: FrameEvent) {
        if !self.reader.planned {
            self.reader.start_video(&ev);
        }
        if let Some(tx) = &self.reader.pipeline.video {
            let _ = tx.blocking_send(VideoIn::Frame(ev));
        }
    }

    /// Drains every encoder and joins the threads.
    pub fn finish(mut self) {
        std::mem::replace(&mut self.reader.pipeline, Pipeline::new()).close();
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use bytes::Bytes;

    use super::*;
    use crate::bus::{Catalog, Frame, GroupInfo, Retention, StreamPath};
    use crate::media::AacConfig;

    /// A video frame whose codec the ladder cannot decode.
    fn odd_video_frame() -> FrameEvent {
        let aac = AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        FrameEvent {
            frame: Frame {
                dts: MediaTime::from_millis(0),
                pts: MediaTime::from_millis(0),
                keyframe: true,
                data: Bytes::from_static(&[0; 16]),
                wallclock: SystemTime::UNIX_EPOCH,
                received: Instant::now(),
            },
            group: Arc::new(GroupInfo {
                sequence: 0,
                config: Arc::new(CodecConfig::Aac(aac)),
                discontinuity: false,
                session: 0,
            }),
            group_start: true,
            dropped: 0,
        }
    }

    #[test]
    fn a_source_the_ladder_cannot_take_is_listed_as_it_came() {
        for opus in [true, false] {
            let registry = Registry::new(Duration::ZERO, Retention::default());
            let mut b = registry
                .publish(StreamPath::new("live", "odd").unwrap())
                .unwrap();
            let _video = b.track(TrackInfo::source("video", TrackKind::Video));
            let _audio = b.track(TrackInfo::source("audio", TrackKind::Audio));
            let consumer = b.consumer();
            let config = TranscodeConfig {
                opus,
                ..TranscodeConfig::default()
            };
            let mut ladder = OfflineLadder::new(consumer.clone(), config);
            ladder.push_video(odd_video_frame());
            let c = consumer.catalog().expect("a catalog");
            assert_eq!(
                c.fallback.as_deref(),
                Some("the source video track carries no video")
            );
            let tracks: Vec<&str> = c.video.iter().map(|v| v.track.as_str()).collect();
            assert_eq!(tracks, ["video"]);
            assert_eq!(c.audio.as_deref(), Some("audio"));
            // With Opus on, the Opus track is still to come.
            assert_eq!(c.complete, !opus, "{c:?}");
            ladder.finish();
        }
    }

    /// Polls the broadcast's catalog until `ok` holds (5 s at most).
    async fn catalog_until(b: &BroadcastConsumer, what: &str, ok: impl Fn(&Catalog) -> bool) {
        for _ in 0..100 {
            if b.catalog().as_ref().is_some_and(&ok) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{what}: {:?}", b.catalog());
    }

    /// The stage follows each publisher session: a simulcast publisher's
    /// layers are passed through, a plain publisher that resumes the
    /// broadcast gets the ladder, and a simulcast one that resumes it
    /// after that gets its layers passed through again.
    #[tokio::test]
    async fn a_publisher_that_resumes_the_other_way_switches_the_stage() {
        let registry = Registry::new(Duration::from_secs(30), Retention::default());
        let (_stop, shutdown) = crate::shutdown::channel();
        let config = TranscodeConfig {
            opus: false,
            ladder: vec![crate::config::RungConfig::new("120p", 160, 120, 200)],
            ..TranscodeConfig::default()
        };
        let transcoders = Arc::new(Transcoders::default());
        tokio::spawn(run(registry.clone(), config, transcoders, shutdown));
        let path = StreamPath::new("live", "modes").unwrap();
        let avc = CodecConfig::H264(
            crate::media::AvcConfig::parse(Bytes::from_static(
                crate::media::h264::tests::AVCC_320X240,
            ))
            .unwrap(),
        );
        let frame = || Frame {
            dts: MediaTime::from_millis(0),
            pts: MediaTime::from_millis(0),
            keyframe: true,
            data: Bytes::from_static(&[0, 0, 0, 2, 0x65, 0x88]),
            wallclock: SystemTime::now(),
            received: Instant::now(),
        };
        // Publishes a session with `layers` video tracks (simulcast if more
        // than one), one keyframe each.
        let publish = |layers: usize| {
            let mut b = registry.publish(path.clone()).unwrap();
            b.set_meta(crate::bus::BroadcastMeta {
                has_video: Some(true),
                has_audio: Some(false),
                simulcast: layers > 1,
                ..Default::default()
            });
            let tracks: Vec<_> = (0..layers)
                .map(|i| {
                    let name = crate::ingest::tags::video_track_name(i as u8);
                    let mut t = b.track(TrackInfo::source(&name, TrackKind::Video));
                    t.set_config(avc.clone());
                    t.write(frame(), true).unwrap();
                    t
                })
                .collect();
            (b, tracks)
        };
        let layers_served =
            |c: &Catalog| c.video.len() == 2 && c.video.iter().all(|v| v.passthrough);
        let laddered = |c: &Catalog| c.video.iter().any(|v| v.track == "120p" && !v.passthrough);

        let session = publish(2);
        let b = registry.get(&path).unwrap();
        catalog_until(&b, "the simulcast layers as they came", layers_served).await;
        drop(session);
        let session = publish(1);
        catalog_until(&b, "a plain publisher gets the ladder", laddered).await;
        drop(session);
        let _session = publish(2);
        catalog_until(
            &b,
            "simulcast again: the layers as they came",
            layers_served,
        )
        .await;
    }
}
