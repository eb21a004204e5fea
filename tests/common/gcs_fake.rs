//! A FAKE of Google Cloud Storage, not GCS: only the XML API calls that
//! object_store's GCS client makes (PUT, GET with a range, HEAD and DELETE
//! of an object; `GET /{bucket}?list-type=2`), and V4-signed GET URLs. No
//! GCS emulator from the registries accepts those writes (see
//! ../shared/TESTING.md), so this fake is what tests the GCS
//! configuration path: the `gs://` location, a service-account key file
//! (with `gcs_base_url` pointing here), and object_store's GCS client
//! talking to it. Objects live in memory.
//!
//! Credentials are checked as GCS checks them, with a real RSA key that
//! `openssl` makes for each fake:
//! - every XML API call carries the service account's self-signed JWT
//!   (RS256, `iss` = `sub` = its email, its key id, a storage scope, not
//!   expired), verified with the public key; else 401;
//! - a signed URL carries a V4 signature (`GOOG4-RSA-SHA256`), checked by
//!   rebuilding the canonical request from Google's documented rules and
//!   verifying the signature with the `openssl` CLI (not the library that
//!   made it); a bad or expired one is 403. A client signs for Google's
//!   host, whatever address it then sends to, so the fake checks the
//!   signature as `storage.googleapis.com`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

#[derive(Clone)]
pub struct FakeGcs {
    /// (bucket, object name) -> bytes.
    pub objects: Arc<Mutex<BTreeMap<(String, String), Bytes>>>,
    /// Every request: "METHOD /path".
    pub requests: Arc<Mutex<Vec<String>>>,
    /// Every request refused for its credentials: "STATUS METHOD /path: why".
    pub refused: Arc<Mutex<Vec<String>>>,
    account: Arc<Account>,
}

/// The service account the fake knows: its email, key id, and public key.
struct Account {
    email: String,
    key_id: String,
    /// RSAPublicKey (PKCS#1), DER.
    public_der: Vec<u8>,
    /// SubjectPublicKeyInfo, PEM, for `openssl dgst -verify`.
    public_path: PathBuf,
    dir: PathBuf,
}

pub const ACCOUNT_EMAIL: &str = "streamd-vod@fake-project.iam.gserviceaccount.com";
/// The host a V4 signature is made for.
const SIGNED_HOST: &str = "storage.googleapis.com";

const LAST_MODIFIED: &str = "Mon, 30 Nov 2026 12:00:00 GMT";

fn etag(data: &[u8]) -> String {
    format!(
        "\"{:x}-{}\"",
        data.iter().map(|b| u64::from(*b)).sum::<u64>(),
        data.len()
    )
}

impl FakeGcs {
    /// Serves on a free loopback port, with a new service-account key in
    /// `dir`. Returns the fake, its address, and the key file (the JSON a
    /// GCS console gives, with `gcs_base_url` pointing here).
    pub async fn start(dir: &FsPath) -> (FakeGcs, SocketAddr, PathBuf) {
        let private = dir.join("gcs-fake-private.pem");
        let public_path = dir.join("gcs-fake-public.pem");
        openssl(&[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            private.to_str().unwrap(),
        ]);
        openssl(&[
            "pkey",
            "-in",
            private.to_str().unwrap(),
            "-pubout",
            "-out",
            public_path.to_str().unwrap(),
        ]);
        // The same public key as PKCS#1 DER, for the JWT check.
        let public_der = dir.join("gcs-fake-public.der");
        openssl(&[
            "rsa",
            "-in",
            private.to_str().unwrap(),
            "-RSAPublicKey_out",
            "-outform",
            "DER",
            "-out",
            public_der.to_str().unwrap(),
        ]);
        let fake = FakeGcs {
            objects: Default::default(),
            requests: Default::default(),
            refused: Default::default(),
            account: Arc::new(Account {
                email: ACCOUNT_EMAIL.into(),
                key_id: "fake-key-1".into(),
                public_der: std::fs::read(&public_der).unwrap(),
                public_path,
                dir: dir.to_owned(),
            }),
        };
        let app = Router::new()
            .route("/{bucket}", get(list))
            .route("/{bucket}/{*name}", any(object))
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let key_file = dir.join("gcs-fake-key.json");
        std::fs::write(
            &key_file,
            serde_json::json!({
                "type": "service_account",
                "project_id": "fake-project",
                "private_key_id": fake.account.key_id,
                "private_key": std::fs::read_to_string(&private).unwrap(),
                "client_email": fake.account.email,
                "gcs_base_url": format!("http://{addr}"),
            })
            .to_string(),
        )
        .unwrap();
        (fake, addr, key_file)
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

    fn refuse(&self, status: StatusCode, what: &str, why: String) -> Response {
        self.refused
            .lock()
            .unwrap()
            .push(format!("{} {what}: {why}", status.as_u16()));
        (status, why).into_response()
    }

    /// The bearer token of an XML API call: the service account's
    /// self-signed JWT.
    fn check_bearer(&self, headers: &HeaderMap) -> Result<(), String> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or("no bearer token")?;
        let a = &self.account;
        let key = jsonwebtoken::DecodingKey::from_rsa_der(&a.public_der);
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        v.set_issuer(&[&a.email]);
        v.sub = Some(a.email.clone());
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "iss", "sub"]);
        let t = jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
            .map_err(|e| format!("the bearer JWT: {e}"))?;
        if t.header.kid.as_deref() != Some(a.key_id.as_str()) {
            return Err(format!("key id {:?}", t.header.kid));
        }
        let scope = t.claims["scope"].as_str().unwrap_or_default();
        if !scope
            .split(' ')
            .any(|s| s.ends_with("/auth/cloud-platform") || s.contains("/auth/devstorage."))
        {
            return Err(format!("scope {scope:?}"));
        }
        Ok(())
    }

    /// A V4-signed URL (GET only, `host` the one signed header).
    async fn check_signed(&self, method: &Method, path: &str, query: &str) -> Result<(), String> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            pairs.push((form_decode(k)?, form_decode(v)?));
        }
        let param = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .ok_or_else(|| format!("no {name}"))
        };
        if param("X-Goog-Algorithm")? != "GOOG4-RSA-SHA256" {
            return Err("X-Goog-Algorithm".into());
        }
        let date = param("X-Goog-Date")?;
        let signed_at = goog_date(date).ok_or_else(|| format!("X-Goog-Date {date}"))?;
        let expires: u64 = param("X-Goog-Expires")?
            .parse()
            .map_err(|_| "X-Goog-Expires".to_owned())?;
        if expires > 604_800 {
            return Err("X-Goog-Expires over 7 days".into());
        }
        let now = SystemTime::now();
        if now > signed_at + Duration::from_secs(expires) {
            return Err("expired".into());
        }
        if signed_at > now + Duration::from_secs(60) {
            return Err("signed in the future".into());
        }
        let scope = format!("{}/auto/storage/goog4_request", &date[..8]);
        if param("X-Goog-Credential")? != format!("{}/{scope}", self.account.email) {
            return Err(format!("X-Goog-Credential {}", param("X-Goog-Credential")?));
        }
        if param("X-Goog-SignedHeaders")? != "host" {
            return Err(format!(
                "X-Goog-SignedHeaders {}",
                param("X-Goog-SignedHeaders")?
            ));
        }
        let signature = hex_decode(param("X-Goog-Signature")?).ok_or("X-Goog-Signature")?;
        // The canonical request, from Google's rules: the query without
        // the signature, each name and value percent-encoded (RFC 3986),
        // sorted.
        let mut canonical: Vec<(String, String)> = pairs
            .iter()
            .filter(|(k, _)| k != "X-Goog-Signature")
            .map(|(k, v)| (rfc3986(k), rfc3986(v)))
            .collect();
        canonical.sort();
        let query = canonical
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let request =
            format!("{method}\n{path}\n{query}\nhost:{SIGNED_HOST}\n\nhost\nUNSIGNED-PAYLOAD");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, request.as_bytes());
        let to_sign = format!(
            "GOOG4-RSA-SHA256\n{date}\n{scope}\n{}",
            hex(digest.as_ref())
        );
        // A file per check: checks may run at once.
        let n = SIGNATURES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sig_path = self.account.dir.join(format!("gcs-fake-signature-{n}"));
        std::fs::write(&sig_path, &signature).unwrap();
        let mut child = tokio::process::Command::new("openssl")
            .args(["dgst", "-sha256", "-verify"])
            .arg(&self.account.public_path)
            .arg("-signature")
            .arg(&sig_path)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs (the fake GCS checks signatures with it)");
        {
            use tokio::io::AsyncWriteExt;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(to_sign.as_bytes()).await.unwrap();
        }
        let out = child.wait_with_output().await.unwrap();
        let _ = std::fs::remove_file(&sig_path);
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "the V4 signature does not verify: {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ))
        }
    }
}

static SIGNATURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn openssl(args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs (the fake GCS makes its key with it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A query component as a form encoder wrote it.
fn form_decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("{s}: not UTF-8"))
}

/// RFC 3986 percent-encoding: everything but the unreserved characters.
fn rfc3986(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

/// `YYYYMMDDTHHMMSSZ`.
fn goog_date(d: &str) -> Option<SystemTime> {
    let b = d.as_bytes();
    if !d.is_ascii() || b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    humantime::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        &d[0..4],
        &d[4..6],
        &d[6..8],
        &d[9..11],
        &d[11..13],
        &d[13..15]
    ))
    .ok()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

async fn list(
    State(fake): State<FakeGcs>,
    Path(bucket): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let what = format!("LIST /{bucket}");
    fake.requests.lock().unwrap().push(what.clone());
    if let Err(why) = fake.check_bearer(&headers) {
        return fake.refuse(StatusCode::UNAUTHORIZED, &what, why);
    }
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
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let what = format!("{method} /{bucket}/{name}");
    fake.requests.lock().unwrap().push(what.clone());
    let query = query.unwrap_or_default();
    let checked = if query.contains("X-Goog-Signature=") {
        let signed = if method == Method::GET {
            fake.check_signed(&method, uri.path(), &query).await
        } else {
            Err("the fake takes signed GETs only".to_owned())
        };
        signed.map_err(|e| (StatusCode::FORBIDDEN, e))
    } else {
        fake.check_bearer(&headers)
            .map_err(|e| (StatusCode::UNAUTHORIZED, e))
    };
    if let Err((status, why)) = checked {
        return fake.refuse(status, &what, why);
    }
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
