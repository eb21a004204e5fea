//! Cluster nodes for tests: each streamd its own process, on loopback or
//! inside its own network namespace (a "host" of [`Hosts`]), sharing the
//! test Postgres.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::*;

pub const CLUSTER_SECRET: &str = "cluster-test-secret-0123456789abcdef";
const BIN: &str = env!("CARGO_BIN_EXE_streamd");

/// Where a node runs.
#[derive(Clone, Debug)]
pub enum Place {
    /// On this host's loopback, on free ports.
    Loopback,
    /// In network namespace `ns`, at `ip` (fixed ports: 1935, 8080).
    Host { ns: String, ip: String },
}

/// How a node is started (see [`Node::start`] and its kin).
struct Spec<'a> {
    name: &'a str,
    role: &'a str,
    database: &'a str,
    grace: &'a str,
    place: &'a Place,
    cert: Option<&'a super::tls::TestCert>,
    env: &'a [(&'a str, &'a str)],
}

impl<'a> Spec<'a> {
    /// A node on plain HTTP, with a reconnect grace of 30 s.
    fn of(name: &'a str, role: &'a str, database: &'a str, place: &'a Place) -> Self {
        Spec {
            name,
            role,
            database,
            grace: "30s",
            place,
            cert: None,
            env: &[],
        }
    }
}

pub struct Node {
    pub child: Child,
    /// host:port
    pub rtmp: String,
    pub http: String,
    /// host:port of its HTTPS listener (HTTP/2 by ALPN), if it has one.
    pub https: Option<String>,
    pub log: PathBuf,
}

impl Node {
    /// Starts a node: `role` "origin" (transcoding a two-rung ladder:
    /// 360p and 180p) or "edge", with `grace` as its reconnect grace, its
    /// files in `dir/name`, and waits until it is ready.
    pub async fn start(
        dir: &Path,
        name: &str,
        role: &str,
        database: &str,
        grace: &str,
        place: &Place,
    ) -> Node {
        Node::launch(
            dir,
            Spec {
                grace,
                ..Spec::of(name, role, database, place)
            },
        )
        .await
    }

    /// [`Node::start`] with `env` set too (`STREAMD_SECTION__KEY`
    /// variables override its configuration).
    pub async fn start_env(
        dir: &Path,
        name: &str,
        role: &str,
        database: &str,
        place: &Place,
        env: &[(&str, &str)],
    ) -> Node {
        Node::launch(
            dir,
            Spec {
                env,
                ..Spec::of(name, role, database, place)
            },
        )
        .await
    }

    /// [`Node::start`] with an HTTPS listener too, serving `cert`.
    pub async fn start_tls(
        dir: &Path,
        name: &str,
        role: &str,
        database: &str,
        place: &Place,
        cert: &super::tls::TestCert,
    ) -> Node {
        Node::launch(
            dir,
            Spec {
                grace: "5s",
                cert: Some(cert),
                ..Spec::of(name, role, database, place)
            },
        )
        .await
    }

    async fn launch(dir: &Path, spec: Spec<'_>) -> Node {
        let Spec {
            name,
            role,
            database,
            grace,
            place,
            cert,
            env,
        } = spec;
        let (ip, rtmp, http) = match place {
            Place::Loopback => (
                "127.0.0.1".to_owned(),
                format!("127.0.0.1:{}", free_port()),
                format!("127.0.0.1:{}", free_port()),
            ),
            Place::Host { ip, .. } => (ip.clone(), format!("{ip}:1935"), format!("{ip}:8080")),
        };
        let https = cert.map(|_| match place {
            Place::Loopback => format!("127.0.0.1:{}", free_port()),
            Place::Host { ip, .. } => format!("{ip}:8443"),
        });
        let tls = match (cert, &https) {
            (Some(c), Some(at)) => format!(
                "[tls]\nlisten = [\"{at}\"]\ncert = \"{}\"\nkey = \"{}\"\n",
                c.cert.display(),
                c.key.display()
            ),
            _ => String::new(),
        };
        let data = dir.join(name);
        let config = dir.join(format!("{name}.toml"));
        let transcode = if role == "origin" {
            // Two streams at once (the several-hosts test's second one is
            // short), whatever the cores say.
            "[transcode]\nenabled = true\nmax_streams = 2\n\
             [[transcode.ladder]]\nname = \"360p\"\nwidth = 640\nheight = 360\n\
             bitrate_kbps = 600\npreset = \"superfast\"\n\
             [[transcode.ladder]]\nname = \"180p\"\nwidth = 320\nheight = 180\n\
             bitrate_kbps = 250\npreset = \"superfast\"\n"
        } else {
            "[transcode]\nenabled = false\n"
        };
        std::fs::write(
            &config,
            format!(
                "[rtmp]\nlisten = \"{rtmp}\"\n[http]\nlisten = \"{http}\"\n\
                 [srt]\nlisten = \"{ip}:0\"\n\
                 [webrtc]\nudp_listen = \"{ip}:0\"\ntcp_listen = \"{ip}:0\"\n\
                 candidate_ips = [\"{ip}\"]\nstart_bitrate_kbps = 1000\n\
                 [whip]\nudp_listen = \"{ip}:0\"\n\
                 {transcode}{tls}\
                 [auth]\npublish = \"open\"\njwt_secret = \"{TEST_SECRET}\"\n\
                 [bus]\nreconnect_grace = \"{grace}\"\n\
                 [record]\nenabled = false\n\
                 [database]\ndata_dir = \"{}\"\nurl = \"{database}\"\n\
                 [cluster]\nrole = \"{role}\"\nnode = \"{name}\"\n\
                 advertise_url = \"http://{http}\"\npublic_url = \"http://{http}\"\nsecret = \"{CLUSTER_SECRET}\"\n\
                 heartbeat = \"500ms\"\nexpiry = \"2s\"\nidle_timeout = \"3s\"\n",
                data.display()
            ),
        )
        .unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = match place {
            Place::Loopback => Command::new(BIN),
            Place::Host { ns, .. } => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
        };
        let child = cmd
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,streamd::cluster=debug")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("streamd runs");
        let node = Node {
            child,
            rtmp,
            http,
            https,
            log,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(&node.http).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} did not listen: {}",
                node.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ready = poll(&node.url("/readyz"), Duration::from_secs(30), |r| {
            r.status == 200
        })
        .await;
        assert_eq!(ready.status, 200, "{name} is not ready: {}", node.logs());
        node
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn ws(&self, path: &str) -> String {
        format!("ws://{}{path}", self.http)
    }

    pub async fn metric(&self, name: &str) -> f64 {
        metric(&self.url("/metrics"), name).await
    }

    /// Waits up to `timeout` until `f` holds for metric `name`; its value.
    pub async fn metric_reaches(
        &self,
        name: &str,
        timeout: Duration,
        f: impl Fn(f64) -> bool,
    ) -> f64 {
        metric_reaches(&self.url("/metrics"), name, timeout, f).await
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The test publisher (640x360, 1 s GOP) to `live/{stream}` here.
    pub fn publish(&self, stream: &str, seconds: u32) -> Child {
        Publish {
            url: &format!("rtmp://{}/live/{stream}", self.rtmp),
            seconds,
            size: "640x360",
            gop: 30,
            copy_to: None,
        }
        .spawn()
    }

    /// A private stream created through this node's API: its id, stream
    /// key and a playback token (every node checks them against the same
    /// database and secret).
    pub async fn private_stream(&self) -> (String, String, String) {
        let auth = streamd::auth::Auth::new(TEST_SECRET, Default::default());
        let bearer = format!("Bearer {}", auth.mint_api("t", Duration::from_secs(600)));
        let created = request_with(
            "POST",
            &self.url("/api/streams"),
            &[
                ("authorization", &bearer),
                ("content-type", "application/json"),
            ],
            r#"{"name":"private","description":"","isPrivate":true}"#.to_owned(),
        )
        .await;
        assert_eq!(created.status, 201, "{}", created.text());
        let s: serde_json::Value = serde_json::from_slice(&created.body).unwrap();
        let id = s["id"].as_str().unwrap().to_owned();
        let key = s["streamKey"].as_str().unwrap().to_owned();
        let playback = request(
            "GET",
            &self.url(&format!("/api/streams/{id}/playback")),
            &[("authorization", &bearer)],
        )
        .await;
        assert_eq!(playback.status, 200, "{}", playback.text());
        let playback: serde_json::Value = serde_json::from_slice(&playback.body).unwrap();
        let token = playback["token"]
            .as_str()
            .expect("a playback token")
            .to_owned();
        (id, key, token)
    }

    /// The master playlist of `live/{stream}` here, once it is served.
    pub async fn master(&self, stream: &str, query: &str) -> Response {
        poll(
            &self.url(&format!("/live/{stream}/llhls.m3u8{query}")),
            Duration::from_secs(30),
            |r| r.status == 200,
        )
        .await
    }
}

/// Several hosts on this machine: network namespaces on one bridge (in a
/// namespace of its own), at addresses in 198.19.N.0/24, N picked from the
/// process id; this namespace joins at .254. Everything is removed when
/// dropped.
pub struct Hosts {
    id: u32,
    pub prefix: String,
    namespaces: Vec<String>,
    root_dev: String,
}

impl Hosts {
    pub fn new() -> Hosts {
        let id = std::process::id() % 100_000;
        let n = 1 + id % 250;
        let mut hosts = Hosts {
            id,
            prefix: format!("198.19.{n}"),
            namespaces: Vec::new(),
            root_dev: format!("sd{id}r"),
        };
        let sw = hosts.switch();
        hosts.namespaces.push(sw.clone());
        sh(&format!("ip netns add {sw}"));
        sh(&format!("ip netns exec {sw} ip link add br0 type bridge"));
        sh(&format!("ip netns exec {sw} ip link set br0 up"));
        // This namespace's leg: the test reaches every host, and hosts
        // reach the test's services (the Postgres relay) at .254.
        let (a, b) = (hosts.root_dev.clone(), format!("sd{id}s"));
        sh(&format!("ip link add {a} type veth peer name {b}"));
        sh(&format!("ip link set {b} netns {sw}"));
        sh(&format!("ip netns exec {sw} ip link set {b} master br0"));
        sh(&format!("ip netns exec {sw} ip link set {b} up"));
        sh(&format!("ip addr add {}.254/24 dev {a}", hosts.prefix));
        sh(&format!("ip link set {a} up"));
        hosts
    }

    fn switch(&self) -> String {
        format!("sd{}-sw", self.id)
    }

    /// A host named `name` (a few letters) at `.{octet}`; its namespace.
    pub fn add(&mut self, name: &str, octet: u8) -> Place {
        let ns = format!("sd{}-{name}", self.id);
        let (a, b) = (
            format!("sd{}{name}a", self.id),
            format!("sd{}{name}b", self.id),
        );
        let ip = format!("{}.{octet}", self.prefix);
        let sw = self.switch();
        sh(&format!("ip netns add {ns}"));
        self.namespaces.push(ns.clone());
        sh(&format!("ip link add {a} type veth peer name {b}"));
        sh(&format!("ip link set {a} netns {sw}"));
        sh(&format!("ip netns exec {sw} ip link set {a} master br0"));
        sh(&format!("ip netns exec {sw} ip link set {a} up"));
        sh(&format!("ip link set {b} netns {ns}"));
        sh(&format!("ip netns exec {ns} ip addr add {ip}/24 dev {b}"));
        sh(&format!("ip netns exec {ns} ip link set {b} up"));
        sh(&format!("ip netns exec {ns} ip link set lo up"));
        Place::Host { ns, ip }
    }

    /// The address this namespace has on the hosts' network.
    pub fn here(&self) -> String {
        format!("{}.254", self.prefix)
    }

    /// Cuts `place` off from `peer` (both directions), or heals it.
    pub fn partition(&self, place: &Place, peer: &str, cut: bool) {
        let Place::Host { ns, .. } = place else {
            panic!("only a host can be partitioned")
        };
        let op = if cut { "-I" } else { "-D" };
        sh(&format!(
            "ip netns exec {ns} iptables {op} INPUT -s {peer} -j DROP"
        ));
        sh(&format!(
            "ip netns exec {ns} iptables {op} OUTPUT -d {peer} -j DROP"
        ));
    }

    /// Makes `place`'s link lose each packet coming in, and each send going
    /// out, with `probability` (iptables' random match: this kernel has no
    /// netem), or, with `None`, lossless again. A send dropped on the way
    /// out fails with EPERM, and with UDP GSO one send is a batch of
    /// datagrams (say, one frame's RTP packets): outgoing losses come in
    /// runs.
    pub fn lossy(&self, place: &Place, probability: Option<f64>) {
        let Place::Host { ns, .. } = place else {
            panic!("only a host's link can lose packets")
        };
        for chain in ["INPUT", "OUTPUT"] {
            match probability {
                Some(p) => sh(&format!(
                    "ip netns exec {ns} iptables -I {chain} -m statistic \
                     --mode random --probability {p} -m comment --comment sd-loss -j DROP"
                )),
                None => {
                    // Deleted as iptables lists it (it keeps the
                    // probability as a fraction of 2^32).
                    let out = std::process::Command::new("ip")
                        .args(["netns", "exec", ns, "iptables", "-S", chain])
                        .output()
                        .expect("iptables");
                    let rules = String::from_utf8_lossy(&out.stdout).into_owned();
                    let rule = rules
                        .lines()
                        .find(|l| l.contains("sd-loss"))
                        .and_then(|l| l.strip_prefix("-A "))
                        .unwrap_or_else(|| panic!("no loss rule in {chain}: {rules}"));
                    sh(&format!("ip netns exec {ns} iptables -D {rule}"));
                }
            }
        }
    }

    /// Packets (out: sends, GSO batches counted once) `place`'s loss rules
    /// have dropped so far, (in, out).
    pub fn lost(&self, place: &Place) -> (u64, u64) {
        let Place::Host { ns, .. } = place else {
            panic!("only a host's link can lose packets")
        };
        let count = |chain: &str| -> u64 {
            let out = std::process::Command::new("ip")
                .args([
                    "netns", "exec", ns, "iptables", "-L", chain, "-v", "-n", "-x",
                ])
                .output()
                .expect("iptables");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("sd-loss"))
                .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        };
        (count("INPUT"), count("OUTPUT"))
    }

    /// Relays TCP from `{here}:{port}` to `target` (say, the test Postgres
    /// on this namespace's loopback) for as long as the returned task runs.
    pub async fn relay(&self, port: u16, target: String) -> tokio::task::JoinHandle<()> {
        self.relay_delayed(port, target, Duration::ZERO).await.0
    }

    /// [`Hosts::relay`], holding every byte `delay` before it is passed on,
    /// each way: a long link (this kernel has no netem). With it, a count
    /// of the bytes a delayed relay has passed on, both ways.
    pub async fn relay_delayed(
        &self,
        port: u16,
        target: String,
        delay: Duration,
    ) -> (
        tokio::task::JoinHandle<()>,
        std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) {
        let passed = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = passed.clone();
        let listener = tokio::net::TcpListener::bind(format!("{}:{port}", self.here()))
            .await
            .expect("the relay binds on the hosts' network");
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let target = target.clone();
                let passed = passed.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    if delay.is_zero() {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        return;
                    }
                    let (in_read, in_write) = inbound.into_split();
                    let (out_read, out_write) = outbound.into_split();
                    tokio::join!(
                        delayed(in_read, out_write, delay, &passed),
                        delayed(out_read, in_write, delay, &passed)
                    );
                });
            }
        });
        (task, counter)
    }
}

/// Copies `from` to `to`, each piece `delay` after it was read, counting
/// what it passes on in `passed`.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    passed: &std::sync::atomic::AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Bounded: a reader ahead of its writer by 256 pieces waits.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(256);
    let read = async move {
        let mut buf = vec![0; 16 << 10];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, piece)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&piece).await.is_err() {
                break;
            }
            passed.fetch_add(piece.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

impl Drop for Hosts {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.root_dev])
            .output();
        for ns in self.namespaces.iter().rev() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}

/// Runs `cmd` with sh; a failure (these need root) fails the test.
pub fn sh(cmd: &str) {
    let out = std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "`{cmd}` failed (this test needs root: ip netns, veth, iptables, tc): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
