//! `[database]`: where state is kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// Where streamd keeps its state: the SQLite database (unless `url`
    /// says otherwise) and a generated JWT secret (if none is given).
    pub data_dir: PathBuf,
    /// `postgres://user:pass@host/db` when several nodes share state;
    /// empty: SQLite at `{data_dir}/streamd.db`.
    pub url: String,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            data_dir: PathBuf::from("data"),
            url: String::new(),
        }
    }
}

impl DatabaseConfig {
    /// The database URL, SQLite in the data directory by default.
    pub fn resolved_url(&self) -> String {
        if self.url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("streamd.db").display()
            )
        } else {
            self.url.clone()
        }
    }
}

impl DatabaseConfig {
    /// A database URL without its password, for logs.
    pub fn redact(url: &str) -> String {
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                let creds = &url[scheme + 3..at];
                let user = creds.split(':').next().unwrap_or("");
                format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        }
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !self.url.is_empty()
            && !self.url.starts_with("postgres://")
            && !self.url.starts_with("postgresql://")
            && !self.url.starts_with("sqlite:")
        {
            return invalid(
                "database.url",
                "must be postgres://…, sqlite:… or empty (SQLite in data_dir)".into(),
            );
        }
        Ok(())
    }
}
