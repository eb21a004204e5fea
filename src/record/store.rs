//! The object store a [`Location`] names, through the `object_store`
//! crate (its S3 and GCS clients sign and talk TLS with aws-lc-rs, the
//! one crypto backend). Credentials come from where each store's tools
//! look: GCS from `GOOGLE_SERVICE_ACCOUNT`/`GOOGLE_APPLICATION_CREDENTIALS`
//! or, on GKE with Workload Identity, the metadata server; S3 from the
//! `AWS_*` variables.

use std::sync::Arc;

use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::signer::Signer;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::location::Location;

/// A request's own retries are few and short: the uploader retries for
/// as long as it takes, and logs and counts each failure, so an outage is
/// seen rather than hidden inside one call for minutes.
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
    }
}

/// A store that stops answering fails the request, not the uploader.
fn client() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(60))
}

/// Store settings beyond the environment's (empty: the environment's).
#[derive(Clone, Debug, Default)]
pub struct S3Settings<'a> {
    /// A GCS service account's JSON key file.
    pub gcs_credentials: Option<&'a std::path::Path>,
    /// A compatible server (MinIO and the like; plain `http://` is
    /// allowed only there).
    pub endpoint: &'a str,
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
}

/// An opened store, and its URL signer (GCS and S3; none for a local
/// directory).
pub struct Opened {
    pub objects: Arc<dyn ObjectStore>,
    pub signer: Option<Arc<dyn Signer>>,
}

/// The store for `location`. A local directory is created if missing.
/// Nothing is sent over the network here.
pub fn open(location: &Location, s3: &S3Settings<'_>) -> Result<Opened, object_store::Error> {
    Ok(match location {
        Location::Gcs { bucket, .. } => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry())
                // As the builder's own default: a key file may name an
                // http:// endpoint (an emulator); Google's is https://.
                .with_client_options(client().with_allow_http(true));
            if let Some(path) = s3.gcs_credentials {
                b = b.with_service_account_path(path.display().to_string());
            }
            let gcs = Arc::new(b.build()?);
            Opened {
                objects: gcs.clone(),
                signer: Some(gcs),
            }
        }
        Location::S3 { bucket, .. } => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry())
                .with_client_options(client());
            if !s3.endpoint.is_empty() {
                b = b
                    .with_endpoint(s3.endpoint)
                    .with_allow_http(s3.endpoint.starts_with("http://"));
            }
            if !s3.access_key_id.is_empty() {
                b = b
                    .with_access_key_id(s3.access_key_id)
                    .with_secret_access_key(s3.secret_access_key);
            }
            if !s3.region.is_empty() {
                b = b.with_region(s3.region);
            }
            let s3 = Arc::new(b.build()?);
            Opened {
                objects: s3.clone(),
                signer: Some(s3),
            }
        }
        Location::File { root, .. } => {
            std::fs::create_dir_all(root).map_err(|e| object_store::Error::Generic {
                store: "file",
                source: Box::new(e),
            })?;
            Opened {
                objects: Arc::new(LocalFileSystem::new_with_prefix(root)?),
                signer: None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::path::Path;

    /// A recording's object goes to disk under its name and comes back.
    #[tokio::test]
    async fn a_local_store_keeps_what_it_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("recordings");
        let location = Location::parse(&format!("file://{}", root.display()), None).unwrap();
        let store = open(&location, &S3Settings::default()).unwrap().objects;
        let name = location
            .object("live", "cam", "r1", &["seg_1.m4s"])
            .unwrap();
        store
            .put(&Path::from(name.as_str()), vec![1u8, 2, 3].into())
            .await
            .unwrap();
        let back = store.get(&Path::from(name.as_str())).await.unwrap();
        assert_eq!(back.bytes().await.unwrap().as_ref(), &[1, 2, 3]);
        assert_eq!(
            std::fs::read(root.join("live/cam/r1/seg_1.m4s")).unwrap(),
            [1, 2, 3]
        );
    }

    /// An S3 store for a compatible server is configured without any
    /// network traffic (the requests come later, signed).
    #[test]
    fn an_s3_store_builds_for_an_endpoint() {
        let location = Location::parse("s3://recordings/pre", None).unwrap();
        assert!(
            open(
                &location,
                &S3Settings {
                    endpoint: "http://127.0.0.1:9",
                    ..Default::default()
                }
            )
            .is_ok()
        );
    }
}
