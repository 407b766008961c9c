//! The node's command line (README, Running a node). Parsing is separate from `main` so that
//! tests can reach every error message.

use std::path::PathBuf;

use crate::raft::NodeId;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fsync {
    /// Nothing is acknowledged before it is on stable storage.
    Always,
    /// Writes reach the OS page cache only; a machine crash can lose
    /// acknowledged writes (a process crash cannot).
    Never,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeOptions {
    pub id: NodeId,
    pub peers: PathBuf,
    pub data: PathBuf,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    pub heartbeat_ms: u64,
    pub fsync: Fsync,
    pub join: bool,
    pub log_level: log::LevelFilter,
    /// Entries applied since the last snapshot that trigger the next one;
    /// 0: only on `RAFT SNAPSHOT`.
    pub snapshot_entries: u64,
    /// README, Security: the cluster secret's file.
    pub cluster_secret: Option<PathBuf>,
    /// README, Security: the client accounts' file.
    pub users: Option<PathBuf>,
    /// README, Security: TLS on both ports.
    pub tls: Option<TlsFiles>,
    /// README, Limits: client connections at once (lowered at start to fit the
    /// open-file limit).
    pub max_clients: usize,
    /// README, Limits: unsent replies a client may hold, in bytes.
    pub client_output_limit: u64,
    /// README, Limits: seconds of silence before a client is closed; 0: never.
    pub client_timeout_s: u64,
    /// README, Running a node: snapshot also when the log since the last one holds this
    /// many bytes; 0: never by size.
    pub snapshot_bytes: u64,
}

/// Default for `--snapshot-bytes`.
pub const SNAPSHOT_BYTES_DEFAULT: u64 = 64 << 20;
/// Default for `--client-output-limit`.
pub const CLIENT_OUTPUT_LIMIT_DEFAULT: u64 = 64 << 20;
/// Default for `--maxclients`.
pub const MAX_CLIENTS_DEFAULT: usize = 10_000;

/// `--tls-cert`, `--tls-key` and `--tls-ca`: all three or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Default for `--snapshot-entries`: with 100-byte commands, about 10 MB of
/// log between snapshots, replayed in well under a second at restart.
pub const SNAPSHOT_ENTRIES_DEFAULT: u64 = 100_000;

pub const USAGE: &str = "usage: node --id N --peers FILE [--data DIR] [--election-timeout MIN-MAX] \
[--heartbeat MS] [--fsync always|never] [--join] [--log-level LEVEL] [--snapshot-entries N] \
[--snapshot-bytes N] [--cluster-secret FILE] [--users FILE] [--tls-cert FILE --tls-key FILE --tls-ca FILE] \
[--maxclients N] [--client-output-limit N] [--client-timeout S]";

/// What the command line asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Box<NodeOptions>),
    Help,
}

fn value<'a>(flag: &str, it: &mut impl Iterator<Item = &'a String>) -> Result<&'a String, String> {
    it.next().ok_or_else(|| format!("{flag} needs a value"))
}

fn number(flag: &str, v: &str) -> Result<u64, String> {
    v.parse().map_err(|_| format!("{flag}: {v:?} is not a whole number"))
}

/// A size in bytes, with an optional suffix k, M or G (powers of 1024), as
/// Redis writes them.
fn bytes(flag: &str, v: &str) -> Result<u64, String> {
    let (digits, unit) = match v.char_indices().last() {
        Some((i, 'k' | 'K')) => (&v[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&v[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&v[..i], 1 << 30),
        _ => (v, 1),
    };
    let n: u64 = digits.parse().map_err(|_| format!("{flag}: {v:?} is not a size (a number with k, M or G)"))?;
    n.checked_mul(unit).ok_or_else(|| format!("{flag}: {v:?} is too large"))
}

fn parse_timeout_range(v: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = v
        .split_once('-')
        .ok_or_else(|| format!("--election-timeout: {v:?} is not MIN-MAX in milliseconds, e.g. 150-300"))?;
    let (lo, hi) = (number("--election-timeout", lo)?, number("--election-timeout", hi)?);
    if lo > hi {
        return Err(format!("--election-timeout: minimum {lo} is above maximum {hi}"));
    }
    if hi == 0 {
        return Err("--election-timeout: the maximum must be at least 1 ms".to_string());
    }
    Ok((lo, hi))
}

fn parse_level(v: &str) -> Result<log::LevelFilter, String> {
    match v {
        "error" => Ok(log::LevelFilter::Error),
        "warn" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err(format!("--log-level: {v:?} is not one of error, warn, info, debug, trace")),
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let mut id = None;
    let mut peers = None;
    let mut data = None;
    let mut election = (150, 300);
    let mut heartbeat_ms = 50;
    let mut fsync = Fsync::Always;
    let mut join = false;
    let mut log_level = log::LevelFilter::Info;
    let mut snapshot_entries = SNAPSHOT_ENTRIES_DEFAULT;
    let (mut cluster_secret, mut users) = (None, None);
    let (mut tls_cert, mut tls_key, mut tls_ca) = (None, None, None);
    let mut max_clients = MAX_CLIENTS_DEFAULT;
    let mut client_output_limit = CLIENT_OUTPUT_LIMIT_DEFAULT;
    let mut client_timeout_s = 0;
    let mut snapshot_bytes = SNAPSHOT_BYTES_DEFAULT;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--id" => {
                let v = value(flag, &mut it)?;
                match number(flag, v)? {
                    0 => return Err("--id: node ids start at 1".to_string()),
                    n => id = Some(NodeId(n)),
                }
            }
            "--peers" => peers = Some(PathBuf::from(value(flag, &mut it)?)),
            "--data" => data = Some(PathBuf::from(value(flag, &mut it)?)),
            "--election-timeout" => election = parse_timeout_range(value(flag, &mut it)?)?,
            "--heartbeat" => {
                heartbeat_ms = number(flag, value(flag, &mut it)?)?;
                if heartbeat_ms == 0 {
                    return Err("--heartbeat: must be at least 1 ms".to_string());
                }
            }
            "--fsync" => {
                fsync = match value(flag, &mut it)?.as_str() {
                    "always" => Fsync::Always,
                    "never" => Fsync::Never,
                    v => return Err(format!("--fsync: {v:?} is not always or never")),
                }
            }
            "--join" => join = true,
            "--log-level" => log_level = parse_level(value(flag, &mut it)?)?,
            "--snapshot-entries" => snapshot_entries = number(flag, value(flag, &mut it)?)?,
            "--cluster-secret" => cluster_secret = Some(PathBuf::from(value(flag, &mut it)?)),
            "--users" => users = Some(PathBuf::from(value(flag, &mut it)?)),
            "--tls-cert" => tls_cert = Some(PathBuf::from(value(flag, &mut it)?)),
            "--tls-key" => tls_key = Some(PathBuf::from(value(flag, &mut it)?)),
            "--tls-ca" => tls_ca = Some(PathBuf::from(value(flag, &mut it)?)),
            "--maxclients" => {
                max_clients = number(flag, value(flag, &mut it)?)? as usize;
                if max_clients == 0 {
                    return Err("--maxclients: must be at least 1".to_string());
                }
            }
            "--client-output-limit" => {
                client_output_limit = bytes(flag, value(flag, &mut it)?)?;
                if client_output_limit < 1024 {
                    return Err("--client-output-limit: at least 1k, or no reply of a few values fits".to_string());
                }
            }
            "--client-timeout" => client_timeout_s = number(flag, value(flag, &mut it)?)?,
            "--snapshot-bytes" => snapshot_bytes = bytes(flag, value(flag, &mut it)?)?,
            "-h" | "--help" => return Ok(Command::Help),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let id = id.ok_or("--id is required")?;
    let peers = peers.ok_or("--peers is required")?;
    if election.0 <= heartbeat_ms {
        // The follower's lease and the leader's check-quorum both last the
        // shortest election timeout: below a heartbeat, leaders step down
        // and followers campaign between any two heartbeats, and the
        // cluster never settles (seen at 0-5 ms).
        return Err(format!(
            "--election-timeout: the minimum ({} ms) must be above the heartbeat ({heartbeat_ms} ms, --heartbeat): \
             a follower must hear from its leader within its shortest election timeout",
            election.0
        ));
    }
    let tls = match (tls_cert, tls_key, tls_ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
        _ => return Err("--tls-cert, --tls-key and --tls-ca go together: give all three".to_string()),
    };
    Ok(Command::Run(Box::new(NodeOptions {
        id,
        data: data.unwrap_or_else(|| PathBuf::from(format!("data/node-{}", id.0))),
        peers,
        election_timeout_ms_min: election.0,
        election_timeout_ms_max: election.1,
        heartbeat_ms,
        fsync,
        join,
        log_level,
        snapshot_entries,
        cluster_secret,
        users,
        tls,
        max_clients,
        client_output_limit,
        client_timeout_s,
        snapshot_bytes,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn defaults_follow_the_spec() {
        let Command::Run(o) = parse(&args("--id 3 --peers peers.txt")).unwrap() else { panic!() };
        assert_eq!(o.id, NodeId(3));
        assert_eq!(o.data, PathBuf::from("data/node-3"));
        assert_eq!((o.election_timeout_ms_min, o.election_timeout_ms_max, o.heartbeat_ms), (150, 300, 50));
        assert_eq!(o.fsync, Fsync::Always);
        assert!(!o.join);
        assert_eq!(o.log_level, log::LevelFilter::Info);
        assert_eq!(o.snapshot_entries, SNAPSHOT_ENTRIES_DEFAULT);
        assert_eq!((o.cluster_secret, o.users, o.tls), (None, None, None));
        assert_eq!((o.max_clients, o.client_output_limit, o.client_timeout_s), (10_000, 64 << 20, 0));
        assert_eq!(o.snapshot_bytes, 64 << 20);
    }

    #[test]
    fn every_flag() {
        let a = args(
            "--id 2 --peers p --data /tmp/d --election-timeout 12-25 --heartbeat 5 --fsync never --join --log-level debug \
             --snapshot-entries 500 --cluster-secret s --users u --tls-cert c --tls-key k --tls-ca a --maxclients 50 \
             --client-output-limit 2M --client-timeout 30 --snapshot-bytes 1G",
        );
        let Command::Run(o) = parse(&a).unwrap() else { panic!() };
        assert_eq!((o.election_timeout_ms_min, o.election_timeout_ms_max, o.heartbeat_ms), (12, 25, 5));
        assert_eq!(o.fsync, Fsync::Never);
        assert!(o.join);
        assert_eq!(o.data, PathBuf::from("/tmp/d"));
        assert_eq!(o.snapshot_entries, 500);
        assert_eq!(o.cluster_secret, Some(PathBuf::from("s")));
        assert_eq!(o.users, Some(PathBuf::from("u")));
        let tls = TlsFiles { cert: "c".into(), key: "k".into(), ca: "a".into() };
        assert_eq!(o.tls, Some(tls));
        assert_eq!((o.max_clients, o.client_output_limit, o.client_timeout_s), (50, 2 << 20, 30));
        assert_eq!(o.snapshot_bytes, 1 << 30);
    }

    #[test]
    fn bad_flags_say_what_is_wrong() {
        let cases = [
            ("--peers p", "--id is required"),
            ("--id 1", "--peers is required"),
            ("--id 0 --peers p", "--id: node ids start at 1"),
            ("--id x --peers p", "--id: \"x\" is not a whole number"),
            ("--id 1 --peers p --election-timeout 300-150", "--election-timeout: minimum 300 is above maximum 150"),
            (
                "--id 1 --peers p --election-timeout 150",
                "--election-timeout: \"150\" is not MIN-MAX in milliseconds, e.g. 150-300",
            ),
            ("--id 1 --peers p --fsync sometimes", "--fsync: \"sometimes\" is not always or never"),
            ("--id 1 --peers p --heartbeat 0", "--heartbeat: must be at least 1 ms"),
            (
                "--id 1 --peers p --election-timeout 0-5 --heartbeat 1",
                "--election-timeout: the minimum (0 ms) must be above the heartbeat (1 ms, --heartbeat): a follower \
                 must hear from its leader within its shortest election timeout",
            ),
            (
                "--id 1 --peers p --election-timeout 40-80",
                "--election-timeout: the minimum (40 ms) must be above the heartbeat (50 ms, --heartbeat): a \
                 follower must hear from its leader within its shortest election timeout",
            ),
            (
                "--id 1 --peers p --log-level loud",
                "--log-level: \"loud\" is not one of error, warn, info, debug, trace",
            ),
            ("--id 1 --peers p --bogus", "unknown argument \"--bogus\""),
            ("--id", "--id needs a value"),
            ("--id 1 --peers p --snapshot-entries many", "--snapshot-entries: \"many\" is not a whole number"),
            (
                "--id 1 --peers p --tls-cert c --tls-key k",
                "--tls-cert, --tls-key and --tls-ca go together: give all three",
            ),
            ("--id 1 --peers p --users", "--users needs a value"),
            ("--id 1 --peers p --maxclients 0", "--maxclients: must be at least 1"),
            (
                "--id 1 --peers p --client-output-limit 12X",
                "--client-output-limit: \"12X\" is not a size (a number with k, M or G)",
            ),
            ("--id 1 --peers p --snapshot-bytes 99999999999G", "--snapshot-bytes: \"99999999999G\" is too large"),
        ];
        for (line, expected) in cases {
            assert_eq!(parse(&args(line)).unwrap_err(), expected, "{line}");
        }
    }
}
