//! OME's AdmissionWebhooks, so an existing OME backend keeps deciding who
//! may publish and play: before a session opens, streamd POSTs
//!
//! `{"client":{"address","port","real_ip","user_agent"},
//!   "request":{"direction":"incoming|outgoing","protocol":"rtmp|webrtc|llhls",
//!              "status":"opening|closing","url","time"}}`
//!
//! signed `X-OME-Signature: base64url(HMAC-SHA1(secret, body))`, and obeys
//! `{"allowed":bool,"new_url":"...","lifetime":ms,"reason":"..."}`. A
//! `closing` notification follows the end of an admitted session (its
//! answer is ignored). An unreachable or malformed answer denies (OME
//! does the same), and is logged.
//!
//! This is the backend's client; [`super::Access::admit`] decides when to
//! ask it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde_json::json;

use crate::config::AdmissionConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Incoming,
    Outgoing,
}

/// Who asks for what.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub direction: Direction,
    /// `rtmp`, `webrtc` or `llhls`.
    pub protocol: &'a str,
    pub url: &'a str,
    pub client: Option<SocketAddr>,
    pub real_ip: Option<&'a str>,
    pub user_agent: Option<&'a str>,
}

/// The backend's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        /// Where to go instead (OME's `new_url`).
        new_url: Option<String>,
        /// How long the session may last: an RTMP publish or a WebRTC
        /// viewer is closed then; LL-HLS asks again then.
        lifetime: Option<Duration>,
    },
    Denied(String),
}

#[derive(Deserialize)]
struct Answer {
    allowed: bool,
    #[serde(default)]
    new_url: Option<String>,
    #[serde(default)]
    lifetime: Option<u64>,
    #[serde(default)]
    reason: Option<String>,
}

/// The largest answer read (a backend's answer is a few fields).
const MAX_ANSWER: usize = 64 * 1024;
/// A denial's reason is logged and shown this long at most.
const MAX_REASON_CHARS: usize = 200;

/// What a backend's answer says (sans-IO: `opening` and the fuzz target).
/// An unparsable or oversized answer is an error, which denies.
pub fn decide(answer: &[u8]) -> Result<Decision, String> {
    if answer.len() > MAX_ANSWER {
        return Err("answer too large".into());
    }
    let a: Answer = serde_json::from_slice(answer).map_err(|e| format!("bad answer: {e}"))?;
    Ok(if a.allowed {
        Decision::Allowed {
            new_url: a.new_url.filter(|u| !u.is_empty()),
            lifetime: a.lifetime.filter(|l| *l > 0).map(Duration::from_millis),
        }
    } else {
        let reason = a.reason.unwrap_or_else(|| "denied".into());
        Decision::Denied(reason.chars().take(MAX_REASON_CHARS).collect())
    })
}

pub struct Admission {
    config: AdmissionConfig,
    client: crate::http::client::HttpsClient,
    /// `closing` calls on their way, for [`Admission::drain`].
    closing: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
}

/// OME's signature of `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, body).as_ref())
}

impl Admission {
    /// None when no webhook URL is configured.
    pub fn new(config: AdmissionConfig) -> Option<Admission> {
        (!config.url.is_empty()).then(|| Admission {
            config,
            client: crate::http::client::client(),
            closing: std::sync::Arc::new(tokio::sync::watch::Sender::new(0)),
        })
    }

    fn body(&self, r: &Request<'_>, status: &str) -> String {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        json!({
            "client": {
                "address": r.client.map(|a| a.ip().to_string()),
                "port": r.client.map(|a| a.port()),
                "real_ip": r.real_ip.or(None).map(str::to_owned).or_else(|| r.client.map(|a| a.ip().to_string())),
                "user_agent": r.user_agent,
            },
            "request": {
                "direction": match r.direction { Direction::Incoming => "incoming", Direction::Outgoing => "outgoing" },
                "protocol": r.protocol,
                "status": status,
                "url": r.url,
                "time": time,
            }
        })
        .to_string()
    }

    async fn post(&self, body: String) -> Result<Bytes, String> {
        let sig = signature(self.config.secret.as_bytes(), body.as_bytes());
        let req = hyper::Request::post(&self.config.url)
            .header("content-type", "application/json")
            .header("x-ome-signature", sig)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let r = tokio::time::timeout(self.config.timeout, self.client.request(req))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        if !r.status().is_success() {
            return Err(format!("HTTP {}", r.status()));
        }
        let bytes = tokio::time::timeout(self.config.timeout, r.into_body().collect())
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(bytes)
    }

    /// Asks whether `r` may open.
    pub async fn opening(&self, r: &Request<'_>) -> Decision {
        match self
            .post(self.body(r, "opening"))
            .await
            .and_then(|b| decide(&b))
        {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(url = %self.config.url, error = %e, "admission webhook failed: denying");
                Decision::Denied(format!("admission webhook failed: {e}"))
            }
        }
    }

    /// Tells the backend an admitted session ended (its answer is not
    /// waited for; [`Admission::drain`] waits for the calls at shutdown).
    pub fn closing(self: &std::sync::Arc<Self>, r: &Request<'_>) {
        let body = self.body(r, "closing");
        self.closing.send_modify(|n| *n += 1);
        // Counted off when the call ends, or when its task is dropped
        // unrun (its runtime stopping): the drain never waits for nothing.
        let call = ClosingCall(self.clone());
        tokio::spawn(async move {
            if let Err(e) = call.0.post(body).await {
                tracing::debug!(error = %e, "admission closing call failed");
            }
        });
    }

    /// Waits until no `closing` call is on its way, or `timeout`.
    pub async fn drain(&self, timeout: Duration) {
        let mut rx = self.closing.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                left = *self.closing.borrow(),
                "admission closing calls still on their way at the shutdown deadline"
            );
        }
    }
}

/// A `closing` call on its way, counted while it lives.
struct ClosingCall(std::sync::Arc<Admission>);

impl Drop for ClosingCall {
    fn drop(&mut self) {
        self.0.closing.send_modify(|n| *n -= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_base64url_hmac_sha1() {
        // RFC 2202 test case 2: effcdf6ae5eb2fa2d27416d5f184df9c259a7c79.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            URL_SAFE_NO_PAD.encode([
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ])
        );
    }

    #[test]
    fn answers_decide_and_bad_ones_deny() {
        assert!(matches!(
            decide(br#"{"allowed": true, "lifetime": 0, "new_url": ""}"#),
            Ok(Decision::Allowed {
                new_url: None,
                lifetime: None
            })
        ));
        assert!(matches!(
            decide(br#"{"allowed": true, "lifetime": 1500}"#),
            Ok(Decision::Allowed { lifetime: Some(l), .. }) if l == Duration::from_millis(1500)
        ));
        let long = format!(r#"{{"allowed": false, "reason": "{}"}}"#, "x".repeat(5000));
        let Ok(Decision::Denied(reason)) = decide(long.as_bytes()) else {
            panic!("a denial")
        };
        assert_eq!(reason.len(), MAX_REASON_CHARS);
        assert!(decide(b"").is_err());
        assert!(decide(br#"{"allowed": "yes"}"#).is_err());
        assert!(decide(&vec![b' '; MAX_ANSWER + 1]).is_err());
    }
}
