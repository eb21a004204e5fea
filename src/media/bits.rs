//! A big-endian bit reader with Exp-Golomb codes, for SPS and AudioSpecificConfig.
//!
//! Reads never run past the end: every read returns `None` when the input is
//! exhausted, so the parsers above turn a short buffer into an error, not a panic.

pub struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    pub fn bits_left(&self) -> usize {
        (self.data.len() * 8).saturating_sub(self.pos)
    }

    pub fn bit(&mut self) -> Option<bool> {
        let byte = *self.data.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    /// Up to 32 bits as an unsigned value.
    pub fn bits(&mut self, n: u32) -> Option<u32> {
        debug_assert!(n <= 32);
        if self.bits_left() < n as usize {
            return None;
        }
        let mut v: u64 = 0;
        for _ in 0..n {
            v = (v << 1) | u64::from(self.bit()?);
        }
        Some(v as u32)
    }

    pub fn skip(&mut self, n: usize) -> Option<()> {
        if self.bits_left() < n {
            return None;
        }
        self.pos += n;
        Some(())
    }

    /// Unsigned Exp-Golomb. Codes longer than 32 bits (values ≥ 2^32 - 1) are
    /// rejected: no SPS field is that large, so such a code means garbage.
    pub fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)) as u32)
    }

    /// AV1's `uvlc()` (AV1 4.10.3): as Exp-Golomb, but 32 or more leading
    /// zeros give 2^32 - 1 without value bits.
    pub fn uvlc(&mut self) -> Option<u32> {
        let mut zeros = 0u32;
        while !self.bit()? {
            zeros = zeros.saturating_add(1);
        }
        if zeros >= 32 {
            return Some(u32::MAX);
        }
        let rest = self.bits(zeros)?;
        Some(((1u64 << zeros) - 1 + u64::from(rest)).min(u64::from(u32::MAX)) as u32)
    }

    /// Signed Exp-Golomb.
    pub fn se(&mut self) -> Option<i32> {
        let k = i64::from(self.ue()?);
        let v = if k % 2 == 1 { (k + 1) / 2 } else { -(k / 2) };
        Some(v as i32)
    }
}

/// Removes H.264 emulation-prevention bytes (`00 00 03` → `00 00`) from a NAL
/// unit, giving its RBSP.
pub fn nal_to_rbsp(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0usize;
    for &b in nal {
        if zeros >= 2 && b == 3 {
            zeros = 0;
            continue;
        }
        if b == 0 {
            zeros += 1;
        } else {
            zeros = 0;
        }
        out.push(b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_golomb() {
        // 1 | 010 | 011 | 00100 | 00101 -> 0, 1, 2, 3, 4
        let data = [0b1010_0110, 0b0100_0010, 0b1000_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.ue(), Some(0));
        assert_eq!(r.ue(), Some(1));
        assert_eq!(r.ue(), Some(2));
        assert_eq!(r.ue(), Some(3));
        assert_eq!(r.ue(), Some(4));
        let mut r = BitReader::new(&data);
        assert_eq!(r.se(), Some(0));
        assert_eq!(r.se(), Some(1));
        assert_eq!(r.se(), Some(-1));
    }

    #[test]
    fn uvlc_takes_long_codes() {
        // 010 -> 1; then 40 zeros and a one -> 2^32 - 1, no value bits read.
        let mut data = vec![0b0100_0000, 0, 0, 0, 0, 0b0000_0001, 0b1000_0000];
        let mut r = BitReader::new(&data);
        assert_eq!(r.uvlc(), Some(1));
        r.skip(5).unwrap();
        assert_eq!(r.uvlc(), Some(u32::MAX));
        assert_eq!(r.bit(), Some(true));
        // Zeros to the end: no value.
        data.truncate(5);
        let mut r = BitReader::new(&data[1..]);
        assert_eq!(r.uvlc(), None);
    }

    #[test]
    fn reads_stop_at_end() {
        let mut r = BitReader::new(&[0x00, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(r.ue(), None);
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.bits(8), Some(0xff));
        assert_eq!(r.bit(), None);
        assert_eq!(r.bits(1), None);
    }

    #[test]
    fn strips_emulation_prevention() {
        assert_eq!(
            nal_to_rbsp(&[0, 0, 3, 1, 0, 0, 3, 0]),
            vec![0, 0, 1, 0, 0, 0]
        );
        assert_eq!(nal_to_rbsp(&[1, 0, 3]), vec![1, 0, 3]);
    }
}
