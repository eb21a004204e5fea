//! SRT ingest: a live-mode listener (libsrt) whose callers publish MPEG-TS.
//!
//! - [`ffi`]: the thin, safe binding of libsrt;
//! - [`streamid`]: which stream a caller publishes (OME's, SRT's
//!   access-control, MediaMTX's and plain forms);
//! - [`server`]: one thread waits on every SRT socket; admission runs on
//!   the runtime, and [`crate::ingest::mpegts`] turns the bytes into frames.

pub mod ffi;
pub mod server;
pub mod streamid;

pub use server::SrtServer;
