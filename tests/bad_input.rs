//! Bad input of every kind gets a clear error and loses nothing, and the
//! cluster keeps serving: garbage on the client and peer ports, a half-sent
//! request, oversized keys and values, a thousand idle connections, a wrong
//! peers file, a data directory in use or of another node.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{Client, TestCluster, text};

fn leader(c: &mut TestCluster) -> u64 {
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()))
}

fn read_all(stream: &mut TcpStream) -> Vec<u8> {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    out
}

#[test]
fn garbage_and_oversize_requests_get_errors_and_the_cluster_serves_on() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let l = leader(&mut c);
    let node = (1..=3).find(|&id| id != l).unwrap();
    let addr = c.nodes[&node].client_addr.clone();

    // Malformed RESP: an error, then the connection is closed (docs/commands.md).
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"*2\r\n$3\r\nGET\r\n$-7\r\n").unwrap();
    let reply = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
    assert!(reply.starts_with("-ERR protocol error: "), "{reply:?}");

    // Random bytes.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(&[0x2a, 0xff, 0x00, 0x13, 0x37, b'\r', b'\n']).unwrap();
    let reply = String::from_utf8_lossy(&read_all(&mut s)).into_owned();
    assert!(reply.starts_with("-ERR protocol error"), "{reply:?}");

    // A half-sent request, then the client goes away: nothing applied.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$5\r\nval").unwrap();
    drop(s);

    // A whole request, then half of one and the end of the client's
    // writing: the whole one is applied and answered before the close.
    for round in 0..20 {
        let mut s = TcpStream::connect(&addr).unwrap();
        let set = format!("*3\r\n$3\r\nSET\r\n$5\r\nwhole\r\n$2\r\n{round:02}\r\n");
        s.write_all(format!("{set}*2\r\n$3\r\nGET\r\n$5\r\nwho").as_bytes()).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(String::from_utf8_lossy(&read_all(&mut s)), "+OK\r\n", "round {round}");
    }

    // Oversized key and value: errors, connection stays open.
    let mut client = Client::connect(&addr).unwrap();
    let big_key = vec![b'k'; 64 * 1024 + 1];
    let reply = client.cmd_bytes(&[b"SET", &big_key, b"v"]).unwrap();
    assert_eq!(text(&reply), "-ERR key too large");
    let big_value = vec![b'v'; 4 * 1024 * 1024 + 1];
    let reply = client.cmd_bytes(&[b"SET", b"k", &big_value]).unwrap();
    assert_eq!(text(&reply), "-ERR value too large");
    // The largest allowed ones go through.
    let max_key = vec![b'k'; 64 * 1024];
    let max_value = vec![b'v'; 4 * 1024 * 1024];
    assert_eq!(text(&client.cmd_bytes(&[b"SET", &max_key, &max_value]).unwrap()), "OK");
    assert_eq!(client.cmd_bytes(&[b"GET", &max_key]).unwrap(), raftkv::resp::Reply::Bulk(Some(max_value)));
    assert_eq!(text(&client.cmd(&["GET", "half"]).unwrap()), "(nil)");
    assert_eq!(text(&client.cmd(&["GET", "whole"]).unwrap()), "19");
    assert_eq!(text(&client.cmd(&["nosuch", "x"]).unwrap()), "-ERR unknown command 'nosuch'");
    assert_eq!(text(&client.cmd(&["GET"]).unwrap()), "-ERR wrong number of arguments for 'get'");

    // Garbage on the peer port is dropped; the node keeps working.
    for raft_addr in c.nodes.values().map(|n| n.raft_addr.clone()).collect::<Vec<_>>() {
        let mut s = TcpStream::connect(&raft_addr).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = s.write_all(&[0xff; 4096]);
    }
    assert_eq!(text(&client.cmd(&["SET", "after", "garbage"]).unwrap()), "OK");
    for id in 1..=3 {
        let mut cl = c.client(id).unwrap();
        assert_eq!(text(&cl.cmd(&["GET", "after"]).unwrap()), "garbage");
    }
}

#[test]
fn a_thousand_idle_connections_do_not_stop_the_node() {
    let mut c = TestCluster::new(3);
    c.start_all();
    let l = leader(&mut c);
    let addr = c.nodes[&l].client_addr.clone();
    // This process holds the other ends of the thousand connections.
    raftkv::limits::raise_open_files();
    let idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(&addr).expect("connect")).collect();
    let started = Instant::now();
    let mut client = Client::connect(&addr).unwrap();
    assert_eq!(text(&client.cmd(&["SET", "busy", "yes"]).unwrap()), "OK");
    assert_eq!(text(&client.cmd(&["GET", "busy"]).unwrap()), "yes");
    println!("served beside 1000 idle connections in {:?}", started.elapsed());
    drop(idle);
}

fn node_exit(c: &TestCluster, id: u64, extra: &[&str]) -> (Option<i32>, String) {
    let out = c.node_command(id, extra).output().expect("run node");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn wrong_flags_and_peers_files_are_refused_with_exit_2() {
    let c = TestCluster::new(3);
    let out = Command::new(env!("CARGO_BIN_EXE_node")).args(["--id", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "node: --peers is required\n");

    let out =
        Command::new(env!("CARGO_BIN_EXE_node")).args(["--id", "1", "--peers", "p", "--fsync", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);

    let mut wrong = c;
    std::fs::write(&wrong.peers_path, "1 127.0.0.1:1 127.0.0.1:2\n2 127.0.0.1:3\n").unwrap();
    let (code, err) = node_exit(&wrong, 1, &[]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("peers.txt:2:"), "{err}");
    wrong.write_peers(&[1, 2]);
    let (code, err) = node_exit(&wrong, 3, &[]);
    assert_eq!(code, Some(2));
    assert!(err.contains("node 3 is not in the file"), "{err}");
}

#[test]
fn a_data_directory_in_use_or_of_another_node_is_refused_with_exit_1() {
    let mut c = TestCluster::new(3);
    c.start(1);
    std::thread::sleep(Duration::from_millis(500));
    // A second process on node 1's directory.
    let data = c.nodes[&1].data.to_string_lossy().into_owned();
    let (code, err) = node_exit(&c, 1, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&data) && err.contains("in use"), "{err}");
    // Node 2 pointed at node 1's directory (after node 1 stopped).
    c.stop(1);
    let (code, err) = node_exit(&c, 2, &["--data", &data]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("node 1") && err.contains("node 2"), "{err}");
}
