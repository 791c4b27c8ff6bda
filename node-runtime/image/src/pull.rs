//! Pulling an image from an OCI distribution registry into the store.
//!
//! The manifest (through an index when the reference names one, choosing
//! the node's platform), the config and the layers are each fetched into
//! an ingest file and verified against their digest before they are
//! stored; layers are fetched three at a time, and a layer already stored
//! (by an earlier pull of any image, or by a pull that was interrupted) is
//! not fetched again. Then each layer is unpacked once into its snapshot.
//! Credentials are used for this pull only: never stored, never logged.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::Client;

use crate::config::RunConfig;
use crate::error::one_line;
use crate::manifest::{self, Compression, Fetched};
use crate::platform::{self, Platform};
use crate::record::{ImageRecord, LayerRecord};
use crate::store::{self, Store};
use crate::unpack::OverlayFs;
use crate::{ImageError, ImageRef};

/// Layers fetched at once.
pub const CONCURRENT_LAYERS: usize = 3;

/// Credentials for one pull.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Anonymous => f.write_str("Anonymous"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
        }
    }
}

/// How rauhad reaches registries.
#[derive(Debug, Clone, Default)]
pub struct Registries {
    /// Registries (`host[:port]`) reached over plain HTTP; loopback ones
    /// always are.
    pub insecure: Vec<String>,
    /// PEM certificates trusted besides the system's.
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// `(registry, mirror)`: pulls of the registry's images try its
    /// mirrors first, in order, then the registry itself (containerd's
    /// `hosts.toml` model). Digests are verified whoever serves them.
    pub mirrors: Vec<(String, String)>,
}

/// What a pull reports as it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The manifest is known: the image's digest and its layers' sizes.
    Resolved {
        digest: String,
        layers: Vec<(String, u64)>,
    },
    /// Bytes of a layer fetched so far.
    Fetching {
        digest: String,
        done: u64,
        total: u64,
    },
    /// A layer is stored; `cached` when it was already.
    Stored { digest: String, cached: bool },
    /// A layer is unpacked.
    Unpacked { digest: String },
}

pub type ProgressFn = dyn Fn(Progress) + Send + Sync;

pub struct Puller {
    registries: Registries,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Puller {
    pub fn new(registries: Registries) -> Puller {
        // reqwest is built without a default TLS provider: ring, as the
        // rest of rauha's TLS (kube-rs) uses.
        #[allow(deprecated)] // ring has no post-quantum key exchange; kube-rs's choice too
        let _ = rustls::crypto::ring::default_provider().install_default();
        Puller { registries }
    }

    /// Whether the host `reference` reaches is spoken to over plain HTTP.
    pub fn is_insecure(&self, reference: &ImageRef) -> bool {
        reference.is_loopback()
            || self
                .registries
                .insecure
                .iter()
                .any(|r| r == reference.host())
    }

    /// Where a pull of `reference` looks, in order: its mirrors, then its
    /// registry.
    pub fn sources(&self, reference: &ImageRef) -> Vec<ImageRef> {
        let registry = reference.registry_name();
        let docker_hub =
            |r: &str| matches!(r, "docker.io" | "index.docker.io" | "registry-1.docker.io");
        let mut out: Vec<ImageRef> = self
            .registries
            .mirrors
            .iter()
            .filter(|(r, _)| r == registry || (docker_hub(r) && docker_hub(registry)))
            .map(|(_, m)| reference.with_mirror(m))
            .collect();
        out.push(reference.clone());
        out
    }

    fn client(&self, reference: &ImageRef) -> Client {
        Client::new(ClientConfig {
            protocol: if self.is_insecure(reference) {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            extra_root_certificates: self
                .registries
                .extra_ca_pem
                .iter()
                .map(|pem| oci_client::client::Certificate {
                    encoding: oci_client::client::CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(15)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("rauha/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        })
    }

    /// Pulls `reference` for `platform` into `store`, from its first
    /// mirror that has it, else its registry; the record to keep.
    pub async fn pull(
        &self,
        store: Arc<Store>,
        reference: &ImageRef,
        auth: &Auth,
        platform: &Platform,
        progress: &ProgressFn,
    ) -> Result<ImageRecord, ImageError> {
        let mut sources = self.sources(reference);
        let upstream = sources.pop().unwrap_or_else(|| reference.clone());
        for source in &sources {
            match self
                .pull_from(Arc::clone(&store), source, auth, platform, progress)
                .await
            {
                // A mirror that cannot serve it: the next source. Content
                // that fails verification is an error wherever it came from.
                Err(
                    e @ (ImageError::Registry { .. }
                    | ImageError::NotInRegistry { .. }
                    | ImageError::Unauthorized { .. }),
                ) => {
                    tracing::warn!(image = %reference, mirror = source.host(), "mirror failed, trying the next source: {e}");
                }
                other => return other,
            }
        }
        self.pull_from(store, &upstream, auth, platform, progress)
            .await
    }

    async fn pull_from(
        &self,
        store: Arc<Store>,
        reference: &ImageRef,
        auth: &Auth,
        platform: &Platform,
        progress: &ProgressFn,
    ) -> Result<ImageRecord, ImageError> {
        let client = self.client(reference);
        let oauth = match auth {
            Auth::Anonymous => RegistryAuth::Anonymous,
            Auth::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
        };
        let err = |e| registry_error(e, reference);
        let name = reference.canonical();
        let (bytes, _) = client
            .pull_manifest_raw(reference.oci(), &oauth, manifest::ACCEPTED)
            .await
            .map_err(err)?;
        let mut digest = store::sha256(&bytes);
        if let Some(expected) = reference.digest() {
            if expected != digest {
                return Err(ImageError::DigestMismatch {
                    what: format!("manifest of {name}"),
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
        }
        let (manifest_bytes, index) =
            match manifest::decode(&bytes, &format!("manifest of {name}"))? {
                Fetched::Manifest(_) => (bytes, None),
                Fetched::Index(index) => {
                    let chosen = platform::choose(&index, platform, &name)?;
                    let chosen = chosen.digest().to_string();
                    let (m_bytes, _) = client
                        .pull_manifest_raw(
                            reference.with_digest(&chosen).oci(),
                            &oauth,
                            manifest::ACCEPTED,
                        )
                        .await
                        .map_err(err)?;
                    let actual = store::sha256(&m_bytes);
                    if actual != chosen {
                        return Err(ImageError::DigestMismatch {
                            what: format!("manifest of {name} for {platform}"),
                            expected: chosen,
                            actual,
                        });
                    }
                    let index_digest = std::mem::replace(&mut digest, chosen);
                    store.put_blob(&index_digest, &bytes, &format!("index of {name}"))?;
                    (m_bytes, Some(index_digest))
                }
            };
        let Fetched::Manifest(m) =
            manifest::decode(&manifest_bytes, &format!("manifest {digest} of {name}"))?
        else {
            return Err(ImageError::format(
                format!("manifest {digest} of {name}"),
                "is an index inside an index (not an image)",
            ));
        };
        store.put_blob(&digest, &manifest_bytes, &format!("manifest of {name}"))?;

        let layers: Vec<LayerRecord> = m
            .layers()
            .iter()
            .map(|l| LayerRecord {
                digest: l.digest().to_string(),
                media_type: l.media_type().to_string(),
                size: l.size(),
            })
            .collect();
        for l in &layers {
            store::digest_hex(&l.digest)?;
        }
        progress(Progress::Resolved {
            digest: digest.clone(),
            layers: layers.iter().map(|l| (l.digest.clone(), l.size)).collect(),
        });

        let config = m.config();
        let config_digest = config.digest().to_string();
        let config_record = Blob {
            digest: config_digest.clone(),
            media_type: config.media_type().to_string(),
            size: config.size(),
        };
        fetch(
            &client,
            reference,
            &store,
            config_record,
            &format!("config of {name}"),
            None,
        )
        .await?;
        let config_bytes = store.read_blob(&config_digest)?;
        let run_config = RunConfig::decode(&config_bytes, &format!("config of {name}"))?;
        if run_config.os != platform.os {
            return Err(ImageError::NoPlatform {
                reference: name,
                platform: platform.to_string(),
                available: format!("{}/{}", run_config.os, run_config.architecture),
            });
        }

        let what = format!("layer of {name}");
        let mut fetches = Vec::new();
        for l in &layers {
            let blob = Blob {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size: l.size,
            };
            fetches.push(fetch(
                &client,
                reference,
                &store,
                blob,
                &what,
                Some(progress),
            ));
        }
        futures::stream::iter(fetches)
            .buffer_unordered(CONCURRENT_LAYERS)
            .try_collect::<Vec<()>>()
            .await?;

        for l in &layers {
            let compression = Compression::of(&l.media_type)
                .map_err(|e| ImageError::format(format!("layer {}", l.digest), e))?;
            let (s, digest) = (store.clone(), l.digest.clone());
            tokio::task::spawn_blocking(move || s.unpack(&digest, compression, &OverlayFs))
                .await
                .map_err(|e| ImageError::format("unpacking", e))??;
            progress(Progress::Unpacked {
                digest: l.digest.clone(),
            });
        }

        let size = manifest_bytes.len() as u64
            + config_bytes.len() as u64
            + layers.iter().map(|l| l.size).sum::<u64>();
        Ok(ImageRecord {
            name,
            digest,
            index_digest: index,
            config_digest,
            platform: match &run_config.architecture {
                a if a.is_empty() => platform.to_string(),
                a => format!("{}/{a}", run_config.os),
            },
            config: run_config,
            layers,
            size,
            created_ms: now_ms(),
        })
    }
}

struct Blob {
    digest: String,
    media_type: String,
    size: u64,
}

/// Fetches one blob into the store unless it is there.
async fn fetch(
    client: &Client,
    reference: &ImageRef,
    store: &Store,
    blob: Blob,
    what: &str,
    progress: Option<&ProgressFn>,
) -> Result<(), ImageError> {
    let report = |p| {
        if let Some(f) = progress {
            f(p)
        }
    };
    if store.has_blob(&blob.digest) {
        report(Progress::Stored {
            digest: blob.digest.clone(),
            cached: true,
        });
        return Ok(());
    }
    let descriptor = OciDescriptor {
        media_type: blob.media_type.clone(),
        digest: blob.digest.clone(),
        size: blob.size as i64,
        ..OciDescriptor::default()
    };
    let mut stream = client
        .pull_blob_stream(reference.oci(), &descriptor)
        .await
        .map_err(|e| registry_error(e, reference))?;
    let mut ingest = store.ingest(&blob.digest, what)?;
    let mut reported = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| stream_error(e, reference, what))?;
        ingest.write(&chunk)?;
        if ingest.written() > blob.size {
            return Err(ImageError::format(
                format!("{what} {}", blob.digest),
                format!("the registry sent more than its {} bytes", blob.size),
            ));
        }
        if ingest.written() - reported >= 1 << 20 {
            reported = ingest.written();
            report(Progress::Fetching {
                digest: blob.digest.clone(),
                done: reported,
                total: blob.size,
            });
        }
    }
    ingest.commit()?;
    report(Progress::Stored {
        digest: blob.digest.clone(),
        cached: false,
    });
    Ok(())
}

/// A blob stream's error: the digest check at its end, or the connection.
fn stream_error(e: std::io::Error, reference: &ImageRef, what: &str) -> ImageError {
    use oci_client::errors::DigestError;
    let inner = e.get_ref();
    if let Some(DigestError::VerificationError { expected, actual }) =
        inner.and_then(|i| i.downcast_ref::<DigestError>())
    {
        return ImageError::DigestMismatch {
            what: what.to_string(),
            expected: expected.clone(),
            actual: actual.clone(),
        };
    }
    ImageError::Registry {
        registry: reference.host().to_string(),
        message: one_line(&format!("{what}: {}", chain(&e))),
    }
}

/// One line for what the registry (or the way to it) said.
fn registry_error(e: OciDistributionError, reference: &ImageRef) -> ImageError {
    let registry = reference.host().to_string();
    let unauthorized = || ImageError::Unauthorized {
        registry: registry.clone(),
        reference: reference.canonical(),
    };
    let not_found = || ImageError::NotInRegistry {
        registry: registry.clone(),
        reference: reference.canonical(),
    };
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => unauthorized(),
        OciDistributionError::ImageManifestNotFoundError(_) => not_found(),
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
            {
                unauthorized()
            } else if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown
                )
            }) {
                not_found()
            } else {
                ImageError::Registry {
                    registry,
                    message: envelope
                        .errors
                        .iter()
                        .map(|e| format!("{:?}: {}", e.code, e.message))
                        .collect::<Vec<_>>()
                        .join("; "),
                }
            }
        }
        OciDistributionError::ServerError { code: 401, .. } => unauthorized(),
        OciDistributionError::ServerError { code: 404, .. } => not_found(),
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => ImageError::DigestMismatch {
            what: format!("blob of {}", reference.canonical()),
            expected,
            actual,
        },
        OciDistributionError::RequestError(e) => ImageError::Registry {
            registry,
            message: one_line(&format!(
                "{} (is the registry up, and does it speak https? name a plain-http registry with rauhad --insecure-registry)",
                chain(&e)
            )),
        },
        other => ImageError::Registry {
            registry,
            message: one_line(&other.to_string()),
        },
    }
}

/// An error with its causes (the useful part is at the bottom:
/// "connection refused", "invalid peer certificate").
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_show_in_debug_output() {
        let a = Auth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn loopback_and_named_registries_are_plain_http() {
        let p = Puller::new(Registries {
            insecure: vec!["reg.lan:5000".into(), "mirror.lan".into()],
            mirrors: vec![
                ("docker.io".into(), "mirror.lan".into()),
                ("quay.io".into(), "127.0.0.1:5001".into()),
            ],
            ..Registries::default()
        });
        let hosts = |s: &str| -> Vec<String> {
            p.sources(&ImageRef::parse(s).expect("valid"))
                .iter()
                .map(|r| r.host().to_string())
                .collect()
        };
        assert_eq!(hosts("alpine"), ["mirror.lan", "index.docker.io"]);
        assert_eq!(hosts("quay.io/a/b"), ["127.0.0.1:5001", "quay.io"]);
        assert_eq!(hosts("ghcr.io/a/b"), ["ghcr.io"]);
        assert!(p.is_insecure(
            &ImageRef::parse("alpine")
                .expect("valid")
                .with_mirror("mirror.lan")
        ));
        let r = |s| ImageRef::parse(s).expect("valid");
        assert!(p.is_insecure(&r("127.0.0.1:5000/a")));
        assert!(p.is_insecure(&r("reg.lan:5000/a")));
        assert!(!p.is_insecure(&r("reg.lan/a")));
        assert!(!p.is_insecure(&r("alpine")));
    }
}
