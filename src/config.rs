//! Every size bound of the system in one place, with its unit, and the
//! relations between them checked at compile time.
//!
//! What happens at each bound is said beside it: a client gets an error, a peer
//! frame is refused and its connection dropped, a WAL record is refused.

/// docs/commands.md: a longer key gets `-ERR key too large`.
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// docs/commands.md: a longer value gets `-ERR value too large`.
pub const VALUE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// A whole client request (all arguments, e.g. a large MSET). A longer one gets
/// `-ERR protocol error: request too large` and its connection is closed.
pub const REQUEST_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Arguments in one client request. More is a protocol error.
pub const REQUEST_ARGS_MAX: usize = 1024 * 1024;

/// An encoded state-machine command: a request plus its routing header.
/// A proposal over this is refused before it reaches the log.
pub const COMMAND_BYTES_MAX: usize = REQUEST_BYTES_MAX + 4096;

/// A member's address string (host:port) in a configuration.
pub const ADDR_BYTES_MAX: usize = 255;

/// Members in one configuration, counting both halves of a joint one and the
/// learners.
pub const MEMBERS_MAX: usize = 1024;

/// Entries the leader puts in one Append message.
pub const APPEND_ENTRIES_MAX: usize = 4096;

/// Bytes of entry payload the leader puts in one Append message; it always
/// sends at least one entry, so a single large entry may exceed it.
pub const APPEND_BYTES_SOFT_MAX: usize = 1024 * 1024;

/// Append messages in flight to one follower before the leader waits for an
/// answer (pipelining bound).
pub const INFLIGHT_APPENDS_MAX: usize = 64;

/// Bytes of entries in flight to one follower before the leader waits: what
/// can queue ahead of a heartbeat on a slow link (README, Limits: large values never
/// delay heartbeats long enough to depose a healthy leader).
pub const INFLIGHT_BYTES_MAX: usize = 8 * 1024 * 1024;

/// Bytes of snapshot data in one InstallSnapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// A peer frame, header included. A longer length prefix is refused before
/// anything is allocated and the connection is dropped.
pub const FRAME_BYTES_MAX: usize = APPEND_BYTES_SOFT_MAX + COMMAND_BYTES_MAX + 64 * 1024;

/// Payload bytes of committed entries a leader keeps past its newest
/// snapshot for live followers that still need them (catching up, or
/// installing the snapshot the log starts at), so that they go on with
/// entries (a leader that compacts faster than a slow link carries a
/// snapshot would otherwise send snapshots to such a follower forever).
pub const COMPACTION_HOLD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Commands in one forwarded Propose message.
pub const PROPOSE_COMMANDS_MAX: usize = 4096;

/// Committed entries one Ready hands out, unless its driver sets fewer
/// (the node does: `node::core`'s caps, lower while a snapshot is written).
pub const APPLY_ENTRIES_MAX: usize = 4096;

/// A WAL record, header included.
pub const RECORD_BYTES_MAX: usize = FRAME_BYTES_MAX;

const _: () = assert!(KEY_BYTES_MAX + VALUE_BYTES_MAX <= REQUEST_BYTES_MAX);
const _: () = assert!(REQUEST_BYTES_MAX < COMMAND_BYTES_MAX);
// One Append carries at least one whole entry, however large.
const _: () = assert!(COMMAND_BYTES_MAX + APPEND_BYTES_SOFT_MAX < FRAME_BYTES_MAX);
const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX * 2 <= FRAME_BYTES_MAX);
// One Append of a full batch fits the window.
const _: () = assert!(APPEND_BYTES_SOFT_MAX <= INFLIGHT_BYTES_MAX);
const _: () = assert!(FRAME_BYTES_MAX < u32::MAX as usize);
const _: () = assert!(RECORD_BYTES_MAX < u32::MAX as usize);
