//! The gRPC services. Handlers stay thin: validate, call the registry,
//! convert. Wire types are built only in [`convert`].

mod convert;
#[cfg(test)]
mod fuzz_tests;
mod images;
mod node;
mod processes;
mod sandbox;
mod secrets;
mod zones;

pub use images::ImagesService;
pub use node::NodeService;
pub use processes::ProcessesService;
pub use sandbox::SandboxService;
pub use secrets::SecretsService;
pub use zones::ZonesService;
