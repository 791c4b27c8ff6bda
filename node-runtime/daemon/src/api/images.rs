//! The Images service: pull (streamed progress), list, inspect, remove,
//! tag, prune.

use std::pin::Pin;
use std::sync::Arc;

use rauha_api::v1;
use rauha_api::v1::images_server;
use rauha_image::pull::{Auth, Progress};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::convert;
use crate::error::DaemonError;
use crate::images::Images;

pub struct ImagesService {
    pub images: Arc<Images>,
}

type PullStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::PullEvent, Status>> + Send>>;

fn layer_event(digest: String, state: &str, done: u64, total: u64) -> v1::PullEvent {
    v1::PullEvent {
        event: Some(v1::pull_event::Event::Layer(v1::LayerProgress {
            digest,
            state: state.into(),
            done,
            total,
        })),
    }
}

fn progress_event(p: Progress) -> v1::PullEvent {
    match p {
        Progress::Resolved { digest, layers } => v1::PullEvent {
            event: Some(v1::pull_event::Event::Resolved(v1::PullResolved {
                digest,
                layers: layers
                    .into_iter()
                    .map(|(digest, size)| v1::ImageLayer {
                        digest,
                        media_type: String::new(),
                        size,
                    })
                    .collect(),
            })),
        },
        Progress::Fetching {
            digest,
            done,
            total,
        } => layer_event(digest, "fetching", done, total),
        Progress::Stored { digest, cached } => {
            layer_event(digest, if cached { "cached" } else { "stored" }, 0, 0)
        }
        Progress::Unpacked { digest } => layer_event(digest, "unpacked", 0, 0),
    }
}

#[tonic::async_trait]
impl images_server::Images for ImagesService {
    type PullStream = PullStream;

    async fn pull(
        &self,
        request: Request<v1::PullImageRequest>,
    ) -> Result<Response<PullStream>, Status> {
        let req = request.into_inner();
        // Checked before the stream starts: a bad name is the call's error.
        rauha_image::ImageRef::parse(&req.reference).map_err(DaemonError::from)?;
        let auth = match (req.username.is_empty(), req.password.is_empty()) {
            (true, true) => Auth::Anonymous,
            (false, _) => Auth::Basic {
                username: req.username,
                password: req.password,
            },
            (true, false) => {
                return Err(DaemonError::invalid(
                    "username",
                    "is empty but a password was given; give both",
                )
                .into())
            }
        };
        let (tx, rx) = mpsc::channel(64);
        let images = Arc::clone(&self.images);
        // The pull goes on if the client goes away: what it fetched is
        // stored and recorded, for the next pull to find.
        tokio::spawn(async move {
            let progress_tx = tx.clone();
            let progress = move |p: Progress| {
                let _ = progress_tx.try_send(Ok(progress_event(p)));
            };
            let result = images.pull(&req.reference, &auth, &progress).await;
            let event = result.map(|record| {
                let zones = images.zones_using(&record.digest).unwrap_or_default();
                v1::PullEvent {
                    event: Some(v1::pull_event::Event::Done(convert::image(&record, &zones))),
                }
            });
            if let Err(e) = &event {
                tracing::warn!(image = %rauha_spec::message::one_line(&req.reference), "pull failed: {e}");
            }
            let _ = tx.send(event.map_err(Status::from)).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list(
        &self,
        _: Request<v1::ListImagesRequest>,
    ) -> Result<Response<v1::ListImagesResponse>, Status> {
        let images = self.images.list()?;
        Ok(Response::new(v1::ListImagesResponse {
            images: images
                .iter()
                .map(|(i, zones)| convert::image(i, zones))
                .collect(),
        }))
    }

    async fn inspect(
        &self,
        request: Request<v1::ImageName>,
    ) -> Result<Response<v1::Image>, Status> {
        let image = self.images.find(&request.into_inner().image)?;
        let zones = self.images.zones_using(&image.digest)?;
        Ok(Response::new(convert::image(&image, &zones)))
    }

    async fn remove(
        &self,
        request: Request<v1::RemoveImageRequest>,
    ) -> Result<Response<v1::RemoveImageResponse>, Status> {
        let req = request.into_inner();
        let (untagged, deleted) = self.images.remove(&req.image, req.force)?;
        Ok(Response::new(v1::RemoveImageResponse {
            untagged,
            deleted: deleted.unwrap_or_default(),
        }))
    }

    async fn tag(
        &self,
        request: Request<v1::TagImageRequest>,
    ) -> Result<Response<v1::Image>, Status> {
        let req = request.into_inner();
        let image = self.images.tag(&req.source, &req.target)?;
        let zones = self.images.zones_using(&image.digest)?;
        Ok(Response::new(convert::image(&image, &zones)))
    }

    async fn prune(
        &self,
        _: Request<v1::PruneImagesRequest>,
    ) -> Result<Response<v1::PruneImagesResponse>, Status> {
        let freed = self.images.prune().await?;
        Ok(Response::new(v1::PruneImagesResponse {
            freed_bytes: freed.bytes,
            blobs: freed.blobs,
            snapshots: freed.snapshots,
        }))
    }
}
