use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use crate::io::DATAGRAM_MAX_PACKET_SIZE;
use crate::packet::Vp8Patch;
use crate::rtp_::{ExtensionValues, Frequency, MediaTime, Pt, SenderInfo, SeqNo, Ssrc};

use super::RtpPacket;
use super::rtx_cache_buf::EvictingBuffer;

const RTX_CACHE_SIZE_QUANTIZER: usize = 25;
const RTX_CACHE_QUANTIZE_SLOTS: usize = DATAGRAM_MAX_PACKET_SIZE / RTX_CACHE_SIZE_QUANTIZER;

#[derive(Debug)]
pub(crate) struct RtxCache {
    // Data, new additions here probably need to be cleared in [`clear`].
    packet_by_seq_no: EvictingBuffer<Cached>,

    // Technically we want [Option<SeqNo>; X] to indicate the absence of
    // a SeqNo. However We can half the storage space by using the sentinel
    // values SeqNo::MAX to indicate None
    //
    // streamd: made (from the packets cached then) at the first padding
    // lookup, and kept up from there: only a stream asked for padding
    // reads it, and 680 bytes inline were in every stream
    // (vendor/str0m/PATCHES.md, "Padding's size index and blank packet on
    // demand").
    seq_no_by_quantized_size: Option<Box<[SeqNo; RTX_CACHE_QUANTIZE_SLOTS]>>,

    // streamd: the packet a lookup hands out, rebuilt from its compact
    // entry (vendor/str0m/PATCHES.md, "compact RTX cache"); made at the
    // first lookup, as most streams never have one.
    out: Option<Box<RtpPacket>>,

    // streamd: the SSRC and clock rate of the first packet cached, which
    // the entries of the packets that share them do not keep.
    shared: Option<Shared>,
}

/// A sent packet as the cache keeps it (streamd patch): the header's
/// fixed fields and the shared payload, 32 bytes (40 with the buffer's
/// position and time). A full `RtpPacket` is 408 bytes, most of it the
/// header's extension values and CSRC list, which a server's packets
/// rarely carry once the peer has bound its SSRC. What a packet has that
/// its cache cannot work out is boxed beside the entry: those, and an
/// SSRC, clock rate, sequence number or media time other than the
/// cache's, its position and its RTP time give.
#[derive(Debug)]
struct Cached {
    payload: Arc<[u8]>,
    /// The RTP header's timestamp, and the media time's numerator.
    rtp_time: u32,
    header_len: u16,
    payload_type: Pt,
    /// `MARKER`, `PADDING`, `EXTENSION`.
    flags: u8,
    rare: Option<Box<Rare>>,
}

const MARKER: u8 = 1;
const PADDING: u8 = 2;
const EXTENSION: u8 = 4;

/// What most packets do not carry, or carry as the cache works it out.
#[derive(Debug)]
struct Rare {
    csrc_count: usize,
    csrc: [u32; 15],
    ext_vals: ExtensionValues,
    vp8_patch: Option<Vp8Patch>,
    last_sender_info: Option<SenderInfo>,
    ssrc: Ssrc,
    sequence_number: u16,
    time: MediaTime,
}

/// What every packet of a cache shares, unless boxed in its [`Rare`]:
/// those of the first packet cached.
#[derive(Debug, Clone, Copy)]
struct Shared {
    ssrc: Ssrc,
    frequency: Frequency,
}

impl Cached {
    fn new(p: RtpPacket, shared: Shared) -> Cached {
        let mut h = p.header;
        // MID and RID are not kept: `StreamTx::poll_packet` writes them
        // into a resend's header again for as long as the peer has not
        // bound the SSRCs, which is the only time they are sent.
        h.ext_vals.mid = None;
        h.ext_vals.rid = None;
        let plain = h.csrc_count == 0
            && h.ext_vals == ExtensionValues::default()
            && p.vp8_patch.is_none()
            && p.last_sender_info.is_none()
            && h.ssrc == shared.ssrc
            && h.sequence_number == *p.seq_no as u16
            && p.time.numer() == u64::from(h.timestamp)
            && p.time.frequency() == shared.frequency;
        let rare = (!plain).then(|| {
            Box::new(Rare {
                csrc_count: h.csrc_count,
                csrc: h.csrc,
                ext_vals: h.ext_vals,
                vp8_patch: p.vp8_patch,
                last_sender_info: p.last_sender_info,
                ssrc: h.ssrc,
                sequence_number: h.sequence_number,
                time: p.time,
            })
        });
        let flags = if h.marker { MARKER } else { 0 }
            | if h.has_padding { PADDING } else { 0 }
            | if h.has_extension { EXTENSION } else { 0 };
        Cached {
            payload: p.payload,
            rtp_time: h.timestamp,
            // An RTP header is at most 12 + 60 + 4 + 4 * 65535 bytes; the
            // ones str0m writes are under 100.
            header_len: h.header_len.min(usize::from(u16::MAX)) as u16,
            payload_type: h.payload_type,
            flags,
            rare,
        }
    }

    /// Writes the packet this entry stands for into `out`: the entry of
    /// `seq_no`, cached (sent) at `sent`. The packet's `timestamp` (when it
    /// was queued) is given as `sent`: it is only read for the queue-delay
    /// statistic of packets sent for the first time, never for a resend.
    fn restore(&self, out: &mut RtpPacket, seq_no: SeqNo, sent: Instant, shared: Shared) {
        let h = &mut out.header;
        h.version = 2;
        h.has_padding = self.flags & PADDING != 0;
        h.has_extension = self.flags & EXTENSION != 0;
        h.marker = self.flags & MARKER != 0;
        h.payload_type = self.payload_type;
        h.timestamp = self.rtp_time;
        h.header_len = usize::from(self.header_len);
        match &self.rare {
            Some(r) => {
                h.csrc_count = r.csrc_count;
                h.csrc = r.csrc;
                h.ext_vals = r.ext_vals.clone();
                h.ssrc = r.ssrc;
                h.sequence_number = r.sequence_number;
                out.vp8_patch = r.vp8_patch;
                out.last_sender_info = r.last_sender_info;
                out.time = r.time;
            }
            None => {
                h.csrc_count = 0;
                h.csrc = [0; 15];
                h.ext_vals = ExtensionValues::default();
                h.ssrc = shared.ssrc;
                h.sequence_number = *seq_no as u16;
                out.vp8_patch = None;
                out.last_sender_info = None;
                out.time = MediaTime::new(u64::from(self.rtp_time), shared.frequency);
            }
        }
        out.seq_no = seq_no;
        out.payload = self.payload.clone();
        out.timestamp = sent;
        // Only nackable packets are cached.
        out.nackable = true;
    }
}

impl RtxCache {
    pub fn new(max_packet_count: usize, max_packet_age: Duration) -> Self {
        Self {
            packet_by_seq_no: EvictingBuffer::new(10, max_packet_age, max_packet_count),
            seq_no_by_quantized_size: None,
            out: None,
            shared: None,
        }
    }

    pub fn cache_sent_packet(&mut self, packet: RtpPacket, now: Instant) {
        assert!(packet.nackable);
        let seq_no = packet.seq_no;
        let quantized_size = packet.payload.len() / RTX_CACHE_SIZE_QUANTIZER;
        let shared = *self.shared.get_or_insert(Shared {
            ssrc: packet.header.ssrc,
            frequency: packet.time.frequency(),
        });
        self.packet_by_seq_no
            .push(*seq_no, now, Cached::new(packet, shared));
        if let Some(index) = &mut self.seq_no_by_quantized_size {
            index[quantized_size] = seq_no;
        }
        self.remove_old_packets(now);
    }

    /// streamd: the most packets it keeps.
    pub fn max_packets(&self) -> usize {
        self.packet_by_seq_no.max_size()
    }

    pub fn last_cached_seq_no(&self) -> Option<SeqNo> {
        Some(self.packet_by_seq_no.last_position()?.into())
    }

    /// The cached packet, rebuilt into a buffer of the cache's: changes to
    /// it are not kept (the callers change only their copy of the header).
    pub fn get_cached_packet_by_seq_no(&mut self, seq_no: SeqNo) -> Option<&mut RtpPacket> {
        let (sent, cached) = self.packet_by_seq_no.get_with_time(*seq_no)?;
        // Set with the first entry, so there whenever an entry is.
        let shared = self.shared?;
        let out = self.out.get_or_insert_with(|| Box::new(RtpPacket::blank()));
        cached.restore(out, seq_no, sent, shared);
        Some(out)
    }

    /// The cached packet's payload length.
    pub fn cached_payload_len(&self, seq_no: SeqNo) -> Option<usize> {
        Some(self.packet_by_seq_no.get(*seq_no)?.payload.len())
    }

    pub fn get_cached_packet_smaller_than(&mut self, max_size: usize) -> Option<&mut RtpPacket> {
        let quantized_size = max_size / RTX_CACHE_SIZE_QUANTIZER;

        let buffer = &self.packet_by_seq_no;
        let index = self.seq_no_by_quantized_size.get_or_insert_with(|| {
            // The newest cached packet of each size, as keeping it up from
            // the first packet would have made it (but for packets gone
            // since, which a lookup skips anyway).
            let mut index = Box::new([SeqNo::MAX; RTX_CACHE_QUANTIZE_SLOTS]);
            if let Some(last) = buffer.last_position() {
                let first = last.saturating_sub(buffer.room() as u64);
                for position in first..=last {
                    if let Some(cached) = buffer.get(position) {
                        index[cached.payload.len() / RTX_CACHE_SIZE_QUANTIZER] = position.into();
                    }
                }
            }
            index
        });
        let seq_no = *index[..quantized_size]
            .iter()
            .rev()
            .filter(|seq_no| !seq_no.is_max())
            .find(|seq_no| self.packet_by_seq_no.contains(***seq_no))?;

        self.get_cached_packet_by_seq_no(seq_no)
    }

    fn remove_old_packets(&mut self, now: Instant) {
        self.packet_by_seq_no.maybe_evict(now);
    }

    pub(crate) fn last_packet(&self) -> Option<&[u8]> {
        let packet = self.packet_by_seq_no.last()?;
        Some(packet.payload.as_ref())
    }

    pub(crate) fn clear(&mut self) {
        self.packet_by_seq_no.clear();
        self.out = None;
        self.shared = None;
        self.seq_no_by_quantized_size = None;
    }
}

#[cfg(test)]
mod test {
    use crate::rtp_::MediaTime;
    use crate::rtp_::RtpHeader;

    use super::*;

    fn after(now: Instant, millis: u64) -> Instant {
        now + Duration::from_millis(millis)
    }

    fn packet(now: Instant, seq_no: u64, millis: u64) -> RtpPacket {
        RtpPacket {
            header: RtpHeader::default(),
            seq_no: seq_no.into(),
            time: MediaTime::from_90khz(0),
            payload: millis.to_be_bytes().into(),
            vp8_patch: None,
            timestamp: after(now, millis),
            last_sender_info: None,
            nackable: true,
        }
    }

    #[test]
    fn rtx_cache_0_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(0, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
    }

    #[test]
    fn rtx_cache_0_duration() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(10, Duration::from_secs(0));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(1.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(1000));
    }

    #[test]
    fn rtx_cache_1_sized() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(1, Duration::from_secs(3));
        rtx_cache.cache_sent_packet(packet(now, 1, 10), after(now, 10));
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_by_seq_no(1.into())
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(1000)
        );
        assert_eq!(
            Some(&mut packet(now, 1, 10)),
            rtx_cache.get_cached_packet_smaller_than(25)
        );
        assert_eq!(None, rtx_cache.get_cached_packet_smaller_than(24));
        rtx_cache.cache_sent_packet(packet(now, 2, 20), after(now, 20));
        assert_eq!(
            Some(&mut packet(now, 2, 20)),
            rtx_cache.get_cached_packet_by_seq_no(2.into())
        );
    }

    #[test]
    fn rtx_cache_100_sized_backwards() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(100, Duration::from_secs(3));

        for i in 1..=200 {
            let seq_no = 201 - i;
            let pkt = packet(now, seq_no, (201 - i) * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        // streamd: a lookup gives the send time as the queueing time.
        let mut expected = packet(now, 200, 2000);
        expected.timestamp = after(now, 10);
        assert_eq!(
            Some(&mut expected),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(100.into()));
        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(101.into()));
    }

    #[test]
    fn rtx_cache_eviction() {
        let now = Instant::now();
        // Cache can take all entries
        let mut rtx_cache = RtxCache::new(400, Duration::from_secs(1));
        for i in 1..=200 {
            let seq_no = i;
            let pkt = packet(now, seq_no, i * 10);
            let now = after(now, i * 10);
            rtx_cache.cache_sent_packet(pkt, now);
        }

        assert_eq!(None, rtx_cache.get_cached_packet_by_seq_no(99.into()));

        assert_eq!(
            Some(&mut packet(now, 100, 1000)),
            rtx_cache.get_cached_packet_by_seq_no(100.into())
        );
        assert_eq!(
            Some(&mut packet(now, 200, 2000)),
            rtx_cache.get_cached_packet_by_seq_no(200.into())
        );
    }

    // streamd: the size index is made at the first padding lookup, from
    // what is cached then, and kept up from there.
    #[test]
    fn padding_index_made_on_demand_and_kept_up() {
        let now = Instant::now();
        let mut rtx_cache = RtxCache::new(100, Duration::from_secs(3));
        let sized = |seq_no: u64, len: usize| RtpPacket {
            payload: vec![seq_no as u8; len].into(),
            ..packet(now, seq_no, seq_no)
        };
        rtx_cache.cache_sent_packet(sized(1, 100), after(now, 1));
        rtx_cache.cache_sent_packet(sized(2, 300), after(now, 2));
        rtx_cache.cache_sent_packet(sized(3, 100), after(now, 3));
        assert!(rtx_cache.seq_no_by_quantized_size.is_none());
        // The newest packet below the size, and the largest such.
        let found =
            |c: &mut RtxCache, max: usize| c.get_cached_packet_smaller_than(max).map(|p| *p.seq_no);
        assert_eq!(found(&mut rtx_cache, 200), Some(3));
        assert_eq!(found(&mut rtx_cache, 1000), Some(2));
        assert!(rtx_cache.seq_no_by_quantized_size.is_some());
        // Kept up after it was made.
        rtx_cache.cache_sent_packet(sized(4, 300), after(now, 4));
        rtx_cache.cache_sent_packet(sized(5, 600), after(now, 5));
        assert_eq!(found(&mut rtx_cache, 500), Some(4));
        assert_eq!(found(&mut rtx_cache, 1000), Some(5));
        rtx_cache.clear();
        assert!(rtx_cache.seq_no_by_quantized_size.is_none());
        assert_eq!(found(&mut rtx_cache, 1000), None);
    }
}
