//! The storage against Postgres (the multi-node setup): the same code as
//! SQLite, exercised through the store and the API. The test command starts
//! a throwaway Postgres and sets STREAMD_TEST_POSTGRES
//! (scripts/lib.sh: start_test_postgres). Without it these tests fail,
//! saying how to get one; `STREAMD_SKIP_POSTGRES=1` skips them, out loud.

mod common;

use common::*;
use serde_json::Value;
use sqlx::Connection;
use streamd::store::Store;

/// A fresh database on the test server, and its URL; None without one.
async fn database() -> Option<String> {
    let Ok(url) = std::env::var("STREAMD_TEST_POSTGRES") else {
        assert!(
            std::env::var_os("STREAMD_SKIP_POSTGRES").is_some(),
            "STREAMD_TEST_POSTGRES is not set: run the README's test command \
             (bash scripts/test.sh starts a throwaway Postgres), or set \
             STREAMD_SKIP_POSTGRES=1 to skip these tests knowingly"
        );
        eprintln!("STREAMD_SKIP_POSTGRES is set: the Postgres tests did not run");
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("streamd_{}", streamd::random::string(10, b"abcdefghij"));
    let mut admin = sqlx::AnyConnection::connect(&url)
        .await
        .expect("the test Postgres accepts connections");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

#[tokio::test]
async fn the_store_works_on_postgres() {
    let Some(url) = database().await else { return };
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
async fn the_api_works_on_postgres() {
    let Some(url) = database().await else { return };
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
