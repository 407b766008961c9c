//! Experiment 8: what the limits of README, Limits cost. The node as built against
//! a baseline build from before them (`--baseline-node`; `make bench`
//! builds the revision named in `scripts/bench.sh`), the same 3-node
//! cluster side by side: writes and linearizable reads at 1 and 64
//! connections one request at a time, and 8 connections pipelining 32.

use super::Lab;
use super::compare::{self, Comparison, Point};
use crate::bench::local::ClusterOptions;

pub fn run(lab: &Lab) -> Result<(), String> {
    let Some(baseline) = &lab.baseline_node else {
        return Err("limits compares with a baseline build: pass --baseline-node PATH".into());
    };
    let intro = format!(
        "A 3-node cluster, fsync always, 100-byte values, 10,000 keys written first, {} s per point, all \
connections to the leader. The baseline is `{}`, built from the revision before the limits (client limits, \
streamed replies, the request budget, compaction by bytes, replication bounded in bytes, the log writer \
thread). Both run at once and each point is measured on each in turn, {} rounds; the tables show the round \
with the median throughput. `8x32`: 8 connections pipelining 32 requests each.",
        lab.seconds,
        baseline.display(),
        lab.rounds
    );
    let setups = vec![
        ("baseline".to_string(), ClusterOptions { node: Some(baseline.clone()), ..ClusterOptions::default() }),
        ("with limits".to_string(), ClusterOptions::default()),
    ];
    let mut points = Vec::new();
    for read_pct in [0, 100] {
        for (connections, pipeline) in [(1, 1), (64, 1), (8, 32)] {
            points.push(Point { read_pct, connections, pipeline });
        }
    }
    compare::run(
        lab,
        Comparison { name: "limits", title: "The cost of the limits", intro, setups, points, versus: "vs baseline" },
    )
}
