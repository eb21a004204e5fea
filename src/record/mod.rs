//! Recording (issue 11, first pieces): every live stream archived, without
//! losing a segment to a crash or a store outage.
//!
//! Segments are written to a local spool as the packager makes their CMAF
//! fragments, then uploaded. A process killed mid-write leaves a segment
//! file that ends inside a box; [`spool::complete_prefix`] finds where its
//! last whole fragment ends, so recovery keeps every complete fragment and
//! drops only the torn tail. [`location::Location`] reads where the
//! recordings go (`gs://`, `s3://`, `file://`, or `STORAGE_BUCKET`) and
//! names their objects so that nothing can leave the prefix;
//! [`store::open`] makes the `object_store` client for it.

pub mod location;
pub mod spool;
pub mod store;
