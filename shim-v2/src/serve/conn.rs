//! One containerd connection: ttrpc frames read and written by the shim
//! itself (the Task API is unary), each request deposited with the keeper
//! before it is taken off the socket and marked done once answered.

use super::*;

pub(super) const HEADER: usize = 10;
pub(super) const MAX_MESSAGE: usize = 4 << 20;
pub(super) const TYPE_REQUEST: u8 = 1;
pub(super) const TYPE_RESPONSE: u8 = 2;

pub(super) type Services = Arc<HashMap<String, TtrpcService>>;

/// One containerd connection (cloned for each request it answers).
#[derive(Clone)]
pub(super) struct Conn {
    n: u32,
    stream: Arc<UnixStream>,
    write: Arc<tokio::sync::Mutex<()>>,
    keeper: Arc<Keeper>,
    services: Services,
    busy: Arc<AtomicUsize>,
}

impl Conn {
    pub(super) fn new(
        n: u32,
        stream: UnixStream,
        keeper: &Arc<Keeper>,
        services: &Services,
        busy: &Arc<AtomicUsize>,
    ) -> Conn {
        Conn {
            n,
            stream: Arc::new(stream),
            write: Arc::default(),
            keeper: Arc::clone(keeper),
            services: Arc::clone(services),
            busy: Arc::clone(busy),
        }
    }

    /// Answers `replay` (requests a dead shim left unanswered), then serves
    /// the connection until containerd closes it.
    pub(super) async fn run(self, replay: Vec<Vec<u8>>) {
        // Kept requests may still be in the socket too (the shim died
        // between keeping and taking them): containerd's stream ids only
        // grow, so a request up to the last kept one is a copy.
        let mut seen = 0u32;
        for frame in replay {
            // Kept again at start-up (`serve`), in case this shim dies too.
            if let Some(h) = header(&frame) {
                seen = seen.max(h.stream_id);
                tokio::spawn(self.clone().answer(frame, true));
            }
        }
        loop {
            let frame = match self.read_frame(seen).await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("connection {}: {e}", self.n);
                    break;
                }
            };
            let Some(h) = header(&frame) else { continue };
            if h.type_ != TYPE_REQUEST || h.stream_id <= seen {
                continue;
            }
            seen = h.stream_id;
            tokio::spawn(self.clone().answer(frame, false));
        }
        self.keeper.closed(self.n);
    }

    /// The next frame. A request that fits is first peeked and kept, then
    /// taken off the socket.
    pub(super) async fn read_frame(&self, seen: u32) -> std::io::Result<Option<Vec<u8>>> {
        let mut head = [0u8; HEADER];
        if self.peek(&mut head).await? < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_MESSAGE {
            return Err(std::io::Error::other(format!(
                "a frame of {len} bytes is over ttrpc's {MAX_MESSAGE}"
            )));
        }
        let mut frame = vec![0u8; HEADER + len];
        if frame.len() <= keeper::MAX_KEPT_FRAME {
            if self.peek(&mut frame).await? < frame.len() {
                return Ok(None);
            }
            let stream_id = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
            // A copy of a replayed request is skipped, not kept again.
            if head[8] == TYPE_REQUEST && stream_id > seen {
                self.keeper.pending(self.n, stream_id, &frame);
            }
            let mut sink = vec![0u8; frame.len()];
            self.read_exact(&mut sink).await?;
        } else {
            self.read_exact(&mut frame).await?;
        }
        Ok(Some(frame))
    }

    /// Peeks until `buf` is full or the connection ends; returns how much
    /// was there.
    pub(super) async fn peek(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        let fd = self.stream.as_raw_fd();
        loop {
            self.stream.readable().await?;
            let r = self.stream.try_io(Interest::READABLE, || {
                // SAFETY: recv into a buffer we own, without taking data.
                let n =
                    unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_PEEK) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match r {
                Ok(0) => return Ok(0),
                Ok(n) if n == buf.len() => return Ok(n),
                // Part of a frame: the rest is on its way.
                Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    pub(super) async fn read_exact(&self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut off = 0;
        while off < buf.len() {
            self.stream.readable().await?;
            match self.stream.try_read(&mut buf[off..]) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) async fn write_all(&self, buf: &[u8]) -> std::io::Result<()> {
        let _one = self.write.lock().await;
        let mut off = 0;
        while off < buf.len() {
            self.stream.writable().await?;
            match self.stream.try_write(&buf[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Answers one request and marks it answered.
    pub(super) async fn answer(self, frame: Vec<u8>, replay: bool) {
        self.busy.fetch_add(1, Ordering::SeqCst);
        if let Some(h) = header(&frame) {
            let resp = call(
                &self.services,
                self.stream.as_raw_fd(),
                h,
                &frame[HEADER..],
                replay,
            )
            .await;
            match resp.encode() {
                Ok(payload) => {
                    let mut out = Vec::with_capacity(HEADER + payload.len());
                    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
                    out.extend_from_slice(&h.stream_id.to_be_bytes());
                    out.push(TYPE_RESPONSE);
                    out.push(0);
                    out.extend_from_slice(&payload);
                    match self.write_all(&out).await {
                        Ok(()) => self.keeper.done(self.n, h.stream_id),
                        Err(e) => log::warn!("connection {}: cannot answer: {e}", self.n),
                    }
                }
                Err(e) => log::warn!("cannot encode a response: {e}"),
            }
        }
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

pub(super) fn header(frame: &[u8]) -> Option<MessageHeader> {
    (frame.len() >= HEADER).then(|| MessageHeader {
        length: u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]),
        stream_id: u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        type_: frame[8],
        flags: frame[9],
    })
}

/// Calls the method a request names, as ttrpc's server does (its timeout
/// included), and always gives a response.
pub(super) async fn call(
    services: &Services,
    fd: RawFd,
    h: MessageHeader,
    payload: &[u8],
    replay: bool,
) -> Response {
    let fail = |code: Code, msg: String| {
        let mut r = Response::new();
        r.set_status(get_status(code, msg));
        r
    };
    let req = match Request::decode(payload) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                Code::INVALID_ARGUMENT,
                format!("a request that is not ttrpc: {e}"),
            )
        }
    };
    let Some(method) = services
        .get(&req.service)
        .and_then(|s| s.methods.get(&req.method))
    else {
        return fail(
            Code::UNIMPLEMENTED,
            format!("{}/{} is not served", req.service, req.method),
        );
    };
    let timeout_nano = req.timeout_nano;
    let mut metadata = context::from_pb(&req.metadata);
    if replay {
        metadata.insert(REPLAY_KEY.to_string(), vec!["1".to_string()]);
    } else {
        // Only the shim says a request is replayed.
        metadata.remove(REPLAY_KEY);
    }
    let ctx = TtrpcContext {
        fd,
        mh: h,
        metadata,
        timeout_nano,
    };
    let r = if timeout_nano > 0 {
        match tokio::time::timeout(
            Duration::from_nanos(timeout_nano as u64),
            method.handler(ctx, req),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => return fail(Code::DEADLINE_EXCEEDED, "timeout".into()),
        }
    } else {
        method.handler(ctx, req).await
    };
    r.unwrap_or_else(|e| fail(Code::UNKNOWN, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_reads_ttrpc_big_endian() {
        let f = [0, 0, 0, 5, 0, 0, 0, 3, 1, 0, 9, 9, 9, 9, 9];
        let h = header(&f).unwrap();
        assert_eq!((h.length, h.stream_id, h.type_, h.flags), (5, 3, 1, 0));
        assert!(header(&f[..9]).is_none());
    }

    /// Answers which way it was called.
    struct Echo;

    #[async_trait::async_trait]
    impl containerd_shim::protos::ttrpc::asynchronous::MethodHandler for Echo {
        async fn handler(
            &self,
            ctx: TtrpcContext,
            _req: Request,
        ) -> containerd_shim::protos::ttrpc::Result<Response> {
            let mut r = Response::new();
            r.payload = if ctx.metadata.contains_key(REPLAY_KEY) {
                b"replay".to_vec()
            } else {
                b"fresh".to_vec()
            };
            Ok(r)
        }
    }

    #[tokio::test]
    async fn only_the_shim_marks_a_request_replayed() {
        let mut methods: HashMap<
            String,
            Box<dyn containerd_shim::protos::ttrpc::asynchronous::MethodHandler + Send + Sync>,
        > = HashMap::new();
        methods.insert("Echo".into(), Box::new(Echo));
        let services: Services = Arc::new(HashMap::from([(
            "t.S".to_string(),
            TtrpcService {
                methods,
                streams: HashMap::new(),
            },
        )]));
        let mut req = Request::new();
        req.service = "t.S".into();
        req.method = "Echo".into();
        // A client that claims the mark gets no replay treatment.
        let mut kv = containerd_shim::protos::ttrpc::proto::KeyValue::new();
        kv.key = REPLAY_KEY.into();
        kv.value = "1".into();
        req.metadata.push(kv);
        let payload = req.encode().unwrap();
        let h = MessageHeader {
            length: payload.len() as u32,
            stream_id: 1,
            type_: TYPE_REQUEST,
            flags: 0,
        };
        assert_eq!(
            call(&services, -1, h, &payload, false).await.payload,
            b"fresh"
        );
        assert_eq!(
            call(&services, -1, h, &payload, true).await.payload,
            b"replay"
        );
        req.method = "Nope".into();
        let payload = req.encode().unwrap();
        let r = call(&services, -1, h, &payload, false).await;
        assert_eq!(r.status().code(), Code::UNIMPLEMENTED);
        let r = call(&services, -1, h, b"\xff\xff", false).await;
        assert_eq!(r.status().code(), Code::INVALID_ARGUMENT);
    }
}
