//! One track of a broadcast: a sequence of groups (a group is one GOP for
//! video), each a sequence of frames, written by one producer and read by any
//! number of consumers.
//!
//! Storage is shared: a consumer is only a cursor (group, frame) into the
//! track's retained groups, so fan-out costs no copies and a consumer's memory
//! is constant. Retention is bounded by a media-time window, a group count and
//! a byte budget; the producer never waits for anyone. A consumer whose cursor
//! falls out of the window (or that lags more than its own `max_lag`) jumps to
//! the next group start — the next keyframe — and counts the frames it lost.
//!
//! Keyframe requests travel the other way: a consumer (a WebRTC viewer
//! joining or switching) asks the track for a keyframe; requests coalesce
//! into one flag until the producer writes a keyframe. The producer (an
//! encoder) reads the flag and decides when to honour it; a producer that
//! cannot make keyframes (a passed-through source) ignores it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;

use super::{Frame, GroupInfo, TrackInfo};
use crate::media::CodecConfig;
use crate::time::MediaTime;

/// How much of a track is kept for consumers.
#[derive(Clone, Debug)]
pub struct Retention {
    /// Groups that started more than this long (media time) before the newest
    /// group are evicted.
    pub window: Duration,
    /// Hard cap on retained groups (audio has one group per frame).
    pub max_groups: usize,
    /// Hard cap on retained payload bytes. An open group larger than this
    /// loses its oldest frames.
    pub max_bytes: usize,
    /// Hard cap on retained frames, whatever their size (a flood of tiny
    /// frames costs their bookkeeping). An open group with more loses its
    /// oldest frames.
    pub max_frames: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            window: Duration::from_secs(10),
            max_groups: 1024,
            max_bytes: 64 << 20,
            max_frames: 16_384,
        }
    }
}

struct GroupSlot {
    info: Arc<GroupInfo>,
    frames: VecDeque<Frame>,
    /// Index within the group of `frames[0]`; non-zero once an oversized open
    /// group lost its head.
    first_index: u64,
    /// Track-wide number of the group's frame 0, for drop accounting.
    first_number: u64,
    complete: bool,
    /// The producer went away while this group was open.
    interrupted: bool,
    bytes: usize,
    start_dts: MediaTime,
}

struct TrackState {
    groups: VecDeque<GroupSlot>,
    bytes: usize,
    /// Frames held in `groups`.
    frames: usize,
    next_sequence: u64,
    frames_written: u64,
    /// Payload bytes written, ever (metrics).
    bytes_written: u64,
    closed: bool,
    /// Frames evicted before any consumer could have read them all.
    evicted_frames: u64,
}

pub(crate) struct TrackShared {
    pub(crate) info: TrackInfo,
    retention: Retention,
    state: Mutex<TrackState>,
    notify: watch::Sender<u64>,
    /// A consumer asked for a keyframe, and none has been written since.
    keyframe_wanted: AtomicBool,
}

impl TrackShared {
    pub(crate) fn new(info: TrackInfo, retention: Retention) -> Arc<TrackShared> {
        Arc::new(TrackShared {
            info,
            retention,
            state: Mutex::new(TrackState {
                groups: VecDeque::new(),
                bytes: 0,
                frames: 0,
                next_sequence: 0,
                frames_written: 0,
                bytes_written: 0,
                closed: false,
                evicted_frames: 0,
            }),
            notify: watch::Sender::new(0),
            keyframe_wanted: AtomicBool::new(false),
        })
    }

    /// Asks the producer for a keyframe; requests made before the next
    /// keyframe is written coalesce into one.
    pub(crate) fn request_keyframe(&self) {
        if !self.keyframe_wanted.swap(true, Ordering::AcqRel) {
            metrics::counter!("streamd_bus_keyframe_requests_total", "track" => self.info.kind.as_str())
                .increment(1);
        }
    }

    fn lock(&self) -> MutexGuard<'_, TrackState> {
        // A poisoned lock means a panic while holding it, which is a bug in
        // this module; the state is still consistent enough to read.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.notify.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Frames and payload bytes written so far.
    pub(crate) fn written(&self) -> (u64, u64) {
        let st = self.lock();
        (st.frames_written, st.bytes_written)
    }

    /// The producer of `session` is gone: finish its open group, marking
    /// the interruption. A group another session already started is left
    /// alone.
    pub(crate) fn interrupt(&self, session: u32) {
        let mut st = self.lock();
        if let Some(last) = st.groups.back_mut()
            && !last.complete
            && last.info.session == session
        {
            last.complete = true;
            last.interrupted = true;
        }
        drop(st);
        self.wake();
    }

    /// The broadcast has ended: consumers drain what is left, then see the end.
    pub(crate) fn close(&self) {
        let mut st = self.lock();
        st.closed = true;
        if let Some(last) = st.groups.back_mut() {
            last.complete = true;
        }
        drop(st);
        self.wake();
    }

    pub(crate) fn subscribe(
        self: &Arc<Self>,
        start: StartAt,
        max_lag: Option<Duration>,
    ) -> TrackConsumer {
        TrackConsumer {
            start,
            changed: self.notify.subscribe(),
            track: self.clone(),
            cursor: None,
            interrupt_reported: None,
            max_lag,
            dropped_total: 0,
        }
    }
}

/// Writes one track. Dropping it marks an interruption (the publisher left);
/// the broadcast decides later whether that became the end.
pub struct TrackProducer {
    track: Arc<TrackShared>,
    config: Option<Arc<CodecConfig>>,
    session: u32,
    /// The next group starts a new publisher session.
    discontinuity: bool,
    group_open: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteError {
    #[error("a group must start with a keyframe")]
    GroupWithoutKeyframe,
    #[error("no codec configuration has been set for this track")]
    NoConfig,
}

impl TrackProducer {
    pub(crate) fn new(track: Arc<TrackShared>, session: u32, discontinuity: bool) -> Self {
        TrackProducer {
            track,
            config: None,
            session,
            discontinuity,
            group_open: false,
        }
    }

    pub fn info(&self) -> &TrackInfo {
        &self.track.info
    }

    /// Sets the decoder configuration for the groups that follow. A change
    /// takes effect at the next group, which must therefore start now: the
    /// next written frame must be a keyframe.
    pub fn set_config(&mut self, config: CodecConfig) {
        if self.config.as_deref() != Some(&config) {
            self.config = Some(Arc::new(config));
            self.group_open = false;
        }
    }

    pub fn config(&self) -> Option<&Arc<CodecConfig>> {
        self.config.as_ref()
    }

    /// A consumer asked for a keyframe and none has been written since (see
    /// [`TrackConsumer::request_keyframe`]). Writing a keyframe answers it.
    pub fn keyframe_requested(&self) -> bool {
        self.track.keyframe_wanted.load(Ordering::Acquire)
    }

    /// Appends a frame. `new_group` starts a new group with it (it must then
    /// be a keyframe); a frame after a configuration change always does.
    pub fn write(&mut self, frame: Frame, new_group: bool) -> Result<(), WriteError> {
        let config = self.config.clone().ok_or(WriteError::NoConfig)?;
        let start = new_group || !self.group_open;
        if start && !frame.keyframe {
            return Err(WriteError::GroupWithoutKeyframe);
        }
        if frame.keyframe {
            self.track.keyframe_wanted.store(false, Ordering::Release);
        }
        let retention = &self.track.retention;
        let mut st = self.track.lock();
        let size = frame.data.len();
        let number = st.frames_written;
        st.frames_written += 1;
        st.bytes_written += size as u64;
        if start {
            if let Some(last) = st.groups.back_mut() {
                last.complete = true;
            }
            let sequence = st.next_sequence;
            st.next_sequence += 1;
            let info = Arc::new(GroupInfo {
                sequence,
                config,
                discontinuity: std::mem::take(&mut self.discontinuity),
                session: self.session,
            });
            st.groups.push_back(GroupSlot {
                info,
                frames: VecDeque::new(),
                first_index: 0,
                first_number: number,
                complete: false,
                interrupted: false,
                bytes: 0,
                start_dts: frame.dts,
            });
            self.group_open = true;
        }
        let Some(group) = st.groups.back_mut() else {
            unreachable!("a group was pushed above or is open");
        };
        group.bytes += size;
        group.frames.push_back(frame);
        st.bytes += size;
        st.frames += 1;
        evict(&mut st, retention);
        drop(st);
        self.track.wake();
        Ok(())
    }
}

impl Drop for TrackProducer {
    fn drop(&mut self) {
        self.track.interrupt(self.session);
    }
}

fn evict(st: &mut TrackState, retention: &Retention) {
    let newest_start = match st.groups.back() {
        Some(g) => g.start_dts,
        None => return,
    };
    let window = MediaTime::from_duration(retention.window, newest_start.timescale());
    while st.groups.len() > 1 {
        let front = &st.groups[0];
        let too_old = newest_start - front.start_dts > window;
        let over = st.groups.len() > retention.max_groups
            || st.bytes > retention.max_bytes
            || st.frames > retention.max_frames;
        if !(too_old || over) {
            break;
        }
        if let Some(g) = st.groups.pop_front() {
            st.bytes -= g.bytes;
            st.frames -= g.frames.len();
            st.evicted_frames += g.frames.len() as u64;
        }
    }
    // One open group over the byte or frame budget (a source that sends
    // keyframes too rarely, or floods tiny frames) loses its oldest frames;
    // a consumer in it waits for the next group.
    if (st.bytes > retention.max_bytes || st.frames > retention.max_frames)
        && let Some(g) = st.groups.back_mut()
    {
        let mut freed = (0usize, 0usize);
        while g.frames.len() > 1
            && (st.bytes - freed.0 > retention.max_bytes
                || st.frames - freed.1 > retention.max_frames)
        {
            if let Some(f) = g.frames.pop_front() {
                g.bytes -= f.data.len();
                g.first_index += 1;
                freed.0 += f.data.len();
                freed.1 += 1;
            }
        }
        st.bytes -= freed.0;
        st.frames -= freed.1;
        st.evicted_frames += freed.1 as u64;
    }
}

/// Where a new consumer starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// At the newest keyframe: a viewer joining live.
    Newest,
    /// At the oldest keyframe still held: a packager or recorder that must
    /// not miss what was published before it subscribed.
    Oldest,
}

/// What a consumer reads.
#[derive(Clone, Debug)]
pub enum TrackEvent {
    Frame(FrameEvent),
    /// The publisher left after the frame last delivered. Frames may follow
    /// if it comes back (their group has `discontinuity` set).
    Interrupted,
}

#[derive(Clone, Debug)]
pub struct FrameEvent {
    pub frame: Frame,
    pub group: Arc<GroupInfo>,
    /// This frame starts its group (it is a keyframe).
    pub group_start: bool,
    /// Frames this consumer skipped just before this one (lag or eviction).
    pub dropped: u64,
}

#[derive(Clone, Copy, Debug)]
struct Cursor {
    sequence: u64,
    index: u64,
    /// Track-wide frame number this cursor points at.
    number: u64,
}

/// Reads one track from the newest keyframe on. Cloning is not offered on
/// purpose: a new consumer is a new late joiner (`Track::subscribe`).
pub struct TrackConsumer {
    track: Arc<TrackShared>,
    start: StartAt,
    changed: watch::Receiver<u64>,
    cursor: Option<Cursor>,
    interrupt_reported: Option<u64>,
    max_lag: Option<Duration>,
    dropped_total: u64,
}

/// The outcome of a non-blocking read.
#[derive(Debug)]
pub enum TryNext {
    Event(TrackEvent),
    /// Nothing new yet.
    Pending,
    /// The track ended and everything was read.
    Closed,
}

impl TrackConsumer {
    pub fn info(&self) -> &TrackInfo {
        &self.track.info
    }

    /// Groups and payload bytes the track currently retains.
    pub fn retained(&self) -> (usize, usize) {
        let st = self.track.lock();
        (st.groups.len(), st.bytes)
    }

    /// Total frames this consumer has skipped.
    pub fn dropped(&self) -> u64 {
        self.dropped_total
    }

    /// Asks the track's producer for a keyframe soon (a viewer that joined
    /// or switched and waits for one). Requests coalesce until the producer
    /// writes a keyframe; the producer decides when (an encoder spaces them
    /// out), and a producer that cannot make one ignores it. Throttling per
    /// requester is the caller's.
    pub fn request_keyframe(&self) {
        self.track.request_keyframe();
    }

    /// Reads without waiting.
    pub fn try_next(&mut self) -> TryNext {
        let track = self.track.clone();
        let st = track.lock();
        let (event, dropped) = self.advance(&st);
        drop(st);
        if dropped > 0 {
            self.dropped_total += dropped;
            metrics::counter!("streamd_bus_dropped_frames_total", "track" => self.track.info.kind.as_str())
                .increment(dropped);
        }
        event
    }

    /// Waits for the next event; `None` once the track has ended.
    pub async fn next(&mut self) -> Option<TrackEvent> {
        loop {
            self.changed.borrow_and_update();
            match self.try_next() {
                TryNext::Event(e) => return Some(e),
                TryNext::Closed => return None,
                TryNext::Pending => {}
            }
            if self.changed.changed().await.is_err() {
                // The track itself is gone; whatever it held has been read.
                return match self.try_next() {
                    TryNext::Event(e) => Some(e),
                    _ => None,
                };
            }
        }
    }

    fn advance(&mut self, st: &TrackState) -> (TryNext, u64) {
        let mut dropped = 0;
        loop {
            let Some(front) = st.groups.front() else {
                return (self.idle(st), dropped);
            };
            let newest = st.groups.back().unwrap_or(front);
            let mut cur = match self.cursor {
                Some(c) => c,
                None => {
                    // A new consumer: the newest (or oldest) group whose
                    // keyframe is still held.
                    let intact = |g: &&GroupSlot| g.first_index == 0;
                    let first = match self.start {
                        StartAt::Newest => st.groups.iter().rev().find(intact),
                        StartAt::Oldest => st.groups.iter().find(intact),
                    };
                    match first {
                        Some(g) => Cursor {
                            sequence: g.info.sequence,
                            index: 0,
                            number: g.first_number,
                        },
                        None => return (self.idle(st), dropped),
                    }
                }
            };
            // `cur.number` is the first frame this consumer has neither read
            // nor counted as dropped; skips leave it there, and the frames in
            // between are counted when the consumer enters a group.
            //
            // Evicted from under us: jump to the oldest intact group start.
            if cur.sequence < front.info.sequence {
                let Some(g) = st.groups.iter().find(|g| g.first_index == 0) else {
                    self.cursor = Some(Cursor {
                        sequence: newest.info.sequence + 1,
                        index: 0,
                        number: cur.number,
                    });
                    return (self.idle(st), dropped);
                };
                cur = Cursor {
                    sequence: g.info.sequence,
                    index: 0,
                    number: cur.number,
                };
            }
            // Too far behind the live edge for this consumer: jump to the newest
            // group start.
            if let Some(max_lag) = self.max_lag
                && cur.sequence < newest.info.sequence
                && newest.first_index == 0
            {
                let at = self.slot(st, cur.sequence).and_then(|g| {
                    g.frames
                        .get((cur.index.saturating_sub(g.first_index)) as usize)
                        .map(|f| f.dts)
                        .or(Some(g.start_dts))
                });
                if let Some(at) = at {
                    let lag = newest.start_dts - at;
                    if lag > MediaTime::from_duration(max_lag, lag.timescale()) {
                        cur = Cursor {
                            sequence: newest.info.sequence,
                            index: 0,
                            number: cur.number,
                        };
                    }
                }
            }
            let Some(g) = self.slot(st, cur.sequence) else {
                // Past the newest group: wait for the next one.
                self.cursor = Some(cur);
                return (self.idle(st), dropped);
            };
            if cur.index == 0 && cur.number < g.first_number {
                dropped += g.first_number - cur.number;
                cur.number = g.first_number;
            }
            if cur.index < g.first_index {
                // This open group lost its head (over the byte budget): the
                // rest cannot be decoded; wait for the next group.
                self.cursor = Some(Cursor {
                    sequence: cur.sequence + 1,
                    index: 0,
                    number: cur.number,
                });
                continue;
            }
            if let Some(frame) = g.frames.get((cur.index - g.first_index) as usize) {
                let event = FrameEvent {
                    frame: frame.clone(),
                    group: g.info.clone(),
                    group_start: cur.index == 0,
                    dropped,
                };
                self.cursor = Some(Cursor {
                    sequence: cur.sequence,
                    index: cur.index + 1,
                    number: cur.number + 1,
                });
                return (TryNext::Event(TrackEvent::Frame(event)), dropped);
            }
            if !g.complete {
                self.cursor = Some(cur);
                return (TryNext::Pending, dropped);
            }
            // The group is finished.
            if self.slot(st, cur.sequence + 1).is_some() {
                self.cursor = Some(Cursor {
                    sequence: cur.sequence + 1,
                    index: 0,
                    number: cur.number,
                });
                continue;
            }
            self.cursor = Some(cur);
            if g.interrupted && self.interrupt_reported != Some(g.info.sequence) {
                self.interrupt_reported = Some(g.info.sequence);
                return (TryNext::Event(TrackEvent::Interrupted), dropped);
            }
            return (self.idle(st), dropped);
        }
    }

    fn idle(&self, st: &TrackState) -> TryNext {
        if st.closed {
            TryNext::Closed
        } else {
            TryNext::Pending
        }
    }

    fn slot<'s>(&self, st: &'s TrackState, sequence: u64) -> Option<&'s GroupSlot> {
        let front = st.groups.front()?.info.sequence;
        let i = sequence.checked_sub(front)?;
        st.groups.get(usize::try_from(i).ok()?)
    }
}
