//! OCI images on a node: what `rauha image pull` fetches, where it is kept,
//! and how a zone's root is made from it.
//!
//! The pure core (tested without root or network): [`reference`] parsing
//! with docker's defaults, [`platform`] selection from an index,
//! [`manifest`] and image config decoding ([`config`]), [`unpack`] of a
//! layer into a directory with whiteouts and opaque directories turned into
//! overlayfs's own (the kernel side behind [`unpack::LayerFs`]), and
//! [`gc`] planning. The I/O: [`store`] keeps blobs by digest (written to an
//! ingest file, verified, then renamed: a crash leaves no half blob under a
//! digest) and unpacked layers as snapshot directories, each made once and
//! shared by every image that has the layer; [`pull`] fetches from an OCI
//! distribution registry through `oci-client`.
//!
//! rauhad keeps the image records ([`record::ImageRecord`]) in its redb
//! store; a zone from an image gets an overlay of the image's snapshots
//! (bottom to top) under a per-zone upper layer, so starting a zone from a
//! stored image is a mount, not an unpack.

pub mod archive;
pub mod config;
pub mod error;
#[cfg(test)]
mod fuzz_tests;
pub mod gc;
pub mod manifest;
pub mod platform;
pub mod pull;
pub mod record;
pub mod reference;
pub mod store;
pub mod unpack;
pub mod users;

pub use error::ImageError;
pub use record::ImageRecord;
pub use reference::ImageRef;
pub use store::Store;
