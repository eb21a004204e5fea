//! nginx, the static-file baseline the serving benches run beside streamd:
//! started in the foreground on loopback with a config written into the
//! run's directory, and stopped as its docs say.
#![allow(dead_code)] // each bench uses a subset

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// A loopback port free right now (the caller binds it soon after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts nginx with `workers` worker processes, keeping its pid file and
/// temporary files in `dir`; `http` goes into its `http` block after the
/// lines every bench shares (no access log, the HLS MIME types) and holds
/// the `server` blocks.
pub fn start(dir: &Path, workers: usize, http: &str) -> Child {
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes {workers};\npid {pid};\nerror_log stderr error;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n  access_log off;\n  \
             types {{ application/vnd.apple.mpegurl m3u8; video/mp4 mp4 m4s; }}\n  \
             client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
             {http}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            tmp = dir.display(),
        ),
    )
    .unwrap();
    Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("nginx (apt-get install nginx-light)")
}

/// Stops nginx as its docs say (SIGTERM to the master, which stops its
/// workers): a SIGKILL, as dropping the child would send, leaves the
/// workers running and listening.
pub async fn stop(mut nginx: Child) {
    if let Some(pid) = nginx.id() {
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), nginx.wait()).await;
}
