//! TLS for the HTTPS listeners and RTMPS: rustls on aws-lc-rs (the one
//! crypto backend), the certificate and key read from PEM files and read
//! again when they change, so a renewed certificate is served without a
//! restart.
//!
//! Loading is a plain function of the files' bytes and the time, passed in
//! ([`load`]); [`Certs`] holds the pair in use and answers every handshake
//! with it; [`Certs::watch`] polls the files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::TlsConfig;
use crate::shutdown::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: not a PEM certificate chain: {1}")]
    BadCertificate(PathBuf, String),
    #[error("{0}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1): {1}")]
    BadKey(PathBuf, String),
    #[error("{key} does not go with {cert}: {reason}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("{0}: the certificate expired {1} ago (not after {2})")]
    Expired(
        PathBuf,
        humantime::FormattedDuration,
        humantime::Rfc3339Timestamp,
    ),
    #[error("{0}: the certificate is not valid until {1}")]
    NotYetValid(PathBuf, humantime::Rfc3339Timestamp),
}

/// A loaded pair: what handshakes are answered with, and until when it is
/// valid.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub not_after: SystemTime,
}

/// The crypto provider of every TLS listener.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Reads and checks a certificate chain and its key: both parse, the key
/// is the certificate's, and the leaf is valid at `now`.
pub fn load(cert: &Path, key: &Path, now: SystemTime) -> Result<Loaded, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Read(cert.to_owned(), e))?;
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Read(key.to_owned(), e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate(cert.to_owned(), e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    };
    let (not_before, not_after) =
        validity(leaf).map_err(|e| TlsError::BadCertificate(cert.to_owned(), e.to_string()))?;
    if now > not_after {
        let ago = now.duration_since(not_after).unwrap_or_default();
        return Err(TlsError::Expired(
            cert.to_owned(),
            humantime::format_duration(Duration::from_secs(ago.as_secs())),
            humantime::format_rfc3339_seconds(not_after),
        ));
    }
    if now < not_before {
        return Err(TlsError::NotYetValid(
            cert.to_owned(),
            humantime::format_rfc3339_seconds(not_before),
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| TlsError::BadKey(key.to_owned(), e.to_string()))?;
    let certified =
        CertifiedKey::from_der(chain, private, &provider()).map_err(|e| TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })?;
    Ok(Loaded {
        key: Arc::new(certified),
        not_after,
    })
}

/// The leaf's notBefore and notAfter.
fn validity(leaf: &CertificateDer<'_>) -> Result<(SystemTime, SystemTime), x509_cert::der::Error> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(leaf)?;
    let v = c.tbs_certificate().validity();
    Ok((
        SystemTime::UNIX_EPOCH + v.not_before.to_unix_duration(),
        SystemTime::UNIX_EPOCH + v.not_after.to_unix_duration(),
    ))
}

/// The size and modification time of both files: a change to either
/// means a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<(u64, SystemTime)>, Option<(u64, SystemTime)>);

fn stamp(cert: &Path, key: &Path) -> Stamp {
    let of = |p: &Path| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    };
    Stamp(of(cert), of(key))
}

/// The certificate in use, swapped when its files change.
#[derive(Debug)]
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Loaded>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().expect("certs lock").key.clone())
    }
}

impl Certs {
    /// Loads the configured pair; an error here (missing, unparsable,
    /// mismatched or expired files) stops streamd from starting.
    pub fn open(config: &TlsConfig) -> Result<Arc<Certs>, TlsError> {
        let loaded = load(&config.cert, &config.key, SystemTime::now())?;
        let certs = Arc::new(Certs {
            cert: config.cert.clone(),
            key: config.key.clone(),
            current: RwLock::new(loaded),
        });
        certs.report();
        Ok(certs)
    }

    fn report(&self) {
        let not_after = self.current.read().expect("certs lock").not_after;
        let secs = not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        metrics::gauge!("streamd_tls_certificate_not_after_seconds").set(secs);
        tracing::info!(
            cert = %self.cert.display(),
            not_after = %humantime::format_rfc3339_seconds(not_after),
            "tls certificate loaded"
        );
    }

    /// Until when the certificate in use is valid.
    pub fn not_after(&self) -> SystemTime {
        self.current.read().expect("certs lock").not_after
    }

    /// A server config answering with these certificates, offering `alpn`
    /// (most preferred first).
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut c = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(c)
    }

    /// Reloads the pair when either file changes, checking every
    /// `interval`, until `shutdown`. A pair that fails to load is logged
    /// (and counted) and the one in use kept; it is tried again once its
    /// files change again.
    pub async fn watch(self: Arc<Self>, interval: Duration, mut shutdown: Shutdown) {
        let mut seen = stamp(&self.cert, &self.key);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            let now = stamp(&self.cert, &self.key);
            if now == seen {
                continue;
            }
            seen = now;
            let (cert, key) = (self.cert.clone(), self.key.clone());
            let loaded =
                tokio::task::spawn_blocking(move || load(&cert, &key, SystemTime::now())).await;
            match loaded {
                Ok(Ok(loaded)) => {
                    *self.current.write().expect("certs lock") = loaded;
                    metrics::counter!("streamd_tls_reloads_total", "result" => "ok").increment(1);
                    self.report();
                }
                Ok(Err(e)) => {
                    metrics::counter!("streamd_tls_reloads_total", "result" => "failed")
                        .increment(1);
                    tracing::error!(error = %e, "tls certificate not reloaded; the one in use is kept");
                }
                Err(e) => tracing::error!(error = %e, "tls reload task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, not_after: SystemTime) -> (PathBuf, PathBuf) {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_before = (SystemTime::now() - Duration::from_secs(86_400)).into();
        params.not_after = not_after.into();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    #[test]
    fn a_good_pair_loads_and_bad_ones_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (cert, key) = pair(dir.path(), "good", now + Duration::from_secs(86_400 * 30));
        let loaded = load(&cert, &key, now).unwrap();
        assert!(loaded.not_after > now);

        let (old, old_key) = pair(dir.path(), "old", now - Duration::from_secs(3600));
        let err = load(&old, &old_key, now).unwrap_err().to_string();
        assert!(err.contains("expired") && err.contains("old.crt"), "{err}");

        let err = load(&cert, &old_key, now).unwrap_err().to_string();
        assert!(err.contains("does not go with"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, b"not a certificate").unwrap();
        let err = load(&garbage, &key, now).unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        let err = load(&cert, &garbage, now).unwrap_err().to_string();
        assert!(err.contains("no PEM private key"), "{err}");

        let err = load(&dir.path().join("missing.crt"), &key, now)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot read") && err.contains("missing.crt"),
            "{err}"
        );

        // A certificate whose DER is damaged inside valid PEM.
        let pem = std::fs::read_to_string(&cert).unwrap();
        let mut lines: Vec<&str> = pem.lines().collect();
        lines[3] = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let broken = dir.path().join("broken.crt");
        std::fs::write(&broken, lines.join("\n")).unwrap();
        assert!(load(&broken, &key, now).is_err());
    }
}
