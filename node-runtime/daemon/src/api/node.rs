use std::pin::Pin;
use std::sync::Arc;

use rauha_api::v1;
use rauha_api::v1::node_server::Node;
use rauha_spec::enforcement::{Enforcement, EnforcementMode};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::error::DaemonError;
use crate::zone::ZoneRegistry;

pub struct NodeService {
    pub registry: Arc<ZoneRegistry>,
    pub root: String,
}

type WatchStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Node for NodeService {
    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let zone = request.into_inner().zone;
        let filter = if zone.is_empty() {
            None
        } else {
            Some(self.registry.find_zone(&zone)?.id)
        };
        let mut events = self.registry.events.subscribe();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            loop {
                match events.recv().await {
                    Ok(e) => {
                        if filter.is_some() && e.zone_id != filter {
                            continue;
                        }
                        if tx.send(Ok(v1::Event::from(&e))).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(DaemonError::WatchLagged { dropped: n }.into()))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn info(
        &self,
        _: Request<v1::NodeInfoRequest>,
    ) -> Result<Response<v1::NodeInfo>, Status> {
        let layers = self.registry.backends.default_backend().node_layers();
        let enforcement = Enforcement::new(layers, &rauha_spec::Policy::default());
        Ok(Response::new(v1::NodeInfo {
            version: env!("CARGO_PKG_VERSION").to_string(),
            enforcement_mode: match self.registry.mode {
                EnforcementMode::Required => "required".into(),
                EnforcementMode::Preferred => "preferred".into(),
            },
            enforcement: Some((&enforcement).into()),
            cgroup_layout: self
                .registry
                .backends
                .default_backend()
                .layout()
                .to_string(),
            root: self.root.clone(),
        }))
    }
}
