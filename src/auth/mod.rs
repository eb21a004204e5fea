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

pub mod admission;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::bus::StreamPath;
use crate::config::{AuthConfig, PublishPolicy};
use crate::store::{Store, StreamRecord};

/// Verified playback tokens kept at most (then the expired are dropped,
/// and if that is not enough, all).
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
}

pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    config: AuthConfig,
    /// Playback tokens already verified: token -> (stream, expiry, s).
    sessions: Mutex<HashMap<String, (String, u64)>>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The secret: `JWT_SECRET`, else the config's, else one generated once
/// into `{data_dir}/jwt_secret` (readable by the owner only).
pub fn secret(config: &AuthConfig, data_dir: &Path) -> std::io::Result<String> {
    if let Ok(s) = std::env::var("JWT_SECRET")
        && !s.is_empty()
    {
        return Ok(s);
    }
    if !config.jwt_secret.is_empty() {
        return Ok(config.jwt_secret.clone());
    }
    let path = data_dir.join("jwt_secret");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let s = crate::random::string(48, crate::random::ALPHANUMERIC);
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(s.as_bytes())?;
    }
    tracing::warn!(path = %path.display(), "no JWT_SECRET given: generated one (mint an API token with `streamd token`)");
    Ok(s)
}

impl Auth {
    pub fn new(secret: &str, config: AuthConfig) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.validate_exp = true;
        validation.required_spec_claims = ["exp".to_owned()].into();
        Auth {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            config,
            sessions: Mutex::default(),
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

    /// An API request's bearer token.
    pub fn check_api(&self, bearer: Option<&str>) -> Result<Claims, AuthError> {
        let claims = self.verify(bearer.ok_or(AuthError::Missing)?)?;
        match claims.scope.as_deref() {
            None | Some("api") => Ok(claims),
            Some(_) => Err(AuthError::WrongScope),
        }
    }

    /// Whether `token` lets its holder play `path`; verified once, then
    /// answered from the session cache until it expires.
    pub fn check_playback(&self, token: Option<&str>, path: &StreamPath) -> Result<(), AuthError> {
        let token = token.ok_or(AuthError::Missing)?;
        let want = path.to_string();
        let now = now_secs();
        if let Some((stream, exp)) = self.sessions.lock().expect("sessions lock").get(token) {
            if *exp <= now {
                return Err(AuthError::Expired);
            }
            return if *stream == want {
                Ok(())
            } else {
                Err(AuthError::WrongStream)
            };
        }
        let claims = self.verify(token)?;
        if claims.scope.as_deref() != Some("playback") {
            return Err(AuthError::WrongScope);
        }
        let stream = claims.stream.unwrap_or_default();
        {
            let mut sessions = self.sessions.lock().expect("sessions lock");
            if sessions.len() >= MAX_SESSIONS {
                sessions.retain(|_, (_, exp)| *exp > now);
                if sessions.len() >= MAX_SESSIONS {
                    sessions.clear();
                }
            }
            sessions.insert(token.to_owned(), (stream.clone(), claims.exp));
        }
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
        let param = |k: &str| query_param(query, k);
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

/// The store and the tokens together: what ingest, signalling, LL-HLS and
/// the API ask before serving.
pub struct Access {
    pub store: Store,
    pub auth: Auth,
    /// OME's AdmissionWebhooks, when configured.
    pub admission: Option<std::sync::Arc<admission::Admission>>,
}

impl Access {
    /// Whether `token` may play `path`: yes for a stream that is not a
    /// private managed one; else a playback token for it is needed.
    pub async fn playback(&self, path: &StreamPath, token: Option<&str>) -> Result<(), AuthError> {
        let record = self
            .store
            .lookup(path.app(), path.stream())
            .await
            .map_err(|e| AuthError::Storage(e.to_string()))?;
        match record {
            Some(r) if r.is_private => self.auth.check_playback(token, path),
            _ => Ok(()),
        }
    }

    /// See [`Auth::authorize_publish`].
    pub async fn publish(
        &self,
        app: &str,
        name: &str,
        query: Option<&str>,
    ) -> Result<String, AuthError> {
        self.auth
            .authorize_publish(&self.store, app, name, query)
            .await
    }
}

/// The value of `key` in a query string (`a=1&key=value`).
pub fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// The `token` parameter of a query string.
pub fn token_param(query: Option<&str>) -> Option<&str> {
    query_param(query, "token")
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
        let t = a.mint("me", None, None, Duration::from_secs(60));
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
                scope: None,
                stream: None,
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
        let api = a.mint("", None, None, Duration::from_secs(60));
        assert_eq!(a.check_playback(Some(&api), &x), Err(AuthError::WrongScope));
    }
}
