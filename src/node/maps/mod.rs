//! Maps: the view this node holds (`view`: map, placement, filling partitions), adopting
//! offered and pulled maps (`service`), and the wire messages of `/hadss/map/1` (`wire`).

mod service;
pub(super) mod view;
pub mod wire;
