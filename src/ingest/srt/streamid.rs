//! The SRT stream id: which stream a caller publishes, and its key or token.
//!
//! Four forms are read, as publishers write them:
//! - OME's: a URL, `srt://host:9999/app/stream?token=…` (often
//!   percent-encoded whole, as OME's documentation shows it; any id is
//!   percent-decoded first);
//! - SRT's access-control syntax: `#!::r=app/stream,m=publish` (keys `r`
//!   resource, `m` mode, `u` user, `s` session, `h` host, `t` type; a
//!   `key` or `token` key is passed on as the query);
//! - MediaMTX's: `publish:app/stream[:user:pass][:query]`;
//! - a plain `app/stream[?query]`.
//!
//! Sans-IO and strict: at most 512 bytes (SRT's own limit), UTF-8, no
//! control characters. Only publishing is offered; `m=request` (playback)
//! is refused with its own reason.

use percent_encoding::percent_decode_str;

use super::ffi::{MAX_STREAM_ID, Reject};

/// What a caller asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamId {
    pub app: String,
    pub stream: String,
    /// What followed `?` (`key=…`, `token=…`), or a `key`/`token` from the
    /// access-control form, as a query.
    pub query: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamIdError {
    #[error(
        "the stream id is empty: set streamid=app/stream (or OME's srt://host:port/app/stream)"
    )]
    Empty,
    #[error("the stream id is longer than {MAX_STREAM_ID} bytes")]
    TooLong,
    #[error("the stream id is not UTF-8 text")]
    NotText,
    #[error("the stream id holds control characters")]
    Control,
    #[error("the stream id does not name app/stream: {0:.80}")]
    NoPath(String),
    #[error("SRT mode {0:.20} is not offered: streamd takes SRT publishers only (m=publish)")]
    Mode(String),
    #[error("SRT content type {0:.20} is not offered: only t=stream")]
    Type(String),
    #[error("the stream id's access-control list is malformed: {0:.80}")]
    Syntax(String),
}

impl StreamIdError {
    /// Which error this is, whatever the caller sent (for rate limits).
    pub fn kind(&self) -> &'static str {
        match self {
            StreamIdError::Empty => "empty",
            StreamIdError::TooLong => "too long",
            StreamIdError::NotText => "not text",
            StreamIdError::Control => "control",
            StreamIdError::NoPath(_) => "no path",
            StreamIdError::Mode(_) => "mode",
            StreamIdError::Type(_) => "type",
            StreamIdError::Syntax(_) => "syntax",
        }
    }

    /// The reject reason a caller is told.
    pub fn reject(&self) -> Reject {
        match self {
            StreamIdError::Mode(_) => Reject::BadMode,
            StreamIdError::Type(_) => Reject::NotSupportedMedia,
            _ => Reject::BadRequest,
        }
    }
}

impl StreamId {
    pub fn parse(raw: &[u8]) -> Result<StreamId, StreamIdError> {
        if raw.len() > MAX_STREAM_ID {
            return Err(StreamIdError::TooLong);
        }
        let text = std::str::from_utf8(raw).map_err(|_| StreamIdError::NotText)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(StreamIdError::Empty);
        }
        if text.chars().any(char::is_control) {
            return Err(StreamIdError::Control);
        }
        // Percent-encoded (OME's documentation encodes the whole URL, and
        // some tools encode the slash): stream names never hold '%'.
        let decoded;
        let text = if text.contains('%') {
            decoded = percent_decode_str(text)
                .decode_utf8()
                .map_err(|_| StreamIdError::NotText)?
                .into_owned();
            if decoded.chars().any(char::is_control) {
                return Err(StreamIdError::Control);
            }
            decoded.as_str()
        } else {
            text
        };
        if let Some(list) = text.strip_prefix("#!::") {
            return access_control(list);
        }
        if text
            .get(..6)
            .is_some_and(|s| s.eq_ignore_ascii_case("srt://"))
        {
            // srt://host[:port]/app/stream[?query]: drop the authority.
            let rest = &text[6..];
            let path = rest.find('/').map_or("", |i| &rest[i + 1..]);
            return path_and_query(path);
        }
        for (prefix, publish) in [("publish:", true), ("read:", false)] {
            if let Some(rest) = text
                .get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix))
                .map(|_| &text[prefix.len()..])
            {
                if !publish {
                    return Err(StreamIdError::Mode("read".into()));
                }
                return mediamtx(rest);
            }
        }
        path_and_query(text)
    }
}

/// `r=…,m=…,…` after `#!::`.
fn access_control(list: &str) -> Result<StreamId, StreamIdError> {
    let (mut resource, mut query) = (None, Vec::new());
    for pair in list.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(StreamIdError::Syntax(pair.into()));
        };
        match key.trim() {
            "r" => resource = Some(value.trim()),
            "m" if !value.trim().eq_ignore_ascii_case("publish") => {
                return Err(StreamIdError::Mode(value.trim().into()));
            }
            "t" if !value.trim().eq_ignore_ascii_case("stream") => {
                return Err(StreamIdError::Type(value.trim().into()));
            }
            "key" | "token" | "policy" | "signature" => {
                query.push(format!("{}={}", key.trim(), value.trim()))
            }
            // u (user), s (session), h (host) and keys of other
            // applications identify nothing streamd decides on.
            _ => {}
        }
    }
    let resource = resource.ok_or_else(|| StreamIdError::NoPath(list.into()))?;
    let mut id = path_and_query(resource)?;
    if !query.is_empty() {
        let extra = query.join("&");
        id.query = Some(match id.query {
            Some(q) => format!("{q}&{extra}"),
            None => extra,
        });
    }
    Ok(id)
}

/// `app/stream[:user:pass][:query]` after `publish:`.
fn mediamtx(rest: &str) -> Result<StreamId, StreamIdError> {
    let parts: Vec<&str> = rest.splitn(4, ':').collect();
    let query = match parts.len() {
        // path:query
        2 => Some(parts[1]),
        // path:user:pass[:query]
        4 => Some(parts[3]),
        _ => None,
    }
    .filter(|q| !q.is_empty());
    let mut id = path_and_query(parts[0])?;
    if let Some(q) = query {
        id.query = Some(q.to_owned());
    }
    Ok(id)
}

fn path_and_query(text: &str) -> Result<StreamId, StreamIdError> {
    let (path, query) = match text.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned()).filter(|q| !q.is_empty())),
        None => (text, None),
    };
    let path = path.trim_matches('/');
    let Some((app, stream)) = path.split_once('/') else {
        return Err(StreamIdError::NoPath(text.into()));
    };
    if app.is_empty() || stream.is_empty() || stream.contains('/') {
        return Err(StreamIdError::NoPath(text.into()));
    }
    Ok(StreamId {
        app: app.to_owned(),
        stream: stream.to_owned(),
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(app: &str, stream: &str, query: Option<&str>) -> StreamId {
        StreamId {
            app: app.into(),
            stream: stream.into(),
            query: query.map(Into::into),
        }
    }

    #[test]
    fn reads_the_forms_publishers_use() {
        let cases: &[(&str, StreamId)] = &[
            ("app/stream", id("app", "stream", None)),
            (
                "live/key-1?token=abc",
                id("live", "key-1", Some("token=abc")),
            ),
            (
                "srt://example.com:9999/app/stream",
                id("app", "stream", None),
            ),
            (
                "srt%3A%2F%2Fexample.com%3A9999%2Fapp%2Fstream%3Fkey%3Dk",
                id("app", "stream", Some("key=k")),
            ),
            ("SRT://h/app/s?a=b", id("app", "s", Some("a=b"))),
            ("live%2Fcam", id("live", "cam", None)),
            ("#!::r=app/stream,m=publish", id("app", "stream", None)),
            (
                "#!::u=alice,r=live/cam,m=publish,token=xyz,s=42",
                id("live", "cam", Some("token=xyz")),
            ),
            (
                "#!::r=live/cam?key=k1,key=k2",
                id("live", "cam", Some("key=k1&key=k2")),
            ),
            ("#!::r=app/s", id("app", "s", None)),
            ("publish:app/stream", id("app", "stream", None)),
            (
                "publish:app/stream:key=k",
                id("app", "stream", Some("key=k")),
            ),
            ("publish:app/stream:user:pass", id("app", "stream", None)),
            (
                "publish:app/stream:user:pass:token=t",
                id("app", "stream", Some("token=t")),
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(StreamId::parse(raw.as_bytes()).as_ref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn refuses_with_a_reason_the_caller_is_told() {
        let cases: &[(&[u8], Reject)] = &[
            (b"", Reject::BadRequest),
            (b"   ", Reject::BadRequest),
            (b"just-a-name", Reject::BadRequest),
            (b"app/", Reject::BadRequest),
            (b"a/b/c", Reject::BadRequest),
            (b"srt://host:9999", Reject::BadRequest),
            (b"\xff\xfe/app", Reject::BadRequest),
            (b"app/s\x01", Reject::BadRequest),
            (b"srt%3A%2F%2Fh%2Fapp%2Fs%0A", Reject::BadRequest),
            (b"#!::r=app/s,m=request", Reject::BadMode),
            (b"#!::r=app/s,m=bidirectional", Reject::BadMode),
            (b"read:app/s", Reject::BadMode),
            (b"#!::r=app/s,t=file", Reject::NotSupportedMedia),
            (b"#!::m=publish", Reject::BadRequest),
            (b"#!::r", Reject::BadRequest),
        ];
        for (raw, reason) in cases {
            let e = StreamId::parse(raw).unwrap_err();
            assert_eq!(
                e.reject(),
                *reason,
                "{:?}: {e}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(
            StreamId::parse(&[b'a'; MAX_STREAM_ID + 1]),
            Err(StreamIdError::TooLong)
        );
        // 512 bytes of junk: a clear error, not a panic.
        let junk: Vec<u8> = (0..512u32).map(|i| (i * 7919 % 251) as u8).collect();
        assert!(StreamId::parse(&junk).is_err());
    }
}
