//! Chunks: the service and client (`service`) and their wire messages (`wire`).

mod service;
pub mod wire;
