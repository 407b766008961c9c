//! Test support: the seeded simulator, the safety checker, scenario scripts
//! and the bounded model checker. All of it drives the real core
//! (`crate::raft`) over a simulated disk and network; none of it touches real
//! time, sockets or files.

pub mod checker;
pub mod cluster;
pub mod disk;
pub mod expiry;
pub mod explore;
pub mod hash;
pub mod machine;
pub mod network;
pub mod script;
pub mod simulate;
