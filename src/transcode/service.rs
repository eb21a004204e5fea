//! Starts a transcoder for every broadcast of an app that transcodes, and
//! feeds it from the bus: the reader task below, then the threads of
//! [`super::pipeline`].

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream, SelectAll};
use tokio::sync::mpsc::error::TrySendError;
use tracing::Instrument;

use super::pipeline::{
    AudioIn, Boundaries, Pipeline, StreamContext, Transcoders, VideoIn, dropped,
};
use super::{PlannedRung, plan};
use crate::bus::{
    BroadcastConsumer, BroadcastStatus, FrameEvent, Registry, RenditionInfo, StartAt, TrackEvent,
    TrackInfo, TrackKind, TrackProducer, TrackRole,
};
use crate::config::TranscodeConfig;
use crate::media::CodecConfig;
use crate::ratelimit::LogLimiter;
use crate::shutdown::Shutdown;

/// Runs until `shutdown`: one transcoder per broadcast whose app transcodes.
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
                if !config.enabled_for(b.path().app()) {
                    return None;
                }
                let span = tracing::info_span!("transcode", stream = %b.path());
                let task = transcode(b, config.clone(), transcoders.clone()).instrument(span);
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

type Events = SelectAll<BoxStream<'static, (TrackKind, TrackEvent)>>;

fn track_events(
    kind: TrackKind,
    consumer: crate::bus::TrackConsumer,
) -> BoxStream<'static, (TrackKind, TrackEvent)> {
    stream::unfold(consumer, move |mut c| async move {
        let ev = c.next().await?;
        Some(((kind, ev), c))
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
            log: LogLimiter::new(Duration::from_secs(5)),
            lossless,
        }
    }

    fn start_video(&mut self, ev: &FrameEvent) {
        let CodecConfig::H264(avc) = &*ev.group.config else {
            if let Some(suppressed) = self.log.check(Instant::now()) {
                tracing::warn!(
                    suppressed,
                    "the source video is not H.264; not transcoding it"
                );
            }
            return;
        };
        self.planned = true;
        let meta = self.broadcast.snapshot().meta;
        let rungs = plan(
            avc.info.width,
            avc.info.height,
            meta.video_bitrate_kbps,
            &self.config.ladder,
        );
        let frame_rate = avc
            .info
            .frame_rate
            .or(meta.frame_rate)
            .filter(|f| (1.0..=240.0).contains(f))
            .unwrap_or(30.0);
        let session = ev.group.session;
        let no_reorder = avc.info.max_num_reorder_frames == Some(0) || avc.info.profile_idc == 66;
        let mut encoded = Vec::new();
        for r in &rungs {
            let info = TrackInfo {
                name: r.config.name.clone(),
                kind: TrackKind::Video,
                role: TrackRole::Rendition(RenditionInfo {
                    bitrate: r.config.bitrate_kbps * 1000,
                    width: r.width,
                    height: r.height,
                    bypass: r.bypass,
                    webrtc_safe: !r.bypass || no_reorder,
                }),
            };
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
        tracing::info!(
            source = %format!("{}x{}@{frame_rate:.2}", avc.info.width, avc.info.height),
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
        if encoded.is_empty() {
            return;
        }
        if let Err(e) = self.pipeline.start_video(ctx, encoded) {
            tracing::error!(error = %e, "cannot start the transcoder's threads");
        }
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
        if !self.config.opus {
            return;
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
            self.audio_started = true;
            if let Err(e) = self
                .pipeline
                .start_audio(self.broadcast.clone(), self.config.opus_bitrate_kbps * 1000)
            {
                tracing::error!(error = %e, "cannot start the Opus thread");
            }
        }
        if let Some(tx) = &self.pipeline.audio
            && let Err(TrySendError::Full(_)) = tx.try_send(AudioIn::Frame(ev))
        {
            dropped("audio", 1);
        }
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

async fn transcode(
    broadcast: BroadcastConsumer,
    config: TranscodeConfig,
    transcoders: Arc<Transcoders>,
) {
    let _live = super::pipeline::Live::new("streamd_transcode_streams");
    let mut reader = Reader::new(broadcast.clone(), config, transcoders, false);
    let mut events: Events = SelectAll::new();
    let mut subscribed: HashSet<TrackKind> = HashSet::new();
    let subscribe = |events: &mut Events, subscribed: &mut HashSet<TrackKind>| {
        for info in broadcast.snapshot().tracks {
            if info.role != TrackRole::Source || subscribed.contains(&info.kind) {
                continue;
            }
            // From the oldest keyframe held, like the packagers: rungs then
            // cover everything the source does.
            if let Some(c) = broadcast.subscribe_at(&info.name, StartAt::Oldest, None) {
                subscribed.insert(info.kind);
                events.push(track_events(info.kind, c));
            }
        }
    };
    let mut watch = broadcast.clone();
    subscribe(&mut events, &mut subscribed);
    let mut ended = broadcast.status() == BroadcastStatus::Ended;
    while !(ended && events.is_empty()) {
        tokio::select! {
            update = watch.update(), if !ended => {
                ended = update.status == BroadcastStatus::Ended;
                subscribe(&mut events, &mut subscribed);
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
