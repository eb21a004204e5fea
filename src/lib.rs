//! streamd: a live media server. RTMP in; LL-HLS and WebRTC out.
//!
//! The data flow reads from the module names: [`ingest`] turns publishers'
//! bytes into frames on the [`bus`]; [`transcode`] reads them and writes the
//! ABR ladder and Opus back to the bus, with the broadcast's catalog of what
//! to serve (the source, when it does not transcode); [`llhls`] packages the
//! catalog's tracks for HTTP
//! and [`webrtc`] sends it to browsers over RTP, both reached through
//! [`http`]; [`record`] archives what
//! [`llhls`] packages, to a store, for VOD. [`server`] wires them together.

pub mod api;
pub mod auth;
pub mod bus;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod connlimit;
pub mod http;
pub mod ice_tcp;
pub mod ingest;
pub mod llhls;
pub mod media;
pub mod net;
pub mod random;
pub mod ratelimit;
pub mod record;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod time;
pub mod transcode;
pub mod viewers;
pub mod webhooks;
pub mod webrtc;
