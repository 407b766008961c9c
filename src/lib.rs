//! raftkv: a Raft-replicated, linearizable key-value store that speaks the
//! Redis protocol. See README.md for the tour.

pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod codec;
pub mod command;
pub mod config;
pub mod expiry;
pub mod identity;
pub mod kv;
pub mod limits;
pub mod lincheck;
pub mod net;
pub mod node;
pub mod peers;
pub mod proxy;
pub mod raft;
pub mod reply;
pub mod resp;
pub mod sim;
pub mod transport;
pub mod wal;
pub mod wire;
