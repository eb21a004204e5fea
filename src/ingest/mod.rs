//! Ingest: publishers' bytes in, frames on the bus out.
//!
//! - [`rtmp`]: the RTMP protocol core (handshake, chunks, AMF0, commands),
//!   sans-IO and bounded;
//! - [`flv`]: FLV audio/video tag bodies;
//! - [`tags`]: FLV tags to bus frames (timestamps, keyframes, configs);
//! - [`server`]: the TCP listener and one task per connection;
//! - [`whip`]: WebRTC ingest (WHIP).
//!
//! Ingest never decodes media and never blocks on consumers: the bus absorbs
//! slow readers.

pub mod flv;
pub mod rtmp;
pub mod server;
pub mod tags;
pub mod whip;

pub use server::RtmpServer;
