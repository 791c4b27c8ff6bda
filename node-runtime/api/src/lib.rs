//! `rauha-api` holds Rauha's gRPC wire types, generated from
//! `proto/rauha.proto`, and the one place where they are converted to and
//! from `rauha-spec` types ([`convert`]). Nothing else in Rauha builds wire
//! types by hand, and nothing here does I/O.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("rauha.v1");
}

pub mod codec;
pub mod convert;
pub mod keeper;
