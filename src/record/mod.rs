//! Recording (issue 11, first piece): every live stream archived, without
//! losing a segment to a crash or a store outage.
//!
//! Segments are written to a local spool as the packager makes their CMAF
//! fragments, then uploaded. A process killed mid-write leaves a segment
//! file that ends inside a box; [`spool::complete_prefix`] finds where its
//! last whole fragment ends, so recovery keeps every complete fragment and
//! drops only the torn tail.

pub mod spool;
