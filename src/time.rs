//! Media time with an explicit timebase.
//!
//! Every timestamp in streamd says what its ticks are: RTMP gives milliseconds,
//! fMP4 video uses 90 kHz and fMP4 audio uses the sample rate. A bare integer
//! that might be any of these is how A/V drift and off-by-1000 bugs are born, so
//! timestamps travel as [`MediaTime`] and change unit only through
//! [`MediaTime::rescale`].
//!
//! This module never reads a clock.

use std::cmp::Ordering;
use std::fmt;
use std::time::Duration;

/// Ticks per second of a timeline. Never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timescale(u32);

impl Timescale {
    /// RTMP/FLV timestamps: milliseconds.
    pub const MILLIS: Timescale = Timescale(1000);
    /// The MPEG 90 kHz clock used for video in fMP4 and RTP.
    pub const MPEG: Timescale = Timescale(90_000);

    /// A timescale of `hz` ticks per second; `None` for zero.
    pub const fn new(hz: u32) -> Option<Timescale> {
        if hz == 0 { None } else { Some(Timescale(hz)) }
    }

    pub const fn hz(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Timescale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1/{}s", self.0)
    }
}

/// A point (or span) on a media timeline: `ticks` of `1/timescale` seconds.
///
/// Ordering and equality compare the instants exactly, across timescales.
#[derive(Clone, Copy, Debug)]
pub struct MediaTime {
    ticks: i64,
    scale: Timescale,
}

impl MediaTime {
    pub const fn new(ticks: i64, scale: Timescale) -> MediaTime {
        MediaTime { ticks, scale }
    }

    pub const fn from_millis(ms: i64) -> MediaTime {
        MediaTime::new(ms, Timescale::MILLIS)
    }

    pub const fn zero(scale: Timescale) -> MediaTime {
        MediaTime::new(0, scale)
    }

    pub const fn ticks(self) -> i64 {
        self.ticks
    }

    pub const fn timescale(self) -> Timescale {
        self.scale
    }

    /// The same instant in another timescale, rounded to the nearest tick
    /// (halves away from zero). Saturates at the `i64` range, which no real
    /// stream reaches (2^63 ticks of 1/90000 s is 3 million years).
    pub fn rescale(self, to: Timescale) -> MediaTime {
        if to == self.scale {
            return self;
        }
        let num = i128::from(self.ticks) * i128::from(to.0);
        let den = i128::from(self.scale.0);
        let half = den / 2;
        let rounded = if num >= 0 {
            (num + half) / den
        } else {
            (num - half) / den
        };
        MediaTime::new(
            rounded.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64,
            to,
        )
    }

    pub fn as_secs_f64(self) -> f64 {
        self.ticks as f64 / f64::from(self.scale.0)
    }

    /// The span as a [`Duration`]; negative spans are zero.
    pub fn to_duration(self) -> Duration {
        if self.ticks <= 0 {
            return Duration::ZERO;
        }
        let nanos = i128::from(self.ticks) * 1_000_000_000 / i128::from(self.scale.0);
        Duration::from_nanos(nanos.min(i128::from(u64::MAX)) as u64)
    }

    /// A [`Duration`] as a span of `scale` ticks (rounded down).
    pub fn from_duration(d: Duration, scale: Timescale) -> MediaTime {
        let ticks = d.as_nanos() * u128::from(scale.0) / 1_000_000_000;
        MediaTime::new(ticks.min(i64::MAX as u128) as i64, scale)
    }

    fn cmp_exact(&self, other: &MediaTime) -> Ordering {
        let a = i128::from(self.ticks) * i128::from(other.scale.0);
        let b = i128::from(other.ticks) * i128::from(self.scale.0);
        a.cmp(&b)
    }
}

/// `a - b` is in `a`'s timescale (`b` is rescaled first); saturating.
impl std::ops::Sub for MediaTime {
    type Output = MediaTime;

    fn sub(self, other: MediaTime) -> MediaTime {
        let other = other.rescale(self.scale);
        MediaTime::new(self.ticks.saturating_sub(other.ticks), self.scale)
    }
}

/// `a + b` is in `a`'s timescale (`b` is rescaled first); saturating.
impl std::ops::Add for MediaTime {
    type Output = MediaTime;

    fn add(self, other: MediaTime) -> MediaTime {
        let other = other.rescale(self.scale);
        MediaTime::new(self.ticks.saturating_add(other.ticks), self.scale)
    }
}

impl PartialEq for MediaTime {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_exact(other) == Ordering::Equal
    }
}

impl Eq for MediaTime {}

impl PartialOrd for MediaTime {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MediaTime {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_exact(other)
    }
}

impl fmt::Display for MediaTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}s", self.as_secs_f64())
    }
}

/// Extends RTMP's 32-bit millisecond timestamps, which wrap after 49.7 days,
/// into a monotonic-ish 64-bit timeline.
///
/// Each new value is placed at the signed 32-bit distance from the previous
/// one, so a wrap (0xFFFF_FFF0 → 0x10) moves forward by 32 ms instead of back
/// by 49 days, and small backwards steps (audio interleaved slightly behind
/// video) stay small backwards steps.
#[derive(Clone, Debug, Default)]
pub struct RtmpTimestampUnwrapper {
    last: Option<(u32, i64)>,
}

impl RtmpTimestampUnwrapper {
    pub fn new() -> Self {
        Self::default()
    }

    /// The extended millisecond timestamp for the wire value `ts`.
    pub fn unwrap(&mut self, ts: u32) -> MediaTime {
        MediaTime::from_millis(extend(&mut self.last, ts))
    }
}

/// Places the 32-bit `ts` at its signed distance from the previous value.
fn extend(last: &mut Option<(u32, i64)>, ts: u32) -> i64 {
    let extended = match *last {
        None => i64::from(ts),
        Some((raw, ext)) => ext.saturating_add(i64::from(ts.wrapping_sub(raw) as i32)),
    };
    *last = Some((ts, extended));
    extended
}

/// Extends RTP's 32-bit timestamps (which wrap after 13 hours at 90 kHz)
/// the same way, in the clock rate of their payload.
#[derive(Clone, Debug)]
pub struct RtpTimestampUnwrapper {
    last: Option<(u32, i64)>,
    scale: Timescale,
}

impl RtpTimestampUnwrapper {
    pub fn new(scale: Timescale) -> Self {
        RtpTimestampUnwrapper { last: None, scale }
    }

    pub fn unwrap(&mut self, ts: u32) -> MediaTime {
        MediaTime::new(extend(&mut self.last, ts), self.scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescale_rounds_to_nearest() {
        let t = MediaTime::from_millis(33);
        assert_eq!(t.rescale(Timescale::MPEG).ticks(), 2970);
        let audio = Timescale::new(44_100).unwrap();
        // 1 ms = 44.1 samples -> 44
        assert_eq!(MediaTime::from_millis(1).rescale(audio).ticks(), 44);
        // 23.2199 ms of samples (1024 @ 44.1k) -> 23 ms
        assert_eq!(
            MediaTime::new(1024, audio)
                .rescale(Timescale::MILLIS)
                .ticks(),
            23
        );
        assert_eq!(
            MediaTime::from_millis(-3).rescale(Timescale::MPEG).ticks(),
            -270
        );
    }

    #[test]
    fn compares_across_timescales() {
        assert_eq!(
            MediaTime::from_millis(1000),
            MediaTime::new(90_000, Timescale::MPEG)
        );
        assert!(MediaTime::from_millis(1) > MediaTime::new(89, Timescale::MPEG));
        let d = MediaTime::from_millis(1500) - MediaTime::new(45_000, Timescale::MPEG);
        assert_eq!(d.ticks(), 1000);
        assert_eq!(d.to_duration(), Duration::from_secs(1));
        assert_eq!(MediaTime::from_millis(-5).to_duration(), Duration::ZERO);
    }

    #[test]
    fn unwraps_32_bit_wrap() {
        let mut u = RtmpTimestampUnwrapper::new();
        assert_eq!(u.unwrap(u32::MAX - 9).ticks(), i64::from(u32::MAX) - 9);
        assert_eq!(u.unwrap(22).ticks(), i64::from(u32::MAX) + 23);
        assert_eq!(u.unwrap(55).ticks(), i64::from(u32::MAX) + 56);
    }

    #[test]
    fn small_backward_steps_stay_small() {
        let mut u = RtmpTimestampUnwrapper::new();
        assert_eq!(u.unwrap(1000).ticks(), 1000);
        assert_eq!(u.unwrap(990).ticks(), 990);
        assert_eq!(u.unwrap(1033).ticks(), 1033);
    }
}
