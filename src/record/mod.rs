//! Recording: every live stream archived, without losing a segment to a
//! crash or a store outage, and played back as HLS VOD.
//!
//! The flow: the LL-HLS packager's CMAF output comes in through a tap
//! ([`crate::llhls::tap`]); [`archive::Archiver`] cuts it into archive
//! segments (whole live segments, byte for byte); [`service::Recorder`]
//! writes them to a local spool, syncs each at close and journals it in
//! the database (`open` → `closed` → `uploaded`), and uploads closed ones
//! to the store ([`location::Location`]: `gs://`, `s3://`, `file://`,
//! through [`store::open`]), retrying for as long as it takes. After a
//! crash, [`spool::complete_prefix`] cuts a torn segment at its last whole
//! fragment and the uploader carries on. [`vod`] renders the recording's
//! playlists from the journal and [`http`] serves them, and [`mp4`]
//! makes one MP4 file of a recording for download.

pub mod archive;
pub mod http;
pub mod location;
pub mod mp4;
pub mod service;
pub mod spool;
pub mod store;
pub mod vod;
