//! Ingest: publishers' bytes in, frames on the bus out.
//!
//! - [`rtmp`]: the RTMP protocol core (handshake, chunks, AMF0, commands),
//!   sans-IO and bounded;
//! - [`flv`]: FLV audio/video tag bodies;
//! - [`tags`]: FLV tags to bus frames (timestamps, keyframes, configs);
//! - [`server`]: the TCP listener and one task per connection;
//! - [`whip`]: WebRTC ingest (WHIP);
//! - [`srt`]: SRT ingest (MPEG-TS inside, read by [`mpegts`]);
//! - [`annexb`]: H.264 in Annex B (WHIP, SRT) onto the bus.
//!
//! Ingest never decodes media and never blocks on consumers: the bus absorbs
//! slow readers.

pub mod annexb;
pub mod flv;
pub mod mpegts;
pub mod rtmp;
pub mod server;
pub mod srt;
pub mod tags;
pub mod whip;

pub use server::RtmpServer;
