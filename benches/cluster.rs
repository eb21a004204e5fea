//! Scale-out, measured on the real binary: an origin transcoding a 4-rung
//! ladder, edges pulling it, and the shipped nginx LL-HLS cache, all on
//! loopback, sharing the test Postgres (`STREAMD_TEST_POSTGRES`; the
//! README's test command starts one). `cargo bench --bench cluster`:
//!
//! 1. **Origin cost per edge**: the origin's CPU and egress while it only
//!    transcodes, then while 4 edges pull every rung (each edge holding
//!    its pull with one request), as CPU added per edge against the
//!    transcoding alone, and egress per edge against the ladder's
//!    nominal bitrate.
//! 2. **Edge-added latency**: glass to glass, read by aiortc from the
//!    clock the publisher draws into the picture, on the origin and on an
//!    edge at the same time.
//! 3. **The cache**: N LL-HLS players (blocking playlist reloads and the
//!    parts they name) straight at the origin, then the same through the
//!    nginx cache: the LL-HLS requests per second that reach the origin,
//!    as a ratio.
//!
//! A phase that fails (a probe that does not play, a player loop that
//! gets errors, pulls that do not start) fails the bench: it reports no
//! figures. Results go to target/cluster.json. Run by `cargo test` (no
//! `--bench`), it does a short smoke run: a tiny ladder, one edge, two
//! players, seconds each.

#[path = "../tests/common/clock.rs"]
mod clock;
#[path = "common/http.rs"]
mod http;
#[path = "common/net.rs"]
mod net;
#[path = "common/nginx.rs"]
mod nginx;
#[path = "common/probe.rs"]
mod probe;
#[path = "common/proc.rs"]
mod proc;
#[path = "common/streamd.rs"]
mod streamd;

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Http, get, preload_hint};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use nginx::free_port;
use tokio::process::{Child, Command};

const SECRET: &str = "bench-cluster-secret-0123456789abcdef";

struct Plan {
    full: bool,
    size: &'static str,
    kbps: u32,
    /// (name, width, height, kbps)
    ladder: &'static [(&'static str, u32, u32, u32)],
    edges: usize,
    players: usize,
    seconds: u64,
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            full,
            size: "1280x720",
            kbps: 2500,
            ladder: &[
                ("720p", 1280, 720, 2000),
                ("480p", 854, 480, 1000),
                ("360p", 640, 360, 600),
                ("240p", 426, 240, 300),
            ],
            edges: 4,
            players: 100,
            seconds: 15,
        }
    } else {
        Plan {
            full,
            size: "320x240",
            kbps: 300,
            ladder: &[("240p", 320, 240, 200), ("120p", 160, 120, 100)],
            edges: 1,
            players: 2,
            seconds: 3,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(plan));
}

struct Node {
    _child: Child,
    pid: u32,
    http: String,
}

/// A cluster node with `role`, its files in `dir/name`.
async fn node(dir: &Path, name: &str, role: &str, database: &str, ladder: &str) -> Node {
    let http = format!("127.0.0.1:{}", free_port());
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[rtmp]\nlisten = \"127.0.0.1:{rtmp}\"\n[http]\nlisten = \"{http}\"\n\
             [srt]\nlisten = \"127.0.0.1:0\"\n\
             [webrtc]\nudp_listen = \"127.0.0.1:0\"\ntcp_listen = \"127.0.0.1:0\"\n\
             candidate_ips = [\"127.0.0.1\"]\n\
             [whip]\nudp_listen = \"127.0.0.1:0\"\n\
             [auth]\npublish = \"open\"\n[record]\nenabled = false\n\
             [database]\ndata_dir = \"{data}\"\nurl = \"{database}\"\n\
             [cluster]\nrole = \"{role}\"\nnode = \"{name}\"\nadvertise_url = \"http://{http}\"\n\
             secret = \"{SECRET}\"\nidle_timeout = \"300s\"\n{ladder}",
            rtmp = free_port(),
            data = dir.join(name).display(),
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_streamd"))
        .arg("--config")
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("streamd binary");
    let pid = child.id().unwrap();
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !matches!(
        get(&client, &format!("http://{http}/readyz")).await,
        Ok((200, _))
    ) {
        assert!(Instant::now() < deadline, "{name} did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Node {
        _child: child,
        pid,
        http,
    }
}

/// A metric's value (summed over its series) at `http`.
async fn metric(client: &Http, http: &str, name: &str) -> f64 {
    let (_, body) = get(client, &format!("http://{http}/metrics"))
        .await
        .expect("metrics");
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| l.strip_prefix(name))
        .filter(|r| r.starts_with(' ') || r.starts_with('{'))
        .filter_map(|r| r.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU seconds of `pid` over `seconds` of wall time, and what `during`
/// returned over the same span.
async fn cpu_over<T>(
    pid: u32,
    seconds: u64,
    during: impl std::future::Future<Output = T>,
) -> (f64, T) {
    let ticks = streamd::clock_ticks().await;
    let before = proc::cpu_ticks(pid);
    let (t, ()) = tokio::join!(during, tokio::time::sleep(Duration::from_secs(seconds)));
    ((proc::cpu_ticks(pid) - before) / ticks, t)
}

#[derive(Default)]
struct Played {
    playlists: AtomicU64,
    parts: AtomicU64,
    errors: AtomicU64,
}

/// An LL-HLS player: blocking reloads for the part named by the preload
/// hint, then that part, until `until`.
async fn player(http: Http, base: String, playlist: String, until: Instant, played: Arc<Played>) {
    let mut next: Option<(String, String)> = None;
    while Instant::now() < until {
        let url = match &next {
            Some((q, _)) => format!("{base}/{playlist}?{q}"),
            None => format!("{base}/{playlist}"),
        };
        match get(&http, &url).await {
            Ok((200, body)) => {
                played.playlists.fetch_add(1, Ordering::Relaxed);
                if let Some((_, part)) = &next {
                    match get(&http, &format!("{base}/{part}")).await {
                        Ok((200, _)) => played.parts.fetch_add(1, Ordering::Relaxed),
                        _ => played.errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
                let text = String::from_utf8_lossy(&body);
                next = preload_hint(&text);
            }
            _ => {
                played.errors.fetch_add(1, Ordering::Relaxed);
                next = None;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// `n` players on `base` for `seconds`: what they fetched, and the LL-HLS
/// requests per second that reached the origin meanwhile.
async fn players(
    n: usize,
    seconds: u64,
    base: &str,
    playlist: &str,
    origin: &str,
) -> serde_json::Value {
    let http: Http = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(n)
        .build_http();
    let played = Arc::new(Played::default());
    let until = Instant::now() + Duration::from_secs(seconds);
    let before = metric(&http, origin, "streamd_llhls_requests_total").await;
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            tokio::spawn(player(
                http.clone(),
                base.to_owned(),
                playlist.to_owned(),
                until,
                played.clone(),
            ))
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let reached = metric(&http, origin, "streamd_llhls_requests_total").await - before;
    let (pl, parts, errors) = (
        played.playlists.load(Ordering::Relaxed),
        played.parts.load(Ordering::Relaxed),
        played.errors.load(Ordering::Relaxed),
    );
    assert!(pl > 0 && parts > 0, "the players fetched nothing");
    assert!(
        errors * 100 <= pl + parts,
        "the players saw {errors} errors in {} requests",
        pl + parts
    );
    serde_json::json!({
        "players": n,
        "playlists": pl,
        "parts": parts,
        "errors": errors,
        "origin_requests_per_s": reached / seconds as f64,
        "player_requests_per_s": (pl + parts) as f64 / seconds as f64,
    })
}

async fn run(plan: Plan) {
    let Ok(pg) = std::env::var("STREAMD_TEST_POSTGRES") else {
        panic!(
            "STREAMD_TEST_POSTGRES is not set: the cluster bench needs the test Postgres \
             (bash scripts/test.sh starts one; or scripts/lib.sh start_test_postgres)"
        );
    };
    let dir = tempfile::tempdir().unwrap();
    let database = {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let name = format!("streamd_bench_{}", std::process::id());
        let mut admin = sqlx::AnyConnection::connect(&pg).await.unwrap();
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        format!("{}/{name}", pg.rsplit_once('/').unwrap().0)
    };
    let mut ladder = String::from("[transcode]\nenabled = true\n");
    for (name, w, h, kbps) in plan.ladder {
        ladder.push_str(&format!(
            "[[transcode.ladder]]\nname = \"{name}\"\nwidth = {w}\nheight = {h}\n\
             bitrate_kbps = {kbps}\npreset = \"ultrafast\"\n"
        ));
    }
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let origin = node(dir.path(), "origin", "origin", &database, &ladder).await;
    // The origin's RTMP port is in its config; read it back.
    let config = std::fs::read_to_string(dir.path().join("origin.toml")).unwrap();
    let rtmp = config
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|p| p.strip_suffix('"'))
        .unwrap()
        .to_owned();
    // A keyframe a second, as the cluster tests publish.
    let mut publisher = streamd::publish_cbr_gop(
        &format!("rtmp://127.0.0.1:{rtmp}/live/bench"),
        plan.size,
        plan.kbps,
        None,
        30,
    );
    let master = format!("http://{}/live/bench/llhls.m3u8", origin.http);
    let deadline = Instant::now() + Duration::from_secs(30);
    let playlist = loop {
        if let Ok((200, body)) = get(&client, &master).await {
            let text = String::from_utf8_lossy(&body).into_owned();
            if let Some(v) = text
                .lines()
                .skip_while(|l| !l.starts_with("#EXT-X-STREAM-INF"))
                .nth(1)
            {
                break v.to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the origin did not serve the ladder"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut report = serde_json::json!({
        "plan": {"source": plan.size, "source_kbps": plan.kbps, "rungs": plan.ladder.len(),
                 "edges": plan.edges, "players": plan.players, "seconds": plan.seconds},
    });

    // 1. The origin alone, then with edges pulling every rung.
    let (alone_cpu, ()) = cpu_over(origin.pid, plan.seconds, async {}).await;
    let mut edges = Vec::new();
    for i in 0..plan.edges {
        edges.push(node(dir.path(), &format!("edge{i}"), "edge", &database, "").await);
    }
    for e in &edges {
        let r = get(&client, &format!("http://{}/live/bench/llhls.m3u8", e.http)).await;
        assert!(matches!(r, Ok((200, _))), "edge pull did not start: {r:?}");
    }
    let pulls = (plan.ladder.len() * plan.edges) as f64;
    let deadline = Instant::now() + Duration::from_secs(15);
    while metric(&client, &origin.http, "streamd_cluster_pulls_served").await < pulls {
        assert!(
            Instant::now() < deadline,
            "the edges' pulls did not all start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bytes0 = metric(&client, &origin.http, "streamd_cluster_pull_bytes_total").await;
    let edge_ticks0: Vec<f64> = edges.iter().map(|e| proc::cpu_ticks(e.pid)).collect();
    let (with_cpu, ()) = cpu_over(origin.pid, plan.seconds, async {}).await;
    let bytes1 = metric(&client, &origin.http, "streamd_cluster_pull_bytes_total").await;
    let ticks = streamd::clock_ticks().await;
    let edge_cpu: f64 = edges
        .iter()
        .zip(&edge_ticks0)
        .map(|(e, t0)| (proc::cpu_ticks(e.pid) - t0) / ticks)
        .sum::<f64>()
        / plan.edges as f64
        / plan.seconds as f64;
    let secs = plan.seconds as f64;
    let egress_mbps = (bytes1 - bytes0) * 8.0 / secs / 1e6 / plan.edges as f64;
    let nominal_mbps = plan.ladder.iter().map(|r| r.3 as f64).sum::<f64>() / 1000.0;
    assert!(egress_mbps > 0.0, "no bytes were pulled");
    report["origin_per_edge"] = serde_json::json!({
        "origin_cpu_alone_cores": alone_cpu / secs,
        "origin_cpu_with_edges_cores": with_cpu / secs,
        "origin_cpu_per_edge_cores": (with_cpu - alone_cpu) / secs / plan.edges as f64,
        "per_edge_vs_transcoding": (with_cpu - alone_cpu) / plan.edges as f64 / alone_cpu,
        "egress_per_edge_mbps": egress_mbps,
        "ladder_nominal_mbps": nominal_mbps,
        "egress_vs_nominal": egress_mbps / nominal_mbps,
        "edge_cpu_cores": edge_cpu,
    });
    eprintln!("origin per edge: {}", report["origin_per_edge"]);

    // 2. Glass to glass on the origin and on an edge, at the same time.
    let probe = if plan.full { 15 } else { 6 };
    let (ws_origin, ws_edge) = (
        format!("ws://{}/live/bench", origin.http),
        format!("ws://{}/live/bench", edges[0].http),
    );
    let (on_origin, on_edge) = tokio::join!(
        probe::aiortc_glass(&ws_origin, probe),
        probe::aiortc_glass(&ws_edge, probe),
    );
    let added = on_edge["p50_ms"].as_i64().unwrap() - on_origin["p50_ms"].as_i64().unwrap();
    report["glass_to_glass_webrtc"] = serde_json::json!({
        "origin": on_origin, "edge": on_edge, "edge_added_p50_ms": added,
    });
    eprintln!("glass to glass: {}", report["glass_to_glass_webrtc"]);

    // 3. Players straight at the origin, then through the cache.
    let direct = players(
        plan.players,
        plan.seconds,
        &format!("http://{}/live/bench", origin.http),
        &playlist,
        &origin.http,
    )
    .await;
    let cache_dir = dir.path().join("nginx");
    std::fs::create_dir_all(cache_dir.join("cache")).unwrap();
    // nginx's workers run as nobody: they write the cache directory.
    {
        use std::os::unix::fs::PermissionsExt;
        for (d, mode) in [
            (dir.path(), 0o755),
            (&cache_dir, 0o755),
            (&cache_dir.join("cache"), 0o777),
        ] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    }
    let listen = format!("127.0.0.1:{}", free_port());
    let rendered = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/nginx/llhls-cache.conf.template"
    ))
    .unwrap()
    .replace("${STREAMD_UPSTREAM}", &origin.http)
    .replace("${STREAMD_CLUSTER_SECRET}", SECRET)
    .replace("${NGINX_LISTEN}", &listen)
    .replace(
        "${NGINX_CACHE_DIR}",
        &cache_dir.join("cache").display().to_string(),
    );
    let cache = nginx::start(&cache_dir, 1, &format!("{rendered}\n"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(&listen).await.is_err() {
        assert!(Instant::now() < deadline, "nginx did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cached = players(
        plan.players,
        plan.seconds,
        &format!("http://{listen}/live/bench"),
        &playlist,
        &origin.http,
    )
    .await;
    let ratio = direct["origin_requests_per_s"].as_f64().unwrap()
        / cached["origin_requests_per_s"].as_f64().unwrap().max(1e-9);
    report["llhls_cache"] = serde_json::json!({
        "direct": direct, "through_cache": cached,
        "origin_requests_direct_vs_cached": ratio,
    });
    eprintln!("LL-HLS through the cache: {}", report["llhls_cache"]);
    nginx::stop(cache).await;
    let _ = publisher.kill().await;

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/cluster.json");
    std::fs::write(&out, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
