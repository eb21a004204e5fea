//! Webhooks: stream events POSTed as JSON to configured URLs.
//!
//! Events: `stream.started`, `stream.stopped` (when a broadcast ends for
//! good, after the reconnect grace), and `stream.viewers` (a stream's
//! viewer count, WebRTC and LL-HLS, when it changed, at most every
//! `viewers_interval`); from the recorder, `recording.started`,
//! `recording.ready` and `recording.failed` (the recording as the API
//! shows it).
//!
//! Each request carries `X-Streamd-Signature: sha256=<hex HMAC-SHA256 of
//! the body>` under `[webhooks] secret`, plus `X-Streamd-Event` and
//! `X-Streamd-Delivery`. A delivery that fails (no answer, or not 2xx) is
//! retried with exponential backoff. Media never waits on a webhook:
//! events go through a bounded queue and are dropped (and counted) when it
//! is full.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::hmac;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc};

use crate::bus::{BroadcastStatus, Registry};
use crate::config::WebhookConfig;
use crate::http::client::{HttpsClient, client};
use crate::shutdown::Shutdown;
use crate::viewers::ViewerCounts;

/// Deliveries in flight, at most.
const IN_FLIGHT: usize = 32;

/// Where events are handed in (cheap to clone; never blocks).
#[derive(Clone)]
pub struct Webhooks {
    tx: Option<mpsc::Sender<Value>>,
}

impl Webhooks {
    /// Queues `event` with `data`; dropped (and counted) if the queue is
    /// full or no URL is configured.
    pub fn emit(&self, event: &str, data: Value) {
        let Some(tx) = &self.tx else { return };
        let body = json!({
            "event": event,
            "time": SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            "data": data,
        });
        if tx.try_send(body).is_err() {
            metrics::counter!("streamd_webhooks_dropped_total").increment(1);
        }
    }
}

/// The signature header value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

/// Starts the delivery task and the stream-event watcher; returns the
/// handle to emit with. Nothing runs without URLs.
///
/// At shutdown the watcher reports the streams that end then
/// (`stream.stopped`), and delivery goes on until everything queued is
/// delivered or given up, or `drain_timeout` passes: await the returned
/// [`Delivery`] after the streams are ended.
pub fn start(
    config: WebhookConfig,
    secret: String,
    registry: Registry,
    viewers: Arc<ViewerCounts>,
    shutdown: Shutdown,
) -> (Webhooks, Delivery) {
    if config.urls.is_empty() {
        return (Webhooks { tx: None }, Delivery(None));
    }
    let (tx, rx) = mpsc::channel(config.queue);
    let hooks = Webhooks { tx: Some(tx) };
    let delivery = tokio::spawn(deliver(config.clone(), secret, rx, shutdown.clone()));
    tokio::spawn(watch(config, registry, viewers, hooks.clone(), shutdown));
    (hooks, Delivery(Some(delivery)))
}

/// The delivery task, to wait for at shutdown.
pub struct Delivery(Option<tokio::task::JoinHandle<()>>);

impl Delivery {
    /// Resolves when everything queued was delivered or given up (bounded
    /// by `drain_timeout` after shutdown).
    pub async fn finished(self) {
        if let Some(t) = self.0 {
            let _ = t.await;
        }
    }
}

async fn deliver(
    config: WebhookConfig,
    secret: String,
    mut rx: mpsc::Receiver<Value>,
    mut shutdown: Shutdown,
) {
    let client = client();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let config = Arc::new(config);
    let secret: Arc<[u8]> = secret.into_bytes().into();
    let mut delivery = 0u64;
    let mut deadline: Option<tokio::time::Instant> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    'events: loop {
        // After shutdown the queue is drained until every sender is gone
        // (the watcher reported the streams that ended) or the deadline.
        let event = tokio::select! {
            _ = shutdown.wait(), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + config.drain_timeout);
                continue;
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() => break,
            e = rx.recv() => match e { Some(e) => e, None => break },
        };
        let body = Bytes::from(event.to_string());
        let name = event["event"].as_str().unwrap_or("").to_owned();
        for url in &config.urls {
            delivery += 1;
            // Waiting for a slot (every delivery in flight, say to a
            // receiver that hangs) still heeds shutdown and its deadline.
            let slot = loop {
                tokio::select! {
                    s = slots.clone().acquire_owned() => match s {
                        Ok(s) => break s,
                        Err(_) => return,
                    },
                    _ = shutdown.wait(), if deadline.is_none() => {
                        deadline = Some(tokio::time::Instant::now() + config.drain_timeout);
                    }
                    _ = tokio::time::sleep_until(deadline.unwrap_or_else(far)), if deadline.is_some() => {
                        metrics::counter!("streamd_webhooks_dropped_total").increment(1);
                        break 'events;
                    }
                }
            };
            let (client, config, secret) = (client.clone(), config.clone(), secret.clone());
            let (url, body, name) = (url.clone(), body.clone(), name.clone());
            let id = format!("{:x}-{delivery}", std::process::id());
            tokio::spawn(async move {
                send_with_retries(&client, &config, &secret, &url, &name, &id, body).await;
                drop(slot);
            });
        }
    }
    // Deliveries in flight finish (or the deadline passes).
    let end = deadline.unwrap_or_else(|| tokio::time::Instant::now() + config.drain_timeout);
    let all = u32::try_from(IN_FLIGHT).expect("a small constant");
    if tokio::time::timeout_at(end, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            in_flight = IN_FLIGHT - slots.available_permits(),
            "webhooks still being delivered at the shutdown deadline were dropped"
        );
    }
    let left = rx.len();
    if left > 0 {
        metrics::counter!("streamd_webhooks_dropped_total").increment(left as u64);
        tracing::warn!(
            left,
            "webhooks still queued at the shutdown deadline were dropped"
        );
    }
}

async fn send_with_retries(
    client: &HttpsClient,
    config: &WebhookConfig,
    secret: &[u8],
    url: &str,
    event: &str,
    id: &str,
    body: Bytes,
) {
    let sig = signature(secret, &body);
    let mut backoff = config.retry_backoff;
    for attempt in 1..=config.attempts {
        let req = hyper::Request::post(url)
            .header("content-type", "application/json")
            .header("user-agent", concat!("streamd/", env!("CARGO_PKG_VERSION")))
            .header("x-streamd-event", event)
            .header("x-streamd-delivery", id)
            .header("x-streamd-signature", &sig)
            .body(Full::new(body.clone()));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%url, error = %e, "webhook URL unusable");
                return;
            }
        };
        let outcome = tokio::time::timeout(config.timeout, client.request(req)).await;
        let why = match outcome {
            Ok(Ok(r)) if r.status().is_success() => {
                metrics::counter!("streamd_webhooks_delivered_total").increment(1);
                return;
            }
            Ok(Ok(r)) => format!("HTTP {}", r.status()),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".into(),
        };
        metrics::counter!("streamd_webhooks_failed_attempts_total").increment(1);
        if attempt == config.attempts {
            tracing::warn!(%url, %event, attempts = attempt, error = %why, "webhook given up");
            return;
        }
        tracing::debug!(%url, %event, attempt, error = %why, "webhook failed, retrying");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// Emits stream.started/stopped as broadcasts come and go, and viewer
/// counts when they change.
async fn watch(
    config: WebhookConfig,
    registry: Registry,
    viewers: Arc<ViewerCounts>,
    hooks: Webhooks,
    shutdown: Shutdown,
) {
    let counts = {
        let (registry, hooks) = (registry.clone(), hooks.clone());
        let mut shutdown = shutdown.clone();
        async move {
            let mut tick = tokio::time::interval(config.viewers_interval);
            let mut last: HashMap<String, usize> = HashMap::new();
            loop {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tick.tick() => {}
                }
                let mut now = HashMap::new();
                for b in registry.list() {
                    let path = b.path().to_string();
                    now.insert(path.clone(), viewers.get(&path));
                }
                for (path, n) in &now {
                    if last.get(path) != Some(n) {
                        let (app, id) = path.split_once('/').unwrap_or(("", path));
                        hooks.emit(
                            "stream.viewers",
                            json!({"stream": path, "app": app, "id": id, "viewers": n}),
                        );
                    }
                }
                last = now;
            }
        }
    };
    tokio::spawn(counts);
    let started = hooks.clone();
    let drain = config.drain_timeout;
    registry
        .for_each_broadcast(
            shutdown,
            drain,
            move |mut b| {
                // The node it is published on tells of it, not its edges.
                if b.relayed() {
                    return None;
                }
                let path = b.path().clone();
                let data =
                    json!({"stream": path.to_string(), "app": path.app(), "id": path.stream()});
                started.emit("stream.started", data.clone());
                let task = async move {
                    loop {
                        if b.update().await.status == BroadcastStatus::Ended {
                            return;
                        }
                    }
                };
                Some((task, data))
            },
            move |data, _| hooks.emit("stream.stopped", data),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
