//! Raft and admin frames on a node (`service`), the seam a monitor plugs in (`seam`:
//! `MonitorService`), and the wire messages (`wire`).

pub(super) mod seam;
mod service;
pub mod wire;
