//! Image references, normalized as docker and containerd do:
//! `alpine` is `docker.io/library/alpine:latest`, `127.0.0.1:5000/bb:1`
//! stays on that registry.

use std::fmt;

use crate::ImageError;

/// The longest reference taken (docker's limit on a repository name is
/// 255; a tag 128, a digest 71 or so).
pub const MAX_REFERENCE: usize = 512;

/// A parsed image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    inner: oci_client::Reference,
}

impl ImageRef {
    pub fn parse(text: &str) -> Result<ImageRef, ImageError> {
        let bad = |why: &str| ImageError::BadReference {
            reference: rauha_quote(text),
            why: why.to_string(),
        };
        if text.is_empty() {
            return Err(bad(
                "is empty: name an image, e.g. alpine:3.20 or 127.0.0.1:5000/app:1",
            ));
        }
        if text.len() > MAX_REFERENCE {
            return Err(bad(&format!(
                "is {} bytes, over {MAX_REFERENCE}",
                text.len()
            )));
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("has a space or control character"));
        }
        let inner = oci_client::Reference::try_from(text).map_err(|e| {
            bad(&format!(
                "is not a valid reference ({e}): use [REGISTRY/]REPOSITORY[:TAG][@sha256:DIGEST]"
            ))
        })?;
        if inner.repository().bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(bad(
                "has upper-case letters in its repository name (repository names are lower-case)",
            ));
        }
        Ok(ImageRef { inner })
    }

    /// `registry/repository:tag` (and `@digest` when given): the name
    /// images are recorded under.
    pub fn canonical(&self) -> String {
        self.inner.whole()
    }

    pub fn registry(&self) -> &str {
        self.inner.resolve_registry()
    }

    /// The registry as written in the reference (`docker.io`, not the
    /// host it resolves to).
    pub fn registry_name(&self) -> &str {
        self.inner.registry()
    }

    pub fn repository(&self) -> &str {
        self.inner.repository()
    }

    pub fn tag(&self) -> Option<&str> {
        self.inner.tag()
    }

    pub fn digest(&self) -> Option<&str> {
        self.inner.digest()
    }

    /// The same repository at `digest` (through the same mirror).
    pub fn with_digest(&self, digest: &str) -> ImageRef {
        ImageRef {
            inner: self.inner.clone_with_digest(digest.to_string()),
        }
    }

    /// The same image, fetched from `mirror` (`host[:port]`); its name
    /// stays the original's.
    pub fn with_mirror(&self, mirror: &str) -> ImageRef {
        let mut inner = self.inner.clone();
        inner.set_mirror_registry(mirror.to_string());
        ImageRef { inner }
    }

    /// The host a pull reaches: the mirror's when one is set.
    pub fn host(&self) -> &str {
        self.inner.resolve_registry()
    }

    pub(crate) fn oci(&self) -> &oci_client::Reference {
        &self.inner
    }

    /// Whether the host a pull reaches is this machine's own (loopback),
    /// where plain HTTP is allowed without configuration.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        let host = match host.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical())
    }
}

/// A client's text in an error: quoted, one line, cut when long.
pub(crate) fn rauha_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        if out.len() > 120 {
            out.push_str(&format!("...\" ({} bytes)", text.len()));
            return out;
        }
        out.extend(c.escape_debug());
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_are_docker_hubs() {
        let r = ImageRef::parse("alpine").expect("valid");
        assert_eq!(r.canonical(), "docker.io/library/alpine:latest");
        assert_eq!(r.registry(), "index.docker.io");
        assert!(!r.is_loopback());
        let r = ImageRef::parse("127.0.0.1:5000/bb:1").expect("valid");
        assert_eq!(r.canonical(), "127.0.0.1:5000/bb:1");
        assert_eq!(r.repository(), "bb");
        assert_eq!(r.tag(), Some("1"));
        assert!(r.is_loopback());
        assert!(ImageRef::parse("localhost:5000/a/b")
            .expect("valid")
            .is_loopback());
        assert!(!ImageRef::parse("registry.example:5000/a")
            .expect("valid")
            .is_loopback());
    }

    #[test]
    fn digests_are_kept_and_replaced() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("quay.io/x/y@{d}")).expect("valid");
        assert_eq!(r.digest(), Some(d.as_str()));
        let e = format!("sha256:{}", "b".repeat(64));
        assert_eq!(r.with_digest(&e).canonical(), format!("quay.io/x/y@{e}"));
        let m = r.with_mirror("127.0.0.1:5000");
        assert_eq!(m.host(), "127.0.0.1:5000");
        assert!(m.is_loopback());
        assert_eq!(m.canonical(), r.canonical());
        assert_eq!(m.with_digest(&e).host(), "127.0.0.1:5000");
    }

    #[test]
    fn bad_references_are_one_line_naming_the_form() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "a\nb",
            "x:",
            &"a".repeat(600),
            "a@sha256:zz",
        ] {
            let e = ImageRef::parse(bad).expect_err(bad).to_string();
            assert!(!e.contains('\n') && e.len() < 300, "{e}");
            assert!(e.starts_with("image reference "), "{e}");
        }
    }
}
