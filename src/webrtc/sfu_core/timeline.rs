//! A viewer's RTP timeline: one per outgoing stream (video, audio).

/// Sequence numbers and timestamps of one outgoing RTP stream of a viewer:
/// continuous across rendition switches (one timeline) and across publisher
/// reconnects (re-anchored after the last sent timestamp).
pub(super) struct RtpClock {
    seq: u64,
    offset: i64,
    last: Option<i64>,
    session: u32,
    /// Ticks a step forward is assumed to take at a re-anchor.
    step: i64,
    /// A jump further than this (either way) re-anchors too.
    max_jump: i64,
}

impl RtpClock {
    pub(super) fn new(seq: u16, step: i64, hz: i64) -> RtpClock {
        RtpClock {
            seq: u64::from(seq),
            offset: 0,
            last: None,
            session: 0,
            step,
            max_jump: 10 * hz,
        }
    }

    /// The RTP timestamp for a frame at `ts` of publisher `session`.
    pub(super) fn map(&mut self, ts: i64, session: u32) -> u32 {
        let mapped = match self.last {
            None => {
                self.session = session;
                ts
            }
            Some(last) => {
                let mapped = ts + self.offset;
                if session != self.session || mapped < last || mapped > last + self.max_jump {
                    self.session = session;
                    self.offset = last + self.step - ts;
                    last + self.step
                } else {
                    mapped
                }
            }
        };
        self.last = Some(mapped);
        mapped as u32
    }

    pub(super) fn next_seq(&mut self) -> u64 {
        let s = self.seq;
        self.seq += 1;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_clock_is_continuous_across_sessions_and_switches() {
        let mut c = RtpClock::new(100, 3000, 90_000);
        assert_eq!(c.map(9000, 0), 9000);
        assert_eq!(c.map(12000, 0), 12000);
        // The publisher came back, its clock restarted at 0.
        assert_eq!(c.map(0, 1), 15000);
        assert_eq!(c.map(3000, 1), 18000);
        // A jump back within a session re-anchors too.
        assert_eq!(c.map(0, 1), 21000);
        assert_eq!(c.next_seq(), 100);
        assert_eq!(c.next_seq(), 101);
    }
}
