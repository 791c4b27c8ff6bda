//! The shim's connection to rauhad: one lazily opened channel over the
//! node's Unix socket, re-opened after rauhad restarts.

use std::path::PathBuf;

use rauha_api::v1::processes_client::ProcessesClient;
use rauha_api::v1::zones_client::ZonesClient;
use tokio::sync::Mutex;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where rauhad listens unless `RAUHA_ADDR` says otherwise.
pub const DEFAULT_ADDR: &str = "unix:///run/rauha/rauhad.sock";

pub struct Rauhad {
    addr: String,
    channel: Mutex<Option<Channel>>,
}

impl Rauhad {
    pub fn from_env() -> Rauhad {
        Rauhad::at(std::env::var("RAUHA_ADDR").unwrap_or_else(|_| DEFAULT_ADDR.to_string()))
    }

    /// rauhad at `addr` (`unix:///path/to/rauhad.sock`).
    pub fn at(addr: String) -> Rauhad {
        Rauhad {
            addr,
            channel: Mutex::new(None),
        }
    }

    fn socket(&self) -> Result<PathBuf, tonic::Status> {
        self.addr
            .strip_prefix("unix://")
            .filter(|p| p.starts_with('/'))
            .map(PathBuf::from)
            .ok_or_else(|| {
                tonic::Status::invalid_argument(format!(
                    "RAUHA_ADDR {:?} is not unix:///path/to/rauhad.sock; fix the shim's environment in containerd's config",
                    self.addr
                ))
            })
    }

    async fn channel(&self) -> Result<Channel, tonic::Status> {
        let mut slot = self.channel.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let path = self.socket()?;
        let channel = Endpoint::try_from("http://[::]:50051")
            .map_err(|e| tonic::Status::internal(e.to_string()))?
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(p).await?,
                    ))
                }
            }))
            .await
            .map_err(|e| {
                tonic::Status::unavailable(format!(
                    "rauhad is not reachable at {}: {e}; start rauhad (the pod's state is kept and found again)",
                    self.addr
                ))
            })?;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Forgets the channel after a transport error, so that the next call
    /// reconnects (rauhad may have restarted).
    pub async fn reset(&self) {
        *self.channel.lock().await = None;
    }

    pub async fn zones(&self) -> Result<ZonesClient<Channel>, tonic::Status> {
        Ok(ZonesClient::new(self.channel().await?))
    }

    pub async fn processes(&self) -> Result<ProcessesClient<Channel>, tonic::Status> {
        Ok(ProcessesClient::new(self.channel().await?))
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }
}
