//! The node runtime: the threads, channels and timers that put the Raft core
//! (`crate::raft`), the write-ahead log (`crate::wal`), the peer transport
//! (`crate::transport`) and the state machine (`crate::kv`) to work.
//!
//! ```text
//!  clients ──RESP──> client threads ──┐
//!  peers ──frames──> transport ───────┼──> core thread ──> WAL (group commit)
//!  ticker ────────────────────────────┘        │
//!                                               ├──> transport (per-peer senders)
//!                                               └──> KV state machine, replies
//! ```

pub mod client;
pub mod clients;
mod core;
mod envelope;
mod info;
mod log_writer;
pub mod logging;
mod mailbox;
mod pending;
mod poller;
mod sentinel;
mod session;
pub mod signals;
mod snapshots;
mod ticks;

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::auth::Users;
use crate::cli::{Fsync, NodeOptions};
use crate::identity::{self, ClusterId, ClusterIdentity};
use crate::net::{Secret, TlsSettings};
use crate::peers::{Peer, Peers, resolve};
use crate::raft::{Config, Index, InitialState, Membership, Raft};
use crate::transport::{PeerSecurity, Transport, TransportOptions};
use crate::wal::{DataDir, Wal, WalOptions};

/// docs/commands.md: the default time before `-TIMEOUT`.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Client requests queued for the core thread; a full queue makes client
/// threads wait (backpressure) instead of growing memory.
pub const CORE_QUEUE_REQUESTS_MAX: usize = 16 * 1024;

/// Peer messages queued for the core thread.
pub const CORE_QUEUE_MESSAGES_MAX: usize = 16 * 1024;

/// Requests still arriving, over all clients, before a client holding more
/// than a MiB of one is disconnected (README, Limits): a hundred half-sent 16 MiB
/// requests hold at most this.
pub const PENDING_REQUEST_BYTES_MAX: usize = 256 << 20;

/// File descriptors kept for everything but clients: the log, snapshots,
/// the listeners, handshakes under way and a few connections per peer.
fn descriptors_reserved(peer_count: usize) -> u64 {
    64 + crate::transport::TransportOptions::default().pending_max as u64 + 6 * peer_count as u64
}

/// `--maxclients`, lowered to what the open-file limit (raised to its hard
/// limit first) leaves after the node's own descriptors; logged.
fn fit_max_clients(wanted: usize, peer_count: usize) -> usize {
    let reserved = descriptors_reserved(peer_count);
    match crate::limits::raise_open_files() {
        Some(limit) => {
            let room = limit.saturating_sub(reserved).max(1) as usize;
            if room < wanted {
                log::warn!(
                    "--maxclients {wanted} lowered to {room}: the open-file limit is {limit} and the node keeps \
                     {reserved} descriptors for itself"
                );
                return room;
            }
            log::info!("up to {wanted} clients (open-file limit {limit})");
            wanted
        }
        None => {
            log::warn!("cannot read the open-file limit; --maxclients stays {wanted}");
            wanted
        }
    }
}

/// Why the node did not run, and the exit code that says so (README, Running a node).
#[derive(Debug)]
pub enum NodeError {
    /// Bad flags or peers file: exit 2.
    Config(String),
    /// Anything else that stops the node: exit 1.
    Fatal(String),
}

impl NodeError {
    pub fn exit_code(&self) -> u8 {
        match self {
            NodeError::Config(_) => 2,
            NodeError::Fatal(_) => 1,
        }
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Config(m) | NodeError::Fatal(m) => f.write_str(m),
        }
    }
}

/// How long one tick is (the core counts time in ticks): fine enough that a
/// heartbeat is at least 5 ticks and the shortest election timeout at least
/// 50 (randomized timeouts need distinct values), coarse enough that an idle
/// node does not wake a thousand times a second: 3 ms at the default
/// 150-300 ms and 50 ms heartbeat. 100 µs when elections are meant to take
/// less than 10 ms. Ticks drive only timers: requests, replication and read
/// rounds go out as soon as they arrive.
fn tick_for(opts: &NodeOptions) -> Duration {
    if opts.election_timeout_ms_min < 10 {
        return Duration::from_micros(100);
    }
    let ms = (opts.heartbeat_ms / 5).min(opts.election_timeout_ms_min / 50).clamp(1, 10);
    Duration::from_millis(ms)
}

fn raft_config(opts: &NodeOptions, tick: Duration) -> Config {
    let ticks = |ms: u64| (Duration::from_millis(ms).as_nanos() / tick.as_nanos()) as u64;
    let mut cfg = Config::new(opts.id);
    cfg.election_ticks_min = ticks(opts.election_timeout_ms_min).max(1);
    cfg.election_ticks_max = ticks(opts.election_timeout_ms_max).max(cfg.election_ticks_min);
    cfg.heartbeat_ticks = ticks(opts.heartbeat_ms).max(1);
    cfg.seed = rand::random();
    cfg
}

fn own_line(opts: &NodeOptions, peers: &Peers) -> Result<Peer, NodeError> {
    match peers.get(opts.id) {
        Some(p) => Ok(p.clone()),
        None if opts.join => Err(NodeError::Config(format!(
            "{}: node {} has no line: a --join node needs its own line there to know where to listen",
            peers.path.display(),
            opts.id
        ))),
        None => Err(NodeError::Config(format!("{}: node {} is not in the file", peers.path.display(), opts.id))),
    }
}

fn bind(addr: &str, what: &str, id: u64) -> Result<TcpListener, NodeError> {
    let sock = resolve(addr).map_err(|e| NodeError::Fatal(format!("{what} address of node {id}: {e}")))?;
    TcpListener::bind(sock)
        .map_err(|e| NodeError::Fatal(format!("cannot listen on {addr} ({what} address of node {id}): {e}")))
}

/// The environment variable that plants a bug, for tests only.
pub const PLANTED_BUG_ENV: &str = "RAFTKV_PLANTED_BUG";

/// `RAFTKV_PLANTED_BUG=local-reads`: serve every read from local state,
/// skipping read index, so that tests can show the linearizability checker
/// catching stale reads in real processes. Never set it otherwise.
fn planted_local_reads() -> bool {
    let on = std::env::var(PLANTED_BUG_ENV).is_ok_and(|v| v == "local-reads");
    if on {
        log::error!("{PLANTED_BUG_ENV}=local-reads: reads skip read index and may be stale (a planted bug, for tests)");
    }
    on
}

/// What `--cluster-secret`, `--users` and `--tls-*` amount to (README, Security).
struct Security {
    peers: PeerSecurity,
    users: Option<Arc<Users>>,
    tls: Option<TlsSettings>,
}

/// Reads the secret, the accounts and the certificates (any problem: exit
/// 2), and refuses a raft address off loopback that nothing authenticates.
fn load_security(opts: &NodeOptions, me: &Peer) -> Result<Security, NodeError> {
    let config = NodeError::Config;
    let secret = opts.cluster_secret.as_deref().map(Secret::load).transpose().map_err(config)?;
    let users = opts.users.as_deref().map(Users::load).transpose().map_err(config)?.map(Arc::new);
    let tls = opts.tls.as_ref().map(|t| TlsSettings::load(&t.cert, &t.key, &t.ca)).transpose().map_err(config)?;
    let peers = PeerSecurity { secret, tls: tls.clone() };
    if peers.loopback_only() {
        let addr = resolve(&me.raft_addr).map_err(NodeError::Config)?;
        if !addr.ip().is_loopback() {
            return Err(NodeError::Config(format!(
                "{}: node {}'s raft address {} is not a loopback address, and nothing would authenticate its \
                 peers: add --cluster-secret FILE (the same file on every node) and/or --tls-cert, --tls-key and \
                 --tls-ca",
                opts.peers.display(),
                opts.id,
                me.raft_addr
            )));
        }
    }
    if users.is_none() {
        log::info!("no --users: protected mode, clients are served on loopback only");
    }
    Ok(Security { peers, users, tls })
}

/// The cluster id the data directory holds: its `cluster_id` file and its
/// snapshot must agree (one without the other is the file not yet written
/// after an install, and is written now).
fn load_cluster_id(dir: &std::path::Path, from_snapshot: Option<ClusterId>) -> Result<Option<ClusterId>, NodeError> {
    let fatal = NodeError::Fatal;
    let stored = identity::load(dir).map_err(fatal)?;
    match (stored, from_snapshot) {
        (Some(a), Some(b)) if a != b => Err(NodeError::Fatal(format!(
            "{}: the cluster_id file says {a} but the snapshot belongs to cluster {b}; refusing to start",
            dir.display()
        ))),
        (None, Some(b)) => {
            identity::store(dir, b).map_err(fatal)?;
            Ok(Some(b))
        }
        (a, _) => Ok(a),
    }
}

/// Runs a node until SIGTERM or SIGINT (clean exit) or a fatal error.
pub fn run(opts: NodeOptions, log_context: Arc<logging::LogContext>) -> Result<(), NodeError> {
    info::started();
    let peers = Peers::load(&opts.peers).map_err(|e| NodeError::Config(e.to_string()))?;
    let me = own_line(&opts, &peers)?;
    let security = load_security(&opts, &me)?;
    let max_clients = fit_max_clients(opts.max_clients, peers.peers.len());
    let dir = DataDir::open(&opts.data, opts.id).map_err(|e| NodeError::Fatal(e.to_string()))?;
    match crate::wal::space::free_bytes(dir.path()) {
        Ok((free, total)) => {
            log::info!("data directory {}: {} free of {}", dir.path().display(), info::human(free), info::human(total))
        }
        Err(e) => log::warn!("cannot tell the free space of {}: {e}", dir.path().display()),
    }
    let loaded = snapshots::Snapshots::load(dir.path()).map_err(|e| NodeError::Fatal(e.to_string()))?;
    let (wal, recovered) = Wal::open(&dir, WalOptions::default()).map_err(|e| NodeError::Fatal(e.to_string()))?;
    // The log marks the snapshots it was compacted to; the newest intact
    // snapshot must cover at least that much, or history is lost.
    let compacted = recovered.snapshot.map_or(Index::ZERO, |(index, _)| index);
    let snapshot_index = loaded.meta.as_ref().map_or(Index::ZERO, |m| m.index);
    if compacted > snapshot_index {
        return Err(NodeError::Fatal(format!(
            "{}: the log was compacted through entry {compacted}, but the newest intact snapshot covers only {snapshot_index}; refusing to start",
            opts.data.display()
        )));
    }
    let cluster_id = load_cluster_id(dir.path(), loaded.cluster)?;
    let identity = Arc::new(ClusterIdentity::new(cluster_id));
    let entries = snapshots::entries_after(loaded.meta.as_ref(), recovered.entries);
    let bootstrap = if opts.join { Membership::default() } else { peers.membership() };
    let tick = tick_for(&opts);
    let cfg = raft_config(&opts, tick);
    let election_ticks_max = cfg.election_ticks_max;
    let tick_burst = cfg.election_ticks_min / 3;
    let init = InitialState { hard_state: recovered.hard_state, snapshot: loaded.meta, entries, bootstrap };
    let raft = Raft::new(cfg, init);
    let raft_listener = bind(&me.raft_addr, "raft", opts.id.0)?;
    let client_listener = bind(&me.client_addr, "client", opts.id.0)?;
    let client_addr = client_listener.local_addr().map_err(|e| NodeError::Fatal(e.to_string()))?;

    let (inbound_tx, inbound) = crossbeam_channel::bounded(CORE_QUEUE_MESSAGES_MAX);
    let (requests_tx, requests) = crossbeam_channel::bounded(CORE_QUEUE_REQUESTS_MAX);
    let incarnation: u64 = rand::random();
    let transport = Transport::start(
        opts.id,
        incarnation,
        raft_listener,
        BTreeMap::new(),
        inbound_tx,
        TransportOptions::default(),
        security.peers.clone(),
        identity.clone(),
    )
    .map(Arc::new)
    .map_err(|e| NodeError::Fatal(format!("cannot start the peer transport: {e}")))?;
    let stop_clients = Arc::new(AtomicBool::new(false));
    let registry = clients::Registry::new(max_clients);
    let client_opts = client::ClientOptions {
        answer_timeout: REQUEST_TIMEOUT + Duration::from_secs(2),
        users: security.users.clone(),
        tls: security.tls.clone(),
        output_limit: usize::try_from(opts.client_output_limit).unwrap_or(usize::MAX),
        idle_timeout: (opts.client_timeout_s > 0).then(|| Duration::from_secs(opts.client_timeout_s)),
        registry: registry.clone(),
        pending: Arc::new(crate::resp::PendingBudget {
            used: std::sync::atomic::AtomicUsize::new(0),
            max: PENDING_REQUEST_BYTES_MAX,
            per_connection_floor: 1 << 20,
        }),
        settings: Arc::new(settings_for_config_get(&opts, &client_addr)),
        role: log_context.clone(),
    };
    let client_thread = client::spawn_listener(client_listener, requests_tx, stop_clients.clone(), client_opts)
        .map_err(|e| NodeError::Fatal(format!("cannot start the client listener: {e}")))?;

    log::info!(
        "node {} serving clients on {} and peers on {} (data in {}; cluster {}; peers {}, clients {})",
        opts.id,
        me.client_addr,
        me.raft_addr,
        opts.data.display(),
        identity::show(cluster_id),
        match (&security.peers.secret, &security.tls) {
            (Some(_), Some(_)) => "authenticated by the cluster secret, over mutual TLS",
            (Some(_), None) => "authenticated by the cluster secret",
            (None, Some(_)) => "authenticated by mutual TLS",
            (None, None) => "on loopback only",
        },
        match (&security.users, &security.tls) {
            (Some(_), Some(_)) => "with accounts, over TLS",
            (Some(_), None) => "with accounts",
            (None, Some(_)) => "on loopback only (no --users), over TLS",
            (None, None) => "on loopback only (no --users)",
        }
    );
    let settings = core::CoreSettings {
        id: opts.id,
        tick,
        election_ticks_max,
        tick_burst,
        request_timeout: REQUEST_TIMEOUT,
        leader_wait: Duration::from_millis(2 * opts.election_timeout_ms_max)
            .clamp(Duration::from_secs(1), REQUEST_TIMEOUT),
        peers,
        snapshot_entries: opts.snapshot_entries,
        planted_local_reads: planted_local_reads(),
        incarnation,
        identity,
        data_dir: dir.path().to_path_buf(),
        clients: registry,
        snapshot_bytes: opts.snapshot_bytes,
    };
    let answers = {
        let transport = transport.clone();
        move |m| transport.send(m)
    };
    let writer = log_writer::LogWriter::spawn(wal, opts.fsync == Fsync::Always, answers)
        .map_err(|e| NodeError::Fatal(format!("cannot start the log writer thread: {e}")))?;
    let mut core = core::Core::new(settings, raft, writer, loaded.kv, loaded.snapshots, transport, log_context);
    let exit = core.run(&inbound, &requests, signals::stop_requested);

    stop_clients.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect_timeout(&client_addr, Duration::from_secs(1));
    let _ = client_thread.join();
    core.transport().shutdown();
    match exit {
        core::CoreExit::Stopped => Ok(()),
        core::CoreExit::Storage(e) => Err(NodeError::Fatal(format!("storage failed: {e}"))),
    }
}

/// The node's settings under the names CONFIG GET answers: Redis's where
/// one means the same (tools such as redis-benchmark read them), raftkv's
/// own prefixed `raftkv-`.
fn settings_for_config_get(opts: &NodeOptions, client_addr: &std::net::SocketAddr) -> Vec<(String, String)> {
    let fsync = match opts.fsync {
        crate::cli::Fsync::Always => "always",
        crate::cli::Fsync::Never => "no",
    };
    let pairs: Vec<(&str, String)> = vec![
        ("bind", client_addr.ip().to_string()),
        ("port", client_addr.port().to_string()),
        ("databases", "1".into()),
        ("save", String::new()),
        ("appendonly", "yes".into()),
        ("appendfsync", fsync.into()),
        ("maxclients", opts.max_clients.to_string()),
        ("timeout", opts.client_timeout_s.to_string()),
        ("maxmemory", "0".into()),
        ("maxmemory-policy", "noeviction".into()),
        ("proto-max-bulk-len", crate::config::VALUE_BYTES_MAX.to_string()),
        ("client-output-buffer-limit", format!("normal {} {} 0", opts.client_output_limit, opts.client_output_limit)),
        ("raftkv-id", opts.id.0.to_string()),
        ("raftkv-peers", opts.peers.display().to_string()),
        ("raftkv-data", opts.data.display().to_string()),
        ("raftkv-election-timeout", format!("{}-{}", opts.election_timeout_ms_min, opts.election_timeout_ms_max)),
        ("raftkv-heartbeat", opts.heartbeat_ms.to_string()),
        ("raftkv-snapshot-entries", opts.snapshot_entries.to_string()),
        ("raftkv-snapshot-bytes", opts.snapshot_bytes.to_string()),
    ];
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
