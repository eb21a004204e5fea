//! Deterministic scenario tests of the bus: no sleeps, no clocks; reads use
//! `try_next`, which never waits.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::*;
use crate::media::{AacConfig, AvcConfig, CodecConfig};

fn video_config() -> CodecConfig {
    CodecConfig::H264(
        AvcConfig::parse(Bytes::from_static(crate::media::h264::tests::AVCC_320X240)).unwrap(),
    )
}

fn audio_config() -> CodecConfig {
    CodecConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap())
}

fn frame(ms: i64, keyframe: bool, size: usize) -> Frame {
    Frame {
        dts: MediaTime::from_millis(ms),
        pts: MediaTime::from_millis(ms),
        keyframe,
        data: Bytes::from(vec![0u8; size]),
        wallclock: SystemTime::UNIX_EPOCH,
        received: Instant::now(),
    }
}

fn path(s: &str) -> StreamPath {
    StreamPath::new("app", s).unwrap()
}

fn video() -> TrackInfo {
    TrackInfo::source("video", TrackKind::Video)
}

/// Writes `gops` GOPs of `len` frames, 33 ms apart, starting at `start_ms`.
fn write_gops(p: &mut TrackProducer, start_ms: i64, gops: usize, len: usize, size: usize) -> i64 {
    let mut t = start_ms;
    for _ in 0..gops {
        for i in 0..len {
            p.write(frame(t, i == 0, size), i == 0).unwrap();
            t += 33;
        }
    }
    t
}

fn next_frame(c: &mut TrackConsumer) -> FrameEvent {
    match c.try_next() {
        TryNext::Event(TrackEvent::Frame(f)) => f,
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn registry() -> Registry {
    Registry::new(Duration::ZERO, Retention::default())
}

/// Tracks hold at most `max_bytes` (and no time or count limit bites).
fn byte_budget_registry(max_bytes: usize) -> Registry {
    Registry::new(
        Duration::ZERO,
        Retention {
            window: Duration::from_secs(3600),
            max_groups: 16,
            max_bytes,
            max_frames: usize::MAX,
        },
    )
}

#[test]
fn late_joiner_starts_at_newest_keyframe() {
    let reg = registry();
    let mut b = reg.publish(path("late")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    write_gops(&mut v, 0, 3, 10, 100);
    // Two frames into a fourth GOP.
    v.write(frame(990, true, 100), true).unwrap();
    v.write(frame(1023, false, 100), false).unwrap();

    let mut c = b.consumer().subscribe("video", None).unwrap();
    let first = next_frame(&mut c);
    assert!(first.group_start && first.frame.keyframe);
    assert_eq!(first.frame.dts, MediaTime::from_millis(990));
    assert_eq!(first.group.sequence, 3);
    assert_eq!(next_frame(&mut c).frame.dts, MediaTime::from_millis(1023));
    assert!(matches!(c.try_next(), TryNext::Pending));
    assert_eq!(c.dropped(), 0);
}

#[test]
fn slow_consumer_skips_to_next_keyframe_and_counts_drops() {
    let reg = Registry::new(
        Duration::ZERO,
        Retention {
            window: Duration::from_secs(3600),
            max_groups: 4,
            max_bytes: usize::MAX,
            max_frames: usize::MAX,
        },
    );
    let mut b = reg.publish(path("slow")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    v.write(frame(0, true, 10), true).unwrap();
    let mut slow = b.consumer().subscribe("video", None).unwrap();
    assert_eq!(next_frame(&mut slow).frame.dts, MediaTime::from_millis(0));

    // The publisher writes 20 GOPs while the consumer reads nothing: no
    // write blocks, and the track holds no more than 4 groups.
    for i in 1..10 {
        v.write(frame(i * 33, false, 10), false).unwrap();
    }
    write_gops(&mut v, 330, 20, 10, 10);
    assert_eq!(slow.retained().0, 4);
    assert_eq!(slow.retained().1, 4 * 10 * 10);

    // The consumer resumes at the oldest retained keyframe, having lost
    // frames 1..=9 of GOP 0 and GOPs 1..=16 entirely.
    let f = next_frame(&mut slow);
    assert!(f.group_start && f.frame.keyframe);
    assert_eq!(f.group.sequence, 17);
    assert_eq!(f.dropped, 9 + 16 * 10);
    assert_eq!(slow.dropped(), 169);
    // Then it reads on without further loss.
    for _ in 0..39 {
        assert_eq!(next_frame(&mut slow).dropped, 0);
    }
    assert!(matches!(slow.try_next(), TryNext::Pending));
}

#[test]
fn real_time_consumer_jumps_to_newest_group_when_lagging() {
    let reg = registry();
    let mut b = reg.publish(path("lag")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    v.write(frame(0, true, 10), true).unwrap();
    let mut rt = b
        .consumer()
        .subscribe("video", Some(Duration::from_millis(500)))
        .unwrap();
    let mut all = b.consumer().subscribe("video", None).unwrap();
    assert_eq!(next_frame(&mut rt).frame.dts, MediaTime::from_millis(0));
    assert_eq!(next_frame(&mut all).frame.dts, MediaTime::from_millis(0));
    // 3 more GOPs of 10 frames (~330 ms each): 1 s ahead of both readers.
    for i in 1..10 {
        v.write(frame(i * 33, false, 10), false).unwrap();
    }
    write_gops(&mut v, 330, 3, 10, 10);

    let f = next_frame(&mut rt);
    assert_eq!(f.group.sequence, 3, "jumped to the newest GOP");
    assert_eq!(f.dropped, 9 + 2 * 10);
    // The unbounded-lag consumer reads everything in order.
    for i in 1..40 {
        let f = next_frame(&mut all);
        assert_eq!(f.frame.dts, MediaTime::from_millis(i * 33));
        assert_eq!(f.dropped, 0);
    }
}

#[test]
fn oversized_open_group_is_truncated_and_readers_wait_for_next_keyframe() {
    let reg = byte_budget_registry(1000);
    let mut b = reg.publish(path("big")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    v.write(frame(0, true, 100), true).unwrap();
    let mut c = b.consumer().subscribe("video", None).unwrap();
    assert!(next_frame(&mut c).group_start);
    // A GOP that never ends: 50 frames of 100 bytes, budget 1000.
    for i in 1..50 {
        v.write(frame(i * 33, false, 100), false).unwrap();
    }
    assert!(c.retained().1 <= 1000);
    // The head of the group is gone, so the rest is undecodable: nothing is
    // delivered until the next keyframe.
    assert!(matches!(c.try_next(), TryNext::Pending));
    v.write(frame(50 * 33, true, 100), true).unwrap();
    let f = next_frame(&mut c);
    assert!(f.group_start);
    assert_eq!(f.frame.dts, MediaTime::from_millis(1650));
    assert_eq!(c.dropped(), 49);
    // A late joiner also starts at the intact group.
    let mut late = b.consumer().subscribe("video", None).unwrap();
    assert_eq!(
        next_frame(&mut late).frame.dts,
        MediaTime::from_millis(1650)
    );
}

#[test]
fn group_must_start_with_keyframe_and_needs_config() {
    let reg = registry();
    let mut b = reg.publish(path("rules")).unwrap();
    let mut v = b.track(video());
    assert_eq!(v.write(frame(0, true, 1), true), Err(WriteError::NoConfig));
    v.set_config(video_config());
    assert_eq!(
        v.write(frame(0, false, 1), false),
        Err(WriteError::GroupWithoutKeyframe)
    );
    v.write(frame(0, true, 1), true).unwrap();
    v.write(frame(33, false, 1), false).unwrap();
    // A configuration change forces a new group.
    v.set_config(audio_config());
    assert_eq!(
        v.write(frame(66, false, 1), false),
        Err(WriteError::GroupWithoutKeyframe)
    );
}

#[test]
fn second_publisher_is_refused_and_first_is_untouched() {
    let reg = registry();
    let mut first = reg.publish(path("dup")).unwrap();
    let mut v = first.track(video());
    v.set_config(video_config());
    v.write(frame(0, true, 1), true).unwrap();
    assert_eq!(
        reg.publish(path("dup")).err(),
        Some(PublishError::AlreadyPublishing(path("dup")))
    );
    let mut c = first.consumer().subscribe("video", None).unwrap();
    v.write(frame(33, false, 1), false).unwrap();
    assert_eq!(next_frame(&mut c).frame.dts, MediaTime::from_millis(0));
    assert_eq!(next_frame(&mut c).frame.dts, MediaTime::from_millis(33));
    assert!(matches!(
        first.consumer().status(),
        BroadcastStatus::Live { session: 0 }
    ));
}

/// Runs on tokio's paused clock: the 10 s grace period passes instantly and
/// deterministically.
#[tokio::test(start_paused = true)]
async fn reconnect_within_grace_continues_with_discontinuity() {
    {
        let reg = Registry::new(Duration::from_secs(10), Retention::default());
        let mut b = reg.publish(path("blip")).unwrap();
        let bc = b.consumer();
        let mut v = b.track(video());
        v.set_config(video_config());
        v.write(frame(0, true, 1), true).unwrap();
        v.write(frame(33, false, 1), false).unwrap();
        let mut c = bc.subscribe("video", None).unwrap();
        next_frame(&mut c);
        next_frame(&mut c);

        drop(v);
        drop(b);
        assert!(matches!(
            c.try_next(),
            TryNext::Event(TrackEvent::Interrupted)
        ));
        assert!(matches!(c.try_next(), TryNext::Pending));
        assert_eq!(bc.status(), BroadcastStatus::Interrupted { session: 0 });

        // The publisher comes back with timestamps restarting at 0.
        let mut b2 = reg.publish(path("blip")).unwrap();
        assert_eq!(b2.session(), 1);
        let mut v2 = b2.track(video());
        v2.set_config(video_config());
        v2.write(frame(0, true, 1), true).unwrap();
        let f = next_frame(&mut c);
        assert!(f.group.discontinuity && f.group_start);
        assert_eq!(f.group.session, 1);
        assert_eq!(f.group.sequence, 1);

        // Gone again, and this time the grace period runs out.
        drop(v2);
        drop(b2);
        assert!(matches!(
            c.try_next(),
            TryNext::Event(TrackEvent::Interrupted)
        ));
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert_eq!(bc.status(), BroadcastStatus::Ended);
        assert!(matches!(c.try_next(), TryNext::Closed));
        assert!(reg.get(&path("blip")).is_none());
        // A new publisher now starts a new broadcast.
        let b3 = reg.publish(path("blip")).unwrap();
        assert_ne!(b3.consumer().id(), bc.id());
        assert_eq!(b3.session(), 0);
    }
}

#[test]
fn end_without_grace_closes_consumers_after_draining() {
    let reg = registry();
    let mut b = reg.publish(path("end")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    v.write(frame(0, true, 1), true).unwrap();
    let mut c = b.consumer().subscribe("video", None).unwrap();
    drop(v);
    drop(b);
    assert!(matches!(c.try_next(), TryNext::Event(TrackEvent::Frame(_))));
    assert!(matches!(
        c.try_next(),
        TryNext::Event(TrackEvent::Interrupted)
    ));
    assert!(matches!(c.try_next(), TryNext::Closed));
}

#[test]
fn audio_groups_are_single_frames_and_window_bounds_them() {
    let reg = Registry::new(
        Duration::ZERO,
        Retention {
            window: Duration::from_secs(1),
            max_groups: 1024,
            max_bytes: usize::MAX,
            max_frames: usize::MAX,
        },
    );
    let mut b = reg.publish(path("audio")).unwrap();
    let mut a = b.track(TrackInfo::source("audio", TrackKind::Audio));
    a.set_config(audio_config());
    for i in 0..200 {
        a.write(frame(i * 23, true, 5), true).unwrap();
    }
    let c = b.consumer().subscribe("audio", None).unwrap();
    // 1 s of 23 ms frames: 44 groups (0..=43 * 23 ms = 989 ms back).
    assert_eq!(c.retained().0, 44);
}

#[tokio::test]
async fn async_next_wakes_on_write() {
    let reg = registry();
    let mut b = reg.publish(path("wake")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    let bc = b.consumer();
    let mut c = bc.subscribe("video", None).unwrap();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while let Some(TrackEvent::Frame(_)) = c.next().await {
            n += 1;
        }
        n
    });
    for i in 0..5 {
        v.write(frame(i * 33, i == 0, 1), i == 0).unwrap();
        tokio::task::yield_now().await;
    }
    drop(v);
    drop(b);
    assert_eq!(reader.await.unwrap(), 5);
}

#[test]
fn frames_added_to_a_skipped_headless_group_are_counted() {
    let reg = byte_budget_registry(1000);
    let mut b = reg.publish(path("headless")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    v.write(frame(0, true, 100), true).unwrap();
    let mut c = b.consumer().subscribe("video", None).unwrap();
    assert!(next_frame(&mut c).group_start);
    for i in 1..20 {
        v.write(frame(i * 33, false, 100), false).unwrap();
    }
    // The head is gone: the consumer gives up on this group...
    assert!(matches!(c.try_next(), TryNext::Pending));
    // ...which keeps growing after that.
    for i in 20..30 {
        v.write(frame(i * 33, false, 100), false).unwrap();
    }
    v.write(frame(30 * 33, true, 100), true).unwrap();
    let f = next_frame(&mut c);
    assert!(f.group_start);
    // Frames 1..=29 were never delivered: all counted.
    assert_eq!(f.dropped, 29);
    assert_eq!(c.dropped(), 29);
}

#[tokio::test(start_paused = true)]
async fn a_stale_session_does_not_interrupt_the_new_one() {
    let reg = Registry::new(Duration::from_secs(10), Retention::default());
    let mut b = reg.publish(path("stale")).unwrap();
    let mut old = b.track(video());
    old.set_config(video_config());
    old.write(frame(0, true, 1), true).unwrap();
    let mut c = b.consumer().subscribe("video", None).unwrap();
    next_frame(&mut c);
    // The broadcast is interrupted while the old track producer lingers.
    drop(b);
    let mut b2 = reg.publish(path("stale")).unwrap();
    let mut new = b2.track(video());
    new.set_config(video_config());
    new.write(frame(0, true, 1), true).unwrap();
    drop(old);
    let f = next_frame(&mut c);
    assert_eq!(f.group.session, 1);
    new.write(frame(33, false, 1), false).unwrap();
    // The new session's group stays open: no interruption reported.
    assert_eq!(next_frame(&mut c).frame.dts, MediaTime::from_millis(33));
    assert!(matches!(c.try_next(), TryNext::Pending));
}

#[test]
fn a_packager_can_start_at_the_oldest_keyframe_held() {
    let reg = registry();
    let mut b = reg.publish(path("oldest")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    // A burst of three GOPs before anyone subscribes.
    write_gops(&mut v, 0, 3, 10, 10);
    let bc = b.consumer();
    let mut live = bc.subscribe("video", None).unwrap();
    let mut packager = bc.subscribe_at("video", StartAt::Oldest, None).unwrap();
    assert_eq!(next_frame(&mut live).group.sequence, 2);
    let f = next_frame(&mut packager);
    assert_eq!(
        (f.group.sequence, f.frame.dts),
        (0, MediaTime::from_millis(0))
    );
}

/// A flood of tiny frames in one endless group (no keyframe after the
/// first) is held to `max_frames`: the open group loses its oldest frames,
/// and a consumer that fell behind resumes at the next keyframe.
#[test]
fn frame_count_cap_bounds_a_flood_of_tiny_frames() {
    let reg = Registry::new(
        Duration::ZERO,
        Retention {
            window: Duration::from_secs(3600),
            max_groups: 1024,
            max_bytes: usize::MAX,
            max_frames: 100,
        },
    );
    let mut b = reg.publish(path("tiny")).unwrap();
    let mut v = b.track(video());
    v.set_config(video_config());
    v.write(frame(0, true, 1), true).unwrap();
    let mut slow = b.consumer().subscribe("video", None).unwrap();
    assert_eq!(next_frame(&mut slow).frame.dts, MediaTime::from_millis(0));
    for i in 1..10_000 {
        v.write(frame(i, false, 1), false).unwrap();
    }
    assert_eq!(slow.retained().0, 1);
    assert!(slow.retained().1 <= 100, "{:?}", slow.retained());
    // Many groups of tiny frames: whole groups go first.
    for g in 0..50i64 {
        v.write(frame(20_000 + g * 10, true, 1), true).unwrap();
        for i in 1..10 {
            v.write(frame(20_000 + g * 10 + i, false, 1), false)
                .unwrap();
        }
    }
    let (groups, bytes) = slow.retained();
    assert!(bytes <= 100, "{groups} groups, {bytes} bytes");
    assert_eq!(groups, 10);
    let f = next_frame(&mut slow);
    assert!(f.group_start && f.frame.keyframe);
    assert_eq!(f.group.sequence, 41);
    // All of the first group after frame 0, and 40 groups of 10.
    assert_eq!(f.dropped, 9_999 + 40 * 10);
}

#[tokio::test]
async fn new_broadcasts_beyond_the_limit_are_refused_but_a_returning_publisher_is_not() {
    let reg = Registry::new(Duration::from_secs(60), Retention::default());
    reg.limit_broadcasts(2);
    let a = reg.publish(path("a")).unwrap();
    let _b = reg.publish(path("b")).unwrap();
    assert_eq!(reg.publish(path("c")).err(), Some(PublishError::Full(2)));
    // a's publisher drops and comes back within the grace: not new.
    drop(a);
    assert_eq!(
        reg.get(&path("a")).unwrap().status(),
        BroadcastStatus::Interrupted { session: 0 }
    );
    let _a = reg.publish(path("a")).unwrap();
    // Once a broadcast ends, there is room again.
    assert!(reg.end(&path("a")));
    let _c = reg.publish(path("c")).unwrap();
}

/// Keyframe requests go upstream: from a consumer or by track name, they
/// coalesce into one until the producer writes a keyframe (not any frame);
/// they outlive a producer's session, and a track that does not exist says
/// so.
#[tokio::test]
async fn keyframe_requests_reach_the_producer_and_a_keyframe_answers_them() {
    let reg = Registry::new(Duration::from_secs(10), Retention::default());
    let mut b = reg.publish(path("kf")).unwrap();
    let bc = b.consumer();
    let mut v = b.track(video());
    v.set_config(video_config());
    v.write(frame(0, true, 1), true).unwrap();
    assert!(!v.keyframe_requested());

    let c = bc.subscribe("video", None).unwrap();
    c.request_keyframe();
    assert!(v.keyframe_requested());
    // A second request before the keyframe is the same request.
    assert!(bc.request_keyframe("video"));
    assert!(v.keyframe_requested());
    // A delta frame does not answer it; a keyframe inside the group does.
    v.write(frame(33, false, 1), false).unwrap();
    assert!(v.keyframe_requested());
    v.write(frame(66, true, 1), false).unwrap();
    assert!(!v.keyframe_requested());

    // Asked while the publisher is away: its next session's producer sees
    // it, and its first keyframe answers it.
    drop(v);
    drop(b);
    assert!(bc.request_keyframe("video"));
    let mut b2 = reg.publish(path("kf")).unwrap();
    let mut v2 = b2.track(video());
    assert!(v2.keyframe_requested());
    v2.set_config(video_config());
    v2.write(frame(0, true, 1), true).unwrap();
    assert!(!v2.keyframe_requested());

    assert!(!bc.request_keyframe("1080p"));
}

#[test]
fn the_catalog_wakes_watchers_only_when_it_changes() {
    use futures_util::FutureExt;
    let reg = registry();
    let _b = reg.publish(path("cat")).unwrap();
    let writer = reg.get(&path("cat")).unwrap();
    let mut watcher = reg.get(&path("cat")).unwrap();
    assert_eq!(watcher.catalog(), None, "none until one is published");
    writer.publish_catalog(Catalog {
        video: vec![
            VideoEntry::rung("360p", 600_000, true),
            VideoEntry::rung("720p", 2_500_000, true),
        ],
        ..Default::default()
    });
    let seen = watcher.update().now_or_never().expect("woken");
    let catalog = seen.catalog.unwrap();
    let order: Vec<&str> = catalog.video.iter().map(|v| v.track.as_str()).collect();
    assert_eq!(order, ["720p", "360p"], "largest first");
    assert!(catalog.lists("360p") && !catalog.lists("audio"));
    // The same catalog again: nobody is woken.
    writer.publish_catalog(catalog.clone());
    assert!(watcher.update().now_or_never().is_none());
    // A change made in place keeps the rest.
    writer.update_catalog(|c| {
        c.webrtc_audio = Some("opus".into());
        c.complete = true;
    });
    let seen = watcher
        .update()
        .now_or_never()
        .expect("woken")
        .catalog
        .unwrap();
    assert_eq!(seen.video, catalog.video);
    assert!(seen.complete);
}

#[test]
fn an_ended_broadcast_keeps_its_last_catalog() {
    let reg = registry();
    let b = reg.publish(path("gone")).unwrap();
    let c = reg.get(&path("gone")).unwrap();
    c.publish_catalog(Catalog {
        video: vec![VideoEntry::rung("720p", 2_500_000, true)],
        complete: true,
        ..Default::default()
    });
    drop(b);
    assert_eq!(c.status(), BroadcastStatus::Ended);
    c.update_catalog(|c| c.video.clear());
    assert_eq!(
        c.catalog().unwrap().video.len(),
        1,
        "a late writer is ignored"
    );
}

#[tokio::test]
async fn relays_are_marked_and_a_publisher_here_replaces_one() {
    let reg = Registry::new(Duration::from_secs(30), Retention::default());
    let relay = reg.relay(path("r")).unwrap();
    let b = reg.get(&path("r")).unwrap();
    assert!(b.relayed());
    // Another relay of a live one is refused; a publisher here replaces
    // it, and the relay's consumers see its end.
    assert_eq!(
        reg.relay(path("r")).err(),
        Some(PublishError::AlreadyPublishing(path("r")))
    );
    let local = reg.publish(path("r")).unwrap();
    assert_eq!(b.status(), BroadcastStatus::Ended);
    assert_eq!(relay.status(), BroadcastStatus::Ended);
    assert!(!reg.get(&path("r")).unwrap().relayed());
    drop(relay);
    assert!(
        reg.get(&path("r")).is_some(),
        "the old relay's end is not the new one's"
    );
    // A relay never takes over what a publisher here left.
    drop(local);
    assert_eq!(
        reg.relay(path("r")).err(),
        Some(PublishError::AlreadyPublishing(path("r")))
    );
    // A relay continues an interrupted relay, in a new session.
    let first = reg.relay(path("q")).unwrap();
    drop(first);
    assert_eq!(reg.relay(path("q")).unwrap().session(), 1);
}

#[tokio::test]
async fn find_asks_the_demand_handler_for_what_is_not_here() {
    let reg = registry();
    // Without a handler, find is get.
    assert!(reg.find(&path("x"), None).await.is_none());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Demand>(4);
    reg.set_demand(tx);
    let handler = {
        let reg = reg.clone();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Some(d) = rx.recv().await {
                if d.path.stream() == "here" {
                    held.push(reg.relay(d.path.clone()).unwrap());
                    let _ = d.reply.send(Supply::Here);
                } else if d.path.stream() == "there" && d.may_redirect {
                    let _ = d.reply.send(Supply::Elsewhere("https://o2.example".into()));
                } else {
                    let _ = d.reply.send(Supply::Absent);
                }
            }
            held.len()
        })
    };
    let b = reg.find(&path("here"), None).await.expect("brought here");
    assert!(b.relayed());
    assert!(reg.find(&path("nowhere"), None).await.is_none());
    // Elsewhere: said only to a viewer that can follow a redirect.
    assert!(matches!(
        reg.locate(&path("there"), None, true).await,
        Some(Located::Elsewhere(u)) if u == "https://o2.example"
    ));
    assert!(reg.find(&path("there"), None).await.is_none());
    // Found locally: the handler is not asked again.
    assert!(reg.find(&path("here"), None).await.is_some());
    drop(reg);
    handler.abort();
}
