//! Which origin has which live stream, for a cluster sharing one Postgres.
//!
//! An origin writes a row when a publisher goes live and renews it (its
//! heartbeat) while the stream stays live; it deletes the row when the
//! stream ends. A row not renewed within the expiry is a dead origin's
//! and is not answered. Heartbeats and expiry are read on the database's
//! clock, never a node's: nodes' clocks may disagree by seconds. When a
//! publisher reconnects to another origin, that origin's claim replaces
//! the row: the newest claim wins.

use sqlx::Row;

use super::{Store, StoreError};

/// Where a live stream is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamOrigin {
    pub node: String,
    /// The origin's HTTP base URL (`cluster.advertise_url`).
    pub url: String,
    /// Where viewers reach the origin (`cluster.public_url`; empty: not
    /// said), for a node that redirects them.
    pub public_url: String,
}

impl Store {
    /// This node has `app/stream` live, now: inserts or renews its row.
    pub async fn claim_stream(
        &self,
        app: &str,
        stream: &str,
        node: &str,
        url: &str,
        public_url: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO cluster_streams (app, stream, node, url, public_url, heartbeat_at) \
             VALUES ($1, $2, $3, $4, $5, {}) \
             ON CONFLICT (app, stream) DO UPDATE SET \
             node = excluded.node, url = excluded.url, public_url = excluded.public_url, \
             heartbeat_at = excluded.heartbeat_at",
            self.db_now_ms()
        );
        sqlx::query(&sql)
            .bind(app)
            .bind(stream)
            .bind(node)
            .bind(url)
            .bind(public_url)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Renews every row `node` holds, in one statement: the (app, stream)
    /// of each.
    pub async fn renew_node(&self, node: &str) -> Result<Vec<(String, String)>, StoreError> {
        let sql = format!(
            "UPDATE cluster_streams SET heartbeat_at = {} WHERE node = $1 RETURNING app, stream",
            self.db_now_ms()
        );
        let rows = sqlx::query(&sql).bind(node).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get("app")?, r.try_get("stream")?)))
            .collect()
    }

    /// The database's clock, in milliseconds since 1970 (the heartbeats'
    /// clock; a node compares its own with it).
    pub async fn clock_ms(&self) -> Result<i64, StoreError> {
        let sql = format!("SELECT {} AS now", self.db_now_ms());
        Ok(sqlx::query(&sql)
            .fetch_one(&self.pool)
            .await?
            .try_get("now")?)
    }

    /// The stream ended here: removes its row, unless another node has
    /// claimed it since.
    pub async fn release_stream(
        &self,
        app: &str,
        stream: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM cluster_streams WHERE app = $1 AND stream = $2 AND node = $3")
            .bind(app)
            .bind(stream)
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Removes every row of `node` (it starts, so none of them is live).
    pub async fn release_node(&self, node: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM cluster_streams WHERE node = $1")
            .bind(node)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// The origin of `app/stream`, if a row was renewed within `expiry_ms`.
    pub async fn locate_stream(
        &self,
        app: &str,
        stream: &str,
        expiry_ms: i64,
    ) -> Result<Option<StreamOrigin>, StoreError> {
        let sql = format!(
            "SELECT node, url, public_url FROM cluster_streams \
             WHERE app = $1 AND stream = $2 AND heartbeat_at >= {} - $3",
            self.db_now_ms()
        );
        let row = sqlx::query(&sql)
            .bind(app)
            .bind(stream)
            .bind(expiry_ms)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => Some(StreamOrigin {
                node: r.try_get("node")?,
                url: r.try_get("url")?,
                public_url: r.try_get("public_url")?,
            }),
            None => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_newest_claim_wins_and_stale_rows_are_not_answered() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/streamd.db?mode=rwc", dir.path().display());
        let s = Store::open(&url).await.unwrap();
        assert_eq!(s.locate_stream("live", "a", 5000).await.unwrap(), None);
        s.claim_stream("live", "a", "o1", "http://o1", "")
            .await
            .unwrap();
        let o1 = StreamOrigin {
            node: "o1".into(),
            url: "http://o1".into(),
            public_url: String::new(),
        };
        assert_eq!(s.locate_stream("live", "a", 5000).await.unwrap(), Some(o1));
        // The publisher moved to o2: its claim replaces o1's, and o1's
        // release (its stream ended later) leaves o2's row alone.
        s.claim_stream("live", "a", "o2", "http://o2", "")
            .await
            .unwrap();
        s.release_stream("live", "a", "o1").await.unwrap();
        let found = s.locate_stream("live", "a", 5000).await.unwrap().unwrap();
        assert_eq!(found.node, "o2");
        // One statement renews every row a node holds, and only its own.
        s.claim_stream("live", "b", "o2", "http://o2", "")
            .await
            .unwrap();
        let mut held = s.renew_node("o2").await.unwrap();
        held.sort();
        assert_eq!(
            held,
            [("live".into(), "a".into()), ("live".into(), "b".into())]
        );
        assert_eq!(s.renew_node("o1").await.unwrap(), []);
        s.release_stream("live", "b", "o2").await.unwrap();
        // Not renewed within the expiry: a dead origin's.
        sqlx::query("UPDATE cluster_streams SET heartbeat_at = heartbeat_at - 10000")
            .execute(&s.pool)
            .await
            .unwrap();
        assert_eq!(s.locate_stream("live", "a", 5000).await.unwrap(), None);
        assert_eq!(s.release_node("o2").await.unwrap(), 1);
        s.claim_stream("live", "a", "o2", "http://o2", "")
            .await
            .unwrap();
        s.release_stream("live", "a", "o2").await.unwrap();
        assert_eq!(s.locate_stream("live", "a", 5000).await.unwrap(), None);
    }

    #[tokio::test]
    async fn heartbeats_are_on_the_database_clock_in_milliseconds() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/streamd.db?mode=rwc", dir.path().display());
        let s = Store::open(&url).await.unwrap();
        let clock = s.clock_ms().await.unwrap();
        assert!((clock - crate::store::now_ms()).abs() < 60_000, "{clock}");
        s.claim_stream("live", "a", "o1", "http://o1", "")
            .await
            .unwrap();
        let beat: i64 = sqlx::query("SELECT heartbeat_at FROM cluster_streams")
            .fetch_one(&s.pool)
            .await
            .unwrap()
            .try_get("heartbeat_at")
            .unwrap();
        assert!((beat - clock).abs() < 60_000, "{beat} {clock}");
    }
}
