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
type ExportStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<v1::ExportChunk, Status>> + Send>>;

/// A blocking writer whose bytes go out as export chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Result<v1::ExportChunk, Status>>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(v1::ExportChunk { data: buf.to_vec() }))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

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

    async fn import(
        &self,
        request: Request<tonic::Streaming<v1::ImportChunk>>,
    ) -> Result<Response<v1::ImportImagesResponse>, Status> {
        use tokio::io::AsyncWriteExt;
        let mut stream = request.into_inner();
        let path = self.images.upload_path();
        let mut name = None;
        let written = async {
            let mut file = tokio::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .await
                .map_err(|e| {
                    DaemonError::Image(rauha_image::ImageError::Io {
                        what: format!("cannot create {}", path.display()),
                        source: e,
                    })
                })?;
            while let Some(chunk) = stream.message().await? {
                if name.is_none() && !chunk.name.is_empty() {
                    name = Some(chunk.name);
                }
                file.write_all(&chunk.data).await.map_err(|e| {
                    DaemonError::Image(rauha_image::ImageError::Io {
                        what: format!("cannot write {}", path.display()),
                        source: e,
                    })
                })?;
            }
            file.flush().await.map_err(|e| {
                DaemonError::Image(rauha_image::ImageError::Io {
                    what: format!("cannot write {}", path.display()),
                    source: e,
                })
            })?;
            Ok::<(), Status>(())
        }
        .await;
        if let Err(e) = written {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let records = self.images.import(path, name).await?;
        let mut images = Vec::new();
        for r in &records {
            images.push(convert::image(r, &self.images.zones_using(&r.digest)?));
        }
        Ok(Response::new(v1::ImportImagesResponse { images }))
    }

    type ExportStream = ExportStream;

    async fn export(
        &self,
        request: Request<v1::ImageName>,
    ) -> Result<Response<ExportStream>, Status> {
        let image = self.images.find(&request.into_inner().image)?;
        let content = Arc::clone(&self.images.content);
        let (tx, rx) = mpsc::channel::<Result<v1::ExportChunk, Status>>(16);
        tokio::task::spawn_blocking(move || {
            let writer = ChannelWriter { tx: tx.clone() };
            let out = std::io::BufWriter::with_capacity(256 << 10, writer);
            if let Err(e) = rauha_image::archive::export(&content, &image, out) {
                let _ = tx.blocking_send(Err(Status::from(DaemonError::from(e))));
            }
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
