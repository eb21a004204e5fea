//! Certificates the tests make (rcgen): self-signed for `localhost`, each
//! its own CA, so a client trusts exactly the one it is given.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub struct TestCert {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// base64(SHA-256(SubjectPublicKeyInfo)): what Chromium's
    /// `--ignore-certificate-errors-spki-list` trusts.
    pub spki_sha256: String,
}

/// Writes `dir/{name}.crt` and `dir/{name}.key`, valid from a day ago
/// until `not_after`.
pub fn make_cert(dir: &Path, name: &str, not_after: SystemTime) -> TestCert {
    make_cert_for(dir, name, &["localhost"], not_after)
}

/// [`make_cert`] for these names (an IP address is an IP SAN).
pub fn make_cert_for(dir: &Path, name: &str, names: &[&str], not_after: SystemTime) -> TestCert {
    use base64::Engine;
    let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("streamd test {name}"));
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
    let spki = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        &rcgen::PublicKeyData::subject_public_key_info(&key),
    );
    TestCert {
        cert: c,
        key: k,
        spki_sha256: base64::engine::general_purpose::STANDARD.encode(spki.as_ref()),
    }
}

/// Thirty days from now.
pub fn in_a_month() -> SystemTime {
    SystemTime::now() + Duration::from_secs(30 * 86_400)
}

/// A TLS connection to `addr` (host:port) as `localhost` that agreed on
/// HTTP/2 (ALPN h2), trusting `ca` alone.
pub async fn h2_tls(
    addr: &str,
    ca: &Path,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use base64::Engine;
    let pem = std::fs::read_to_string(ca).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(der))
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    tls
}
