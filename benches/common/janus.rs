//! Janus (Debian's `janus` package) as the side-by-side WebRTC fan-out
//! baseline: its streaming plugin serves one RTP mountpoint fed by ffmpeg,
//! set up as ../shared/JANUS-BASELINE.md describes it, in a directory of
//! the run's own (the system's /etc/janus is not read).
//!
//! Janus never gathers ICE candidates on a loopback interface (its
//! interface walk skips IFF_LOOPBACK before it reads the enforce list), so
//! a 20-line `LD_PRELOAD` shim built here with the system's C compiler
//! clears that flag on `lo` for Janus alone.
#![allow(dead_code)] // each bench uses a subset

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A running Janus with one mountpoint (`MOUNTPOINT`) whose video is read
/// from `video_port` on the bench's server address.
pub struct Janus {
    pub child: Child,
    pub pid: u32,
    /// The HTTP API's address (`host:port`).
    pub http: String,
    pub video_port: u16,
}

/// The id of the one mountpoint.
pub const MOUNTPOINT: u64 = 1;

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <string.h>
int getifaddrs(struct ifaddrs **ifap) {
	static int (*real)(struct ifaddrs **) = NULL;
	if (!real)
		real = (int (*)(struct ifaddrs **))dlsym(RTLD_NEXT, "getifaddrs");
	int rc = real(ifap);
	if (rc == 0)
		for (struct ifaddrs *i = *ifap; i; i = i->ifa_next)
			if (i->ifa_name && strcmp(i->ifa_name, "lo") == 0)
				i->ifa_flags &= ~IFF_LOOPBACK;
	return rc;
}
"#;

/// The directory holding Janus's modules (`…/janus/plugins` and its
/// siblings) under the multiarch library path.
fn modules() -> PathBuf {
    std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("janus"))
        .find(|p| p.join("plugins/libjanus_streaming.so").exists())
        .expect("Janus is not installed (Debian package `janus`; scripts/lib.sh installs it)")
}

/// A port that was free a moment ago (on the veth pair: free on the load
/// generator's side, where the bench runs; the two namespaces hand out
/// ports apart, so a clash is as unlikely as a reuse on loopback).
fn free_port(udp: bool) -> u16 {
    let at = (crate::net::client_ip(), 0);
    if udp {
        std::net::UdpSocket::bind(at)
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind(at)
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Starts Janus in `dir` with one fixed pool of `event_loops` media threads
/// (not a thread per viewer) and `helpers` fan-out helper threads on the
/// mountpoint, sessions that never time out (the load viewers do not
/// long-poll once connected), and waits until its API answers.
pub async fn start(dir: &Path, event_loops: u32, helpers: u32) -> Janus {
    let modules = modules();
    let conf = dir.join("janus-conf");
    std::fs::create_dir_all(&conf).unwrap();
    let shim_c = dir.join("lo_as_nic.c");
    let shim = dir.join("lo_as_nic.so");
    std::fs::write(&shim_c, SHIM).unwrap();
    let cc = Command::new("gcc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&shim)
        .arg(&shim_c)
        .arg("-ldl")
        .status()
        .await
        .expect("gcc");
    assert!(cc.success(), "building the loopback shim failed");
    let (http_port, video_port) = (free_port(false), free_port(true));
    let ip = crate::net::server_ip();
    let m = modules.display();
    std::fs::write(
        conf.join("janus.jcfg"),
        format!(
            r#"general: {{
	configs_folder = "{conf}"
	plugins_folder = "{m}/plugins"
	transports_folder = "{m}/transports"
	events_folder = "{m}/events"
	loggers_folder = "{m}/loggers"
	debug_level = 4
	server_name = "janus-baseline"
	interface = "{ip}"
	session_timeout = 0
	event_loops = {event_loops}
}}
certificates: {{
}}
media: {{
	ipv6 = false
	rtp_port_range = "20000-40000"
}}
nat: {{
	nice_debug = false
	ice_enforce_list = "{iface}"
	ignore_mdns = true
}}
plugins: {{
	disable = "libjanus_audiobridge.so,libjanus_duktape.so,libjanus_echotest.so,libjanus_lua.so,libjanus_nosip.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so"
}}
transports: {{
	disable = "libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_pfunix.so,libjanus_rabbitmq.so,libjanus_websockets.so"
}}
loggers: {{
	disable = "libjanus_jsonlog.so"
}}
events: {{
	broadcast = false
	disable = "libjanus_gelfevh.so,libjanus_mqttevh.so,libjanus_nanomsgevh.so,libjanus_rabbitmqevh.so,libjanus_sampleevh.so,libjanus_wsevh.so"
}}
"#,
            conf = conf.display(),
            iface = crate::net::server_iface(),
        ),
    )
    .unwrap();
    std::fs::write(
        conf.join("janus.transport.http.jcfg"),
        format!(
            "general: {{\n\tjson = \"compact\"\n\tbase_path = \"/janus\"\n\thttp = true\n\
             \tport = {http_port}\n\tip = \"{ip}\"\n\thttps = false\n\
             \tmhd_connection_limit = 20000\n}}\n\
             admin: {{\n\tadmin_http = false\n\tadmin_https = false\n}}\n"
        ),
    )
    .unwrap();
    // Video only, as streamd's load runs publish it.
    std::fs::write(
        conf.join("janus.plugin.streaming.jcfg"),
        format!(
            "general: {{\n}}\nload: {{\n\ttype = \"rtp\"\n\tid = {MOUNTPOINT}\n\
             \tdescription = \"H.264 from ffmpeg over RTP\"\n\tmedia = (\n\
             \t\t{{ type = \"video\", mid = \"v\", label = \"video\", port = {video_port}, \
             iface = \"{ip}\", pt = 96, codec = \"h264\", \
             fmtp = \"profile-level-id=42e01f;packetization-mode=1\", bufferkf = true }}\n\
             \t)\n\tthreads = {helpers}\n}}\n"
        ),
    )
    .unwrap();
    let mut cmd = Command::new("janus");
    crate::net::server_side(&mut cmd);
    let mut child = cmd
        .arg("-F")
        .arg(&conf)
        .arg("-L")
        .arg(dir.join("janus.log"))
        .env("LD_PRELOAD", &shim)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("janus");
    let pid = child.id().expect("a running child has a pid");
    let http = format!("{ip}:{http_port}");
    let mut last = String::new();
    for _ in 0..100 {
        match get(&http, "/janus/info").await {
            Err(e) => last = e,
            Ok(_) => {
                return Janus {
                    child,
                    pid,
                    http,
                    video_port,
                };
            }
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "janus exited ({status}): {}",
                std::fs::read_to_string(dir.join("janus.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "janus's API never answered ({last}): {}",
        std::fs::read_to_string(dir.join("janus.log")).unwrap_or_default()
    );
}

/// The test pattern sent to Janus's mountpoint as RTP, encoded exactly as
/// [`crate::streamd::publish_cbr`] encodes it for streamd, in packets of at
/// most 1,100 bytes of payload, as streamd's packetizer cuts them.
pub fn publish_rtp(video_port: u16, size: &str, kbps: u32, seconds: Option<u32>) -> Child {
    let rate = format!("{kbps}k");
    let mut cmd = crate::streamd::test_pattern(size, None);
    if let Some(s) = seconds {
        cmd.args(["-t", &s.to_string()]);
    }
    cmd.args(["-c:v", "libx264", "-preset", "ultrafast", "-tune"])
        .args(["zerolatency", "-bf", "0", "-pix_fmt", "yuv420p", "-g", "60"])
        .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate])
        .args(["-payload_type", "96", "-f", "rtp"])
        .arg(format!(
            "rtp://{}:{video_port}?pkt_size=1112",
            crate::net::server_ip()
        ))
        .stderr(Stdio::null())
        .spawn()
        .expect("ffmpeg")
}

/// One HTTP/1.0 exchange with Janus's API (a new connection each time,
/// closed after the answer, and no chunked body to undo); the body parsed as JSON. Janus
/// reports its own errors as `"janus": "error"` with status 200: those are
/// errors here too.
async fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    s.write_all(body.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(40), s.read_to_end(&mut answer))
        .await
        .map_err(|_| format!("{method} {path}: no answer in 40 s"))?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    let (status, json) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{method} {path}: not HTTP: {text}"))?;
    if !status.starts_with("HTTP/1.0 200") && !status.starts_with("HTTP/1.1 200") {
        return Err(format!("{method} {path}: {status}"));
    }
    let v: Value =
        serde_json::from_str(json).map_err(|e| format!("{method} {path}: {e}: {json}"))?;
    if v["janus"] == "error" {
        return Err(format!("{method} {path}: {v}"));
    }
    Ok(v)
}

async fn get(addr: &str, path: &str) -> Result<Value, String> {
    exchange(addr, "GET", path, None).await
}

async fn post(addr: &str, path: &str, body: Value) -> Result<Value, String> {
    exchange(addr, "POST", path, Some(&body)).await
}

/// A viewer's Janus session and streaming handle, between the offer and
/// the answer.
pub struct Session {
    addr: String,
    handle: String,
}

/// Opens a session and a streaming handle, asks to watch the mountpoint
/// and long-polls until Janus's offer comes: (the offer's SDP, the
/// session to answer on).
pub async fn offer(addr: &str) -> Result<(String, Session), String> {
    let tx = |t: &str| format!("{t}-{}", std::process::id());
    let id = |v: &Value| {
        v["data"]["id"]
            .as_u64()
            .ok_or_else(|| format!("no id: {v}"))
    };
    let session = id(&post(
        addr,
        "/janus",
        json!({"janus": "create", "transaction": tx("c")}),
    )
    .await?)?;
    let handle = id(&post(
        addr,
        &format!("/janus/{session}"),
        json!({"janus": "attach", "plugin": "janus.plugin.streaming", "transaction": tx("a")}),
    )
    .await?)?;
    let handle = format!("/janus/{session}/{handle}");
    post(
        addr,
        &handle,
        json!({"janus": "message", "transaction": tx("w"),
               "body": {"request": "watch", "id": MOUNTPOINT}}),
    )
    .await?;
    // The offer comes as an event on the session's long-poll.
    for _ in 0..10 {
        let events = get(addr, &format!("/janus/{session}?maxev=10")).await?;
        let events = match events {
            Value::Array(a) => a,
            one => vec![one],
        };
        // The plugin's own errors come as events too, with status 200.
        if let Some(e) = events
            .iter()
            .find(|e| !e["plugindata"]["data"]["error"].is_null())
        {
            return Err(format!("watch refused: {e}"));
        }
        if let Some(sdp) = events.iter().find_map(|e| e["jsep"]["sdp"].as_str()) {
            return Ok((
                sdp.to_owned(),
                Session {
                    addr: addr.to_owned(),
                    handle,
                },
            ));
        }
    }
    Err("Janus sent no offer".into())
}

impl Session {
    /// Sends the answer (`start`); Janus acknowledges it at once and goes
    /// on with ICE and DTLS.
    pub async fn answer(&self, sdp: &str) -> Result<(), String> {
        post(
            &self.addr,
            &self.handle,
            json!({"janus": "message", "transaction": "s", "body": {"request": "start"},
                   "jsep": {"type": "answer", "sdp": sdp}}),
        )
        .await
        .map(drop)
    }
}
