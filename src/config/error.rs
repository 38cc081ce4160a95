//! What a configuration error says: file, line, column, field, value, what is valid.

use crate::secret::SecretError;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{location}: {message}")]
    Parse { location: String, message: String },
    #[error("{location}: {field} = {value:?} is not valid: {expected}")]
    Invalid {
        location: String,
        field: String,
        value: String,
        expected: String,
    },
    #[error("{file}: {source}")]
    Secret { file: PathBuf, source: SecretError },
}
