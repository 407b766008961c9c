//! The Raft algorithm as a pure, deterministic state machine: no threads,
//! sockets, clocks or files. Time enters as `tick`, peer messages as `step`,
//! client intents as `propose` and `read_index`; what must be done leaves as one
//! `Ready`, which the caller carries out in order and hands back to `advance`.

mod message;
mod types;

pub use message::{
    Addrs, AppendResp, Body, Entry, HardState, Membership, Message, Payload, Printable,
    SnapshotMeta,
};
pub use types::{Index, NodeId, Term};
