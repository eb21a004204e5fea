//! Where a load bench's server and its load generator meet.
//!
//! On loopback (the other benches, and `webrtc_load` with
//! `WEBRTC_LOAD_NET=loopback`) the kernel's delivery of a datagram to its
//! receiving socket runs in the sender's system call, so the server's CPU
//! figure also pays for the load generator's receive path (about half of
//! the server's kernel time in `webrtc_load`), which a server never pays
//! for remote viewers.
//!
//! [`setup_veth`] (`webrtc_load`'s default) puts the load generator in a
//! network namespace of its own, joined to the server's by a veth pair
//! whose ends each run their receive path in a kernel thread (threaded
//! NAPI). Each side is then charged its own receive path: the server's
//! figure is its process plus the thread that receives for it (what its
//! viewers and its publisher send it), and the load generator's is its
//! process plus the thread that receives the server's media. The server's
//! GSO super-packets are cut into datagrams on its own side, as for a NIC
//! without UDP segmentation offload.
//!
//! One leak the other way: when the load generator's receive ring is
//! full, the server's packets wait in the veth's queue, and the kernel
//! sends them on later from a softirq, which runs wherever it is raised:
//! often in the load generator's receive thread. That part of the server's
//! sending is charged to the load generator: about 3% of the server's CPU
//! at 1,000 viewers (perf on the whole machine, 2026-12-03; `tc -s qdisc`
//! counts about 4,000 requeues a second there).
//!
//! Needs root (or CAP_NET_ADMIN), iproute2 and ethtool, as the suite's
//! other namespace tests do. The namespace and the veth ends have fixed
//! names: two runs at once on one host would break each other.
#![allow(dead_code)] // each bench uses a subset

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

/// The load generator's namespace and the veth ends (a name is at most
/// 15 bytes).
const NS: &str = "webrtc-load";
const SERVER_DEV: &str = "wlsrv0";
const CLIENT_DEV: &str = "wlgen0";
const SERVER_IP: &str = "198.18.77.1";
const CLIENT_IP: &str = "198.18.77.2";

struct Net {
    veth: bool,
    /// The namespace the server runs in (the one the bench started in),
    /// for its child processes to go back to.
    root: Option<OwnedFd>,
}

static NET: OnceLock<Net> = OnceLock::new();

fn net() -> &'static Net {
    NET.get_or_init(|| Net {
        veth: false,
        root: None,
    })
}

/// Whether the run is on the veth pair.
pub fn veth() -> bool {
    net().veth
}

/// The address the server listens on.
pub fn server_ip() -> &'static str {
    if veth() { SERVER_IP } else { "127.0.0.1" }
}

/// The address the load generator's sockets (viewers, probes,
/// publishers) use.
pub fn client_ip() -> &'static str {
    if veth() { CLIENT_IP } else { "127.0.0.1" }
}

/// The server's network interface (for a server that is told which one
/// to gather ICE candidates on).
pub fn server_iface() -> &'static str {
    if veth() { SERVER_DEV } else { "lo" }
}

fn sh(cmd: &str) {
    let ok = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "`{cmd}` failed: the veth pair needs root, iproute2 and ethtool (WEBRTC_LOAD_NET=loopback goes without)"
    );
}

/// Makes the veth pair and moves the calling thread (and so every socket
/// it opens and every process it starts, but see [`server_side`]) into
/// the load generator's namespace. Call it first thing in `main`, before
/// any other thread exists. The namespace is removed by [`teardown`] and
/// at the next set-up.
pub fn setup_veth() {
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", NS])
        .stderr(std::process::Stdio::null())
        .status();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", SERVER_DEV])
        .stderr(std::process::Stdio::null())
        .status();
    sh(&format!("ip netns add {NS}"));
    sh(&format!(
        "ip link add {SERVER_DEV} type veth peer name {CLIENT_DEV} && \
         ip link set {CLIENT_DEV} netns {NS} && \
         ip addr add {SERVER_IP}/30 dev {SERVER_DEV} && ip link set {SERVER_DEV} up && \
         ip netns exec {NS} ip addr add {CLIENT_IP}/30 dev {CLIENT_DEV} && \
         ip netns exec {NS} ip link set {CLIENT_DEV} up && \
         ip netns exec {NS} ip link set lo up"
    ));
    // GRO on turns a veth end's NAPI on; threaded, its receive path runs
    // in a kernel thread of its own (napi/DEV-N) rather than in the
    // sender's system call. A queue on the sending ends holds a burst
    // while the receiving thread's ring (256 packets) is full, as a NIC's
    // queue does, rather than dropping it.
    // veth hands a packet to its peer's NAPI only if GRO could take it,
    // which with TSO on the sending end it does not count on: TSO off.
    // UDP segmentation offload off too: a GSO super-packet is cut into
    // datagrams in the sender's context, as for a NIC without it (veth
    // would pass it whole and leave the cutting to the receiver).
    sh(&format!(
        "ethtool -K {SERVER_DEV} gro on tso off tx-udp-segmentation off && \
         echo 1 > /sys/class/net/{SERVER_DEV}/threaded && \
         tc qdisc replace dev {SERVER_DEV} root pfifo limit 20000 && \
         ip netns exec {NS} sh -c 'ethtool -K {CLIENT_DEV} gro on tso off tx-udp-segmentation off && \
         echo 1 > /sys/class/net/{CLIENT_DEV}/threaded && \
         tc qdisc replace dev {CLIENT_DEV} root pfifo limit 20000'"
    ));
    let root: OwnedFd = File::open("/proc/self/ns/net")
        .expect("this process's network namespace")
        .into();
    let ns = File::open(format!("/var/run/netns/{NS}")).expect("the load namespace");
    // SAFETY: a namespace file descriptor we own; the calling thread is
    // the process's only one (the caller's contract).
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
    assert!(
        NET.set(Net {
            veth: true,
            root: Some(root),
        })
        .is_ok(),
        "setup_veth runs before anything asks where the server is"
    );
}

/// Removes the namespace and the veth pair (no-op on loopback).
pub fn teardown() {
    if veth() {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", NS])
            .status();
    }
}

/// Starts `cmd` (a server) in the server's namespace.
pub fn server_side(cmd: &mut tokio::process::Command) {
    if let Some(root) = net().root.as_ref() {
        let fd = root.as_raw_fd();
        // SAFETY: setns is async-signal-safe, and `fd` stays open for the
        // life of the process (NET is never dropped).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

/// CPU clock ticks of the kernel threads named `napi/DEV-…` (0 on
/// loopback, where there are none).
fn napi_ticks(dev: &str) -> f64 {
    if !veth() {
        return 0.0;
    }
    threads_ticks(&format!("napi/{dev}-"))
}

/// CPU clock ticks of the kernel's softirq threads (`ksoftirqd/N`): the
/// network work the kernel deferred there is charged to neither side, so
/// the benches report it beside them.
pub fn softirqd_ticks() -> f64 {
    threads_ticks("ksoftirqd/")
}

/// CPU clock ticks of the processes and kernel threads whose name starts
/// with `prefix`.
fn threads_ticks(prefix: &str) -> f64 {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm"))
                .is_ok_and(|c| c.trim_end().starts_with(prefix))
        })
        .map(|e| crate::proc::cpu_ticks(e.file_name().to_string_lossy()))
        .sum()
}

/// CPU ticks of the thread that receives for the server (its viewers'
/// and publisher's packets): part of the server's cost.
pub fn server_rx_ticks() -> f64 {
    napi_ticks(SERVER_DEV)
}

/// CPU ticks of the thread that receives the server's media for the
/// load generator: part of the load generator's cost.
pub fn client_rx_ticks() -> f64 {
    napi_ticks(CLIENT_DEV)
}
