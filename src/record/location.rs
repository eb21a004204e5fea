//! Where recordings go, as the config names it (sans-IO): `gs://bucket/prefix`
//! (Google Cloud Storage), `s3://bucket/prefix` (S3 and compatible stores),
//! or `file:///absolute/dir` (local disk, the embedded default). The seed
//! system's `STORAGE_BUCKET` means `gs://$STORAGE_BUCKET`.
//!
//! Object names are `{prefix}/{app}/{stream}/{recording id}/{file}`; every
//! part is checked here, so no name from a publisher or a request can
//! climb out of the prefix.

use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Gcs { bucket: String, prefix: String },
    S3 { bucket: String, prefix: String },
    File { root: PathBuf, prefix: String },
}

impl std::fmt::Display for Location {
    /// The location as a URL (journalled with each recording).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (scheme, base, prefix) = match self {
            Location::Gcs { bucket, prefix } => ("gs://", bucket.clone(), prefix),
            Location::S3 { bucket, prefix } => ("s3://", bucket.clone(), prefix),
            Location::File { root, prefix } => ("file://", root.display().to_string(), prefix),
        };
        write!(f, "{scheme}{base}")?;
        if !prefix.is_empty() {
            write!(f, "/{prefix}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocationError {
    #[error("{0:?} is not gs://BUCKET[/PREFIX], s3://BUCKET[/PREFIX] or file:///DIR")]
    Scheme(String),
    #[error(
        "bucket name {0:?}: 3 to 63 of a-z, 0-9, '-' and '.', starting and ending with a letter or digit"
    )]
    Bucket(String),
    #[error("path {0:?}: its parts must be non-empty and neither '.' nor '..'")]
    Path(String),
}

impl Location {
    /// Reads `url`; with `storage_bucket` (the `STORAGE_BUCKET` variable)
    /// set and not empty, that bucket on GCS is meant instead.
    pub fn parse(url: &str, storage_bucket: Option<&str>) -> Result<Location, LocationError> {
        if let Some(b) = storage_bucket.map(str::trim).filter(|b| !b.is_empty()) {
            return Location::parse(&format!("gs://{b}"), None);
        }
        let bucketed = |rest: &str| -> Result<(String, String), LocationError> {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            Ok((bucket_name(bucket)?, clean_path(prefix, url)?))
        };
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = bucketed(rest)?;
            Ok(Location::Gcs { bucket, prefix })
        } else if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = bucketed(rest)?;
            Ok(Location::S3 { bucket, prefix })
        } else if let Some(dir) = url.strip_prefix("file://").filter(|d| d.starts_with('/')) {
            let root = clean_path(dir, url)?;
            if root.is_empty() {
                return Err(LocationError::Path(url.to_owned()));
            }
            Ok(Location::File {
                root: PathBuf::from(format!("/{root}")),
                prefix: String::new(),
            })
        } else {
            Err(LocationError::Scheme(url.to_owned()))
        }
    }

    /// The object name of `file` of recording `recording` of `app/stream`,
    /// or an error if any part could leave its place.
    pub fn object(
        &self,
        app: &str,
        stream: &str,
        recording: &str,
        files: &[&str],
    ) -> Result<String, LocationError> {
        let prefix = match self {
            Location::Gcs { prefix, .. }
            | Location::S3 { prefix, .. }
            | Location::File { prefix, .. } => prefix,
        };
        let mut parts: Vec<&str> = Vec::with_capacity(5);
        if !prefix.is_empty() {
            parts.push(prefix);
        }
        for p in [app, stream, recording].iter().chain(files) {
            if !safe_part(p) {
                return Err(LocationError::Path((*p).to_owned()));
            }
            parts.push(p);
        }
        Ok(parts.join("/"))
    }
}

/// One path part of an object name: 1 to 128 of letters, digits, `_`, `-`
/// and `.`, and not `.` or `..`.
fn safe_part(p: &str) -> bool {
    (1..=128).contains(&p.len())
        && p != "."
        && p != ".."
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// GCS and S3 bucket names (the rules both share).
fn bucket_name(b: &str) -> Result<String, LocationError> {
    let ok = (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
        && !b.contains("..");
    if ok {
        Ok(b.to_owned())
    } else {
        Err(LocationError::Bucket(b.to_owned()))
    }
}

/// `p` without leading and trailing slashes, every part safe.
fn clean_path(p: &str, url: &str) -> Result<String, LocationError> {
    let p = p.trim_matches('/');
    if p.is_empty() {
        return Ok(String::new());
    }
    if p.split('/').all(safe_part) {
        Ok(p.to_owned())
    } else {
        Err(LocationError::Path(url.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_stores_are_read() {
        assert_eq!(
            Location::parse("gs://my-bucket/live/rec", None),
            Ok(Location::Gcs {
                bucket: "my-bucket".into(),
                prefix: "live/rec".into()
            })
        );
        assert_eq!(
            Location::parse("s3://media.example/", None),
            Ok(Location::S3 {
                bucket: "media.example".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            Location::parse("file:///var/lib/streamd/recordings/", None),
            Ok(Location::File {
                root: "/var/lib/streamd/recordings".into(),
                prefix: String::new()
            })
        );
    }

    #[test]
    fn storage_bucket_means_that_bucket_on_gcs() {
        assert_eq!(
            Location::parse("file:///data", Some("seed-bucket")),
            Ok(Location::Gcs {
                bucket: "seed-bucket".into(),
                prefix: String::new()
            })
        );
        // Empty means unset.
        assert!(matches!(
            Location::parse("file:///data", Some(" ")),
            Ok(Location::File { .. })
        ));
        assert!(Location::parse("file:///data", Some("Bad_Bucket")).is_err());
    }

    #[test]
    fn bad_locations_are_refused_with_the_reason() {
        for (url, what) in [
            ("http://bucket/x", "not gs://"),
            ("gs://", "bucket name"),
            ("gs://UPPER", "bucket name"),
            ("gs://-dash", "bucket name"),
            ("s3://a..b", "bucket name"),
            ("gs://bucket/../../etc", "path"),
            ("gs://bucket/a//b", "path"),
            ("file://relative/dir", "not gs://"),
            ("file:///", "path"),
            ("file:///data/../etc", "path"),
        ] {
            let e = Location::parse(url, None).unwrap_err().to_string();
            assert!(e.contains(what), "{url}: {e}");
        }
    }

    #[test]
    fn object_names_stay_under_the_prefix() {
        let l = Location::parse("gs://b-1/rec", None).unwrap();
        assert_eq!(
            l.object("live", "cam", "r1", &["seg_3.m4s"]),
            Ok("rec/live/cam/r1/seg_3.m4s".into())
        );
        for (app, stream, rec, file) in [
            ("..", "cam", "r1", "f"),
            ("live", "a/b", "r1", "f"),
            ("live", "cam", "", "f"),
            ("live", "cam", "r1", "%2e%2e"),
            ("live", "cam", "r1", "x\u{0}"),
        ] {
            assert!(
                l.object(app, stream, rec, &[file]).is_err(),
                "{app}/{stream}/{rec}/{file}"
            );
        }
    }

    proptest! {
        /// Whatever the parts, an object name that is given lies under the
        /// prefix and has exactly its five parts, none of them a way out.
        #[test]
        fn object_names_never_escape(
            parts in prop::collection::vec(".{0,20}", 4),
        ) {
            let l = Location::parse("s3://bucket/pre", None).unwrap();
            if let Ok(name) = l.object(&parts[0], &parts[1], &parts[2], &[&parts[3]]) {
                let split: Vec<&str> = name.split('/').collect();
                prop_assert_eq!(split.len(), 5);
                prop_assert_eq!(split[0], "pre");
                prop_assert!(split.iter().all(|p| !p.is_empty() && *p != "." && *p != ".."));
            }
        }

        /// Any string: a location or an error, never a panic.
        #[test]
        fn any_url_parses_or_fails(url in ".{0,80}", bucket in proptest::option::of(".{0,20}")) {
            let _ = Location::parse(&url, bucket.as_deref());
        }
    }
}
