//! A thin, safe binding of the part of libsrt streamd uses: a live-mode
//! listener, non-blocking accept and receive, and one epoll set.
//!
//! Why libsrt and not a Rust crate: it is the reference implementation that
//! OBS, ffmpeg, vMix and hardware encoders speak, maintained by the SRT
//! Alliance and packaged by Debian (`libsrt1.5-openssl`); the Rust
//! implementations (`srt-tokio`, `srt-rs`) have had no release in years and
//! miss parts of the protocol (stream-id access control, key refresh).
//!
//! The declarations are written by hand; `abi.c` (compiled by build.rs)
//! checks each constant, size and signature against the installed headers,
//! so a libsrt with another ABI fails the build. All `unsafe` in the SRT
//! ingest is in this file.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::net::SocketAddr;
use std::sync::Once;

type RawSocket = i32;

const SRT_ERROR: c_int = -1;
const SRT_INVALID_SOCK: RawSocket = -1;

const SRTO_SNDSYN: c_int = 1;
const SRTO_RCVSYN: c_int = 2;
const SRTO_REUSEADDR: c_int = 15;
const SRTO_PASSPHRASE: c_int = 26;
const SRTO_PBKEYLEN: c_int = 27;
const SRTO_RCVLATENCY: c_int = 43;
const SRTO_TRANSTYPE: c_int = 50;
const SRTO_ENFORCEDENCRYPTION: c_int = 53;
const SRTO_PEERIDLETIMEO: c_int = 55;
const SRTT_LIVE: c_int = 0;

const SRT_EPOLL_IN: c_int = 0x1;
const SRT_EPOLL_ERR: c_int = 0x8;
const SRTS_CONNECTED: c_int = 5;
/// Non-blocking receive or accept: nothing there now.
const SRT_EASYNCRCV: c_int = 6002;
/// Nothing ready within the timeout. libsrt's `srt_epoll_uwait` returns 0
/// then (1.5); `srt_epoll_wait` and older releases report this error,
/// which is taken as the same thing rather than as a failure of the loop.
const SRT_ETIMEOUT: c_int = 6003;

/// The longest stream id SRT carries.
pub const MAX_STREAM_ID: usize = 512;

/// Reject reasons an application may give (`access_control.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Reject {
    BadRequest = 1400,
    Unauthorized = 1401,
    Overload = 1402,
    Forbidden = 1403,
    BadMode = 1405,
    Conflict = 1409,
    NotSupportedMedia = 1415,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct EpollEvent {
    fd: RawSocket,
    events: c_int,
}

type ListenHookFn = unsafe extern "C" fn(
    opaque: *mut c_void,
    ns: RawSocket,
    hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int;

type LogHookFn = unsafe extern "C" fn(
    opaque: *mut c_void,
    level: c_int,
    file: *const c_char,
    line: c_int,
    area: *const c_char,
    message: *const c_char,
);

/// syslog's LOG_NOTICE: libsrt's messages up to this level reach the hook.
const LOG_NOTICE: c_int = 5;

unsafe extern "C" {
    fn srt_startup() -> c_int;
    fn srt_setloghandler(opaque: *mut c_void, handler: LogHookFn);
    fn srt_setloglevel(level: c_int);
    fn srt_create_socket() -> RawSocket;
    fn srt_bind(u: RawSocket, name: *const libc::sockaddr, namelen: c_int) -> c_int;
    fn srt_listen(u: RawSocket, backlog: c_int) -> c_int;
    fn srt_accept(u: RawSocket, addr: *mut libc::sockaddr, addrlen: *mut c_int) -> RawSocket;
    fn srt_listen_callback(lsn: RawSocket, hook: ListenHookFn, opaque: *mut c_void) -> c_int;
    fn srt_close(u: RawSocket) -> c_int;
    fn srt_getsockname(u: RawSocket, name: *mut libc::sockaddr, namelen: *mut c_int) -> c_int;
    fn srt_setsockflag(u: RawSocket, opt: c_int, optval: *const c_void, optlen: c_int) -> c_int;
    fn srt_recvmsg(u: RawSocket, buf: *mut c_char, len: c_int) -> c_int;
    fn srt_getlasterror_str() -> *const c_char;
    fn srt_getlasterror(errno_loc: *mut c_int) -> c_int;
    fn srt_epoll_create() -> c_int;
    fn srt_epoll_add_usock(eid: c_int, u: RawSocket, events: *const c_int) -> c_int;
    fn srt_epoll_remove_usock(eid: c_int, u: RawSocket) -> c_int;
    fn srt_epoll_uwait(eid: c_int, fds: *mut EpollEvent, n: c_int, timeout_ms: i64) -> c_int;
    fn srt_epoll_release(eid: c_int) -> c_int;
    fn srt_setrejectreason(u: RawSocket, value: c_int) -> c_int;
    fn srt_getsockstate(u: RawSocket) -> c_int;
}

/// An error libsrt reported, with its code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {message} (SRT error {code})")]
pub struct SrtError {
    pub what: &'static str,
    pub code: i32,
    pub message: String,
}

impl SrtError {
    /// The calling thread's last libsrt error.
    fn last(what: &'static str) -> SrtError {
        // SAFETY: both read libsrt's thread-local error state; the string
        // is valid until the next libsrt call on this thread, and is copied
        // before that.
        let (code, message) = unsafe {
            let code = srt_getlasterror(std::ptr::null_mut());
            let text = srt_getlasterror_str();
            let message = if text.is_null() {
                String::new()
            } else {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            };
            (code, message)
        };
        SrtError {
            what,
            code,
            message,
        }
    }

    fn would_block(&self) -> bool {
        self.code == SRT_EASYNCRCV
    }
}

fn startup() -> Result<(), SrtError> {
    static START: Once = Once::new();
    static mut RESULT: c_int = 0;
    // SAFETY: srt_startup is called once, under `Once`, which also orders
    // the write of RESULT before every read.
    START.call_once(|| unsafe {
        // libsrt writes its own log to stderr, at error level even for a
        // non-blocking accept with nothing waiting: it goes to tracing, at
        // debug, instead (target `libsrt`).
        srt_setloghandler(std::ptr::null_mut(), log_hook);
        srt_setloglevel(LOG_NOTICE);
        RESULT = srt_startup()
    });
    #[allow(static_mut_refs)]
    // SAFETY: written once under `Once` above, read-only afterwards.
    if unsafe { RESULT } < 0 {
        return Err(SrtError::last("srt_startup"));
    }
    Ok(())
}

/// Options of a live-mode listener; accepted sockets inherit them.
#[derive(Clone, Debug)]
pub struct ListenOptions {
    /// The receiver's TSBPD latency, in milliseconds.
    pub latency_ms: u32,
    /// Encryption: callers must use this passphrase (10 to 79 bytes).
    pub passphrase: Option<String>,
    /// AES key length in bytes (16, 24 or 32), with a passphrase.
    pub key_length: u32,
    /// A peer silent this long is disconnected by libsrt, in milliseconds.
    pub peer_idle_ms: u32,
}

/// Decides on a caller from the id its socket will have once accepted, its
/// stream id and its address, on libsrt's thread, before the handshake
/// completes: `Err` rejects it with that reason.
pub type ListenHook =
    Box<dyn Fn(i32, &[u8], Option<SocketAddr>) -> Result<(), Reject> + Send + Sync>;

/// An owned SRT socket, closed when dropped.
#[derive(Debug)]
pub struct Socket(RawSocket);

impl Socket {
    /// A non-blocking live-mode listener on `addr`, with `hook` deciding on
    /// each caller.
    pub fn listen(
        addr: SocketAddr,
        options: &ListenOptions,
        backlog: u16,
        hook: ListenHook,
    ) -> Result<Socket, SrtError> {
        startup()?;
        // SAFETY: no arguments; the result is checked.
        let raw = unsafe { srt_create_socket() };
        if raw == SRT_INVALID_SOCK {
            return Err(SrtError::last("srt_create_socket"));
        }
        let socket = Socket(raw);
        socket.set_int(SRTO_TRANSTYPE, SRTT_LIVE, "SRTO_TRANSTYPE")?;
        socket.set_int(SRTO_RCVSYN, 0, "SRTO_RCVSYN")?;
        socket.set_int(SRTO_SNDSYN, 0, "SRTO_SNDSYN")?;
        // A second server on the same port must fail to bind, not share it.
        socket.set_int(SRTO_REUSEADDR, 0, "SRTO_REUSEADDR")?;
        let latency = c_int::try_from(options.latency_ms).unwrap_or(c_int::MAX);
        socket.set_int(SRTO_RCVLATENCY, latency, "SRTO_RCVLATENCY")?;
        let idle = c_int::try_from(options.peer_idle_ms).unwrap_or(c_int::MAX);
        socket.set_int(SRTO_PEERIDLETIMEO, idle, "SRTO_PEERIDLETIMEO")?;
        if let Some(passphrase) = &options.passphrase {
            socket.set_bytes(SRTO_PASSPHRASE, passphrase.as_bytes(), "SRTO_PASSPHRASE")?;
            let key = c_int::try_from(options.key_length).unwrap_or(0);
            socket.set_int(SRTO_PBKEYLEN, key, "SRTO_PBKEYLEN")?;
            socket.set_int(SRTO_ENFORCEDENCRYPTION, 1, "SRTO_ENFORCEDENCRYPTION")?;
        }
        let (storage, len) = to_sockaddr(addr);
        // SAFETY: `storage` holds a sockaddr of `len` bytes for this call.
        if unsafe { srt_bind(raw, (&raw const storage).cast(), len) } == SRT_ERROR {
            return Err(SrtError::last("srt_bind"));
        }
        // The hook lives as long as the process: libsrt may call it from
        // its receive thread until the listener is fully closed, which
        // srt_close does not wait for. One small box per listener.
        let hook: &'static ListenHook = Box::leak(Box::new(hook));
        // SAFETY: `listen_hook` matches srt_listen_callback_fn (abi.c
        // checks), and the opaque pointer stays valid forever (leaked).
        let set = unsafe {
            srt_listen_callback(
                raw,
                listen_hook,
                (hook as *const ListenHook).cast_mut().cast(),
            )
        };
        if set == SRT_ERROR {
            return Err(SrtError::last("srt_listen_callback"));
        }
        // SAFETY: a bound socket; the result is checked.
        if unsafe { srt_listen(raw, c_int::from(backlog)) } == SRT_ERROR {
            return Err(SrtError::last("srt_listen"));
        }
        Ok(socket)
    }

    pub fn local_addr(&self) -> Result<SocketAddr, SrtError> {
        // SAFETY: zeroed sockaddr_storage is a valid out-buffer.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: the buffer and its length are valid for the call.
        if unsafe { srt_getsockname(self.0, (&raw mut storage).cast(), &mut len) } == SRT_ERROR {
            return Err(SrtError::last("srt_getsockname"));
        }
        from_sockaddr(&storage).ok_or(SrtError {
            what: "srt_getsockname",
            code: 0,
            message: "not an IP address".into(),
        })
    }

    /// A caller that completed its handshake, if one is waiting.
    pub fn accept(&self) -> Result<Option<(Socket, Option<SocketAddr>)>, SrtError> {
        // SAFETY: as in `local_addr`.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = size_of::<libc::sockaddr_storage>() as c_int;
        // SAFETY: the buffer and its length are valid for the call.
        let raw = unsafe { srt_accept(self.0, (&raw mut storage).cast(), &mut len) };
        if raw == SRT_INVALID_SOCK {
            let e = SrtError::last("srt_accept");
            return if e.would_block() { Ok(None) } else { Err(e) };
        }
        let socket = Socket(raw);
        socket.set_int(SRTO_RCVSYN, 0, "SRTO_RCVSYN")?;
        Ok(Some((socket, from_sockaddr(&storage))))
    }

    /// One message (up to `buf.len()` bytes); `None` when nothing is
    /// waiting. An error means the connection is over.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, SrtError> {
        let len = c_int::try_from(buf.len()).unwrap_or(c_int::MAX);
        // SAFETY: `buf` is valid for `len` bytes of writes.
        let n = unsafe { srt_recvmsg(self.0, buf.as_mut_ptr().cast(), len) };
        if n == SRT_ERROR {
            let e = SrtError::last("srt_recvmsg");
            return if e.would_block() { Ok(None) } else { Err(e) };
        }
        Ok(Some(usize::try_from(n).unwrap_or(0)))
    }

    pub fn is_connected(&self) -> bool {
        // SAFETY: any socket id is a valid argument.
        unsafe { srt_getsockstate(self.0) == SRTS_CONNECTED }
    }

    fn set_int(&self, opt: c_int, value: c_int, what: &'static str) -> Result<(), SrtError> {
        // SAFETY: an int option, passed by pointer with its size.
        let r = unsafe {
            srt_setsockflag(
                self.0,
                opt,
                (&raw const value).cast(),
                size_of::<c_int>() as c_int,
            )
        };
        if r == SRT_ERROR {
            return Err(SrtError::last(what));
        }
        Ok(())
    }

    fn set_bytes(&self, opt: c_int, value: &[u8], what: &'static str) -> Result<(), SrtError> {
        let len = c_int::try_from(value.len()).unwrap_or(c_int::MAX);
        // SAFETY: a string option, passed by pointer with its length.
        if unsafe { srt_setsockflag(self.0, opt, value.as_ptr().cast(), len) } == SRT_ERROR {
            return Err(SrtError::last(what));
        }
        Ok(())
    }

    fn raw(&self) -> RawSocket {
        self.0
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: we own the socket; it is closed once.
        unsafe { srt_close(self.0) };
    }
}

unsafe extern "C" fn listen_hook(
    opaque: *mut c_void,
    ns: RawSocket,
    _hs_version: c_int,
    peer: *const libc::sockaddr,
    stream_id: *const c_char,
) -> c_int {
    // SAFETY: `opaque` is the leaked `ListenHook` set in `listen`.
    let hook = unsafe { &*(opaque as *const ListenHook) };
    // SAFETY: libsrt passes a NUL-terminated stream id (possibly empty).
    let id = if stream_id.is_null() {
        &[][..]
    } else {
        unsafe { CStr::from_ptr(stream_id) }.to_bytes()
    };
    let id = &id[..id.len().min(MAX_STREAM_ID)];
    let peer = if peer.is_null() {
        None
    } else {
        // SAFETY: libsrt passes the caller's address; its family says how
        // long it is, and sockaddr_storage holds any family.
        let family = unsafe { (*peer).sa_family };
        let size = match c_int::from(family) {
            libc::AF_INET => size_of::<libc::sockaddr_in>(),
            libc::AF_INET6 => size_of::<libc::sockaddr_in6>(),
            _ => 0,
        };
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        unsafe {
            std::ptr::copy_nonoverlapping(peer.cast::<u8>(), (&raw mut storage).cast(), size)
        };
        from_sockaddr(&storage)
    };
    // A panic must not unwind into C.
    let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| hook(ns, id, peer)))
        .unwrap_or(Err(Reject::BadRequest));
    match verdict {
        Ok(()) => 0,
        Err(reason) => {
            // SAFETY: `ns` is the socket being accepted.
            unsafe { srt_setrejectreason(ns, reason as c_int) };
            -1
        }
    }
}

unsafe extern "C" fn log_hook(
    _opaque: *mut c_void,
    level: c_int,
    _file: *const c_char,
    _line: c_int,
    area: *const c_char,
    message: *const c_char,
) {
    let text = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: libsrt passes NUL-terminated strings valid for the call.
            unsafe { CStr::from_ptr(p) }
                .to_string_lossy()
                .trim_end()
                .to_owned()
        }
    };
    let _ = std::panic::catch_unwind(|| {
        tracing::debug!(target: "libsrt", level, area = %text(area), "{}", text(message));
    });
}

/// One epoll set of SRT sockets, waited on by one thread.
pub struct Epoll(c_int);

/// What a ready socket has.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    pub socket: i32,
}

impl Epoll {
    pub fn new() -> Result<Epoll, SrtError> {
        startup()?;
        // SAFETY: no arguments; the result is checked.
        let eid = unsafe { srt_epoll_create() };
        if eid < 0 {
            return Err(SrtError::last("srt_epoll_create"));
        }
        Ok(Epoll(eid))
    }

    /// Watches `socket` for input and errors.
    pub fn add(&self, socket: &Socket) -> Result<(), SrtError> {
        let events = SRT_EPOLL_IN | SRT_EPOLL_ERR;
        // SAFETY: a valid epoll id and socket; `events` outlives the call.
        if unsafe { srt_epoll_add_usock(self.0, socket.raw(), &events) } == SRT_ERROR {
            return Err(SrtError::last("srt_epoll_add_usock"));
        }
        Ok(())
    }

    pub fn remove(&self, socket: &Socket) {
        // SAFETY: a valid epoll id; an unknown socket is an error we ignore.
        unsafe { srt_epoll_remove_usock(self.0, socket.raw()) };
    }

    /// Waits up to `timeout_ms` and fills `out` with the ready sockets.
    pub fn wait(&self, out: &mut Vec<Ready>, timeout_ms: i64) -> Result<(), SrtError> {
        let mut events = [EpollEvent::default(); 256];
        // SAFETY: `events` is valid for its length.
        let n = unsafe {
            srt_epoll_uwait(
                self.0,
                events.as_mut_ptr(),
                events.len() as c_int,
                timeout_ms,
            )
        };
        out.clear();
        if n < 0 {
            let e = SrtError::last("srt_epoll_uwait");
            return if e.code == SRT_ETIMEOUT {
                Ok(())
            } else {
                Err(e)
            };
        }
        let n = usize::try_from(n).unwrap_or(0).min(events.len());
        out.extend(events[..n].iter().map(|e| Ready { socket: e.fd }));
        Ok(())
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: we own the epoll id; it is released once.
        unsafe { srt_epoll_release(self.0) };
    }
}

impl Socket {
    /// The id libsrt knows this socket by (what [`Epoll::wait`] reports).
    pub fn id(&self) -> i32 {
        self.0
    }
}

fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, c_int) {
    let (storage, len) = crate::net::sockaddr(addr);
    (storage, len as c_int)
}

use crate::net::from_sockaddr;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trips() {
        for a in ["127.0.0.1:9999", "[::1]:5000", "0.0.0.0:0"] {
            let addr: SocketAddr = a.parse().unwrap();
            let (storage, _) = to_sockaddr(addr);
            assert_eq!(from_sockaddr(&storage), Some(addr));
        }
    }

    #[test]
    fn a_listener_binds_port_zero_and_a_second_one_on_its_port_fails() {
        let options = ListenOptions {
            latency_ms: 120,
            passphrase: None,
            key_length: 16,
            peer_idle_ms: 5000,
        };
        let hook = || -> ListenHook { Box::new(|_, _, _| Ok(())) };
        let a = Socket::listen("127.0.0.1:0".parse().unwrap(), &options, 8, hook()).unwrap();
        let addr = a.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        let e = Socket::listen(addr, &options, 8, hook()).unwrap_err();
        assert_eq!(e.what, "srt_bind", "{e}");
        assert!(a.accept().unwrap().is_none(), "nobody called");
    }
}
