//! Several nodes, one set of streams.
//!
//! Origins ingest, transcode, package and record as a single node does,
//! and list each live stream in the shared database ([`directory`]). A
//! viewer may ask any node for any stream: a node that lacks it finds its
//! origin there and pulls every track the catalog lists over plain HTTP
//! ([`edge`]), onto its own bus, once however many viewers it has; the
//! origin serves the pulls ([`origin`]) in the framing of [`wire`]. The
//! node then serves the stream with its own SFU, signalling, WHEP and
//! LL-HLS, and lets it go when its last viewer has left.

pub mod directory;
pub mod edge;
pub mod origin;
pub mod wire;
