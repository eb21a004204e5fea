//! What WHIP and WHEP resources share (RFC 9725 and the WHEP draft): the
//! offer read from the request, the `201 Created` answer with its session
//! resource and ICE servers, `OPTIONS`, trickle ICE and ICE restarts by
//! `PATCH`, and plain errors.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::turn::{IceServer, IceServers};

/// An SDP offer is a few kilobytes; a browser's with many codecs under 16.
pub const MAX_OFFER: usize = 64 * 1024;

/// A plain-text error, counted in `metric` by status.
pub fn error(metric: &'static str, status: StatusCode, message: impl Into<String>) -> Response {
    metrics::counter!(metric, "status" => status.as_str().to_owned()).increment(1);
    let mut message = message.into();
    message.push('\n');
    let mut r = (status, message).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A WHIP or WHEP request: its headers, the peer's address and the offer.
pub struct Offer {
    pub headers: HeaderMap,
    pub peer: Option<std::net::SocketAddr>,
    pub sdp: String,
}

/// The offer in a request's body: `application/sdp`, UTF-8, at most
/// [`MAX_OFFER`] bytes; else the error to answer (415, 413, 400).
pub async fn read_offer(metric: &'static str, req: Request) -> Result<Offer, Response> {
    let peer = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    if !super::is_sdp(&headers) {
        return Err(error(
            metric,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "an offer is sent as Content-Type: application/sdp",
        ));
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_OFFER).await else {
        return Err(error(
            metric,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an offer is at most {MAX_OFFER} bytes"),
        ));
    };
    let sdp = String::from_utf8(body.to_vec()).map_err(|_| {
        error(
            metric,
            StatusCode::BAD_REQUEST,
            "the offer is not UTF-8 text",
        )
    })?;
    Ok(Offer { headers, peer, sdp })
}

/// `201 Created`: the answer, the session's resource (`Location`), its
/// entity-tag (a PATCH's `If-Match`) and the ICE servers as `Link` headers.
pub fn created(answer: String, location: &str, etag: &str, ice: &[IceServer]) -> Response {
    let mut r = (StatusCode::CREATED, answer).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/sdp"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(FRAGMENT_TYPE));
    for link in IceServers::link_headers(ice) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            h.append(header::LINK, v);
        }
    }
    r
}

/// `OPTIONS`: what the endpoint takes.
pub async fn options() -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert("accept-post", HeaderValue::from_static("application/sdp"));
    h.insert("accept-patch", HeaderValue::from_static(FRAGMENT_TYPE));
    h.insert(
        header::ALLOW,
        HeaderValue::from_static("OPTIONS, POST, DELETE, PATCH"),
    );
    r
}

/// A PATCH body is an SDP fragment of a few lines.
pub const MAX_FRAGMENT: usize = 16 * 1024;
/// Candidates one PATCH may carry (a host has a handful per interface).
pub const MAX_TRICKLED: usize = 32;
/// `Content-Type` of trickle ICE and ICE restart bodies (RFC 8840).
pub const FRAGMENT_TYPE: &str = "application/trickle-ice-sdpfrag";

/// The ICE parts of an SDP fragment (RFC 8840): credentials, candidates.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IceFragment {
    pub ufrag: Option<String>,
    pub pwd: Option<String>,
    /// `candidate:...` values, at most [`MAX_TRICKLED`].
    pub candidates: Vec<String>,
    pub end_of_candidates: bool,
}

/// ice-char (RFC 8839): ALPHA / DIGIT / "+" / "/".
fn ice_chars(s: &str, min: usize) -> bool {
    (min..=256).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

impl IceFragment {
    /// Reads a fragment; what it does not use (`m=`, `a=mid`, bundling)
    /// is skipped, anything not SDP is an error.
    pub fn parse(text: &str) -> Result<IceFragment, String> {
        let mut f = IceFragment::default();
        let set = |slot: &mut Option<String>, v: &str, what: &str, min: usize| {
            let v = v.trim();
            if !ice_chars(v, min) {
                return Err(format!("a=ice-{what} is not a valid ICE {what}"));
            }
            match slot {
                Some(old) if old != v => Err(format!("two different a=ice-{what} values")),
                _ => {
                    *slot = Some(v.to_owned());
                    Ok(())
                }
            }
        };
        for line in text.lines().map(|l| l.trim_end_matches('\r')) {
            if line.is_empty() {
                continue;
            }
            let b = line.as_bytes();
            if b.len() < 2 || b[1] != b'=' || !b[0].is_ascii_lowercase() {
                return Err(format!(
                    "not an SDP line: {:?}",
                    line.chars().take(40).collect::<String>()
                ));
            }
            if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
                set(&mut f.ufrag, v, "ufrag", 4)?;
            } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
                set(&mut f.pwd, v, "pwd", 22)?;
            } else if let Some(v) = line.strip_prefix("a=") {
                if v.starts_with("candidate:") {
                    if f.candidates.len() == MAX_TRICKLED {
                        return Err(format!("more than {MAX_TRICKLED} candidates"));
                    }
                    f.candidates.push(v.to_owned());
                } else if v == "end-of-candidates" {
                    f.end_of_candidates = true;
                }
            }
        }
        Ok(f)
    }

    /// The candidates, as str0m takes them; a bad one is an error.
    pub fn parsed_candidates(&self) -> Result<Vec<str0m::Candidate>, PatchError> {
        self.candidates
            .iter()
            .map(|c| {
                str0m::Candidate::from_sdp_string(c).map_err(|e| {
                    PatchError::Bad(format!(
                        "a bad candidate ({e}): {}",
                        c.chars().take(80).collect::<String>()
                    ))
                })
            })
            .collect()
    }
}

/// What a PATCH asks of a session (RFC 9725 §4.3).
#[derive(Debug, PartialEq, Eq)]
pub enum IceChange {
    /// More of the client's candidates; `if_match`: the entity-tag the
    /// client holds, if it sent one.
    Trickle { if_match: Option<String> },
    /// An ICE restart (`If-Match: *`): new credentials both ways.
    Restart,
}

/// Why a PATCH was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    #[error("no such session")]
    NotFound,
    #[error(
        "If-Match does not name this session's current entity-tag (it changes at an ICE restart)"
    )]
    Stale,
    #[error(
        "the fragment's ICE credentials are not this session's; an ICE restart is sent with If-Match: *"
    )]
    Credentials,
    #[error("{0}")]
    Bad(String),
}

/// A session's ICE after a restart, for the `200 OK` fragment.
#[derive(Debug)]
pub struct IceAnswer {
    pub ufrag: String,
    pub pwd: String,
    /// `candidate:...` values.
    pub candidates: Vec<String>,
    /// The first m-line of the answer and its mid, where the candidates
    /// apply (every m-line is bundled on it).
    pub media_line: String,
    pub mid: String,
}

impl IceAnswer {
    pub fn fragment(&self) -> String {
        let mut o = format!(
            "a=ice-lite\r\na=ice-ufrag:{}\r\na=ice-pwd:{}\r\n{}\r\na=mid:{}\r\n",
            self.ufrag, self.pwd, self.media_line, self.mid
        );
        for c in &self.candidates {
            o.push_str("a=");
            o.push_str(c);
            o.push_str("\r\n");
        }
        o.push_str("a=end-of-candidates\r\n");
        o
    }
}

/// A PATCH request: what it asks and its fragment; else the error to
/// answer (415, 413, 400).
pub async fn read_patch(
    metric: &'static str,
    req: Request,
) -> Result<(IceChange, IceFragment), Response> {
    let (parts, body) = req.into_parts();
    let fragment_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(FRAGMENT_TYPE));
    if !fragment_type {
        return Err(error(
            metric,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("trickle ICE and ICE restarts are sent as Content-Type: {FRAGMENT_TYPE}"),
        ));
    }
    let if_match = match parts.headers.get(header::IF_MATCH).map(|v| v.to_str()) {
        None => None,
        Some(Ok(v)) => Some(v.trim().to_owned()),
        Some(Err(_)) => {
            return Err(error(
                metric,
                StatusCode::BAD_REQUEST,
                "If-Match is not text",
            ));
        }
    };
    let Ok(body) = axum::body::to_bytes(body, MAX_FRAGMENT).await else {
        return Err(error(
            metric,
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("an SDP fragment is at most {MAX_FRAGMENT} bytes"),
        ));
    };
    let text = std::str::from_utf8(&body).map_err(|_| {
        error(
            metric,
            StatusCode::BAD_REQUEST,
            "the fragment is not UTF-8 text",
        )
    })?;
    let fragment = IceFragment::parse(text).map_err(|e| {
        error(
            metric,
            StatusCode::BAD_REQUEST,
            format!("a bad SDP fragment: {e}"),
        )
    })?;
    let change = match if_match.as_deref() {
        Some("*") => {
            if fragment.ufrag.is_none() || fragment.pwd.is_none() {
                return Err(error(
                    metric,
                    StatusCode::BAD_REQUEST,
                    "an ICE restart carries the new a=ice-ufrag and a=ice-pwd",
                ));
            }
            IceChange::Restart
        }
        other => IceChange::Trickle {
            if_match: other.map(|t| t.trim_start_matches("W/").trim_matches('"').to_owned()),
        },
    };
    Ok((change, fragment))
}

/// Whether `if_match` (as [`read_patch`] gives it) allows a trickle on a
/// session whose entity-tag is `etag`; no If-Match is taken as a match.
pub fn matches(if_match: Option<&str>, etag: &str) -> bool {
    if_match.is_none_or(|t| t == etag)
}

/// The answer to a PATCH: `204 No Content` for candidates taken, `200 OK`
/// with the new credentials and entity-tag for a restart.
pub fn patched(
    metric: &'static str,
    result: Result<Option<(IceAnswer, String)>, PatchError>,
) -> Response {
    match result {
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some((answer, etag))) => {
            let mut r = (StatusCode::OK, answer.fragment()).into_response();
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(FRAGMENT_TYPE),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if let Ok(v) = HeaderValue::from_str(&format!("\"{etag}\"")) {
                h.insert(header::ETAG, v);
            }
            r
        }
        Err(e) => {
            let status = match e {
                PatchError::NotFound => StatusCode::NOT_FOUND,
                PatchError::Stale => StatusCode::PRECONDITION_FAILED,
                PatchError::Credentials => StatusCode::UNPROCESSABLE_ENTITY,
                PatchError::Bad(_) => StatusCode::BAD_REQUEST,
            };
            error(metric, status, e.to_string())
        }
    }
}

/// The ICE credentials in an offer (its first `a=ice-ufrag`/`a=ice-pwd`).
pub fn offer_credentials(sdp: &str) -> Option<(String, String)> {
    let find = |prefix: &str| {
        sdp.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
    };
    Some((find("a=ice-ufrag:")?, find("a=ice-pwd:")?))
}

/// The first m-line of an answer and its mid.
pub fn first_media(sdp: &str) -> Option<(String, String)> {
    let mut lines = sdp.lines().skip_while(|l| !l.starts_with("m="));
    let m = lines.next()?.trim().to_owned();
    let mid = lines
        .take_while(|l| !l.starts_with("m="))
        .find_map(|l| l.strip_prefix("a=mid:"))?;
    Some((m, mid.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_are_read_strictly_and_bounded() {
        let f = IceFragment::parse(
            "a=ice-options:trickle ice2\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
             a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
             a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
             a=end-of-candidates\r\n",
        )
        .unwrap();
        assert_eq!(f.ufrag.as_deref(), Some("EsAw"));
        assert_eq!(f.pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(f.candidates.len(), 1);
        assert!(f.end_of_candidates);
        assert_eq!(f.parsed_candidates().unwrap().len(), 1);
        // Not SDP, a bad ufrag, two ufrags, too many candidates.
        assert!(IceFragment::parse("hello\n").is_err());
        assert!(IceFragment::parse("a=ice-ufrag:a b\n").is_err());
        assert!(IceFragment::parse("a=ice-ufrag:abcd\na=ice-ufrag:efgh\n").is_err());
        assert!(IceFragment::parse("a=ice-pwd:short\n").is_err());
        let many = "a=candidate:1 1 udp 1 192.0.2.1 1 typ host\n".repeat(MAX_TRICKLED + 1);
        assert!(IceFragment::parse(&many).is_err());
        // A candidate str0m cannot read is a clear error.
        let bad = IceFragment::parse("a=candidate:1 1 udp x 192.0.2.1 1 typ host\n").unwrap();
        assert!(matches!(bad.parsed_candidates(), Err(PatchError::Bad(_))));
    }

    #[test]
    fn a_restart_answer_names_the_new_credentials_and_the_first_m_line() {
        let answer = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:1\r\n";
        let (media_line, mid) = first_media(answer).unwrap();
        assert_eq!(
            (media_line.as_str(), mid.as_str()),
            ("m=video 9 UDP/TLS/RTP/SAVPF 96", "0")
        );
        let f = IceAnswer {
            ufrag: "wabc1234".into(),
            pwd: "p".repeat(24),
            candidates: vec!["candidate:1 1 udp 2130706431 192.0.2.1 10100 typ host".into()],
            media_line,
            mid,
        }
        .fragment();
        let back = IceFragment::parse(&f).unwrap();
        assert_eq!(back.ufrag.as_deref(), Some("wabc1234"));
        assert_eq!(back.candidates.len(), 1);
        assert!(f.contains("a=ice-lite") && f.contains("a=mid:0"));
        assert!(matches("x".into(), "x") && matches(None, "x") && !matches(Some("y"), "x"));
    }
}
