//! The codec of every generated client and server: prost's, except that a
//! body that does not decode is the sender's mistake, `INVALID_ARGUMENT`
//! with one line, where prost's codec says `INTERNAL` (which tells a
//! caller to blame rauhad and retry).

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::{ProstDecoder, ProstEncoder};

/// prost's codec, with decoding failures made `INVALID_ARGUMENT`.
#[derive(Debug, Clone)]
pub struct Proto<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for Proto<T, U> {
    fn default() -> Self {
        Proto { _pd: PhantomData }
    }
}

impl<T, U> Codec for Proto<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = InvalidOnError<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        InvalidOnError(ProstDecoder::default())
    }
}

/// prost's decoder, whose failures name the message and say what to send.
#[derive(Debug)]
pub struct InvalidOnError<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for InvalidOnError<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|s| malformed(s.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

fn malformed(detail: &str) -> Status {
    Status::invalid_argument(rauha_spec::message::one_line(&format!(
        "the message is not valid rauha.v1 protobuf ({detail}); send one built from proto/rauha.proto"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoding_failure_is_invalid_argument_on_one_line() {
        let err = malformed("invalid wire type value: 7\nat CreateZoneRequest.name");
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            err.message(),
            "the message is not valid rauha.v1 protobuf (invalid wire type value: 7\\nat CreateZoneRequest.name); send one built from proto/rauha.proto"
        );
    }
}
