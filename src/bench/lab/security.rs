//! Experiment 7: what security costs. The same 3-node cluster as plain TCP
//! on loopback, with a cluster secret and accounts (each connection
//! authenticates once; peers prove the secret once per connection), and
//! with TLS on both ports as well, measured side by side: writes and
//! linearizable reads at 1 and 64 connections.

use super::Lab;
use super::compare::{self, Comparison, Point};
use crate::bench::local::{ClusterOptions, Secure};

const SYSTEMS: [(&str, Secure); 3] = [
    ("plain TCP", Secure { secret: false, users: false, tls: false }),
    ("secret + accounts", Secure { secret: true, users: true, tls: false }),
    ("TLS + secret + accounts", Secure { secret: true, users: true, tls: true }),
];

pub fn run(lab: &Lab) -> Result<(), String> {
    let intro = format!(
        "A 3-node cluster, fsync always, 100-byte values, 10,000 keys written first, {} s per point, all \
connections to the leader, one request at a time per connection. The three setups run at once and each point \
is measured on each in turn, {} rounds; the tables show the round with the median throughput. Accounts cost one \
AUTH per connection, the secret one handshake per peer connection; TLS encrypts every byte on both ports (the \
client's and the followers').",
        lab.seconds, lab.rounds
    );
    let setups = SYSTEMS
        .iter()
        .map(|&(name, secure)| (name.to_string(), ClusterOptions { secure, ..ClusterOptions::default() }))
        .collect();
    let points = [0, 100]
        .into_iter()
        .flat_map(|read_pct| [1, 64].map(|connections| Point { read_pct, connections, pipeline: 1 }))
        .collect();
    compare::run(
        lab,
        Comparison {
            name: "security",
            title: "The cost of TLS and authentication",
            intro,
            setups,
            points,
            versus: "vs plain",
        },
    )
}
