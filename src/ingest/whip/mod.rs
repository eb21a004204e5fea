//! WebRTC ingest: WHIP (RFC 9725) publishers, OBS 30+, browsers, ffmpeg.
//!
//! - [`session`]: every publisher's str0m `Rtc` (sans-IO: offers,
//!   datagrams and the time in; answers, datagrams and media out);
//! - [`frames`]: depacketised RTP frames to bus frames (sans-IO, like
//!   [`super::tags`] for RTMP);
//! - [`server`]: the task that owns the publishers' UDP socket;
//! - [`http`]: the WHIP resource on the HTTP listener.
//!
//! A WHIP stream is a broadcast like an RTMP one: H.264 goes into the
//! ladder, and its Opus audio is served to WebRTC viewers as it came and
//! transcoded to AAC for LL-HLS and recordings (by the transcode stage).

pub mod frames;
pub mod http;
pub mod server;
pub mod session;

pub use server::{Whip, WhipServer};
