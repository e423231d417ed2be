//! Records: the service and client (`service`) and their wire messages (`wire`).

pub(super) mod service;
pub mod wire;
