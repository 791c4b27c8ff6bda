//! Task events for containerd, in the envelope it decodes.

use super::*;

use containerd_shim::protos::shim::events::ForwardRequest;

/// Where the shim's events go: containerd's event service
/// (`RemotePublisher`), or a recorder in tests.
#[async_trait]
pub trait EventSink: Send + Sync {
    async fn forward(&self, req: ForwardRequest) -> Result<(), String>;
}

#[async_trait]
impl EventSink for RemotePublisher {
    async fn forward(&self, req: ForwardRequest) -> Result<(), String> {
        // `forward` queues the envelope on the publisher's retrying queue;
        // the context is not read.
        let ctx = TtrpcContext {
            fd: -1,
            mh: Default::default(),
            metadata: Default::default(),
            timeout_nano: 0,
        };
        Events::forward(self, &ctx, req)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The type URL containerd decodes an event by: its full protobuf name
/// (every task event is in package `containerd.events`).
pub(super) fn event_type_url<E: Message>() -> String {
    format!("containerd.events.{}", E::NAME)
}

impl Service {
    /// Publishes one event. The envelope is built here rather than by
    /// `RemotePublisher::publish`: that one serializes through
    /// `MessageDyn`, which makes rust-protobuf build the run-time
    /// descriptors of containerd's protos (with their comments) on the first
    /// event, about 300 KiB of heap kept for the pod's whole life.
    pub(super) async fn publish<E: Message>(&self, topic: &str, event: E) {
        let envelope = match event.write_to_bytes() {
            Ok(value) => {
                let mut any = Any::new();
                any.type_url = event_type_url::<E>();
                any.value = value;
                let mut envelope = containerd_shim::protos::api::Envelope::new();
                envelope.set_topic(topic.to_string());
                envelope.set_namespace(self.inner.namespace.clone());
                envelope.set_timestamp(convert::now());
                envelope.set_event(any);
                envelope
            }
            Err(e) => {
                log::warn!("cannot encode the {topic} event: {e}");
                return;
            }
        };
        let mut req = ForwardRequest::new();
        req.set_envelope(envelope);
        let publisher = loop {
            match self.inner.publisher.get() {
                Some(p) => break p,
                None => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        if let Err(e) = publisher.forward(req).await {
            log::warn!("cannot publish {topic}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use containerd_shim::protos::protobuf::MessageFull;

    use super::*;

    /// The hand-built type URLs are the ones rust-protobuf's reflection
    /// gives (which the shim avoids at run time for its memory).
    #[test]
    fn event_type_urls_are_the_full_names() {
        fn check<E: MessageFull>() {
            assert_eq!(event_type_url::<E>(), E::descriptor().full_name());
        }
        check::<TaskCreate>();
        check::<TaskStart>();
        check::<TaskExit>();
        check::<TaskOOM>();
        check::<TaskExecAdded>();
        check::<TaskExecStarted>();
        check::<TaskPaused>();
        check::<TaskResumed>();
        check::<TaskDelete>();
    }
}
