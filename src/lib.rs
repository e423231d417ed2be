//! HADSS, the library behind the `hadss` binary: one module per layer, added as the layers
//! land. Today: `cluster` (the signed cluster map and placement), `net` (identity, cluster
//! secret, private libp2p transport, postcard codec) and `storage::replication` (the sans-IO
//! write coordinator). The storage engine is the
//! `chunkstore` crate; membership is the `swim` crate.

#![deny(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod fsutil;
pub mod gateway;
pub mod net;
pub mod node;
pub mod observe;
pub mod storage;
