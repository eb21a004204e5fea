//! Starts a packager for every broadcast the registry announces, and runs
//! each one: bus events in, [`StreamPackager`] in the middle, the stream's
//! [`StreamOutput`] updated as parts complete.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream, SelectAll};
use tracing::Instrument;

use super::packager::{PackagerNotice, StreamPackager};
use super::playlist::Rendition;
use super::segmenter::SegmenterOutput;
use super::store::{Outputs, StreamOutput};
use super::tap::{Packaged, Tap, Taps};
use crate::bus::{BroadcastConsumer, BroadcastStatus, Registry, StartAt, TrackEvent, TrackKind};
use crate::config::LlhlsConfig;
use crate::media::CodecConfig;
use crate::ratelimit::LogLimiter;
use crate::shutdown::Shutdown;
use crate::time::Timescale;

/// Runs until `shutdown`: one packager task per broadcast.
pub async fn run(
    registry: Registry,
    outputs: Arc<Outputs>,
    config: LlhlsConfig,
    taps: Option<Taps>,
    shutdown: Shutdown,
) {
    registry
        .for_each_broadcast(
            shutdown.clone(),
            // Broadcasts end at shutdown, so packagers finish; a moment.
            Duration::from_secs(2),
            |b| {
                let instance = format!("{:08x}", rand::random::<u32>());
                let output = Arc::new(StreamOutput::new(b.path().clone(), instance));
                outputs.insert(output.clone());
                let span = tracing::info_span!("llhls", stream = %b.path());
                // The origin records a relayed stream, not every node that has it.
                let tap = taps
                    .as_ref()
                    .filter(|_| !b.relayed())
                    .and_then(|t| t(b.path()));
                let task = package(
                    b,
                    output.clone(),
                    outputs.clone(),
                    config.clone(),
                    tap,
                    shutdown.clone(),
                )
                .instrument(span);
                Some((task, output))
            },
            |output, error| {
                // A task that ends on its own has withdrawn its output.
                if let Some(e) = error {
                    tracing::error!(error = %e, "an LL-HLS packager task failed; its stream is withdrawn");
                    outputs.remove(&output);
                }
            },
        )
        .await;
}

type Events = SelectAll<BoxStream<'static, (String, TrackEvent)>>;

fn track_events(
    name: String,
    consumer: crate::bus::TrackConsumer,
) -> BoxStream<'static, (String, TrackEvent)> {
    stream::unfold((name, consumer), |(name, mut c)| async move {
        let ev = c.next().await?;
        Some(((name.clone(), ev), (name, c)))
    })
    .boxed()
}

struct Packaging {
    output: Arc<StreamOutput>,
    packager: StreamPackager,
    /// Bus track name -> packager track index.
    tracks: HashMap<String, usize>,
    kinds: HashMap<String, TrackKind>,
    /// The ladder's bitrate of each rung.
    configured_bps: HashMap<String, u64>,
    /// Each video track's place in the catalog.
    ranks: HashMap<String, usize>,
    notice_log: LogLimiter,
    segments_kept: usize,
    /// The archive's copy of everything packaged.
    tap: Option<Tap>,
}

impl Packaging {
    /// Subscribes to what the broadcast's catalog lists and is not yet
    /// subscribed: its video first, largest first (so that the first
    /// rung leads), then its audio. The ladder's rungs when the stream is
    /// transcoded, else the publisher's video; the publisher's AAC.
    fn subscribe_new(&mut self, broadcast: &BroadcastConsumer, events: &mut Events) {
        let snap = broadcast.snapshot();
        self.packager.set_frame_rate_hint(snap.meta.frame_rate);
        let Some(catalog) = snap.catalog else {
            return;
        };
        // The catalog's order (largest first) for the master, which a
        // publisher's renditions, known one by one, may not start in.
        let moved: HashMap<String, usize> = catalog
            .video
            .iter()
            .enumerate()
            .filter(|(i, v)| self.ranks.get(&v.track) != Some(i))
            .map(|(i, v)| (v.track.clone(), i))
            .collect();
        if !moved.is_empty() {
            self.output.update(|st| {
                for r in st.renditions.iter_mut() {
                    if let Some(rank) = moved.get(&r.name) {
                        r.rank = *rank;
                    }
                }
            });
            self.ranks.extend(moved);
        }
        let video = catalog
            .video
            .iter()
            // A rung's configured rate (a bypass rung's too); the rate of a
            // publisher's own track is measured, no VBV maximum (the
            // master measures its own peak).
            .map(|v| {
                let source = snap.tracks.iter().any(|t| t.name == v.track && !t.derived);
                let configured = if source { 0 } else { v.bitrate };
                (v.track.clone(), TrackKind::Video, configured)
            });
        let audio = catalog
            .audio
            .iter()
            .map(|a| (a.clone(), TrackKind::Audio, 0));
        for (name, kind, bitrate) in video.chain(audio) {
            if self.kinds.contains_key(&name) {
                continue;
            }
            // From the oldest keyframe held: a publisher may have sent a
            // burst before this packager subscribed.
            let Some(consumer) = broadcast.subscribe_at(&name, StartAt::Oldest, None) else {
                continue;
            };
            self.kinds.insert(name.clone(), kind);
            if bitrate > 0 {
                self.configured_bps.insert(name.clone(), u64::from(bitrate));
            }
            // Video tracks join the packager now (their timescale is fixed),
            // so the first one leads before any audio is processed. Audio
            // joins at its first frame, when its sample rate is known.
            if kind == TrackKind::Video {
                self.add(&name, TrackKind::Video, Timescale::MPEG);
            }
            events.push(track_events(name, consumer));
        }
    }

    fn add(&mut self, name: &str, kind: TrackKind, timescale: Timescale) -> usize {
        let idx = self.packager.add_track(kind, timescale);
        self.tracks.insert(name.to_owned(), idx);
        let mut rendition =
            Rendition::new(name.to_owned(), kind, timescale.hz(), self.segments_kept);
        rendition.configured_bps = self.configured_bps.get(name).copied();
        rendition.rank = self.ranks.get(name).copied().unwrap_or(0);
        if let Some(tap) = &self.tap {
            tap.send(Packaged::Track {
                track: idx,
                name: name.to_owned(),
                kind,
                timescale: timescale.hz(),
                configured_bps: rendition.configured_bps,
            });
        }
        self.output.update(|st| st.renditions.push(rendition));
        idx
    }

    fn apply(&mut self, outputs: Vec<super::packager::Output>) {
        for n in self.packager.take_notices() {
            let kind = match &n {
                PackagerNotice::Dropped { .. } => "dropped",
                PackagerNotice::AudioAhead { .. } => "audio_ahead",
                PackagerNotice::TimestampJump { .. } => "timestamp_jump",
            };
            metrics::counter!("streamd_llhls_packager_events_total", "kind" => kind).increment(1);
            let Some(suppressed) = self.notice_log.check(Instant::now()) else {
                continue;
            };
            match n {
                PackagerNotice::Dropped { track, reason } => {
                    tracing::warn!(track, %reason, suppressed, "dropped a frame")
                }
                PackagerNotice::AudioAhead { track } => tracing::warn!(
                    track,
                    suppressed,
                    "dropped an audio frame to keep audio in sync with its timestamps"
                ),
                PackagerNotice::TimestampJump { track, seconds } => tracing::warn!(
                    track,
                    seconds,
                    suppressed,
                    "the publisher's timestamps jumped; the gap is folded out of the stream"
                ),
            }
        }
        if outputs.is_empty() {
            return;
        }
        if let Some(tap) = &self.tap {
            for o in &outputs {
                tap.send(self.archived(o));
            }
        }
        let now = Instant::now();
        let packager = &self.packager;
        self.output.update(|st| {
            if st.target_duration.is_none() {
                st.target_duration = packager.target_duration();
            }
            for o in outputs {
                let Some(r) = st.renditions.get_mut(o.track) else {
                    continue;
                };
                if r.part_target.is_none() {
                    r.part_target = packager.segmenter(o.track).part_target_secs();
                }
                if let SegmenterOutput::Part { received, .. } = &o.output {
                    for at in received {
                        metrics::histogram!("streamd_llhls_ingest_to_part_seconds")
                            .record(now.duration_since(*at).as_secs_f64());
                    }
                }
                // Only a segment start with a new init segment needs the
                // configuration (for the master playlist's CODECS).
                let config = match &o.output {
                    SegmenterOutput::SegmentStart { init: Some(_), .. } => packager.config(o.track),
                    _ => None,
                };
                r.apply(o.output, config.map(|c| &**c));
            }
        });
    }
}

impl Packaging {
    /// The archive's copy of one output.
    fn archived(&self, o: &super::packager::Output) -> Packaged {
        let track = o.track;
        match &o.output {
            SegmenterOutput::SegmentStart {
                msn,
                discontinuity,
                init,
                ..
            } => Packaged::SegmentStart {
                track,
                msn: *msn,
                discontinuity: *discontinuity,
                init: init
                    .clone()
                    .and_then(|i| Some((i, self.packager.config(track)?.clone()))),
            },
            SegmenterOutput::Part {
                msn,
                duration,
                data,
                ..
            } => Packaged::Part {
                track,
                msn: *msn,
                duration: *duration,
                data: data.clone(),
            },
            SegmenterOutput::SegmentEnd { msn, .. } => Packaged::SegmentEnd { track, msn: *msn },
        }
    }
}

async fn package(
    broadcast: BroadcastConsumer,
    output: Arc<StreamOutput>,
    outputs: Arc<Outputs>,
    config: LlhlsConfig,
    tap: Option<Tap>,
    mut shutdown: Shutdown,
) {
    tracing::info!(instance = %output.instance, "packaging LL-HLS");

    let mut p = Packaging {
        output: output.clone(),
        packager: StreamPackager::new(config.part_target, config.segment_target),
        tracks: HashMap::new(),
        kinds: HashMap::new(),
        configured_bps: HashMap::new(),
        ranks: HashMap::new(),
        notice_log: LogLimiter::new(Duration::from_secs(5)),
        segments_kept: config.segments_kept,
        tap,
    };
    let mut events: Events = SelectAll::new();
    let mut watch = broadcast.clone();
    p.subscribe_new(&broadcast, &mut events);
    let mut ended = broadcast.status() == BroadcastStatus::Ended;
    while !(ended && events.is_empty()) {
        tokio::select! {
            update = watch.update(), if !ended => {
                ended = update.status == BroadcastStatus::Ended;
                p.subscribe_new(&broadcast, &mut events);
            }
            item = events.next(), if !events.is_empty() => {
                let Some((name, event)) = item else { continue };
                let idx = match p.tracks.get(&name) {
                    Some(i) => *i,
                    None => {
                        let TrackEvent::Frame(f) = &event else { continue };
                        let scale = match &*f.group.config {
                            CodecConfig::Aac(a) => Timescale::new(a.sample_rate).unwrap_or(Timescale::MILLIS),
                            _ => Timescale::MPEG,
                        };
                        let kind = p.kinds.get(&name).copied().unwrap_or(TrackKind::Audio);
                        p.add(&name, kind, scale)
                    }
                };
                let result = match event {
                    TrackEvent::Frame(f) => p.packager.push(idx, f),
                    TrackEvent::Interrupted => {
                        tracing::info!(track = %name, "publisher gone; holding the playlist open for a reconnect");
                        p.packager.interrupt(idx)
                    }
                };
                p.apply(result);
            }
        }
    }
    let result = p.packager.finish();
    p.apply(result);
    output.update(|st| st.ended = true);
    // The archive learns the stream ended.
    p.tap = None;
    tracing::info!(linger = ?config.linger, "stream ended; playlists end with EXT-X-ENDLIST");
    tokio::select! {
        _ = tokio::time::sleep(config.linger) => {}
        _ = shutdown.wait() => {}
    }
    outputs.remove(&output);
}
