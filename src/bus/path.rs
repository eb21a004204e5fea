//! Stream names: `{app}/{stream}`, validated once at the edge so that every
//! later use (URLs, log lines, file names) can trust them.

use std::fmt;

const MAX_NAME_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("{what} name is empty")]
    Empty { what: &'static str },
    #[error("{what} name is longer than {MAX_NAME_LEN} bytes")]
    TooLong { what: &'static str },
    #[error(
        "{what} name {name:?} may only contain letters, digits, '_', '-' and '.', and may not start with '.'"
    )]
    Invalid { what: &'static str, name: String },
}

/// An application and stream name pair, both `[A-Za-z0-9_.-]{1,128}` and not
/// starting with a dot (so never `.` or `..`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamPath {
    app: String,
    stream: String,
}

impl StreamPath {
    pub fn new(app: &str, stream: &str) -> Result<StreamPath, PathError> {
        validate("app", app)?;
        validate("stream", stream)?;
        Ok(StreamPath {
            app: app.to_owned(),
            stream: stream.to_owned(),
        })
    }

    pub fn app(&self) -> &str {
        &self.app
    }

    pub fn stream(&self) -> &str {
        &self.stream
    }
}

fn validate(what: &'static str, name: &str) -> Result<(), PathError> {
    if name.is_empty() {
        return Err(PathError::Empty { what });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(PathError::TooLong { what });
    }
    let ok = !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(PathError::Invalid {
            what,
            name: name.chars().take(MAX_NAME_LEN).collect(),
        });
    }
    Ok(())
}

impl fmt::Display for StreamPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        let p = StreamPath::new("app", "stream-1_a.b").unwrap();
        assert_eq!(p.to_string(), "app/stream-1_a.b");
    }

    #[test]
    fn rejects_hostile_names() {
        for bad in [
            "", "..", ".", ".hidden", "a/b", "a\\b", "a b", "é", "a%2e", "x\0",
        ] {
            assert!(StreamPath::new("app", bad).is_err(), "{bad:?}");
            assert!(StreamPath::new(bad, "s").is_err(), "{bad:?}");
        }
        assert_eq!(
            StreamPath::new("app", &"a".repeat(129)),
            Err(PathError::TooLong { what: "stream" })
        );
    }
}
