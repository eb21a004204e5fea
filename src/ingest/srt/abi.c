/* Compiled by build.rs only to check, against the installed <srt/srt.h>, every
 * constant, type size and function signature that src/ingest/srt/ffi.rs
 * declares by hand. A libsrt whose ABI differs fails the build here instead
 * of misbehaving at run time. Nothing here is linked into streamd. */
#include <srt/srt.h>
#include <srt/access_control.h>

#define SAME(a, b) _Static_assert((a) == (b), #a " differs from ffi.rs")

SAME(sizeof(SRTSOCKET), 4);
SAME(sizeof(SRT_EPOLL_EVENT), 8);

SAME(SRTO_SNDSYN, 1);
SAME(SRTO_RCVSYN, 2);
SAME(SRTO_REUSEADDR, 15);
SAME(SRTO_PASSPHRASE, 26);
SAME(SRTO_PBKEYLEN, 27);
SAME(SRTO_RCVLATENCY, 43);
SAME(SRTO_TRANSTYPE, 50);
SAME(SRTO_ENFORCEDENCRYPTION, 53);
SAME(SRTO_PEERIDLETIMEO, 55);
SAME(SRTT_LIVE, 0);

SAME(SRT_EPOLL_IN, 0x1);
SAME(SRT_EPOLL_ERR, 0x8);
SAME(SRTS_CONNECTED, 5);
SAME(SRTS_BROKEN, 6);
SAME(SRT_EASYNCRCV, 6002);

SAME(SRT_REJX_BAD_REQUEST, 1400);
SAME(SRT_REJX_UNAUTHORIZED, 1401);
SAME(SRT_REJX_OVERLOAD, 1402);
SAME(SRT_REJX_FORBIDDEN, 1403);
SAME(SRT_REJX_BAD_MODE, 1405);
SAME(SRT_REJX_CONFLICT, 1409);
SAME(SRT_REJX_NOTSUP_MEDIA, 1415);

int streamd_listen_hook(void *, SRTSOCKET, int, const struct sockaddr *, const char *);
static srt_listen_callback_fn *const hook = streamd_listen_hook;

void streamd_log_hook(void *, int, const char *, int, const char *, const char *);
static SRT_LOG_HANDLER_FN *const log_hook = streamd_log_hook;
static void (*const setloghandler)(void *, SRT_LOG_HANDLER_FN *) = srt_setloghandler;
static void (*const setloglevel)(int) = srt_setloglevel;

static int (*const startup)(void) = srt_startup;
static SRTSOCKET (*const create_socket)(void) = srt_create_socket;
static int (*const bind_)(SRTSOCKET, const struct sockaddr *, int) = srt_bind;
static int (*const listen_)(SRTSOCKET, int) = srt_listen;
static SRTSOCKET (*const accept_)(SRTSOCKET, struct sockaddr *, int *) = srt_accept;
static int (*const listen_callback)(SRTSOCKET, srt_listen_callback_fn *, void *) = srt_listen_callback;
static int (*const close_)(SRTSOCKET) = srt_close;
static int (*const getsockname_)(SRTSOCKET, struct sockaddr *, int *) = srt_getsockname;
static int (*const setsockflag)(SRTSOCKET, SRT_SOCKOPT, const void *, int) = srt_setsockflag;
static int (*const recvmsg_)(SRTSOCKET, char *, int) = srt_recvmsg;
static const char *(*const lasterror_str)(void) = srt_getlasterror_str;
static int (*const lasterror)(int *) = srt_getlasterror;
static int (*const epoll_create_)(void) = srt_epoll_create;
static int (*const epoll_add)(int, SRTSOCKET, const int *) = srt_epoll_add_usock;
static int (*const epoll_remove)(int, SRTSOCKET) = srt_epoll_remove_usock;
static int (*const epoll_uwait)(int, SRT_EPOLL_EVENT *, int, int64_t) = srt_epoll_uwait;
static int (*const epoll_release)(int) = srt_epoll_release;
static int (*const setrejectreason)(SRTSOCKET, int) = srt_setrejectreason;
static SRT_SOCKSTATUS (*const getsockstate)(SRTSOCKET) = srt_getsockstate;
