//! Opus, as the transcoder produces it for WebRTC: 48 kHz, 20 ms frames.

/// The configuration of an Opus track (RFC 7845's identification header
/// carries the same facts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpusConfig {
    pub channels: u8,
    /// Samples (at 48 kHz) the decoder discards at the start.
    pub pre_skip: u16,
    /// The rate of the source before resampling (informational).
    pub input_sample_rate: u32,
}

impl OpusConfig {
    /// Opus always runs its clock at 48 kHz.
    pub const CLOCK_RATE: u32 = 48_000;

    /// The `OpusHead` identification header (RFC 7845 §5.1), which decoders
    /// take as extradata.
    pub fn head(&self) -> Vec<u8> {
        let mut h = Vec::with_capacity(19);
        h.extend_from_slice(b"OpusHead");
        h.push(1);
        h.push(self.channels);
        h.extend_from_slice(&self.pre_skip.to_le_bytes());
        h.extend_from_slice(&self.input_sample_rate.to_le_bytes());
        h.extend_from_slice(&0i16.to_le_bytes());
        h.push(0); // channel mapping family 0: mono or stereo
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_has_rfc7845_layout() {
        let h = OpusConfig {
            channels: 2,
            pre_skip: 312,
            input_sample_rate: 44_100,
        }
        .head();
        assert_eq!(h.len(), 19);
        assert_eq!(&h[..8], b"OpusHead");
        assert_eq!(h[9], 2);
        assert_eq!(u16::from_le_bytes([h[10], h[11]]), 312);
        assert_eq!(u32::from_le_bytes([h[12], h[13], h[14], h[15]]), 44_100);
    }
}
