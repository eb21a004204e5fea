//! The recorder: one task per recorded stream writes its archive segments
//! to the spool and journals them; one uploader moves closed segments to
//! the object store; at start, what a crash left in the spool is repaired
//! and queued for upload.
//!
//! Spool layout: `{spool}/{recording}/{rendition}/{init_N.mp4 | N.m4s}`,
//! the same names the objects get under `{prefix}/{app}/{stream}/{recording}/`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::archive::{Archiver, Op};
use super::location::Location;
use super::spool;
use crate::bus::StreamPath;
use crate::config::{RecordConfig, RecordRenditions};
use crate::llhls::tap::{Tap, TapReceiver, Taps, tap};
use crate::ratelimit::LogLimiter;
use crate::shutdown::Shutdown;
use crate::store::Store;
use crate::store::recordings::{
    Recording, RecordingStatus, RenditionInfo, SegmentKind, SegmentRow, SegmentStatus,
    new_recording_id,
};
use crate::webhooks::Webhooks;

/// Uploads retried after a failure wait this long at first, doubling up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest wait while the spool is full: each second the store is not
/// retried then is a second not recorded.
const FULL_SPOOL_BACKOFF: Duration = Duration::from_secs(4);
/// Segments taken from the journal per upload round.
const UPLOAD_BATCH: i64 = 64;

pub struct Recorder {
    config: RecordConfig,
    store: Arc<Store>,
    objects: Arc<dyn ObjectStore>,
    /// Signs URLs to uploaded segments (GCS, S3), for `signed_urls`.
    signer: Option<Arc<dyn object_store::signer::Signer>>,
    location: Location,
    location_url: String,
    spool: PathBuf,
    node: String,
    hooks: std::sync::Mutex<Option<Webhooks>>,
    spool_bytes: AtomicU64,
    /// Wakes the uploader: a segment closed or a recording ended.
    wake: Notify,
    /// Recording tasks running (shutdown waits for them).
    running: tasks::Counter,
    spool_log: std::sync::Mutex<LogLimiter>,
}

/// A count of running tasks that can be waited to reach zero.
mod tasks {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::sync::Notify;

    #[derive(Default)]
    pub struct Counter {
        n: AtomicUsize,
        zero: Notify,
    }

    /// One running task; its drop counts it out.
    pub struct Guard(std::sync::Arc<super::Recorder>);

    impl Counter {
        pub fn enter_owned(&self, owner: &std::sync::Arc<super::Recorder>) -> Guard {
            self.n.fetch_add(1, Ordering::AcqRel);
            Guard(owner.clone())
        }

        pub async fn idle(&self) {
            loop {
                let notified = self.zero.notified();
                if self.n.load(Ordering::Acquire) == 0 {
                    return;
                }
                notified.await;
            }
        }
    }

    impl Drop for Guard {
        fn drop(&mut self) {
            let c = &self.0.running;
            if c.n.fetch_sub(1, Ordering::AcqRel) == 1 {
                c.zero.notify_waiters();
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecorderError {
    #[error("record.location: {0}")]
    Location(#[from] super::location::LocationError),
    #[error("the recording store: {0}")]
    Store(#[from] object_store::Error),
    #[error("the spool directory {0}: {1}")]
    Spool(String, std::io::Error),
    #[error(transparent)]
    Db(#[from] crate::store::StoreError),
}

impl Recorder {
    /// The store `config` names, as a client (no request made yet):
    /// `streamd check-config` calls this to refuse a bad location early.
    pub fn open_store(
        config: &RecordConfig,
        data_dir: &std::path::Path,
    ) -> Result<(Location, super::store::Opened), RecorderError> {
        let url = config.location_url(data_dir);
        let bucket = std::env::var("STORAGE_BUCKET").ok();
        let location = Location::parse(
            &url,
            bucket.as_deref().filter(|_| config.location.is_empty()),
        )?;
        let opened = super::store::open(
            &location,
            &super::store::S3Settings {
                endpoint: &config.s3_endpoint,
                access_key_id: &config.s3_access_key_id,
                secret_access_key: &config.s3_secret_access_key,
                region: &config.s3_region,
                gcs_credentials: Some(config.gcs_credentials.as_path())
                    .filter(|p| !p.as_os_str().is_empty()),
            },
        )?;
        Ok((location, opened))
    }

    /// Opens the store and the spool, and repairs what a previous run
    /// left (see [`Recorder::recover`]).
    pub async fn open(
        config: RecordConfig,
        data_dir: &std::path::Path,
        store: Arc<Store>,
    ) -> Result<Arc<Recorder>, RecorderError> {
        let (location, opened) = Recorder::open_store(&config, data_dir)?;
        let spool = config.spool_dir(data_dir);
        crate::auth::private_dir(&spool)
            .map_err(|e| RecorderError::Spool(spool.display().to_string(), e))?;
        let node = config.node_name();
        let r = Arc::new(Recorder {
            location_url: location.to_string(),
            config,
            store,
            objects: opened.objects,
            signer: opened.signer,
            location,
            spool,
            node,
            hooks: std::sync::Mutex::new(None),
            spool_bytes: AtomicU64::new(0),
            wake: Notify::new(),
            running: Default::default(),
            spool_log: std::sync::Mutex::new(LogLimiter::new(Duration::from_secs(10))),
        });
        r.recover().await?;
        tracing::info!(location = %r.location_url, spool = %r.spool.display(), node = %r.node, "recording ready");
        Ok(r)
    }

    /// Whether the spool takes a write now (`/readyz`): a small file
    /// written, synced and removed.
    pub async fn spool_writable(&self) -> std::io::Result<()> {
        let probe = self.spool.join(".readyz-probe");
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&probe)?;
            f.write_all(b"ready?")?;
            f.sync_all()?;
            std::fs::remove_file(&probe)
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Where recording events go.
    pub fn set_webhooks(&self, hooks: Webhooks) {
        *self.hooks.lock().expect("hooks lock") = Some(hooks);
    }

    fn emit(&self, event: &str, r: &Recording) {
        if let Some(h) = &*self.hooks.lock().expect("hooks lock") {
            h.emit(event, recording_json(r));
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The tap factory for the LL-HLS packagers: a recording task for
    /// every stream whose app is recorded.
    pub fn taps(self: &Arc<Self>) -> Taps {
        let me = self.clone();
        Arc::new(move |path: &StreamPath| -> Option<Tap> {
            let which = me.config.rule_for(path.app())?;
            let (tap, rx) = tap();
            let r = me.clone();
            let path = path.clone();
            let running = r.running.enter_owned(&r);
            tokio::spawn(async move {
                r.record(path, which, rx).await;
                drop(running);
            });
            Some(tap)
        })
    }

    /// Waits for every recording task to finish (they end once their
    /// stream's packager has: call after the packagers stopped).
    pub async fn recordings_closed(&self) {
        self.running.idle().await;
        // Stop delivering events: the webhook queue drains at shutdown
        // once every sender is gone.
        self.hooks.lock().expect("hooks lock").take();
    }

    fn spool_path(&self, recording: &str, rendition: &str, file: &str) -> PathBuf {
        self.spool.join(recording).join(rendition).join(file)
    }

    fn add_spool(&self, n: u64) {
        let now = self.spool_bytes.fetch_add(n, Ordering::Relaxed) + n;
        metrics::gauge!("streamd_record_spool_bytes", "node" => self.node.clone()).set(now as f64);
        if now * 5 >= self.config.spool_budget * 4
            && let Some(suppressed) = self
                .spool_log
                .lock()
                .expect("log lock")
                .check(Instant::now())
        {
            tracing::warn!(
                spool_bytes = now,
                budget = self.config.spool_budget,
                suppressed,
                "the recording spool is over 80% of record.spool_budget (is the store reachable?)"
            );
        }
    }

    fn sub_spool(&self, n: u64) {
        let now = self
            .spool_bytes
            .fetch_sub(
                n.min(self.spool_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            )
            .saturating_sub(n);
        metrics::gauge!("streamd_record_spool_bytes", "node" => self.node.clone()).set(now as f64);
    }

    /// Records one stream until its packager ends.
    async fn record(
        self: Arc<Self>,
        path: StreamPath,
        which: RecordRenditions,
        mut rx: TapReceiver,
    ) {
        let mut archiver = Archiver::new(self.config.segment_target, which);
        let mut s = StreamRecording {
            path,
            recording: None,
            open: HashMap::new(),
            skipping: HashMap::new(),
            spool: SpoolDecisions::default(),
            write_failed: false,
            write_error: String::new(),
            missing_inits: Default::default(),
            log: LogLimiter::new(Duration::from_secs(10)),
        };
        let mut ops = Vec::new();
        let mut lost = 0;
        while let Some(p) = rx.rx.recv().await {
            if rx.lost() != lost {
                lost = rx.lost();
                tracing::error!(stream = %s.path, lost, "the recorder fell behind the live stream; a gap is recorded");
                archiver.lost(&mut ops);
            }
            archiver.push(p, &mut ops);
            for (name, why) in archiver.take_skipped() {
                tracing::info!(stream = %s.path, rendition = %name, why, "rendition not recorded");
            }
            for op in ops.drain(..) {
                self.apply(&mut s, op).await;
            }
        }
        archiver.finish(&mut ops);
        for op in ops.drain(..) {
            self.apply(&mut s, op).await;
        }
        if let Some(r) = &s.recording {
            if let Err(e) = self.store.end_recording(&r.id).await {
                tracing::error!(recording = %r.id, error = %e, "cannot journal a recording's end");
            }
            tracing::info!(recording = %r.id, stream = %s.path, "recording ended; uploading");
            self.wake.notify_one();
        }
    }

    async fn apply(&self, s: &mut StreamRecording, op: Op) {
        match op {
            Op::Rendition(info) => {
                if s.recording.is_none() {
                    let r = Recording {
                        id: new_recording_id(),
                        app: s.path.app().to_owned(),
                        stream: s.path.stream().to_owned(),
                        status: RecordingStatus::Recording,
                        node: self.node.clone(),
                        location: self.location_url.clone(),
                        renditions: Vec::new(),
                        started_at: crate::store::now_ms(),
                        ended_at: None,
                        duration_ms: 0,
                        bytes: 0,
                    };
                    if let Err(e) = self.store.create_recording(&r).await {
                        tracing::error!(stream = %s.path, error = %e, "cannot journal a new recording; this stream is not recorded");
                        return;
                    }
                    tracing::info!(recording = %r.id, stream = %s.path, "recording");
                    self.emit("recording.started", &r);
                    s.recording = Some(r);
                }
                let Some(r) = &mut s.recording else { return };
                match r.renditions.iter_mut().find(|x| x.name == info.name) {
                    Some(x) => *x = info,
                    None => r.renditions.push(info),
                }
                if let Err(e) = self.store.set_renditions(&r.id, &r.renditions).await {
                    tracing::error!(recording = %r.id, error = %e, "cannot journal a recording's renditions");
                }
            }
            Op::Init {
                rendition,
                seq,
                data,
            } => {
                let Some(r) = &s.recording else { return };
                let row = SegmentRow {
                    recording_id: r.id.clone(),
                    rendition,
                    kind: SegmentKind::Init,
                    seq,
                    init_seq: seq,
                    duration_us: 0,
                    bytes: data.len() as i64,
                    discontinuity: false,
                    status: SegmentStatus::Closed,
                };
                let path = self.spool_path(&r.id, &row.rendition, &row.file_name());
                let written = async {
                    if let Some(dir) = path.parent() {
                        tokio::fs::create_dir_all(dir).await?;
                    }
                    let mut f = tokio::fs::File::create(&path).await?;
                    f.write_all(&data).await?;
                    f.sync_all().await
                }
                .await;
                if let Err(e) = written {
                    tracing::error!(recording = %r.id, error = %e, "cannot write an init segment to the spool; its media is not recorded");
                    let _ = tokio::fs::remove_file(&path).await;
                    s.missing_inits.insert((row.rendition, seq));
                    return;
                }
                self.add_spool(data.len() as u64);
                if let Err(e) = self.store.open_segment(&row).await {
                    tracing::error!(recording = %r.id, error = %e, "cannot journal an init segment");
                }
                self.wake.notify_one();
            }
            Op::Open {
                rendition,
                seq,
                init_seq,
                msn,
                discontinuity,
            } => {
                let Some(r) = &s.recording else { return };
                if s.missing_inits.contains(&(rendition.clone(), init_seq)) {
                    // Media without its init segment cannot be played.
                    s.skipping.insert(rendition, true);
                    return;
                }
                let skipped_before = s.skipping.remove(&rendition).unwrap_or(false);
                // Decided once per moment for every rendition, so that a
                // full spool leaves the same hole in video and audio (a
                // player closing the hole keeps them in sync).
                // A write that failed since (a full disk) skips the next
                // moment not yet decided, in every rendition the same way.
                let over = self.spool_bytes.load(Ordering::Relaxed) >= self.config.spool_budget;
                let failed = &mut s.write_failed;
                let skip = s.spool.record(msn, || {
                    if std::mem::take(failed) {
                        Some(Skip::Disk)
                    } else {
                        over.then_some(Skip::Budget)
                    }
                });
                if let Some(why) = skip {
                    metrics::counter!("streamd_record_spool_full_total", "node" => self.node.clone()).increment(1);
                    if let Some(suppressed) = s.log.check(Instant::now()) {
                        match why {
                            Skip::Budget => tracing::error!(
                                recording = %r.id,
                                budget = self.config.spool_budget,
                                suppressed,
                                "the recording spool is full (record.spool_budget); a segment is not recorded"
                            ),
                            Skip::Disk => tracing::error!(
                                recording = %r.id,
                                error = %s.write_error,
                                suppressed,
                                "cannot write to the spool; a segment is not recorded"
                            ),
                        }
                    }
                    s.skipping.insert(rendition, true);
                    return;
                }
                let row = SegmentRow {
                    recording_id: r.id.clone(),
                    rendition,
                    kind: SegmentKind::Media,
                    seq,
                    init_seq,
                    duration_us: 0,
                    bytes: 0,
                    discontinuity: discontinuity || skipped_before,
                    status: SegmentStatus::Open,
                };
                let path = self.spool_path(&r.id, &row.rendition, &row.file_name());
                // Journalled before the file exists: recovery finds every
                // file through the journal.
                if let Err(e) = self.store.open_segment(&row).await {
                    tracing::error!(recording = %r.id, error = %e, "cannot journal a segment; it is not recorded");
                    s.skipping.insert(row.rendition, true);
                    return;
                }
                let file = async {
                    if let Some(dir) = path.parent() {
                        tokio::fs::create_dir_all(dir).await?;
                    }
                    tokio::fs::File::create(&path).await
                }
                .await;
                match file {
                    Ok(f) => {
                        s.open.insert(row.rendition.clone(), (row, f));
                    }
                    Err(e) => {
                        tracing::error!(recording = %r.id, error = %e, "cannot create a spool file; a segment is not recorded");
                        let _ = self.store.forget_segment(&row).await;
                        s.note_write_failure(row.rendition, e.to_string());
                    }
                }
            }
            Op::Append {
                rendition, data, ..
            } => {
                let Some((row, f)) = s.open.get_mut(&rendition) else {
                    return;
                };
                match f.write_all(&data).await {
                    Ok(()) => {
                        row.bytes += data.len() as i64;
                        self.add_spool(data.len() as u64);
                    }
                    Err(e) => {
                        // A full disk: this segment keeps what was written
                        // whole (repaired at close); the next starts anew.
                        metrics::counter!("streamd_record_spool_write_errors_total", "node" => self.node.clone()).increment(1);
                        if let Some(suppressed) = s.log.check(Instant::now()) {
                            tracing::error!(recording = %row.recording_id, error = %e, suppressed, "cannot write to the spool; the segment ends here");
                        }
                        let (row, f) = s.open.remove(&rendition).expect("just found");
                        let timescale = timescale_in(s.renditions(), &row.rendition);
                        // Torn by this failure: its error is `e`.
                        let _ = self.close(row, f, None, timescale).await;
                        s.note_write_failure(rendition, e.to_string());
                    }
                }
            }
            Op::Close {
                rendition,
                duration_us,
                ..
            } => {
                if let Some((row, f)) = s.open.remove(&rendition) {
                    let timescale = timescale_in(s.renditions(), &row.rendition);
                    if let Err(e) = self.close(row, f, Some(duration_us), timescale).await {
                        // A write the file's buffer took failed at the end
                        // (a full disk): as a failed append.
                        s.note_write_failure(rendition, e);
                    }
                }
            }
        }
    }

    /// Syncs a segment and journals it closed. `duration_us` None: the
    /// file may be torn (a write failed); it is cut to its whole fragments
    /// and its duration read from them (in ticks of `timescale`). An
    /// error if it did not reach the disk whole.
    async fn close(
        &self,
        mut row: SegmentRow,
        mut f: tokio::fs::File,
        duration_us: Option<i64>,
        timescale: u32,
    ) -> Result<(), String> {
        let path = self.spool_path(&row.recording_id, &row.rendition, &row.file_name());
        // A write the file's buffer took may fail only here (a full disk).
        let flushed = f.flush().await;
        let synced = f.sync_all().await;
        let size = f.metadata().await.map(|m| m.len());
        drop(f);
        let whole = flushed.is_ok() && synced.is_ok() && size.ok() == Some(row.bytes as u64);
        let outcome = if whole {
            Ok(())
        } else {
            Err(match flushed.as_ref().and(synced.as_ref()) {
                Err(e) => e.to_string(),
                Ok(()) => "the file is shorter than what was written".to_owned(),
            })
        };
        let duration = match duration_us {
            Some(d) if whole => Some(d),
            _ => {
                if duration_us.is_some() {
                    metrics::counter!("streamd_record_spool_write_errors_total", "node" => self.node.clone()).increment(1);
                    tracing::error!(recording = %row.recording_id, error = ?flushed.and(synced).err(), "a spooled segment did not reach the disk whole; it is cut at its last whole fragment");
                }
                let before = row.bytes;
                let d = self.repair(&mut row, &path, timescale).await;
                self.sub_spool((before - row.bytes).max(0) as u64);
                d
            }
        };
        match duration {
            Some(d) if row.bytes > 0 => {
                row.duration_us = d;
                row.status = SegmentStatus::Closed;
                if let Err(e) = self.store.update_segment(&row).await {
                    tracing::error!(recording = %row.recording_id, error = %e, "cannot journal a closed segment (recovered at the next start)");
                }
                self.wake.notify_one();
            }
            _ => {
                self.sub_spool(row.bytes as u64);
                let _ = tokio::fs::remove_file(&path).await;
                let _ = self.store.forget_segment(&row).await;
            }
        }
        outcome
    }

    /// Cuts a spooled segment to its last whole fragment and syncs it;
    /// its duration in microseconds, from its fragments' times in ticks of
    /// `timescale` (None: nothing whole in it).
    async fn repair(
        &self,
        row: &mut SegmentRow,
        path: &std::path::Path,
        timescale: u32,
    ) -> Option<i64> {
        let data = tokio::fs::read(path).await.ok()?;
        let keep = spool::complete_prefix(&data);
        if keep < data.len() {
            let f = tokio::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .await
                .ok()?;
            f.set_len(keep as u64).await.ok()?;
            f.sync_all().await.ok()?;
        }
        let (start, end) = spool::span(&data[..keep])?;
        row.bytes = keep as i64;
        Some(((end - start) as i128 * 1_000_000 / i128::from(timescale.max(1))) as i64)
    }

    /// At start: this node's recordings still `recording` were cut short
    /// (a crash, `kill -9`, a power cut). Each open segment is cut to its
    /// last whole fragment and closed (or dropped if nothing whole is
    /// left), then the recording is ended and left to the uploader.
    async fn recover(&self) -> Result<(), RecorderError> {
        let started = Instant::now();
        let mut repaired = 0usize;
        // Every segment still open was cut short: none is being written
        // before this node starts recording. Renditions read once per
        // recording.
        let mut renditions: HashMap<String, Vec<RenditionInfo>> = HashMap::new();
        for mut row in self
            .store
            .segments_in(&self.node, SegmentStatus::Open, i64::MAX)
            .await?
        {
            let path = self.spool_path(&row.recording_id, &row.rendition, &row.file_name());
            if !renditions.contains_key(&row.recording_id) {
                let r = self.store.recording(&row.recording_id).await?;
                renditions.insert(
                    row.recording_id.clone(),
                    r.map(|r| r.renditions).unwrap_or_default(),
                );
            }
            let timescale = timescale_in(&renditions[&row.recording_id], &row.rendition);
            match self.repair(&mut row, &path, timescale).await {
                Some(d) if row.bytes > 0 => {
                    row.duration_us = d;
                    row.status = SegmentStatus::Closed;
                    self.store.update_segment(&row).await?;
                    repaired += 1;
                }
                _ => {
                    let _ = tokio::fs::remove_file(&path).await;
                    self.store.forget_segment(&row).await?;
                }
            }
        }
        let cut = self
            .store
            .recordings_in(&self.node, RecordingStatus::Recording)
            .await?;
        for r in &cut {
            self.store.end_recording(&r.id).await?;
        }
        // What the spool holds now, for the budget.
        let mut bytes = 0u64;
        for s in self
            .store
            .segments_in(&self.node, SegmentStatus::Closed, i64::MAX)
            .await?
        {
            bytes += s.bytes.max(0) as u64;
        }
        self.spool_bytes.store(0, Ordering::Relaxed);
        self.add_spool(bytes);
        let pending = self
            .store
            .count_segments_in(&self.node, SegmentStatus::Closed)
            .await?;
        metrics::gauge!("streamd_record_upload_backlog", "node" => self.node.clone())
            .set(pending as f64);
        if !cut.is_empty() || pending > 0 {
            tracing::info!(
                recordings = cut.len(),
                repaired,
                pending,
                ms = started.elapsed().as_millis() as u64,
                "recovered the recording spool"
            );
        }
        Ok(())
    }

    /// Uploads closed segments until `shutdown`, retrying failures with
    /// capped backoff for as long as it takes; marks ended recordings
    /// `ready` once all their segments are up.
    pub async fn upload(self: Arc<Self>, mut shutdown: Shutdown) {
        let mut backoff = FIRST_BACKOFF;
        let mut log = LogLimiter::new(Duration::from_secs(10));
        loop {
            let rows = match self
                .store
                .segments_in(&self.node, SegmentStatus::Closed, UPLOAD_BATCH)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "the uploader cannot read the journal");
                    Vec::new()
                }
            };
            self.report_backlog().await;
            // At shutdown, uploads in flight are dropped: the journal
            // still has them closed, and `flush` (or the next start) sends
            // them.
            let results = tokio::select! {
                r = self.upload_batch(rows) => r,
                _ = shutdown.wait() => return,
            };
            let mut failed = 0usize;
            for e in results {
                failed += 1;
                if let Some(suppressed) = log.check(Instant::now()) {
                    tracing::warn!(error = %e, suppressed, retry_in = ?backoff, "an upload failed; it is retried");
                }
            }
            if failed > 0 {
                metrics::counter!("streamd_record_upload_retries_total", "node" => self.node.clone()).increment(failed as u64);
                let full = self.spool_bytes.load(Ordering::Relaxed) >= self.config.spool_budget;
                let wait = if full {
                    backoff.min(FULL_SPOOL_BACKOFF)
                } else {
                    backoff
                };
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            backoff = FIRST_BACKOFF;
            let more = self.finish_uploaded().await;
            if shutdown.is_triggered() {
                return;
            }
            // More may be waiting beyond this batch; else sleep until woken.
            if more.unwrap_or(0) == 0 {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = shutdown.wait() => return,
                }
            }
        }
    }

    /// Sets the backlog gauge to the closed segments the journal holds;
    /// that count, unless the journal cannot be read.
    async fn report_backlog(&self) -> Option<i64> {
        let n = self
            .store
            .count_segments_in(&self.node, SegmentStatus::Closed)
            .await
            .ok()?;
        metrics::gauge!("streamd_record_upload_backlog", "node" => self.node.clone()).set(n as f64);
        Some(n)
    }

    /// Uploads `rows`, `upload_concurrency` at a time; the errors.
    async fn upload_batch(&self, rows: Vec<SegmentRow>) -> Vec<String> {
        if rows.is_empty() {
            return Vec::new();
        }
        let mut recordings: HashMap<String, Option<Recording>> = HashMap::new();
        for row in &rows {
            if !recordings.contains_key(&row.recording_id) {
                let r = self.store.recording(&row.recording_id).await.ok().flatten();
                recordings.insert(row.recording_id.clone(), r);
            }
        }
        let recordings = &recordings;
        futures_util::stream::iter(rows)
            .map(|row| async move {
                let r = recordings.get(&row.recording_id).cloned().flatten();
                self.upload_one(row, r).await
            })
            .buffer_unordered(self.config.upload_concurrency)
            .filter_map(|r| std::future::ready(r.err()))
            .collect()
            .await
    }

    /// At shutdown, once every recording has closed its segments: uploads
    /// what the journal still has closed, retrying for up to `within`, and
    /// marks the recordings whose segments are all in the store ready.
    /// What is left after `within` stays in the spool for the next start.
    pub async fn flush(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        let started = tokio::time::Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut uploaded = 0usize;
        loop {
            let rows = self
                .store
                .segments_in(&self.node, SegmentStatus::Closed, UPLOAD_BATCH)
                .await
                .unwrap_or_default();
            if rows.is_empty() {
                self.finish_uploaded().await;
                tracing::info!(uploaded, after = ?started.elapsed(), "recording uploads flushed");
                return;
            }
            let n = rows.len();
            let errors = match tokio::time::timeout_at(deadline, self.upload_batch(rows)).await {
                Ok(errors) => errors,
                Err(_) => Vec::from(["the flush deadline passed mid-upload".to_owned()]),
            };
            uploaded += n - errors.len().min(n);
            if let Some(e) = errors.first() {
                if tokio::time::Instant::now() + backoff >= deadline {
                    let left = self
                        .store
                        .count_segments_in(&self.node, SegmentStatus::Closed)
                        .await
                        .unwrap_or(0);
                    self.finish_uploaded().await;
                    tracing::warn!(left, error = %e, "recording uploads not flushed by the deadline; the next start sends them");
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    async fn upload_one(&self, mut row: SegmentRow, r: Option<Recording>) -> Result<(), String> {
        let path = self.spool_path(&row.recording_id, &row.rendition, &row.file_name());
        let Some(r) = r else {
            // Deleted while it waited.
            let _ = tokio::fs::remove_file(&path).await;
            return Ok(());
        };
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                metrics::counter!("streamd_record_lost_segments_total", "node" => self.node.clone()).increment(1);
                tracing::error!(recording = %r.id, file = %path.display(), "a journalled segment is missing from the spool; it is lost");
                let _ = self.store.forget_segment(&row).await;
                return Ok(());
            }
            Err(e) => return Err(format!("reading {}: {e}", path.display())),
        };
        let name = self.object_name(&r, &row.rendition, &row.file_name())?;
        let len = data.len() as u64;
        if let Err(e) = self.objects.put(&name, PutPayload::from(data)).await {
            metrics::counter!("streamd_record_upload_failures_total", "node" => self.node.clone())
                .increment(1);
            return Err(format!("uploading {name}: {e}"));
        }
        metrics::counter!("streamd_record_uploaded_bytes_total", "node" => self.node.clone())
            .increment(len);
        row.status = SegmentStatus::Uploaded;
        match self.store.update_segment(&row).await {
            Ok(true) => {}
            Ok(false) => {
                // Deleted while it uploaded: take the object back.
                let _ = self.objects.delete(&name).await;
            }
            Err(e) => return Err(format!("journalling {name}: {e}")),
        }
        let _ = tokio::fs::remove_file(&path).await;
        self.sub_spool(len);
        Ok(())
    }

    fn object_name(
        &self,
        r: &Recording,
        rendition: &str,
        file: &str,
    ) -> Result<ObjectPath, String> {
        let name = self
            .location
            .object(&r.app, &r.stream, &r.id, &[rendition, file])
            .map_err(|e| e.to_string())?;
        Ok(ObjectPath::from(name))
    }

    /// Ended recordings with nothing left to upload become `ready` (or
    /// `failed`, if they hold no media at all).
    /// First sets the backlog gauge, so that it never reads higher than
    /// the recordings' states; returns the backlog (unless the journal
    /// cannot be read).
    async fn finish_uploaded(&self) -> Option<i64> {
        let backlog = self.report_backlog().await;
        let Ok(ended) = self
            .store
            .recordings_in(&self.node, RecordingStatus::Uploading)
            .await
        else {
            return backlog;
        };
        for r in ended {
            if self.store.segments_pending(&r.id).await.unwrap_or(1) > 0 {
                continue;
            }
            let segments = self.store.segments(&r.id).await.unwrap_or_default();
            let media = segments.iter().any(|s| s.kind == SegmentKind::Media);
            let status = if media {
                RecordingStatus::Ready
            } else {
                RecordingStatus::Failed
            };
            if self.store.set_recording_status(&r.id, status).await.is_ok() {
                let _ = tokio::fs::remove_dir_all(self.spool.join(&r.id)).await;
                let r = Recording { status, ..r };
                tracing::info!(recording = %r.id, status = status.as_str(), "recording uploaded");
                self.emit(
                    if media {
                        "recording.ready"
                    } else {
                        "recording.failed"
                    },
                    &r,
                );
            }
        }
        backlog
    }

    /// A signed URL of an uploaded segment, valid for `record.signed_urls`,
    /// when that is on and the store signs (GCS, S3); None: serve it.
    pub async fn signed_url(&self, r: &Recording, row: &SegmentRow) -> Option<String> {
        if self.config.signed_urls.is_zero() || row.status != SegmentStatus::Uploaded {
            return None;
        }
        let signer = self.signer.as_ref()?;
        let name = self.object_name(r, &row.rendition, &row.file_name()).ok()?;
        match signer
            .signed_url(axum::http::Method::GET, &name, self.config.signed_urls)
            .await
        {
            Ok(url) => Some(url.to_string()),
            Err(e) => {
                tracing::warn!(recording = %r.id, error = %e, "cannot sign a segment URL; serving it");
                None
            }
        }
    }

    /// A segment's bytes: from the spool while it is there, else from the
    /// store. `range` is a byte range within it.
    pub async fn read(
        &self,
        r: &Recording,
        row: &SegmentRow,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<bytes::Bytes, String> {
        if row.status != SegmentStatus::Uploaded {
            let path = self.spool_path(&r.id, &row.rendition, &row.file_name());
            match tokio::fs::read(&path).await {
                Ok(d) => {
                    let d = bytes::Bytes::from(d);
                    return Ok(match range {
                        Some(rg) => {
                            let end = (rg.end as usize).min(d.len());
                            d.slice((rg.start as usize).min(end)..end)
                        }
                        None => d,
                    });
                }
                // Uploaded just now: the store has it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let name = self.object_name(r, &row.rendition, &row.file_name())?;
        match range {
            Some(rg) => self.objects.get_range(&name, rg).await,
            None => match self.objects.get(&name).await {
                Ok(g) => g.bytes().await,
                Err(e) => Err(e),
            },
        }
        .map_err(|e| e.to_string())
    }

    /// Deletes a recording: its objects, its spool and its journal.
    /// Segments uploading meanwhile are taken back by the uploader. With
    /// the store down, a recording none of whose segments reached it is
    /// still deleted (its spool and journal); one with objects there
    /// waits for the store (an error to retry).
    pub async fn delete(&self, r: &Recording) -> Result<(), String> {
        let segments = self
            .store
            .segments(&r.id)
            .await
            .map_err(|e| e.to_string())?;
        let uploaded = segments.iter().any(|s| s.status == SegmentStatus::Uploaded);
        let spooled: i64 = segments
            .iter()
            .filter(|s| s.status != SegmentStatus::Uploaded)
            .map(|s| s.bytes.max(0))
            .sum();
        if let Err(e) = self.delete_objects(r).await {
            if uploaded {
                return Err(e);
            }
            tracing::warn!(recording = %r.id, error = %e, "the store did not answer; the recording had nothing uploaded, so it is deleted without it");
        }
        self.store
            .delete_recording(&r.id)
            .await
            .map_err(|e| e.to_string())?;
        let _ = tokio::fs::remove_dir_all(self.spool.join(&r.id)).await;
        self.sub_spool(spooled as u64);
        Ok(())
    }

    async fn delete_objects(&self, r: &Recording) -> Result<(), String> {
        let prefix = self
            .location
            .object(&r.app, &r.stream, &r.id, &[])
            .map_err(|e| e.to_string())?;
        let prefix = ObjectPath::from(prefix);
        let names: Vec<_> = self
            .objects
            .list(Some(&prefix))
            .map(|m| m.map(|m| m.location))
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        for n in names {
            match self.objects.delete(&n).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Deletes recordings older than `record.max_age`: at start, then
    /// every tenth of it (at most hourly).
    pub async fn retention(self: Arc<Self>, mut shutdown: Shutdown) {
        if self.config.max_age.is_zero() {
            return;
        }
        loop {
            let before = crate::store::now_ms() - self.config.max_age.as_millis() as i64;
            if let Ok(old) = self.store.recordings_before(before).await {
                for r in old
                    .into_iter()
                    .filter(|r| r.status != RecordingStatus::Recording)
                {
                    match self.delete(&r).await {
                        Ok(()) => {
                            tracing::info!(recording = %r.id, "recording past record.max_age deleted")
                        }
                        Err(e) => {
                            tracing::warn!(recording = %r.id, error = %e, "cannot delete an old recording; tried again later")
                        }
                    }
                }
            }
            let every = (self.config.max_age / 10).min(Duration::from_secs(3600));
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// The ticks per second of `rendition`'s timestamps (90 kHz, video's,
/// if it is not described).
fn timescale_in(renditions: &[RenditionInfo], rendition: &str) -> u32 {
    renditions
        .iter()
        .find(|x| x.name == rendition)
        .map_or(90_000, |x| x.timescale)
}

struct StreamRecording {
    path: StreamPath,
    recording: Option<Recording>,
    /// Rendition -> its open segment and spool file.
    open: HashMap<String, (SegmentRow, tokio::fs::File)>,
    /// Renditions whose last segment was not recorded: the next one is
    /// marked discontinuous.
    skipping: HashMap<String, bool>,
    /// Whether the spool took each recent live segment.
    spool: SpoolDecisions,
    /// A spool write failed (a full disk) since the last moment was
    /// decided: the next is not recorded, in any rendition.
    write_failed: bool,
    /// The last spool write's error, for the log.
    write_error: String,
    /// Init segments that could not be written: media needing them is
    /// not recorded.
    missing_inits: std::collections::HashSet<(String, i64)>,
    log: LogLimiter,
}

/// Whether each recent live segment is recorded, decided by the first
/// rendition to open it (the spool full or not then) and followed by the
/// rest, which open it up to a second later.
#[derive(Default)]
struct SpoolDecisions(std::collections::VecDeque<(u64, Option<Skip>)>);

/// Why a live segment is not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    /// The spool is over `record.spool_budget`.
    Budget,
    /// A spool write failed (its disk is full).
    Disk,
}

impl SpoolDecisions {
    /// Live segments remembered: far more than a follower lags.
    const KEPT: usize = 64;

    /// Why the segment starting at live segment `msn` is not recorded
    /// (None: it is); `skip` is asked only by the first rendition to open
    /// it.
    fn record(&mut self, msn: u64, skip: impl FnOnce() -> Option<Skip>) -> Option<Skip> {
        if let Some((_, why)) = self.0.iter().find(|(m, _)| *m == msn) {
            return *why;
        }
        if self.0.len() == Self::KEPT {
            self.0.pop_front();
        }
        let why = skip();
        self.0.push_back((msn, why));
        why
    }
}

impl StreamRecording {
    fn renditions(&self) -> &[RenditionInfo] {
        self.recording.as_ref().map_or(&[], |r| &r.renditions)
    }

    /// A spool write of `rendition`'s segment failed with `error`: its
    /// next segment is marked discontinuous, and the next moment is not
    /// recorded in any rendition.
    fn note_write_failure(&mut self, rendition: String, error: String) {
        self.skipping.insert(rendition, true);
        self.write_failed = true;
        self.write_error = error;
    }
}

/// A recording as the API and webhooks show it.
pub fn recording_json(r: &Recording) -> serde_json::Value {
    json!({
        "id": r.id,
        "app": r.app,
        "stream": r.stream,
        "status": r.status.as_str(),
        "startedAt": r.started_at,
        "endedAt": r.ended_at,
        "durationMs": r.duration_ms,
        "bytes": r.bytes,
        "renditions": r.renditions.iter().map(|x: &RenditionInfo| &x.name).collect::<Vec<_>>(),
        "location": r.location,
        "playbackUrl": format!("/vod/{}/master.m3u8", r.id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::cmaf::{Sample, fragment};

    /// The first rendition to open a live segment decides for all: audio
    /// opening it after the spool filled (or drained) follows video, so
    /// both skip the same moments.
    #[test]
    fn every_rendition_skips_the_same_live_segments() {
        let (full, room) = (|| Some(Skip::Budget), || None);
        let mut d = SpoolDecisions::default();
        assert_eq!(d.record(10, room), None); // video opens 10, room left
        assert_eq!(d.record(10, || unreachable!("decided")), None); // audio follows
        assert_eq!(d.record(11, full), Some(Skip::Budget)); // video: full
        assert_eq!(d.record(11, room), Some(Skip::Budget)); // audio: drained meanwhile, still skipped
        assert_eq!(d.record(12, room), None);
        // Old decisions are forgotten, a bounded memory.
        for m in 13..13 + SpoolDecisions::KEPT as u64 {
            d.record(m, full);
        }
        assert_eq!(d.0.len(), SpoolDecisions::KEPT);
        assert_eq!(d.record(10, room), None);
        // A failed write is taken by the next moment's first rendition
        // only: one moment skipped for all, then recording resumes.
        let mut failed = true;
        let mut disk = || std::mem::take(&mut failed).then_some(Skip::Disk);
        assert_eq!(d.record(100, &mut disk), Some(Skip::Disk));
        assert_eq!(d.record(100, &mut disk), Some(Skip::Disk));
        assert_eq!(d.record(101, &mut disk), None);
    }

    /// Open segments are repaired at start whatever their recording's
    /// status (a close whose journal update failed leaves one open in a
    /// recording already ended); a recording cut short is ended.
    #[tokio::test]
    async fn every_open_segment_is_repaired_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/streamd.db?mode=rwc", dir.path().display());
        let store = Arc::new(Store::open(&url).await.unwrap());
        let sample = Sample {
            duration: 3000,
            composition_offset: 0,
            keyframe: true,
            data: bytes::Bytes::from_static(b"frame"),
        };
        let whole = fragment(1, 0, &[sample.clone(), sample.clone()]).unwrap();
        let mut torn = whole.to_vec();
        torn.extend_from_slice(&fragment(2, 6000, &[sample]).unwrap()[..20]);
        let mut ids = Vec::new();
        for status in [RecordingStatus::Recording, RecordingStatus::Uploading] {
            let id = crate::store::recordings::new_recording_id();
            store
                .create_recording(&Recording {
                    id: id.clone(),
                    app: "live".into(),
                    stream: "cam".into(),
                    status,
                    node: "n1".into(),
                    location: String::new(),
                    renditions: vec![],
                    started_at: 0,
                    ended_at: None,
                    duration_ms: 0,
                    bytes: 0,
                })
                .await
                .unwrap();
            let row = SegmentRow {
                recording_id: id.clone(),
                rendition: "video".into(),
                kind: SegmentKind::Media,
                seq: 0,
                init_seq: 0,
                duration_us: 0,
                bytes: 0,
                discontinuity: false,
                status: SegmentStatus::Open,
            };
            store.open_segment(&row).await.unwrap();
            let path = dir.path().join("spool").join(&id).join("video");
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("0.m4s"), &torn).unwrap();
            ids.push(id);
        }
        let config = RecordConfig {
            location: format!("file://{}", dir.path().join("store").display()),
            spool_dir: dir.path().join("spool"),
            node: "n1".into(),
            ..RecordConfig::default()
        };
        let r = Recorder::open(config, dir.path(), store.clone())
            .await
            .unwrap();
        for id in &ids {
            let rows = store.segments(id).await.unwrap();
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].status, SegmentStatus::Closed, "{id}");
            assert_eq!(rows[0].bytes as usize, whole.len());
            // 6000 ticks of the default 90 kHz.
            assert_eq!(rows[0].duration_us, 66_666);
            let on_disk = std::fs::metadata(dir.path().join("spool").join(id).join("video/0.m4s"))
                .unwrap()
                .len();
            assert_eq!(on_disk as usize, whole.len());
            let rec = store.recording(id).await.unwrap().unwrap();
            assert_eq!(rec.status, RecordingStatus::Uploading);
        }
        assert_eq!(
            r.spool_bytes.load(Ordering::Relaxed) as usize,
            2 * whole.len()
        );
    }
}
