//! The storage against Postgres (the multi-node setup): the same code as
//! SQLite, exercised through the store and the API. The test command starts
//! a throwaway Postgres and sets STREAMD_TEST_POSTGRES
//! (scripts/lib.sh: start_test_postgres). Without it these tests fail,
//! saying how to get one; `STREAMD_SKIP_POSTGRES=1` skips them, out loud.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;
use streamd::store::Store;

#[tokio::test]
async fn the_store_works_on_postgres() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let s = Store::open(&url).await.unwrap();
    let (a, key) = s.create("live", "A", "first", false).await.unwrap();
    let (b, _) = s
        .create("live", "B'); DROP TABLE streams; --", "", true)
        .await
        .unwrap();
    assert_eq!(s.list().await.unwrap().len(), 2);
    assert_eq!(s.by_key(&key).await.unwrap(), Some(a.clone()));
    let new = s.rotate_key(&a.id).await.unwrap().unwrap();
    assert_eq!(s.by_key(&key).await.unwrap(), None);
    assert_eq!(s.key(&a.id).await.unwrap(), Some(new));
    assert!(s.lookup("live", &b.id).await.unwrap().unwrap().is_private);
    assert!(s.delete(&a.id).await.unwrap());
    assert_eq!(s.get(&a.id).await.unwrap(), None);
    drop(s);
    // Migrations run once: a second start keeps the data.
    let s = Store::open(&url).await.unwrap();
    assert_eq!(s.list().await.unwrap(), vec![b]);
}

#[tokio::test]
async fn the_cluster_directory_runs_on_the_database_clock() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let s = Store::open(&url).await.unwrap();
    // Milliseconds since 1970, from Postgres (this machine's clock is the
    // database's here, so the two agree).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let clock = s.clock_ms().await.unwrap();
    assert!((clock - now).abs() < 60_000, "{clock} vs {now}");
    s.claim_stream("live", "a", "o1", "http://o1", "https://o1.example")
        .await
        .unwrap();
    s.claim_stream("live", "b", "o1", "http://o1", "")
        .await
        .unwrap();
    assert_eq!(s.renew_node("o1").await.unwrap().len(), 2);
    let found = s.locate_stream("live", "a", 5000).await.unwrap().unwrap();
    assert_eq!(found.node, "o1");
    assert_eq!(found.public_url, "https://o1.example");
    // An expiry of 0 ms finds nothing renewed before this instant.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert_eq!(s.locate_stream("live", "a", 0).await.unwrap(), None);
    assert_eq!(s.release_node("o1").await.unwrap(), 2);
}

#[tokio::test]
async fn the_api_works_on_postgres() {
    let Some(url) = postgres_database().await else {
        return;
    };
    let server = TestServer::start(|c| c.database.url = url.clone()).await;
    let bearer = format!(
        "Bearer {}",
        server
            .access
            .auth
            .mint_api("t", std::time::Duration::from_secs(60))
    );
    let headers = [
        ("authorization", bearer.as_str()),
        ("content-type", "application/json"),
    ];
    let r = request_with(
        "POST",
        &server.url("/api/streams"),
        &headers,
        r#"{"name":"on postgres","isPrivate":true}"#,
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let created: Value = serde_json::from_slice(&r.body).unwrap();
    let list = request("GET", &server.url("/api/streams"), &headers).await;
    let list: Value = serde_json::from_slice(&list.body).unwrap();
    assert_eq!(list[0]["id"], created["id"]);
    assert_eq!(list[0]["isPrivate"], true);
    server.stop().await;
}

/// The recording journal on Postgres: segments go open → closed →
/// uploaded, totals are summed when the recording ends (Postgres sums
/// BIGINTs as NUMERIC), a node sees only its own, deleting takes the
/// journal.
#[tokio::test]
async fn the_recording_journal_works_on_postgres() {
    use streamd::store::recordings::*;
    let Some(url) = postgres_database().await else {
        return;
    };
    let s = Store::open(&url).await.unwrap();
    let id = new_recording_id();
    s.create_recording(&Recording {
        id: id.clone(),
        app: "live".into(),
        stream: "cam".into(),
        status: RecordingStatus::Recording,
        node: "n1".into(),
        location: "s3://b/p".into(),
        renditions: vec![],
        started_at: 1,
        ended_at: None,
        duration_ms: 0,
        bytes: 0,
    })
    .await
    .unwrap();
    let mut rows: Vec<SegmentRow> = [
        ("video", 0, 6_000_000),
        ("video", 1, 2_500_000),
        ("audio", 0, 8_000_000),
    ]
    .into_iter()
    .map(|(rendition, seq, us)| SegmentRow {
        recording_id: id.clone(),
        rendition: rendition.into(),
        kind: SegmentKind::Media,
        seq,
        init_seq: 0,
        duration_us: us,
        bytes: 1000,
        discontinuity: seq == 1,
        status: SegmentStatus::Open,
    })
    .collect();
    for r in &rows {
        s.open_segment(r).await.unwrap();
    }
    assert_eq!(
        s.count_segments_in("n1", SegmentStatus::Open)
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        s.count_segments_in("n2", SegmentStatus::Open)
            .await
            .unwrap(),
        0
    );
    for r in &mut rows {
        r.status = SegmentStatus::Closed;
        assert!(s.update_segment(r).await.unwrap());
    }
    assert_eq!(
        s.segments_in("n1", SegmentStatus::Closed, 10)
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(s.segments_pending(&id).await.unwrap(), 3);
    s.end_recording(&id).await.unwrap();
    let r = s.recording(&id).await.unwrap().unwrap();
    assert_eq!(
        (r.status, r.duration_ms, r.bytes),
        (RecordingStatus::Uploading, 8_500, 3000)
    );
    assert_eq!(s.recordings_of("live", "cam").await.unwrap(), vec![r]);
    assert!(s.delete_recording(&id).await.unwrap());
    assert!(!s.update_segment(&rows[0]).await.unwrap());
    assert!(s.segments(&id).await.unwrap().is_empty());
}

/// `/readyz` says what is wrong: 503 naming the database while Postgres
/// cannot be reached (through a gate the test closes), and naming the
/// spool while it cannot be written (its directory replaced by a file);
/// 200 again once each is back, with no restart.
#[tokio::test]
async fn readyz_names_an_unreachable_database_and_an_unwritable_spool() {
    let Some(url) = postgres_database().await else {
        return;
    };
    // postgres://user@HOST:PORT/db, reached through the gate.
    let (head, rest) = url.split_once('@').unwrap();
    let (target, name) = rest.split_once('/').unwrap();
    let target = tokio::net::lookup_host(target)
        .await
        .unwrap()
        .next()
        .expect("the test Postgres's address");
    let gate = common::gate::gate(target).await;
    let through = format!("{head}@{}/{name}", gate.addr);
    let data = tempfile::tempdir().unwrap();
    let spool = data.path().join("spool");
    let server = TestServer::start(|c| {
        c.database.url = through.clone();
        c.record.spool_dir = spool.clone();
    })
    .await;
    let readyz = server.url("/readyz");
    let ready = |r: &Response| r.status == 200;
    let r = poll(&readyz, Duration::from_secs(10), ready).await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (&body["database"], &body["spool"]),
        (&Value::from("ok"), &Value::from("ok"))
    );

    gate.mode.send_replace(common::gate::Mode::Closed);
    let r = poll(&readyz, Duration::from_secs(10), |r| r.status == 503).await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_ne!(body["database"], "ok", "{body}");
    assert_eq!(body["spool"], "ok", "{body}");
    assert_eq!(body["ready"], false, "{body}");
    gate.mode.send_replace(common::gate::Mode::Open);
    poll(&readyz, Duration::from_secs(30), ready).await;

    std::fs::remove_dir_all(&spool).unwrap();
    std::fs::write(&spool, b"not a directory").unwrap();
    let r = poll(&readyz, Duration::from_secs(10), |r| r.status == 503).await;
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert!(
        body["spool"].as_str().unwrap().starts_with("error"),
        "{body}"
    );
    assert_eq!(body["database"], "ok", "{body}");
    std::fs::remove_file(&spool).unwrap();
    std::fs::create_dir(&spool).unwrap();
    poll(&readyz, Duration::from_secs(10), ready).await;
    server.stop().await;
}
