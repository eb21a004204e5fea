//! LL-HLS: CMAF parts and segments from the bus, served from memory.
//!
//! - [`segmenter`]: one track into parts and segments (sans-IO), as CMAF
//!   ([`crate::media::cmaf`]);
//! - [`packager`]: one broadcast's tracks on one timeline, audio aligned to
//!   video (sans-IO);
//! - [`playlist`]: the playlist model and writer;
//! - [`store`]: the in-memory output of every stream;
//! - [`service`]: one packager task per broadcast;
//! - [`request`]: what a request's file name and query ask for (sans-IO);
//! - [`http`]: the URLs, blocking reload, delta updates and caching.
//!
//! Designed for N renditions: the transcoder adds video tracks to the same
//! broadcast and each becomes a variant of the master playlist.

pub mod http;
pub mod packager;
pub mod playlist;
pub mod request;
pub mod segmenter;
pub mod service;
pub mod store;
pub mod tap;

#[cfg(test)]
mod tests;
