//! HADSS, the library behind the `hadss` binary: one module per layer, added as the layers
//! land: `cluster` (the signed cluster map, placement, map changes), `net` (identity, cluster
//! secret, private libp2p transport, postcard codec), `storage` (records, hints, the sans-IO
//! write coordinator), `node` (the runtime every role runs), `monitor` (the Raft quorum that
//! publishes map epochs), `access` (S3 access keys and their grants, stored as records) and
//! `gateway` (S3). The storage engine is the
//! `chunkstore` crate; membership is the `swim` crate.

#![deny(unsafe_code)]

pub mod access;
pub mod cluster;
pub mod config;
pub mod fsutil;
pub mod gateway;
pub mod monitor;
pub mod net;
pub mod node;
pub mod observe;
pub mod storage;
