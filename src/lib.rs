//! HADSS, the library behind the `hadss` binary: one module per layer. From the bottom:
//! `clock` (the wall clock handed to whatever stamps time), `net` (identity, cluster secret,
//! private libp2p transport, postcard codec, netsim's fault layer), `cluster` (the signed
//! cluster map, placement, map changes), `storage` (records, hints, the sans-IO write
//! coordinator and anti-entropy), `access` (access keys and their grants, stored as records),
//! `node` (the runtime every role runs), `monitor` (the Raft quorum that publishes map
//! epochs), `object` (buckets, objects, listings, multipart and keys over the node: the one
//! object model every front end uses) and `gateway` (S3 protocol glue over `object`). The
//! storage engine is the `chunkstore` crate; membership is the `swim` crate.

#![deny(unsafe_code)]

pub mod access;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod fsutil;
pub mod gateway;
pub mod monitor;
pub mod net;
pub mod node;
pub mod object;
pub mod observe;
pub mod storage;
