//! Rauha's Kubernetes operator: the `Zone` and `SandboxTask` custom
//! resources and the controller that places each task on a node running
//! Rauha, as a pod under RuntimeClass `rauha` (docs/kubernetes.md).

pub mod crd;
pub mod http;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod placement;
pub mod task;
pub mod zone;

#[cfg(test)]
mod task_tests;
#[cfg(test)]
mod zone_tests;
