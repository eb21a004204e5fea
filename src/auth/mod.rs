//! Tokens (HS256 JWTs, one secret) and the access decisions built on them.
//!
//! - API: any unexpired token signed with the secret, unless it is scoped
//!   narrower (`scope` `publish` or `playback`): the seed's backend minted
//!   its user tokens with the same `JWT_SECRET`.
//! - Publish: a stream's key, or a `publish` token for that stream.
//! - Playback of a private stream: a `playback` token for that stream.
//!   Media requests (every LL-HLS part) are checked against a cache of
//!   tokens already verified, so a signature is verified once per token,
//!   not per request.

pub mod access;
pub mod admission;
pub mod turn;

pub use access::{Access, AccessRequest, Admitted, Client, Protocol, Refusal};

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::bus::StreamPath;
use crate::config::{ApiTokens, AuthConfig, MIN_SECRET_LEN, PublishPolicy, WebhookConfig};
use crate::store::{Store, StreamRecord};

/// Verified playback tokens kept at most (then the least recently used is
/// dropped).
const MAX_SESSIONS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token has expired")]
    Expired,
    #[error("the token is not for this stream")]
    WrongStream,
    #[error("the token does not allow this")]
    WrongScope,
    #[error("wrong stream key")]
    WrongKey,
    #[error("no such stream")]
    UnknownStream,
    #[error("storage unavailable: {0}")]
    Storage(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    #[serde(default)]
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// `publish` or `playback` for stream tokens; absent for API tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// `app/id` of the stream a publish or playback token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// The scope of API tokens.
pub const API_SCOPE: &str = "api";

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    config: AuthConfig,
    /// Playback tokens already verified: token -> (stream, expiry, s).
    sessions: Mutex<crate::cache::Lru<String, String>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The secret: `JWT_SECRET`, else the config's, else one generated once
/// into `{data_dir}/jwt_secret` (readable by the owner only, in a data
/// directory only the owner can enter). A secret under
/// [`MIN_SECRET_LEN`] bytes is refused.
pub fn secret(config: &AuthConfig, data_dir: &Path) -> std::io::Result<String> {
    let short = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} must be at least {MIN_SECRET_LEN} bytes"),
        )
    };
    if let Ok(s) = std::env::var("JWT_SECRET")
        && !s.is_empty()
    {
        if s.len() < MIN_SECRET_LEN {
            return Err(short("JWT_SECRET"));
        }
        return Ok(s);
    }
    if !config.jwt_secret.is_empty() {
        if config.jwt_secret.len() < MIN_SECRET_LEN {
            return Err(short("auth.jwt_secret"));
        }
        return Ok(config.jwt_secret.clone());
    }
    private_dir(data_dir)?;
    let path = data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= MIN_SECRET_LEN => return Ok(s.trim().to_owned()),
        Ok(_) => return Err(short(&path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let s = crate::random::string(48, crate::random::ALPHANUMERIC);
    write_new_private(&path, s.as_bytes())?;
    // Another process may have written it first: everyone uses that one.
    let s = std::fs::read_to_string(&path)?.trim().to_owned();
    tracing::warn!(path = %path.display(), "no JWT_SECRET given: generated one (mint an API token with `streamd token`)");
    Ok(s)
}

/// Creates `dir` if need be and makes it the owner's alone (0700).
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Writes `bytes` to `path` whole or not at all: a 0600 temporary file in
/// the same directory, synced, then linked into place (which fails if
/// `path` exists, so a concurrent writer's file is kept), and the directory
/// synced.
fn write_new_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("secret"),
        crate::random::string(8, crate::random::ALPHANUMERIC)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        std::fs::File::open(dir)?.sync_all()
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// The key webhooks are signed with: `[webhooks] secret`, else one derived
/// from the JWT secret (never the JWT secret itself).
pub fn webhook_key(config: &WebhookConfig, root: &str) -> String {
    if config.secret.is_empty() {
        derive_key(root, "webhooks")
    } else {
        config.secret.clone()
    }
}

/// A key for `purpose` derived from the root secret (HMAC-SHA256, hex): it
/// reveals nothing about the root, so its holder cannot mint tokens.
pub fn derive_key(root: &str, purpose: &str) -> String {
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, root.as_bytes());
    let tag = aws_lc_rs::hmac::sign(&key, format!("streamd {purpose} key v1").as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Auth {
    pub fn new(secret: &str, config: AuthConfig) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.required_spec_claims = ["exp".to_owned()].into();
        // Only HS256 (the default list): `alg: none` and public-key
        // algorithms are refused before any claim is read.
        if config.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&config.audience]);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        if !config.issuer.is_empty() {
            validation.set_issuer(&[&config.issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        Auth {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            config,
            sessions: Mutex::new(crate::cache::Lru::new(MAX_SESSIONS)),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Signs a token with `claims`' scope and stream, valid for `ttl`.
    pub fn mint(
        &self,
        sub: &str,
        scope: Option<&str>,
        stream: Option<&str>,
        ttl: Duration,
    ) -> String {
        let now = now_secs();
        let claims = Claims {
            sub: sub.to_owned(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            scope: scope.map(str::to_owned),
            stream: stream.map(str::to_owned),
            aud: Some(self.config.audience.clone()).filter(|a| !a.is_empty()),
            iss: Some(self.config.issuer.clone()).filter(|i| !i.is_empty()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail")
    }

    /// Verifies signature and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > 4096 {
            return Err(AuthError::Invalid("too long".into()));
        }
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })
    }

    /// An API token: `scope: "api"`, valid for `ttl`.
    pub fn mint_api(&self, sub: &str, ttl: Duration) -> String {
        self.mint(sub, Some(API_SCOPE), None, ttl)
    }

    /// An API request's bearer token: scoped `api`, or (with `api_tokens =
    /// "any"`) unscoped; never a publish or playback token.
    pub fn check_api(&self, bearer: Option<&str>) -> Result<Claims, AuthError> {
        let claims = self.verify(bearer.ok_or(AuthError::Missing)?)?;
        match (claims.scope.as_deref(), self.config.api_tokens) {
            (Some(API_SCOPE), _) | (None, ApiTokens::Any) => Ok(claims),
            _ => Err(AuthError::WrongScope),
        }
    }

    /// Whether `token` lets its holder play `path`; verified once, then
    /// answered from the session cache until it expires.
    pub fn check_playback(&self, token: Option<&str>, path: &StreamPath) -> Result<(), AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let want = path.to_string();
        let cached = self
            .sessions
            .lock()
            .expect("sessions lock")
            .get(token, std::time::Instant::now());
        if let Some(stream) = cached {
            return if stream == want {
                Ok(())
            } else {
                Err(AuthError::WrongStream)
            };
        }
        // Not cached, or its expiry passed: verified again (an expired
        // token fails here).
        let claims = self.verify(token)?;
        if claims.scope.as_deref() != Some("playback") {
            return Err(AuthError::WrongScope);
        }
        let stream = claims.stream.unwrap_or_default();
        let left = Duration::from_secs(claims.exp.saturating_sub(now_secs()));
        self.sessions.lock().expect("sessions lock").insert(
            token.to_owned(),
            stream.clone(),
            std::time::Instant::now() + left,
        );
        if stream == want {
            Ok(())
        } else {
            Err(AuthError::WrongStream)
        }
    }

    /// Decides a publish to `app/name` (`query` is what followed `?` in
    /// the stream name): the name to publish as, or why not.
    ///
    /// Accepted: `{id}?key={key}`, `{id}?token={publish JWT}`, or OBS's
    /// stream key field holding the key alone (`{key}`: the stream is
    /// found by its key). Under the `open` policy a name that is not a
    /// managed stream is accepted as is.
    pub async fn authorize_publish(
        &self,
        store: &Store,
        app: &str,
        name: &str,
        query: Option<&str>,
    ) -> Result<String, AuthError> {
        let storage = |e: crate::store::StoreError| AuthError::Storage(e.to_string());
        let param = |k: &str| crate::http::query_param(query, k);
        if name.starts_with("sk_") {
            let r = store.by_key(name).await.map_err(storage)?;
            return match r {
                Some(r) if r.app == app => Ok(r.id),
                _ => Err(AuthError::WrongKey),
            };
        }
        let record: Option<StreamRecord> = store.lookup(app, name).await.map_err(storage)?;
        let Some(record) = record else {
            return match self.config.publish {
                PublishPolicy::Open => Ok(name.to_owned()),
                PublishPolicy::Key => Err(AuthError::UnknownStream),
            };
        };
        if let Some(token) = param("token") {
            let claims = self.verify(token)?;
            if claims.scope.as_deref() != Some("publish") {
                return Err(AuthError::WrongScope);
            }
            if claims.stream.as_deref() != Some(&format!("{app}/{}", record.id)) {
                return Err(AuthError::WrongStream);
            }
            return Ok(record.id);
        }
        let given = param("key").ok_or(AuthError::Missing)?;
        // The key itself is read fresh (a rotation takes effect at once).
        let key = store.key(&record.id).await.map_err(storage)?;
        match key {
            Some(k) if constant_time_eq(k.as_bytes(), given.as_bytes()) => Ok(record.id),
            _ => Err(AuthError::WrongKey),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new("secret-one", AuthConfig::default())
    }

    #[test]
    fn api_tokens_need_the_secret_and_time() {
        let a = auth();
        let t = a.mint_api("me", Duration::from_secs(60));
        assert_eq!(a.check_api(Some(&t)).unwrap().sub, "me");
        let other = Auth::new("secret-two", AuthConfig::default());
        assert!(matches!(
            other.check_api(Some(&t)),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(a.check_api(None), Err(AuthError::Missing));
        let p = a.mint(
            "me",
            Some("playback"),
            Some("live/x"),
            Duration::from_secs(60),
        );
        assert_eq!(a.check_api(Some(&p)), Err(AuthError::WrongScope));
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                sub: "me".into(),
                exp: now_secs() - 60,
                iat: None,
                scope: Some(API_SCOPE.into()),
                stream: None,
                aud: None,
                iss: None,
            },
            &EncodingKey::from_secret(b"secret-one"),
        )
        .unwrap();
        assert_eq!(a.check_api(Some(&expired)), Err(AuthError::Expired));
        assert!(a.check_api(Some("not.a.jwt")).is_err());
    }

    #[test]
    fn playback_tokens_are_per_stream_and_cached() {
        let a = auth();
        let x = StreamPath::new("live", "aaaaaaaaaaaa").unwrap();
        let y = StreamPath::new("live", "bbbbbbbbbbbb").unwrap();
        let t = a.mint(
            "",
            Some("playback"),
            Some("live/aaaaaaaaaaaa"),
            Duration::from_secs(60),
        );
        assert_eq!(a.check_playback(Some(&t), &x), Ok(()));
        // Now from the cache, same answers.
        assert_eq!(a.check_playback(Some(&t), &x), Ok(()));
        assert_eq!(a.check_playback(Some(&t), &y), Err(AuthError::WrongStream));
        assert_eq!(a.check_playback(None, &x), Err(AuthError::Missing));
        let api = a.mint_api("", Duration::from_secs(60));
        assert_eq!(a.check_playback(Some(&api), &x), Err(AuthError::WrongScope));
    }

    fn raw_token(header: &str, claims: &serde_json::Value, key: &[u8]) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing_input = format!("{}.{}", b64.encode(header), b64.encode(claims.to_string()));
        let k = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key);
        let sig = aws_lc_rs::hmac::sign(&k, signing_input.as_bytes());
        format!("{signing_input}.{}", b64.encode(sig.as_ref()))
    }

    #[test]
    fn the_api_refuses_every_token_that_is_not_an_api_token() {
        let a = auth();
        let exp = now_secs() + 600;
        let claims = serde_json::json!({"sub": "x", "exp": exp, "scope": "api"});
        // `alg: none`, with and without a signature.
        let none = raw_token(r#"{"alg":"none","typ":"JWT"}"#, &claims, b"");
        let unsigned = none.rsplit_once('.').unwrap().0.to_owned() + ".";
        // RS256 in the header, "signed" with the HMAC secret (the classic
        // algorithm-confusion forgery).
        let rs256 = raw_token(r#"{"alg":"RS256","typ":"JWT"}"#, &claims, b"secret-one");
        // Signed with the webhook key, which receivers hold.
        let hook = derive_key("secret-one", "webhooks");
        let by_hook = raw_token(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, hook.as_bytes());
        for t in [&none, &unsigned, &rs256, &by_hook] {
            assert!(
                matches!(a.check_api(Some(t)), Err(AuthError::Invalid(_))),
                "{t}"
            );
        }
        // The same claims, rightly signed, pass (the forgeries differ only
        // in what they forge).
        let good = raw_token(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, b"secret-one");
        assert!(a.check_api(Some(&good)).is_ok());
        // A webhook signature (hex HMAC of a body) is not a token.
        let signature = derive_key("secret-one", "anything");
        assert!(matches!(
            a.check_api(Some(&signature)),
            Err(AuthError::Invalid(_))
        ));
        // Publish and playback tokens, and unscoped ones by default.
        for scope in [Some("publish"), Some("playback"), None] {
            let t = a.mint("x", scope, Some("live/x"), Duration::from_secs(60));
            assert_eq!(
                a.check_api(Some(&t)),
                Err(AuthError::WrongScope),
                "{scope:?}"
            );
        }
    }

    #[test]
    fn unscoped_tokens_pass_only_when_configured() {
        let config = AuthConfig {
            api_tokens: ApiTokens::Any,
            ..AuthConfig::default()
        };
        let a = Auth::new("secret-one", config);
        let t = a.mint("backend-user", None, None, Duration::from_secs(60));
        assert_eq!(a.check_api(Some(&t)).unwrap().sub, "backend-user");
        let p = a.mint(
            "x",
            Some("playback"),
            Some("live/x"),
            Duration::from_secs(60),
        );
        assert_eq!(a.check_api(Some(&p)), Err(AuthError::WrongScope));
    }

    #[test]
    fn audience_and_issuer_are_checked_when_set() {
        let config = AuthConfig {
            audience: "streamd".into(),
            issuer: "https://backend.example".into(),
            ..AuthConfig::default()
        };
        let a = Auth::new("secret-one", config);
        let t = a.mint_api("x", Duration::from_secs(60));
        assert!(a.check_api(Some(&t)).is_ok());
        let exp = now_secs() + 600;
        for claims in [
            serde_json::json!({"exp": exp, "scope": "api"}),
            serde_json::json!({"exp": exp, "scope": "api", "aud": "other", "iss": "https://backend.example"}),
            serde_json::json!({"exp": exp, "scope": "api", "aud": "streamd", "iss": "https://evil.example"}),
        ] {
            let t = raw_token(r#"{"alg":"HS256","typ":"JWT"}"#, &claims, b"secret-one");
            assert!(
                matches!(a.check_api(Some(&t)), Err(AuthError::Invalid(_))),
                "{claims}"
            );
        }
    }

    #[test]
    fn generated_secret_is_private_and_short_secrets_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        assert!(
            std::env::var_os("JWT_SECRET").is_none(),
            "unset JWT_SECRET to run the auth tests"
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let s = secret(&AuthConfig::default(), &data).unwrap();
        assert!(s.len() >= MIN_SECRET_LEN);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("jwt_secret")), 0o600);
        // Read back, not regenerated; no temporary file left behind.
        assert_eq!(secret(&AuthConfig::default(), &data).unwrap(), s);
        assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
        let short = AuthConfig {
            jwt_secret: "0123456789".into(),
            ..AuthConfig::default()
        };
        let e = secret(&short, &data).unwrap_err();
        assert!(
            e.to_string()
                .contains("auth.jwt_secret must be at least 32 bytes"),
            "{e}"
        );
        std::fs::write(data.join("jwt_secret"), "tooshort").unwrap();
        assert!(secret(&AuthConfig::default(), &data).is_err());
        // Derived keys differ by purpose and from the root.
        assert_ne!(derive_key(&s, "webhooks"), derive_key(&s, "other"));
        assert_ne!(derive_key(&s, "webhooks"), s);
    }
}
