//! Recordings and their segment journal.
//!
//! A recording is one live session of a stream. Each of its renditions is
//! a run of segments (and the init segments they refer to); every segment
//! goes `open` (being written to the spool) → `closed` (whole and synced
//! on disk, waiting for upload) → `uploaded` (in the object store, the
//! spool copy gone). The recording itself goes `recording` → `uploading`
//! (the stream ended, segments still to upload) → `ready`, or `failed`.
//! A recording belongs to the node whose spool holds it (`node`): only
//! that node uploads and recovers it.

use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_ms};

const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Recordings listed at most per request.
pub const MAX_LISTED: i64 = 1000;

/// A recording id: `rec_` and 16 lowercase letters and digits.
pub fn new_recording_id() -> String {
    format!("rec_{}", crate::random::string(16, ID_ALPHABET))
}

/// Whether `s` has the shape of a recording id (anything else is refused
/// before the database is asked).
pub fn is_recording_id(s: &str) -> bool {
    s.len() == 20 && s.starts_with("rec_") && s.bytes().skip(4).all(|b| ID_ALPHABET.contains(&b))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordingStatus {
    Recording,
    Uploading,
    Ready,
    Failed,
}

impl RecordingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordingStatus::Recording => "recording",
            RecordingStatus::Uploading => "uploading",
            RecordingStatus::Ready => "ready",
            RecordingStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> RecordingStatus {
        match s {
            "recording" => RecordingStatus::Recording,
            "uploading" => RecordingStatus::Uploading,
            "ready" => RecordingStatus::Ready,
            _ => RecordingStatus::Failed,
        }
    }
}

/// One recorded rendition, as the VOD master playlist describes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenditionInfo {
    pub name: String,
    /// `video` or `audio`.
    pub kind: String,
    /// RFC 6381 codec string.
    pub codecs: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub channels: u32,
    /// Ticks per second of the segments' timestamps.
    pub timescale: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    pub id: String,
    pub app: String,
    pub stream: String,
    pub status: RecordingStatus,
    pub node: String,
    /// The store's URL with the recording's prefix (`gs://b/p`).
    pub location: String,
    pub renditions: Vec<RenditionInfo>,
    /// Milliseconds since the Unix epoch.
    pub started_at: i64,
    pub ended_at: Option<i64>,
    pub duration_ms: i64,
    pub bytes: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentKind {
    Init,
    Media,
}

impl SegmentKind {
    fn as_str(self) -> &'static str {
        match self {
            SegmentKind::Init => "init",
            SegmentKind::Media => "media",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentStatus {
    Open,
    Closed,
    Uploaded,
}

impl SegmentStatus {
    fn as_str(self) -> &'static str {
        match self {
            SegmentStatus::Open => "open",
            SegmentStatus::Closed => "closed",
            SegmentStatus::Uploaded => "uploaded",
        }
    }

    fn parse(s: &str) -> SegmentStatus {
        match s {
            "open" => SegmentStatus::Open,
            "uploaded" => SegmentStatus::Uploaded,
            _ => SegmentStatus::Closed,
        }
    }
}

/// One journal entry: an init or media segment of a rendition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentRow {
    pub recording_id: String,
    pub rendition: String,
    pub kind: SegmentKind,
    pub seq: i64,
    /// The init segment a media segment needs (for an init: its own seq).
    pub init_seq: i64,
    pub duration_us: i64,
    pub bytes: i64,
    /// The media before this segment is not continuous with it.
    pub discontinuity: bool,
    pub status: SegmentStatus,
}

impl SegmentRow {
    /// The segment's file name, inside its rendition's directory (in the
    /// spool and in the store alike).
    pub fn file_name(&self) -> String {
        match self.kind {
            SegmentKind::Init => format!("init_{}.mp4", self.seq),
            SegmentKind::Media => format!("{}.m4s", self.seq),
        }
    }
}

const RECORDING_COLUMNS: &str = "id, app, stream, status, node, location, renditions, \
     started_at, ended_at, duration_ms, bytes";
const SEGMENT_COLUMNS: &str =
    "recording_id, rendition, kind, seq, init_seq, duration_us, bytes, discontinuity, status";

fn recording(row: &AnyRow) -> Result<Recording, sqlx::Error> {
    let renditions: String = row.try_get("renditions")?;
    Ok(Recording {
        id: row.try_get("id")?,
        app: row.try_get("app")?,
        stream: row.try_get("stream")?,
        status: RecordingStatus::parse(&row.try_get::<String, _>("status")?),
        node: row.try_get("node")?,
        location: row.try_get("location")?,
        // Written by this module only; a row that does not parse lists
        // no renditions rather than failing every listing.
        renditions: serde_json::from_str(&renditions).unwrap_or_default(),
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        duration_ms: row.try_get("duration_ms")?,
        bytes: row.try_get("bytes")?,
    })
}

fn segment(row: &AnyRow) -> Result<SegmentRow, sqlx::Error> {
    Ok(SegmentRow {
        recording_id: row.try_get("recording_id")?,
        rendition: row.try_get("rendition")?,
        kind: if row.try_get::<String, _>("kind")? == "init" {
            SegmentKind::Init
        } else {
            SegmentKind::Media
        },
        seq: row.try_get("seq")?,
        init_seq: row.try_get("init_seq")?,
        duration_us: row.try_get("duration_us")?,
        bytes: row.try_get("bytes")?,
        discontinuity: row.try_get::<i64, _>("discontinuity")? != 0,
        status: SegmentStatus::parse(&row.try_get::<String, _>("status")?),
    })
}

impl Store {
    pub async fn create_recording(&self, r: &Recording) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO recordings ({RECORDING_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(&r.id)
        .bind(&r.app)
        .bind(&r.stream)
        .bind(r.status.as_str())
        .bind(&r.node)
        .bind(&r.location)
        .bind(serde_json::to_string(&r.renditions).unwrap_or_else(|_| "[]".into()))
        .bind(r.started_at)
        .bind(r.ended_at)
        .bind(r.duration_ms)
        .bind(r.bytes)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_renditions(
        &self,
        id: &str,
        renditions: &[RenditionInfo],
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE recordings SET renditions = $1 WHERE id = $2")
            .bind(serde_json::to_string(renditions).unwrap_or_else(|_| "[]".into()))
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn recording(&self, id: &str) -> Result<Option<Recording>, StoreError> {
        if !is_recording_id(id) {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(recording).transpose()?)
    }

    /// The recordings of `app/stream`, newest first (at most
    /// [`MAX_LISTED`]).
    pub async fn recordings_of(
        &self,
        app: &str,
        stream: &str,
    ) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE app = $1 AND stream = $2 \
             ORDER BY started_at DESC, id DESC LIMIT {MAX_LISTED}"
        ))
        .bind(app)
        .bind(stream)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(recording).collect::<Result<_, _>>()?)
    }

    /// This node's recordings in `status`.
    pub async fn recordings_in(
        &self,
        node: &str,
        status: RecordingStatus,
    ) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE node = $1 AND status = $2 \
             ORDER BY started_at, id"
        ))
        .bind(node)
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(recording).collect::<Result<_, _>>()?)
    }

    /// Recordings that started before `before_ms` (for retention).
    pub async fn recordings_before(&self, before_ms: i64) -> Result<Vec<Recording>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE started_at < $1 \
             ORDER BY started_at LIMIT {MAX_LISTED}"
        ))
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(recording).collect::<Result<_, _>>()?)
    }

    pub async fn set_recording_status(
        &self,
        id: &str,
        status: RecordingStatus,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE recordings SET status = $1 WHERE id = $2")
            .bind(status.as_str())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ends a recording: its status becomes `uploading`, its end time is
    /// set, and its duration and size are summed from the journal (the
    /// longest rendition's duration; every segment's bytes).
    pub async fn end_recording(&self, id: &str) -> Result<(), StoreError> {
        let rows = sqlx::query(
            // Postgres sums BIGINTs as NUMERIC: cast back.
            "SELECT rendition, CAST(SUM(duration_us) AS BIGINT) AS d, \
             CAST(SUM(bytes) AS BIGINT) AS b FROM recording_segments \
             WHERE recording_id = $1 GROUP BY rendition",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let mut duration_us = 0i64;
        let mut bytes = 0i64;
        for r in &rows {
            duration_us = duration_us.max(r.try_get::<i64, _>("d")?);
            bytes += r.try_get::<i64, _>("b")?;
        }
        sqlx::query(
            "UPDATE recordings SET status = $1, ended_at = $2, duration_ms = $3, bytes = $4 \
             WHERE id = $5 AND status = $6",
        )
        .bind(RecordingStatus::Uploading.as_str())
        .bind(now_ms())
        .bind(duration_us / 1000)
        .bind(bytes)
        .bind(id)
        .bind(RecordingStatus::Recording.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Deletes a recording and its journal; false if there was none.
    pub async fn delete_recording(&self, id: &str) -> Result<bool, StoreError> {
        if !is_recording_id(id) {
            return Ok(false);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM recording_segments WHERE recording_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM recordings WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected() > 0)
    }

    /// Journals a new segment as `open`.
    pub async fn open_segment(&self, s: &SegmentRow) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO recording_segments ({SEGMENT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))
        .bind(&s.recording_id)
        .bind(&s.rendition)
        .bind(s.kind.as_str())
        .bind(s.seq)
        .bind(s.init_seq)
        .bind(s.duration_us)
        .bind(s.bytes)
        .bind(i64::from(s.discontinuity))
        .bind(s.status.as_str())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a segment's final duration, size and status; false if it
    /// is not in the journal (its recording was deleted).
    pub async fn update_segment(&self, s: &SegmentRow) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE recording_segments SET duration_us = $1, bytes = $2, status = $3 \
             WHERE recording_id = $4 AND rendition = $5 AND kind = $6 AND seq = $7",
        )
        .bind(s.duration_us)
        .bind(s.bytes)
        .bind(s.status.as_str())
        .bind(&s.recording_id)
        .bind(&s.rendition)
        .bind(s.kind.as_str())
        .bind(s.seq)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// How many of this node's segments are in `status`.
    pub async fn count_segments_in(
        &self,
        node: &str,
        status: SegmentStatus,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM recording_segments s JOIN recordings r \
             ON r.id = s.recording_id WHERE r.node = $1 AND s.status = $2",
        )
        .bind(node)
        .bind(status.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Removes one journal entry (a segment that held nothing).
    pub async fn forget_segment(&self, s: &SegmentRow) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM recording_segments \
             WHERE recording_id = $1 AND rendition = $2 AND kind = $3 AND seq = $4",
        )
        .bind(&s.recording_id)
        .bind(&s.rendition)
        .bind(s.kind.as_str())
        .bind(s.seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every segment of a recording, by rendition, inits first, in order.
    pub async fn segments(&self, recording_id: &str) -> Result<Vec<SegmentRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {SEGMENT_COLUMNS} FROM recording_segments WHERE recording_id = $1 \
             ORDER BY rendition, kind, seq"
        ))
        .bind(recording_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(segment).collect::<Result<_, _>>()?)
    }

    /// This node's segments in `status`, oldest recordings first, at most
    /// `limit`.
    pub async fn segments_in(
        &self,
        node: &str,
        status: SegmentStatus,
        limit: i64,
    ) -> Result<Vec<SegmentRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT s.recording_id, s.rendition, s.kind, s.seq, s.init_seq, s.duration_us, \
             s.bytes, s.discontinuity, s.status \
             FROM recording_segments s JOIN recordings r ON r.id = s.recording_id \
             WHERE r.node = $1 AND s.status = $2 \
             ORDER BY r.started_at, s.recording_id, s.kind, s.seq, s.rendition LIMIT {limit}"
        ))
        .bind(node)
        .bind(status.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(segment).collect::<Result<_, _>>()?)
    }

    /// How many of a recording's segments are not uploaded yet.
    pub async fn segments_pending(&self, recording_id: &str) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM recording_segments \
             WHERE recording_id = $1 AND status <> $2",
        )
        .bind(recording_id)
        .bind(SegmentStatus::Uploaded.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/streamd.db?mode=rwc", dir.path().display());
        (dir, Store::open(&url).await.unwrap())
    }

    fn rec(id: &str, started_at: i64) -> Recording {
        Recording {
            id: id.to_owned(),
            app: "live".into(),
            stream: "cam".into(),
            status: RecordingStatus::Recording,
            node: "n1".into(),
            location: "file:///tmp/r".into(),
            renditions: vec![],
            started_at,
            ended_at: None,
            duration_ms: 0,
            bytes: 0,
        }
    }

    fn seg(id: &str, rendition: &str, seq: i64, us: i64) -> SegmentRow {
        SegmentRow {
            recording_id: id.to_owned(),
            rendition: rendition.to_owned(),
            kind: SegmentKind::Media,
            seq,
            init_seq: 0,
            duration_us: us,
            bytes: 1000,
            discontinuity: false,
            status: SegmentStatus::Open,
        }
    }

    #[test]
    fn ids_have_one_shape() {
        let id = new_recording_id();
        assert!(is_recording_id(&id), "{id}");
        for bad in [
            "",
            "rec_",
            "rec_../../../etc/pas",
            "REC_abcdefghijklmnop",
            "rec_abcdefghijklmnoP",
        ] {
            assert!(!is_recording_id(bad), "{bad}");
        }
    }

    /// A segment goes open → closed → uploaded; the recording's totals
    /// come from the journal when it ends; deleting takes the journal too.
    #[tokio::test]
    async fn the_journal_follows_a_recording() {
        let (_dir, s) = store().await;
        let (a, b) = (new_recording_id(), new_recording_id());
        s.create_recording(&rec(&a, 1)).await.unwrap();
        s.create_recording(&rec(&b, 2)).await.unwrap();
        let info = RenditionInfo {
            name: "video".into(),
            kind: "video".into(),
            codecs: "avc1.64001f".into(),
            width: 1280,
            height: 720,
            channels: 0,
            timescale: 90_000,
        };
        s.set_renditions(&a, std::slice::from_ref(&info))
            .await
            .unwrap();
        let listed = s.recordings_of("live", "cam").await.unwrap();
        assert_eq!(listed.iter().map(|r| &r.id).collect::<Vec<_>>(), [&b, &a]);
        assert_eq!(s.recording(&a).await.unwrap().unwrap().renditions, [info]);

        let mut v0 = seg(&a, "video", 0, 6_000_000);
        let mut v1 = seg(&a, "video", 1, 4_000_000);
        let mut a0 = seg(&a, "audio", 0, 9_000_000);
        for x in [&v0, &v1, &a0] {
            s.open_segment(x).await.unwrap();
        }
        assert_eq!(
            s.segments_in("n1", SegmentStatus::Open, 10)
                .await
                .unwrap()
                .len(),
            3
        );
        v0.status = SegmentStatus::Closed;
        s.update_segment(&v0).await.unwrap();
        let closed = s
            .segments_in("n1", SegmentStatus::Closed, 10)
            .await
            .unwrap();
        assert_eq!(closed, [v0.clone()]);
        assert!(
            s.segments_in("n2", SegmentStatus::Closed, 10)
                .await
                .unwrap()
                .is_empty()
        );
        for x in [&mut v0, &mut v1, &mut a0] {
            x.status = SegmentStatus::Uploaded;
            s.update_segment(x).await.unwrap();
        }
        assert_eq!(s.segments_pending(&a).await.unwrap(), 0);
        s.end_recording(&a).await.unwrap();
        let r = s.recording(&a).await.unwrap().unwrap();
        assert_eq!(r.status, RecordingStatus::Uploading);
        assert_eq!((r.duration_ms, r.bytes), (10_000, 3000));
        assert!(r.ended_at.is_some());
        // Ending twice does not count twice, nor revive a ready one.
        s.set_recording_status(&a, RecordingStatus::Ready)
            .await
            .unwrap();
        s.end_recording(&a).await.unwrap();
        assert_eq!(
            s.recording(&a).await.unwrap().unwrap().status,
            RecordingStatus::Ready
        );

        assert!(s.delete_recording(&a).await.unwrap());
        assert!(!s.delete_recording(&a).await.unwrap());
        assert!(s.segments(&a).await.unwrap().is_empty());
        assert_eq!(s.recording("rec_../x").await.unwrap(), None);
    }
}
