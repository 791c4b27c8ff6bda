//! Image errors: each one line that says what went wrong and, where it
//! helps, what to do.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image reference {reference}: {why}")]
    BadReference { reference: String, why: String },
    #[error("{reference} has no image for {platform} (it has: {available})")]
    NoPlatform {
        reference: String,
        platform: String,
        available: String,
    },
    #[error("registry {registry} refused the credentials for {reference}: check the user name and password (rauha image pull --username USER --password-stdin)")]
    Unauthorized { registry: String, reference: String },
    #[error("{reference}: not found in registry {registry}: check the name and tag")]
    NotInRegistry { registry: String, reference: String },
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("{what} {expected} failed verification: the registry sent content whose digest is {actual}; nothing was stored")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{what}: {message}")]
    Format { what: String, message: String },
    #[error("layer {layer}: {message}")]
    Unpack { layer: String, message: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

/// A message that may carry bytes from outside (a registry's, a layer's):
/// control characters escaped, cut at 400 bytes.
pub(crate) fn one_line(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if out.len() >= 400 {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

impl ImageError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
        let what = what.into();
        move |source| ImageError::Io { what, source }
    }

    pub(crate) fn format(what: impl Into<String>, message: impl ToString) -> ImageError {
        ImageError::Format {
            what: one_line(&what.into()),
            message: one_line(&message.to_string()),
        }
    }
}
