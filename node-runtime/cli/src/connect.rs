//! Reaching rauhad: `unix:///path` (the default socket) or `http://host:port`.

use anyhow::{anyhow, bail};
use rauha_api::v1;
use tonic::transport::{Channel, Endpoint, Uri};

pub const DEFAULT_ADDR: &str = "unix:///run/rauha/rauhad.sock";
const MAX_MESSAGE: usize = 64 << 20;

pub struct Clients {
    pub zones: v1::zones_client::ZonesClient<Channel>,
    pub processes: v1::processes_client::ProcessesClient<Channel>,
    pub sandbox: v1::sandbox_client::SandboxClient<Channel>,
    pub node: v1::node_client::NodeClient<Channel>,
}

pub async fn connect(addr: &str) -> anyhow::Result<Clients> {
    let unreachable = |e: &dyn std::fmt::Display| {
        anyhow!("cannot reach rauhad at {addr}: {e}; start rauhad or set RAUHA_ADDR")
    };
    let channel = if let Some(path) = addr.strip_prefix("unix://") {
        if !path.starts_with('/') {
            bail!("RAUHA_ADDR {addr:?} needs an absolute socket path, e.g. {DEFAULT_ADDR}");
        }
        let path = path.to_string();
        Endpoint::try_from("http://[::]:50051")
            .map_err(|e| unreachable(&e))?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(p).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| unreachable(&root_cause(&e)))?
    } else if addr.starts_with("http://") {
        Endpoint::from_shared(addr.to_string())
            .map_err(|e| unreachable(&e))?
            .connect()
            .await
            .map_err(|e| unreachable(&root_cause(&e)))?
    } else {
        bail!("RAUHA_ADDR {addr:?} is neither unix:///path nor http://host:port");
    };
    Ok(Clients {
        zones: v1::zones_client::ZonesClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        processes: v1::processes_client::ProcessesClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        sandbox: v1::sandbox_client::SandboxClient::new(channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE),
        node: v1::node_client::NodeClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
    })
}

/// The innermost cause of a transport error: "No such file or directory".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A daemon error as the one line it already is.
pub fn status(s: tonic::Status) -> anyhow::Error {
    anyhow!("{}", s.message().replace('\n', " "))
}
