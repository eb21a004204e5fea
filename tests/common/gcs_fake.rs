//! A FAKE of Google Cloud Storage, not GCS: only the XML API calls that
//! object_store's GCS client makes (PUT, GET with a range, HEAD and DELETE
//! of an object; `GET /{bucket}?list-type=2`). No GCS emulator from the
//! registries accepts those writes (see ../shared/TESTING.md), so this
//! fake is what tests the GCS configuration path: the `gs://` location,
//! a service-account key file (with `gcs_base_url` pointing here and
//! `disable_oauth`), and object_store's GCS client talking to it.
//! Objects live in memory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

#[derive(Clone, Default)]
pub struct FakeGcs {
    /// (bucket, object name) -> bytes.
    pub objects: Arc<Mutex<BTreeMap<(String, String), Bytes>>>,
    /// Every request: "METHOD /path".
    pub requests: Arc<Mutex<Vec<String>>>,
}

const LAST_MODIFIED: &str = "Mon, 30 Nov 2026 12:00:00 GMT";

fn etag(data: &[u8]) -> String {
    format!(
        "\"{:x}-{}\"",
        data.iter().map(|b| u64::from(*b)).sum::<u64>(),
        data.len()
    )
}

impl FakeGcs {
    /// Serves on a free loopback port.
    pub async fn start() -> (FakeGcs, SocketAddr) {
        let fake = FakeGcs::default();
        let app = Router::new()
            .route("/{bucket}", get(list))
            .route("/{bucket}/{*name}", any(object))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (fake, addr)
    }

    /// The object names in `bucket` under `prefix`.
    pub fn names(&self, bucket: &str, prefix: &str) -> Vec<String> {
        self.objects
            .lock()
            .unwrap()
            .keys()
            .filter(|(b, n)| b == bucket && n.starts_with(prefix))
            .map(|(_, n)| n.clone())
            .collect()
    }

    /// A service-account key file that points object_store here.
    pub fn key_file(addr: SocketAddr, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("gcs-fake-key.json");
        std::fs::write(
            &path,
            serde_json::json!({
                "private_key": "",
                "private_key_id": "fake",
                "client_email": "streamd@fake.iam.gserviceaccount.com",
                "gcs_base_url": format!("http://{addr}"),
                "disable_oauth": true,
            })
            .to_string(),
        )
        .unwrap();
        path
    }
}

async fn list(
    State(fake): State<FakeGcs>,
    Path(bucket): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    fake.requests
        .lock()
        .unwrap()
        .push(format!("LIST /{bucket}"));
    if q.get("list-type").map(String::as_str) != Some("2") {
        return (
            StatusCode::BAD_REQUEST,
            "the fake lists with list-type=2 only",
        )
            .into_response();
    }
    let prefix = q.get("prefix").cloned().unwrap_or_default();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?><ListBucketResult>");
    for ((b, name), data) in fake.objects.lock().unwrap().iter() {
        if *b == bucket && name.starts_with(&prefix) {
            xml.push_str(&format!(
                "<Contents><Key>{name}</Key><Size>{}</Size><LastModified>2026-11-30T12:00:00.000Z</LastModified><ETag>{}</ETag></Contents>",
                data.len(),
                etag(data).replace('"', "&quot;")
            ));
        }
    }
    xml.push_str("</ListBucketResult>");
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}

async fn object(
    State(fake): State<FakeGcs>,
    Path((bucket, name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.requests
        .lock()
        .unwrap()
        .push(format!("{method} /{bucket}/{name}"));
    let key = (bucket, name);
    let mut objects = fake.objects.lock().unwrap();
    match method {
        Method::PUT => {
            let tag = etag(&body);
            objects.insert(key, body);
            ([(header::ETAG, tag)], "").into_response()
        }
        Method::DELETE => match objects.remove(&key) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        },
        Method::GET | Method::HEAD => {
            let Some(data) = objects.get(&key).cloned() else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let total = data.len();
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.split_once('-'))
                .and_then(|(a, b)| {
                    let a: usize = a.parse().ok()?;
                    let b: usize = if b.is_empty() {
                        total - 1
                    } else {
                        b.parse().ok()?
                    };
                    (a <= b && a < total).then_some((a, b.min(total - 1)))
                });
            let (status, body, content_range) = match range {
                Some((a, b)) => (
                    StatusCode::PARTIAL_CONTENT,
                    data.slice(a..=b),
                    Some(format!("bytes {a}-{b}/{total}")),
                ),
                None => (StatusCode::OK, data.clone(), None),
            };
            let mut r = if method == Method::HEAD {
                let mut r = status.into_response();
                r.headers_mut()
                    .insert(header::CONTENT_LENGTH, body.len().into());
                r
            } else {
                (status, body).into_response()
            };
            let h = r.headers_mut();
            h.insert(header::ETAG, etag(&data).parse().unwrap());
            h.insert(header::LAST_MODIFIED, LAST_MODIFIED.parse().unwrap());
            if let Some(cr) = content_range {
                h.insert(header::CONTENT_RANGE, cr.parse().unwrap());
            }
            r
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}
