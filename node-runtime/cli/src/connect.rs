//! Reaching rauhad: parsing `--addr` / `RAUHA_ADDR` and opening one channel
//! that every client of a command shares.
//!
//! The channel connects eagerly, so an unreachable daemon is reported once,
//! before any request, as `cannot reach rauhad at <addr>: <cause>`.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use rauha_api::v1::images_client::ImagesClient;
use rauha_api::v1::node_client::NodeClient;
use rauha_api::v1::processes_client::ProcessesClient;
use rauha_api::v1::sandbox_client::SandboxClient;
use rauha_api::v1::secrets_client::SecretsClient;
use rauha_api::v1::zones_client::ZonesClient;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where rauhad listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "unix:///run/rauha/rauhad.sock";

/// The largest message sent or received: task results carry captured output.
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A parsed daemon address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum DaemonAddr {
    Unix(PathBuf),
    Http(String),
}

impl DaemonAddr {
    fn parse(addr: &str) -> anyhow::Result<DaemonAddr> {
        if let Some(path) = addr.strip_prefix("unix://") {
            if !path.starts_with('/') {
                bail!(
                    "address {addr:?} needs an absolute socket path; use unix:///path/to/rauhad.sock"
                );
            }
            Ok(DaemonAddr::Unix(PathBuf::from(path)))
        } else if addr.starts_with("http://") {
            Ok(DaemonAddr::Http(addr.to_string()))
        } else {
            bail!(
                "address {addr:?} is neither unix:///path nor http://host:port; fix --addr or RAUHA_ADDR"
            )
        }
    }
}

/// An open channel to rauhad, shared by the clients of one command.
pub struct Connection {
    channel: Channel,
}

impl Connection {
    /// Connects to rauhad at `addr`.
    pub async fn open(addr: &str) -> anyhow::Result<Connection> {
        let unreachable = |cause: String| {
            anyhow!("cannot reach rauhad at {addr}: {cause}; start rauhad or set RAUHA_ADDR")
        };
        let channel = match DaemonAddr::parse(addr)? {
            DaemonAddr::Unix(path) => {
                // The URI is a placeholder: the connector below ignores it.
                Endpoint::from_static("http://[::]:50051")
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await
                    .map_err(|e| unreachable(innermost_cause(&e)))?
            }
            DaemonAddr::Http(uri) => Endpoint::from_shared(uri)
                .map_err(|e| {
                    anyhow!("address {addr:?} is not a valid URI ({e}); fix --addr or RAUHA_ADDR")
                })?
                .connect_timeout(std::time::Duration::from_secs(10))
                .connect()
                .await
                .map_err(|e| unreachable(innermost_cause(&e)))?,
        };
        Ok(Connection { channel })
    }

    pub fn zones(&self) -> ZonesClient<Channel> {
        ZonesClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn processes(&self) -> ProcessesClient<Channel> {
        ProcessesClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn sandbox(&self) -> SandboxClient<Channel> {
        SandboxClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    pub fn secrets(&self) -> SecretsClient<Channel> {
        SecretsClient::new(self.channel.clone())
    }

    pub fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }
}

/// The deepest error in a chain: for a failed connect, the I/O error
/// ("No such file or directory (os error 2)") under tonic's "transport error".
fn innermost_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_unix_and_http_addresses() {
        assert_eq!(
            DaemonAddr::parse(DEFAULT_ADDR).expect("default"),
            DaemonAddr::Unix(PathBuf::from("/run/rauha/rauhad.sock"))
        );
        assert_eq!(
            DaemonAddr::parse("http://127.0.0.1:7443").expect("http"),
            DaemonAddr::Http("http://127.0.0.1:7443".into())
        );
    }

    #[test]
    fn rejects_relative_sockets_and_other_schemes() {
        let relative = DaemonAddr::parse("unix://rauhad.sock").expect_err("relative");
        assert!(relative.to_string().contains("absolute socket path"));
        let other = DaemonAddr::parse("tcp://host:1").expect_err("scheme");
        assert!(other
            .to_string()
            .contains("neither unix:///path nor http://host:port"));
    }

    #[tokio::test]
    async fn a_missing_socket_is_one_line_naming_the_address_and_the_fix() {
        let addr = "unix:///nonexistent/rauha-cli-test.sock";
        let err = Connection::open(addr).await.err().expect("no daemon there");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot reach rauhad at {addr}: ")),
            "{text}"
        );
        assert!(text.contains("No such file or directory"), "{text}");
        assert!(text.ends_with("; start rauhad or set RAUHA_ADDR"), "{text}");
        assert!(!text.contains('\n'));
    }
}
