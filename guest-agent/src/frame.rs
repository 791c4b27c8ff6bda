//! Framing: a 4-byte big-endian length, then a postcard-encoded message.

use std::io::{self, Read, Write};

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Largest frame either end accepts.
pub const MAX_FRAME: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("cannot encode message: {0}")]
    Encode(postcard::Error),
    #[error("cannot decode message: {0}")]
    Decode(postcard::Error),
    #[error("connection: {0}")]
    Io(#[from] io::Error),
}

/// Encodes a message as one frame.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, FrameError> {
    let body = postcard::to_stdvec(msg).map_err(FrameError::Encode)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let len = u32::try_from(body.len()).map_err(|_| FrameError::TooLarge(body.len()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Takes one whole frame off the front of `buf`, if it holds one.
pub fn decode_from<T: DeserializeOwned>(buf: &mut Vec<u8>) -> Result<Option<T>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let msg = postcard::from_bytes(&buf[4..4 + len]).map_err(FrameError::Decode)?;
    buf.drain(..4 + len);
    Ok(Some(msg))
}

/// Writes one frame to a blocking stream.
pub fn write<T: Serialize, W: Write>(w: &mut W, msg: &T) -> Result<(), FrameError> {
    w.write_all(&encode(msg)?)?;
    Ok(())
}

/// Reads one frame from a blocking stream; `None` at a clean end of stream.
pub fn read<T: DeserializeOwned, R: Read>(r: &mut R) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    postcard::from_bytes(&body)
        .map(Some)
        .map_err(FrameError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ExitStatus, Message, Request, Stream};

    #[test]
    fn frames_round_trip_through_a_buffer() {
        let msgs = vec![
            Message::Output {
                id: "a".into(),
                stream: Stream::Stderr,
                offset: 7,
                data: b"err\n".to_vec(),
            },
            Message::Exited {
                id: "a".into(),
                status: ExitStatus {
                    code: Some(3),
                    signal: None,
                    deadline: false,
                },
            },
        ];
        let mut buf = Vec::new();
        for m in &msgs {
            buf.extend(encode(m).expect("encodes"));
        }
        // Feed it one byte short first: nothing decodes.
        let mut partial = buf[..buf.len() - 1].to_vec();
        assert_eq!(
            decode_from::<Message>(&mut partial).expect("ok"),
            Some(msgs[0].clone())
        );
        assert_eq!(decode_from::<Message>(&mut partial).expect("ok"), None);
        let mut whole = buf;
        let a: Option<Message> = decode_from(&mut whole).expect("ok");
        let b: Option<Message> = decode_from(&mut whole).expect("ok");
        assert_eq!(vec![a.expect("first"), b.expect("second")], msgs);
        assert!(whole.is_empty());
    }

    #[test]
    fn frames_round_trip_through_a_stream() {
        let mut wire = Vec::new();
        write(&mut wire, &Request::SignalAll { signal: 9 }).expect("writes");
        let mut r = io::Cursor::new(wire);
        let got: Option<Request> = read(&mut r).expect("reads");
        assert_eq!(got, Some(Request::SignalAll { signal: 9 }));
        assert_eq!(read::<Request, _>(&mut r).expect("clean end"), None);
    }

    #[test]
    fn oversized_length_is_refused() {
        let mut buf = u32::MAX.to_be_bytes().to_vec();
        assert!(matches!(
            decode_from::<Message>(&mut buf),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn shell_codes() {
        assert_eq!(
            ExitStatus {
                code: Some(3),
                signal: None,
                deadline: false,
            }
            .shell_code(),
            3
        );
        assert_eq!(
            ExitStatus {
                code: None,
                signal: Some(9),
                deadline: false,
            }
            .shell_code(),
            137
        );
    }
}
