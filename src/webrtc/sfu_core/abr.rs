//! Automatic rendition choice: where a viewer starts, when its bandwidth
//! estimate moves it down or up, and what the estimator should probe.

use std::time::{Duration, Instant};

use crate::webrtc::Rendition;

/// Bitrate assumed for the Opus track when choosing a rendition.
const AUDIO_BPS: u64 = 128_000;
/// ABR: the estimate must stay below the current rendition's need this
/// long before stepping down, and above the next one's (with margin) this
/// long before stepping up.
const ABR_DOWN_AFTER: Duration = Duration::from_secs(2);
const ABR_UP_AFTER: Duration = Duration::from_secs(6);
const ABR_UP_MARGIN: f64 = 1.3;

#[derive(Default)]
pub(super) struct Abr {
    /// The bandwidth estimate (bits per second), when there is one.
    pub(super) estimate: Option<u64>,
    below_since: Option<Instant>,
    above_since: Option<Instant>,
}

impl Abr {
    /// The rendition to move to, if the estimate has stayed clear of the
    /// current one long enough. Renditions go largest first.
    pub(super) fn decide(
        &mut self,
        renditions: &[Rendition],
        current: usize,
        now: Instant,
    ) -> Option<usize> {
        let est = self.estimate?;
        let need = |i: usize| u64::from(renditions[i].bitrate) + AUDIO_BPS;
        if current + 1 < renditions.len() && est < need(current) {
            self.above_since = None;
            let since = *self.below_since.get_or_insert(now);
            if now.duration_since(since) >= ABR_DOWN_AFTER {
                self.below_since = None;
                return Some(current + 1);
            }
        } else if current > 0 && est as f64 > need(current - 1) as f64 * ABR_UP_MARGIN {
            self.below_since = None;
            let since = *self.above_since.get_or_insert(now);
            if now.duration_since(since) >= ABR_UP_AFTER {
                self.above_since = None;
                return Some(current - 1);
            }
        } else {
            self.below_since = None;
            self.above_since = None;
        }
        None
    }
}

/// The largest rendition within `kbps`, else the smallest.
pub(super) fn start_rendition(renditions: &[Rendition], kbps: u32) -> usize {
    let limit = u64::from(kbps) * 1000;
    renditions
        .iter()
        .position(|r| u64::from(r.bitrate) <= limit)
        .unwrap_or(renditions.len().saturating_sub(1))
}

/// The bitrates (bits per second) the estimator should probe between once
/// a viewer is on rendition `at`: its need, up to the next rendition's
/// with the margin a step up wants.
pub(super) fn probe_range(renditions: &[Rendition], at: usize) -> (u64, u64) {
    let min = u64::from(renditions[at].bitrate) + AUDIO_BPS;
    let desired = at
        .checked_sub(1)
        .map_or(min, |up| u64::from(renditions[up].bitrate) + AUDIO_BPS);
    (min, (desired as f64 * ABR_UP_MARGIN) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ladder() -> Vec<Rendition> {
        [("720p", 2_500_000), ("480p", 1_200_000), ("360p", 600_000)]
            .into_iter()
            .map(|(n, b)| Rendition {
                name: n.into(),
                track: n.into(),
                bitrate: b,
                width: 0,
                height: 0,
            })
            .collect()
    }

    #[test]
    fn start_rendition_fits_the_start_bitrate() {
        let l = ladder();
        assert_eq!(start_rendition(&l, 2500), 0);
        assert_eq!(start_rendition(&l, 2000), 1);
        assert_eq!(start_rendition(&l, 100), 2);
    }

    #[test]
    fn abr_steps_down_and_up_with_hysteresis() {
        let l = ladder();
        let t0 = Instant::now();
        let mut abr = Abr {
            estimate: Some(1_000_000),
            ..Abr::default()
        };
        assert_eq!(abr.decide(&l, 0, t0), None);
        assert_eq!(abr.decide(&l, 0, t0 + Duration::from_secs(1)), None);
        assert_eq!(abr.decide(&l, 0, t0 + Duration::from_secs(2)), Some(1));
        // Plenty of room above 480p: up only after a sustained surplus.
        abr.estimate = Some(4_000_000);
        let t1 = t0 + Duration::from_secs(3);
        assert_eq!(abr.decide(&l, 1, t1), None);
        assert_eq!(abr.decide(&l, 1, t1 + Duration::from_secs(5)), None);
        // A dip resets the wait.
        abr.estimate = Some(2_000_000);
        assert_eq!(abr.decide(&l, 1, t1 + Duration::from_secs(5)), None);
        abr.estimate = Some(4_000_000);
        assert_eq!(abr.decide(&l, 1, t1 + Duration::from_secs(6)), None);
        assert_eq!(abr.decide(&l, 1, t1 + Duration::from_secs(12)), Some(0));
        // At the top nothing moves.
        assert_eq!(abr.decide(&l, 0, t1 + Duration::from_secs(30)), None);
    }

    #[test]
    fn probing_reaches_for_the_next_rendition_up() {
        let l = ladder();
        assert_eq!(probe_range(&l, 2), (728_000, 1_726_400));
        // At the top there is nothing above.
        assert_eq!(probe_range(&l, 0), (2_628_000, 3_416_400));
    }
}
