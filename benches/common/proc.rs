//! What /proc says about a process, for the benches that measure streamd
//! and its baselines side by side. `pid` may be a number or "self".
#![allow(dead_code)] // each bench uses a subset

use std::fmt::Display;

/// A `/proc/PID/status` value in kB (`VmRSS:`, `VmHWM:`), 0 if unknown.
pub fn status_kb(pid: impl Display, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// User + system CPU time in clock ticks (utime and stime, fields 14 and
/// 15 of `/proc/PID/stat`), 0 if unknown.
pub fn cpu_ticks(pid: impl Display) -> f64 {
    let (user, system) = cpu_ticks_split(pid);
    user + system
}

/// User and system CPU time in clock ticks, apart (on loopback, the
/// kernel's delivery of a sent datagram to its receiver is charged to the
/// sender's system time).
pub fn cpu_ticks_split(pid: impl Display) -> (f64, f64) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return (0.0, 0.0);
    };
    // Fields after the ")" of the command name start at field 3.
    let rest = s.rsplit_once(')').map_or("", |r| r.1);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (field(11), field(12))
}

/// CPU time the calling thread has used (CLOCK_THREAD_CPUTIME_ID): what a
/// piece of code costs, whatever else the machine runs.
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
