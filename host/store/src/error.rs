//! The store's error type.

use crate::backend::BackendError;

/// Errors of the store. Opening errors say what is wrong and that nothing
/// was changed: a store that cannot be read is refused, never recreated.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The store's metadata is missing, unreadable or inconsistent.
    #[error("the store's metadata cannot be read: {0}; refusing to open it (nothing was changed)")]
    Metadata(String),
    /// The master key does not unwrap an environment's data key.
    #[error(
        "the master key does not decrypt the data key of environment `{environment}`: this is the wrong master key for this store, or the environment row is corrupt; refusing to open it (nothing was changed)"
    )]
    WrongMasterKey { environment: String },
    /// The master key given is not 32 bytes of base64.
    #[error("invalid master key: {0}")]
    InvalidMasterKey(String),
    /// The master key file cannot be read or created.
    #[error("master key file {path}: {cause}")]
    MasterKeyFile { path: String, cause: String },
    /// A stored value does not decode.
    #[error("corrupt {what}: {cause}")]
    Corrupt { what: String, cause: String },
    /// A sealed value does not decrypt with any of the environment's data keys.
    #[error(
        "cannot decrypt {what}: no data key of this environment opens it (tampered or corrupt)"
    )]
    Decrypt { what: String },
    /// A value cannot be encoded or encrypted.
    #[error("cannot encode {what}: {cause}")]
    Encode { what: String, cause: String },
    /// The caller passed something the store cannot hold.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A write the record rules refuse (a batchUpdate that would grow a
    /// record past its limit).
    #[error(transparent)]
    Record(#[from] sluice_runtime::records::RecordError),
}

impl StoreError {
    pub(crate) fn corrupt(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        StoreError::Corrupt {
            what: what.into(),
            cause: cause.to_string(),
        }
    }

    pub(crate) fn encode(what: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        StoreError::Encode {
            what: what.into(),
            cause: cause.to_string(),
        }
    }
}
