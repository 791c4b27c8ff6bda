//! The agent protocol's frames under the fuzzer (`rauha-fuzz`): a byte
//! stream read as the agent reads rauhad's requests and as rauhad reads
//! the agent's messages. A frame decodes to a message that encodes back to
//! itself, or is refused in one line; a partial frame waits for more; a
//! length over the limit is refused before anything is allocated.

use rauha_guest_agent::frame::{decode_from, encode, FrameError, MAX_FRAME};
use rauha_guest_agent::protocol::{ExitStatus, FdData, Message, Request, SpawnSpec, Stream, User};
use serde::de::DeserializeOwned;
use serde::Serialize;

fn seeds() -> Vec<Vec<u8>> {
    let spawn = SpawnSpec {
        id: "5d1c0a8e-3f6b-4c1e-9a47-2b8f6e0d7c31".into(),
        args: vec!["sh".into(), "-c".into(), "echo hi".into()],
        env: vec!["PATH=/bin".into()],
        cwd: "/".into(),
        fds: vec![FdData {
            fd: 3,
            data: b"secret".to_vec(),
        }],
        user: Some(User {
            uid: 1000,
            gid: 1000,
            groups: vec![27],
        }),
        stdin: true,
        terminal: false,
        deadline_ms: Some(1_796_627_285_729),
        root: Some("c1".into()),
        security: Some(Box::default()),
    };
    let requests = [
        Request::Hello { version: 3 },
        Request::Spawn(spawn),
        Request::Signal {
            id: "p1".into(),
            signal: 15,
        },
        Request::SignalRoot {
            root: "c1".into(),
            signal: 9,
        },
        Request::Stdin {
            id: "p1".into(),
            data: b"input\n".to_vec(),
        },
        Request::Resize {
            id: "p1".into(),
            rows: 24,
            cols: 80,
        },
        Request::Ack {
            id: "p1".into(),
            stream: Stream::Stdout,
            upto: 4096,
        },
    ];
    let messages = [
        Message::Hello {
            version: 3,
            running: vec!["p1".into()],
            exited: vec![(
                "p2".into(),
                ExitStatus {
                    code: Some(0),
                    signal: None,
                    deadline: false,
                },
            )],
        },
        Message::Spawned {
            id: "p1".into(),
            pid: 7,
        },
        Message::SpawnFailed {
            id: "p1".into(),
            error: "\"x\" is not found in the zone".into(),
        },
        Message::Output {
            id: "p1".into(),
            stream: Stream::Stderr,
            offset: 12,
            data: b"oops\n".to_vec(),
        },
    ];
    let mut out: Vec<Vec<u8>> = Vec::new();
    for r in &requests {
        out.push([&[0u8][..], &encode(r).expect("encode")].concat());
    }
    for m in &messages {
        out.push([&[1u8][..], &encode(m).expect("encode")].concat());
    }
    // Two frames in one read, and a frame cut short.
    out.push([&out[0][..], &out[2][1..]].concat());
    let cut = out[1].len() / 2;
    out.push(out[1][..cut].to_vec());
    out
}

/// Reads `stream` frame after frame as `T`, checking each.
fn read_all<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    stream: &[u8],
) -> String {
    let mut buf = stream.to_vec();
    let mut frames = 0;
    loop {
        let before = buf.len();
        match decode_from::<T>(&mut buf) {
            Ok(Some(msg)) => {
                frames += 1;
                assert!(buf.len() < before, "a frame consumed nothing");
                let again = encode(&msg).expect("a decoded message encodes");
                let mut again_buf = again.clone();
                let back: T = decode_from(&mut again_buf)
                    .expect("its own encoding decodes")
                    .expect("a whole frame");
                assert_eq!(back, msg, "the round trip changed it");
                assert!(again_buf.is_empty());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "a partial frame was consumed");
                return format!("{frames} frames, then partial");
            }
            Err(e) => {
                let line = e.to_string();
                rauha_fuzz::assert_one_line(&line, 300);
                if let FrameError::TooLarge(n) = e {
                    assert!(n > MAX_FRAME);
                }
                return format!(
                    "{frames} frames, then {}",
                    line.split(':').next().unwrap_or("")
                );
            }
        }
    }
}

#[test]
fn fuzz_agent_frames() {
    rauha_fuzz::run_seeded(
        "agent_frames",
        seeds(),
        &[b"\x00\x00\x00", b"\xff\xff\xff\xff"],
        |data| {
            let Some((which, stream)) = data.split_first() else {
                return "empty".into();
            };
            if which % 2 == 0 {
                format!("request: {}", read_all::<Request>(stream))
            } else {
                format!("message: {}", read_all::<Message>(stream))
            }
        },
    );
}
