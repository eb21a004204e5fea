//! The streams streamd manages: SQLite by default (a file in the data
//! directory), Postgres when several nodes share state. One code path for
//! both through sqlx's `Any` driver: portable SQL only (TEXT and BIGINT
//! columns, `$n` placeholders, times as epoch milliseconds).
//!
//! Migrations are a numbered list applied at start, each once, recorded
//! in `streamd_schema`.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub mod cluster;
pub mod recordings;

/// Schema changes, in order. Never edit one that has shipped: add another.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE streams (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT NOT NULL,
        is_private BIGINT NOT NULL,
        stream_key TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL
    )",
    // Recordings and their segment journal (record/).
    "CREATE TABLE recordings (
        id TEXT PRIMARY KEY,
        app TEXT NOT NULL,
        stream TEXT NOT NULL,
        status TEXT NOT NULL,
        node TEXT NOT NULL,
        location TEXT NOT NULL,
        renditions TEXT NOT NULL,
        started_at BIGINT NOT NULL,
        ended_at BIGINT,
        duration_ms BIGINT NOT NULL,
        bytes BIGINT NOT NULL
    )",
    "CREATE INDEX recordings_by_stream ON recordings (app, stream, started_at)",
    "CREATE TABLE recording_segments (
        recording_id TEXT NOT NULL,
        rendition TEXT NOT NULL,
        kind TEXT NOT NULL,
        seq BIGINT NOT NULL,
        init_seq BIGINT NOT NULL,
        duration_us BIGINT NOT NULL,
        bytes BIGINT NOT NULL,
        discontinuity BIGINT NOT NULL,
        status TEXT NOT NULL,
        PRIMARY KEY (recording_id, rendition, kind, seq)
    )",
    "CREATE INDEX recording_segments_by_status ON recording_segments (status, recording_id)",
    // Which origin has which live stream (store/cluster.rs).
    "CREATE TABLE cluster_streams (
        app TEXT NOT NULL,
        stream TEXT NOT NULL,
        node TEXT NOT NULL,
        url TEXT NOT NULL,
        heartbeat_at BIGINT NOT NULL,
        PRIMARY KEY (app, stream)
    )",
    // Where viewers reach an origin, for nodes that redirect them.
    "ALTER TABLE cluster_streams ADD COLUMN public_url TEXT NOT NULL DEFAULT ''",
];

/// How long a looked-up stream is trusted before asking the database
/// again (other nodes may change it).
const CACHE_TTL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot create the data directory {0}: {1}")]
    DataDir(String, std::io::Error),
}

/// A managed stream, as the API shows it (the key is asked for apart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamRecord {
    pub id: String,
    pub app: String,
    pub name: String,
    pub description: String,
    pub is_private: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

/// When a lookup was made, and what it found.
/// Stream lookups cached at most.
const CACHE_ENTRIES: usize = 100_000;

pub struct Store {
    pool: AnyPool,
    /// SQLite (one node) rather than Postgres.
    sqlite: bool,
    /// (app, id) -> the record (None: no such stream), and when it was read.
    cache: Mutex<crate::cache::Lru<(String, String), Option<StreamRecord>>>,
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// The database's own clock, in milliseconds since 1970, as SQL: times
    /// that nodes compare (the cluster's heartbeats) come from one clock,
    /// so a node whose clock is off neither expires live rows nor keeps
    /// dead ones.
    pub(crate) fn db_now_ms(&self) -> &'static str {
        if self.sqlite {
            "CAST((julianday('now') - 2440587.5) * 86400000.0 AS BIGINT)"
        } else {
            "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        }
    }
}

const ID_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A stream id: 12 lowercase letters and digits (a valid stream name).
fn new_id() -> String {
    crate::random::string(12, ID_ALPHABET)
}

/// A stream key: `sk_` and 32 letters and digits (190 bits).
fn new_key() -> String {
    format!(
        "sk_{}",
        crate::random::string(32, crate::random::ALPHANUMERIC)
    )
}

/// Whether `s` has the shape of a stream id (anything else cannot be one,
/// and is refused before the database is asked).
pub fn is_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| ID_ALPHABET.contains(&b))
}

fn record(row: &AnyRow) -> Result<StreamRecord, sqlx::Error> {
    Ok(StreamRecord {
        id: row.try_get("id")?,
        app: row.try_get("app")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        is_private: row.try_get::<i64, _>("is_private")? != 0,
        created_at: row.try_get("created_at")?,
    })
}

const COLUMNS: &str = "id, app, name, description, is_private, created_at";

impl Store {
    /// Opens (creating if need be) the database at `url` and brings its
    /// schema up to date. A SQLite file's directory is created too.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .map(|p| p.split('?').next().unwrap_or(p))
            && let Some(dir) = std::path::Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::DataDir(dir.display().to_string(), e))?;
            // The owner's alone: SQLite gives its journal files the
            // database file's mode.
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| StoreError::DataDir(path.to_owned(), e))?;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(|e| StoreError::DataDir(path.to_owned(), e))?;
        }
        // SQLite in WAL mode: readers (media-path lookups, API reads) run
        // beside the one writer instead of queueing behind it.
        let sqlite = url.starts_with("sqlite");
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        if sqlite {
            // Persistent in the file; SQLite's busy timeout (sqlx's default,
            // 5 s) covers two writers meeting.
            sqlx::query("PRAGMA journal_mode=WAL")
                .fetch_optional(&pool)
                .await?;
        }
        let store = Store {
            pool,
            sqlite,
            cache: Mutex::new(crate::cache::Lru::new(CACHE_ENTRIES)),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query("CREATE TABLE IF NOT EXISTS streamd_schema (version BIGINT NOT NULL)")
            .execute(&self.pool)
            .await?;
        let done: Option<i64> = sqlx::query("SELECT MAX(version) AS v FROM streamd_schema")
            .fetch_one(&self.pool)
            .await?
            .try_get("v")
            .ok();
        let done = done.unwrap_or(0) as usize;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(done) {
            let mut tx = self.pool.begin().await?;
            sqlx::query(sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO streamd_schema (version) VALUES ($1)")
                .bind(i as i64 + 1)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            tracing::info!(version = i + 1, "database schema migrated");
        }
        Ok(())
    }

    /// Creates a stream in `app`; returns it and its key.
    pub async fn create(
        &self,
        app: &str,
        name: &str,
        description: &str,
        is_private: bool,
    ) -> Result<(StreamRecord, String), StoreError> {
        let r = StreamRecord {
            id: new_id(),
            app: app.to_owned(),
            name: name.to_owned(),
            description: description.to_owned(),
            is_private,
            created_at: now_ms(),
        };
        let key = new_key();
        sqlx::query(
            "INSERT INTO streams (id, app, name, description, is_private, stream_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&r.id)
        .bind(&r.app)
        .bind(&r.name)
        .bind(&r.description)
        .bind(i64::from(r.is_private))
        .bind(&key)
        .bind(r.created_at)
        .execute(&self.pool)
        .await?;
        self.forget(&r.app, &r.id);
        Ok((r, key))
    }

    /// One round trip to the database (`/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    pub async fn list(&self) -> Result<Vec<StreamRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM streams ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    pub async fn get(&self, id: &str) -> Result<Option<StreamRecord>, StoreError> {
        if !is_id(id) {
            return Ok(None);
        }
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM streams WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(record).transpose()?)
    }

    /// The stream `app/id`, from a cache at most a few seconds old: what
    /// media requests ask, many times a second.
    pub async fn lookup(&self, app: &str, id: &str) -> Result<Option<StreamRecord>, StoreError> {
        if !is_id(id) {
            return Ok(None);
        }
        // Absent streams are cached too, so random names do not turn
        // every request into a query; the cache is bounded.
        let key = (app.to_owned(), id.to_owned());
        let now = Instant::now();
        if let Some(r) = self.cache.lock().expect("cache lock").get(&key, now) {
            return Ok(r);
        }
        let r = self.get(id).await?.filter(|r| r.app == app);
        self.cache
            .lock()
            .expect("cache lock")
            .insert(key, r.clone(), now + CACHE_TTL);
        Ok(r)
    }

    fn forget(&self, app: &str, id: &str) {
        self.cache
            .lock()
            .expect("cache lock")
            .remove(&(app.to_owned(), id.to_owned()));
    }

    /// Deletes a stream; false if there was none.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let Some(r) = self.get(id).await? else {
            return Ok(false);
        };
        let done = sqlx::query("DELETE FROM streams WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.forget(&r.app, id);
        Ok(done.rows_affected() > 0)
    }

    pub async fn key(&self, id: &str) -> Result<Option<String>, StoreError> {
        if !is_id(id) {
            return Ok(None);
        }
        let row = sqlx::query("SELECT stream_key FROM streams WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("stream_key")).transpose()?)
    }

    /// Gives a stream a new key (the old one stops working for new
    /// publishes); None if there is no such stream.
    pub async fn rotate_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        if !is_id(id) {
            return Ok(None);
        }
        let key = new_key();
        let done = sqlx::query("UPDATE streams SET stream_key = $1 WHERE id = $2")
            .bind(&key)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok((done.rows_affected() > 0).then_some(key))
    }

    /// The stream whose key is `key`.
    pub async fn by_key(&self, key: &str) -> Result<Option<StreamRecord>, StoreError> {
        if !key.starts_with("sk_") || key.len() > 64 {
            return Ok(None);
        }
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM streams WHERE stream_key = $1"
        ))
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(record).transpose()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/s/streamd.db?mode=rwc", dir.path().display());
        let store = Store::open(&url).await.unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn creates_lists_rotates_and_deletes() {
        let (_dir, s) = store().await;
        let (a, key) = s.create("live", "A", "first", false).await.unwrap();
        let (b, _) = s
            .create("live", "B'; DROP TABLE streams; --", "", true)
            .await
            .unwrap();
        assert!(is_id(&a.id) && key.starts_with("sk_"));
        assert_eq!(s.list().await.unwrap().len(), 2);
        assert_eq!(s.get(&b.id).await.unwrap().unwrap().name, b.name);
        assert_eq!(s.key(&a.id).await.unwrap(), Some(key.clone()));
        assert_eq!(s.by_key(&key).await.unwrap(), Some(a.clone()));
        let new = s.rotate_key(&a.id).await.unwrap().unwrap();
        assert_ne!(new, key);
        assert_eq!(s.by_key(&key).await.unwrap(), None);
        assert!(s.lookup("live", &b.id).await.unwrap().unwrap().is_private);
        assert_eq!(s.lookup("other", &b.id).await.unwrap(), None);
        assert!(s.delete(&a.id).await.unwrap());
        assert!(!s.delete(&a.id).await.unwrap());
        assert_eq!(s.lookup("live", &a.id).await.unwrap(), None);
        assert_eq!(s.get("../etc/passwd").await.unwrap(), None);
    }

    #[tokio::test]
    async fn migrations_run_once() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/streamd.db?mode=rwc", dir.path().display());
        let s = Store::open(&url).await.unwrap();
        s.create("live", "kept", "", false).await.unwrap();
        drop(s);
        let s = Store::open(&url).await.unwrap();
        assert_eq!(s.list().await.unwrap().len(), 1);
    }
}
