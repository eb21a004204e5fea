//! LL-HLS through a standard HTTP cache: nginx run with the shipped
//! configuration (config/nginx/llhls-cache.conf.template, rendered as the
//! official nginx image renders it) in front of streamd. Blocking reloads
//! collapse to one request at streamd, hls.js plays through the cache,
//! and private streams are authorised at the cache, per player.

mod common;

use std::time::Duration;

use common::*;

const CLUSTER_SECRET: &str = "cache-test-secret-0123456789abcdef";

/// One test at a time: the browser test and the publishers share two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Blocking playlist reloads that reached streamd.
const BLOCKING: &str = "streamd_llhls_media_playlist_requests_total{blocking=\"yes\"}";

/// streamd (trusting a cache with the cluster secret), and nginx with the
/// shipped configuration in front of it.
async fn streamd_behind_nginx() -> (tempfile::TempDir, TestServer, Nginx) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(|c| c.cluster.secret = CLUSTER_SECRET.into()).await;
    let cache = nginx(
        dir.path(),
        &server.http.to_string(),
        &format!("127.0.0.1:{}", free_port()),
        None,
        CLUSTER_SECRET,
    )
    .await;
    (dir, server, cache)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reloads_collapse_in_the_cache_and_hlsjs_plays_through_it() {
    let _one = SERIAL.lock().await;
    let (_dir, server, cache) = streamd_behind_nginx().await;
    let _publisher = server.publish("live", "cached", 90, "320x240");
    server.master_when_ready("live", "cached").await;
    let master = poll(
        &format!("{}/live/cached/llhls.m3u8", cache.base),
        Duration::from_secs(20),
        |r| r.status == 200,
    )
    .await;
    assert_eq!(master.status, 200);
    let video = variant(&master.text(), "avc1").expect("a video variant");
    let playlist = format!("{}/live/cached/{video}", cache.base);

    // 20 players ask for the next part at once: streamd sees one request.
    let media = llhls::parse_media(&get(&playlist).await.text());
    let (msn, part) = llhls::part_numbers(media.hint.as_deref().expect("a preload hint"));
    let before = metric(&server.url("/metrics"), BLOCKING).await;
    let url = format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}");
    let answers = futures_util::future::join_all((0..20).map(|_| get(&url))).await;
    let after = metric(&server.url("/metrics"), BLOCKING).await;
    assert_eq!(
        after - before,
        1.0,
        "blocking requests that reached streamd"
    );
    let first = &answers[0];
    assert_eq!(first.status, 200, "{}", first.text());
    for a in &answers {
        assert_eq!(a.status, 200);
        assert_eq!(a.body, first.body, "every player got the same playlist");
    }
    let statuses: Vec<_> = answers
        .iter()
        .map(|a| a.header("x-cache-status").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| *s == "MISS").count(),
        1,
        "{statuses:?}"
    );
    let answered = llhls::parse_media(&first.text());
    assert!(
        answered
            .parts
            .iter()
            .any(|(m, i, ..)| (*m, *i) == (msn, part)),
        "the playlist has the part asked for"
    );
    // The spec's lifetimes come through: a blocking reload is kept for
    // six target durations, the rest briefly.
    let cc = first.header("cache-control").unwrap_or_default().to_owned();
    assert!(cc.starts_with("public, max-age="), "{cc}");

    // hls.js plays through the cache.
    let master_url = format!("{}/live/cached/llhls.m3u8", cache.base);
    let result = hlsjs(&master_url, &["12"], &[]).await;
    let advanced = result["advanced"].as_f64().unwrap();
    assert!(
        advanced >= 6.0,
        "playback advanced only {advanced} s: {result}"
    );
    // Bounds for a broken pipeline, not a busy machine (the figures are
    // reported; a hls.js stall on two cores can age a picture by seconds).
    let (p50, p95) = clock::check(&result, advanced, 10_000);
    // The same player straight at streamd, for comparison (reported).
    let direct_url = server.url("/live/cached/llhls.m3u8");
    let direct = hlsjs(&direct_url, &["12"], &[]).await;
    let advanced = direct["advanced"].as_f64().unwrap();
    let (d50, d95) = clock::check(&direct, advanced, 10_000);
    eprintln!(
        "LL-HLS glass to glass, hls.js: through the nginx cache p50 {p50} ms, p95 {p95} ms; \
         straight p50 {d50} ms, p95 {d95} ms"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_streams_are_authorised_at_the_cache_per_player() {
    let _one = SERIAL.lock().await;
    let (_dir, server, cache) = streamd_behind_nginx().await;
    let (record, key) = server
        .access
        .store
        .create("live", "private", "", true)
        .await
        .unwrap();
    let id = record.id;
    let _publisher = server.publish("live", &format!("{id}?key={key}"), 90, "320x240");
    let auth = &server.access.auth;
    let stream = format!("live/{id}");
    let token_a = auth.mint(
        "a",
        Some("playback"),
        Some(&stream),
        Duration::from_secs(600),
    );
    let token_b = auth.mint(
        "b",
        Some("playback"),
        Some(&stream),
        Duration::from_secs(600),
    );
    let other = auth.mint(
        "c",
        Some("playback"),
        Some("live/other"),
        Duration::from_secs(600),
    );
    let at_cache = |q: &str| format!("{}/live/{id}/llhls.m3u8{q}", cache.base);

    let a = poll(
        &at_cache(&format!("?token={token_a}")),
        Duration::from_secs(20),
        |r| r.status == 200,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    // Refused at the cache without a token, with a bad one or another
    // stream's.
    assert_eq!(get(&at_cache("")).await.status, 401);
    assert_eq!(get(&at_cache("?token=bogus")).await.status, 403);
    assert_eq!(get(&at_cache(&format!("?token={other}"))).await.status, 403);
    // Each player's playlist names its own token, though the second is
    // answered from the cache.
    assert!(
        a.text().contains(&format!("token={token_a}")),
        "{}",
        a.text()
    );
    let video = variant(&a.text(), "avc1").unwrap();
    let video = video.split('?').next().unwrap();
    let playlist = format!("{}/live/{id}/{video}", cache.base);
    let media = get(&format!("{playlist}?token={token_b}")).await;
    assert_eq!(media.status, 200);
    let media = llhls::parse_media(&media.text());
    let (msn, part) = llhls::part_numbers(media.hint.as_deref().expect("a preload hint"));
    let blocking = |t: &str| format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}&token={t}");
    let ra = get(&blocking(&token_a)).await;
    let rb = get(&blocking(&token_b)).await;
    assert_eq!((ra.status.as_u16(), rb.status.as_u16()), (200, 200));
    assert_eq!(rb.header("x-cache-status"), Some("HIT"));
    assert!(
        ra.text().contains(&format!("token={token_a}")),
        "{}",
        ra.text()
    );
    assert!(
        rb.text().contains(&format!("token={token_b}")),
        "{}",
        rb.text()
    );
    assert!(!rb.text().contains(&token_a) && !rb.text().contains("__streamd_token__"));
    // A part without a token is refused too.
    let part = llhls::parse_media(&rb.text()).parts[0].4.clone();
    let bare = part.split('?').next().unwrap();
    assert_eq!(
        get(&format!("{}/live/{id}/{bare}", cache.base))
            .await
            .status,
        401
    );
    assert_eq!(
        get(&format!("{}/live/{id}/{part}", cache.base))
            .await
            .status,
        200
    );

    // At streamd: the cluster secret makes a request the cache's, and
    // only the cache may ask the authorisation question.
    let direct = server.url(&format!("/live/{id}/llhls.m3u8"));
    assert_eq!(get(&direct).await.status, 401);
    let wrong = [("x-streamd-cluster-secret", "not-the-secret")];
    assert_eq!(request("GET", &direct, &wrong).await.status, 401);
    let trusted = [("x-streamd-cluster-secret", CLUSTER_SECRET)];
    let r = request("GET", &direct, &trusted).await;
    assert_eq!(r.status, 200);
    assert!(r.text().contains("token=__streamd_token__"), "{}", r.text());
    let question = [("x-original-uri", &*format!("/live/{id}/llhls.m3u8"))];
    assert_eq!(
        request("GET", &server.url("/cluster/v1/authorize"), &question)
            .await
            .status,
        401
    );
    server.stop().await;
}
