//! Rauha's kernel enforcement: BPF-LSM programs keyed by zone, the maps
//! they read (mirrored here as `#[repr(C)]` types), the translation of a
//! policy into map entries, and the loader `rauhad` uses.

pub mod loader;
pub mod maps;
pub mod policy;
