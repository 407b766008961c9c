//! How a node reads its clients (README, Performance: the client poller):
//! between requests a connection waits with the poller, which reads and
//! submits plain reads and writes itself and hands everything else back to
//! the connection's thread. Each test drives one of the hand-overs and
//! checks every reply, byte for byte, in order.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use raftkv::resp::{self, Reply};
use support::{Client, TestCluster};

fn one_node(flags: &[&str]) -> TestCluster {
    let mut c = TestCluster::new(1);
    c.flags.extend(flags.iter().map(|f| f.to_string()));
    c.start(1);
    assert_eq!(c.wait_for_leader(Duration::from_secs(20)), Some(1), "{}", c.logs());
    c
}

fn connect(c: &TestCluster) -> TcpStream {
    let conn = TcpStream::connect(&c.nodes[&1].client_addr).expect("connect");
    conn.set_nodelay(true).expect("nodelay");
    conn.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    conn
}

fn request(args: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    resp::encode_request(args, &mut out);
    out
}

/// Reads exactly `expected.len()` bytes and compares them.
fn expect_bytes(conn: &mut TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    conn.read_exact(&mut got).unwrap_or_else(|e| panic!("reading {:?}: {e}", String::from_utf8_lossy(expected)));
    assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(expected));
}

#[test]
fn requests_arriving_a_byte_at_a_time_are_served_in_order() {
    let c = one_node(&[]);
    let mut conn = connect(&c);
    let mut input = Vec::new();
    for args in [&["SET", "k", "v1"][..], &["GET", "k"], &["INCR", "n"], &["INCR", "n"], &["PING"], &["GET", "n"]] {
        input.extend(request(args));
    }
    input.extend(b"GET k\r\n");
    for byte in &input {
        conn.write_all(std::slice::from_ref(byte)).expect("write");
        std::thread::sleep(Duration::from_micros(300));
    }
    expect_bytes(&mut conn, b"+OK\r\n$2\r\nv1\r\n:1\r\n:2\r\n+PONG\r\n$1\r\n2\r\n$2\r\nv1\r\n");
}

#[test]
fn a_pipeline_mixing_every_kind_of_command_keeps_its_order() {
    let c = one_node(&[]);
    let mut conn = connect(&c);
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let mut counter = 0;
    for i in 0..600 {
        let key = format!("key-{}", i % 7);
        let (args, reply): (Vec<String>, Vec<u8>) = match i % 9 {
            0 | 1 => (vec!["SET".into(), key.clone(), format!("v{i}")], b"+OK\r\n".to_vec()),
            2 => {
                counter += 1;
                (vec!["INCR".into(), "counter".into()], format!(":{counter}\r\n").into_bytes())
            }
            3 => (
                vec!["GET".into(), "counter".into()],
                format!("${}\r\n{counter}\r\n", counter.to_string().len()).into_bytes(),
            ),
            4 => (vec!["PING".into()], b"+PONG\r\n".to_vec()),
            5 => (vec!["MULTI".into()], b"+OK\r\n".to_vec()),
            6 => {
                counter += 1;
                (vec!["INCR".into(), "counter".into()], b"+QUEUED\r\n".to_vec())
            }
            7 => (vec!["EXEC".into()], format!("*1\r\n:{counter}\r\n").into_bytes()),
            _ => (vec!["CLIENT".into(), "SETNAME".into(), format!("c{i}")], b"+OK\r\n".to_vec()),
        };
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        input.extend(request(&args));
        expected.extend(reply);
    }
    // Sent in pieces of uneven sizes, some of them while replies are out.
    let reader = {
        let mut conn = conn.try_clone().expect("clone");
        std::thread::spawn(move || expect_bytes(&mut conn, &expected))
    };
    for chunk in input.chunks(1_000) {
        conn.write_all(chunk).expect("write");
        std::thread::sleep(Duration::from_millis(2));
    }
    reader.join().expect("every reply, in order");
}

#[test]
fn many_connections_get_their_own_replies() {
    let c = one_node(&[]);
    let addr = c.nodes[&1].client_addr.clone();
    let workers: Vec<_> = (0..32)
        .map(|w| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&addr).expect("connect");
                for i in 1..=150 {
                    let key = format!("w{w}");
                    assert_eq!(client.cmd(&["INCR", &key]).expect("INCR"), Reply::Integer(i));
                    let value = format!("{w}:{i}");
                    assert_eq!(client.cmd(&["SET", &format!("s{w}"), &value]).expect("SET"), Reply::ok());
                    assert_eq!(client.cmd(&["GET", &format!("s{w}")]).expect("GET"), Reply::bulk(value.as_str()));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker saw another's reply");
    }
}

#[test]
fn a_client_active_within_its_timeout_stays_and_is_closed_once_idle() {
    let c = one_node(&["--client-timeout", "1"]);
    let mut conn = connect(&c);
    let mut last = Instant::now();
    // Past the 1 s timeout in all, ending with a GET.
    for round in 0..6 {
        last = Instant::now();
        // The connection's thread answers PING; the poller reads GET and
        // the core answers it: idleness counts from either.
        if round % 2 == 0 {
            conn.write_all(&request(&["PING"])).expect("still open");
            expect_bytes(&mut conn, b"+PONG\r\n");
        } else {
            conn.write_all(&request(&["GET", "nothing"])).expect("still open");
            expect_bytes(&mut conn, b"$-1\r\n");
        }
        std::thread::sleep(Duration::from_millis(400));
    }
    let mut buf = [0u8; 16];
    assert_eq!(conn.read(&mut buf).unwrap_or(0), 0, "closed once idle");
    let after = last.elapsed();
    assert!(after >= Duration::from_millis(900) && after < Duration::from_secs(4), "closed after {after:?}");
    assert_eq!(c.info_u64(1, "client_idle_disconnections"), 1);
}

#[test]
fn a_large_reply_and_an_unread_one_go_back_to_the_connection() {
    let c = one_node(&[]);
    let mut conn = connect(&c);
    let big = "x".repeat(200_000);
    conn.write_all(&request(&["SET", "big", &big])).expect("write");
    expect_bytes(&mut conn, b"+OK\r\n");
    // Larger than the core sends itself: the connection's thread writes it.
    for _ in 0..3 {
        conn.write_all(&request(&["GET", "big"])).expect("write");
        expect_bytes(&mut conn, format!("$200000\r\n{big}\r\n").as_bytes());
        conn.write_all(&request(&["GET", "missing"])).expect("write");
        expect_bytes(&mut conn, b"$-1\r\n");
    }
    // Many before reading any: the socket fills, what it did not take is
    // written by the thread.
    let mut input = Vec::new();
    for _ in 0..40 {
        input.extend(request(&["GET", "big"]));
    }
    conn.write_all(&input).expect("write");
    std::thread::sleep(Duration::from_millis(300));
    for _ in 0..40 {
        expect_bytes(&mut conn, format!("$200000\r\n{big}\r\n").as_bytes());
    }
    conn.write_all(&request(&["PING"])).expect("write");
    expect_bytes(&mut conn, b"+PONG\r\n");
}

#[test]
fn a_client_waiting_for_its_reply_is_not_idle() {
    let mut c = TestCluster::new(3);
    c.flags.extend(["--client-timeout".to_string(), "1".to_string()]);
    c.start_all();
    let leader = c.wait_for_leader(Duration::from_secs(20)).expect("a leader");
    let mut conn = TcpStream::connect(&c.nodes[&leader].client_addr).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    conn.write_all(&request(&["SET", "warm", "up"])).expect("write");
    expect_bytes(&mut conn, b"+OK\r\n");
    std::thread::sleep(Duration::from_millis(100));
    // Without a quorum the write waits past --client-timeout: the leader
    // steps down, and answers -TIMEOUT once it has had no leader for a
    // second.
    let followers: Vec<u64> = c.nodes.keys().copied().filter(|&id| id != leader).collect();
    for &id in &followers {
        c.signal(id, "STOP");
    }
    let sent = Instant::now();
    conn.write_all(&request(&["SET", "k", "v"])).expect("write");
    let mut reply = [0u8; 1];
    let read = conn.read_exact(&mut reply);
    let waited = sent.elapsed();
    for &id in &followers {
        c.signal(id, "CONT");
    }
    read.expect("a reply, not a disconnection");
    let mut rest = Vec::new();
    while !rest.ends_with(b"\r\n") {
        let mut byte = [0u8; 1];
        conn.read_exact(&mut byte).expect("the rest of the reply");
        rest.push(byte[0]);
    }
    assert!(matches!(reply[0], b'+' | b'-'), "{}{}", reply[0] as char, String::from_utf8_lossy(&rest));
    assert!(waited > Duration::from_millis(1_100), "the reply came after {waited:?}, within the idle timeout");
    conn.write_all(&request(&["PING"])).expect("write");
    expect_bytes(&mut conn, b"+PONG\r\n");
}

#[test]
fn requests_after_a_pause_are_read_by_the_poller_and_counted() {
    let c = one_node(&[]);
    let (processed, by_poller) = (c.info_u64(1, "total_commands_processed"), c.info_u64(1, "commands_read_by_poller"));
    let mut client = Client::connect(&c.nodes[&1].client_addr).expect("connect");
    for i in 0..20 {
        let value = format!("v{i}");
        assert_eq!(client.cmd(&["SET", "k", &value]).expect("SET"), Reply::ok());
        // Long enough for the connection to leave itself with the poller.
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(client.cmd(&["GET", "k"]).expect("GET"), Reply::bulk(value.as_str()));
        std::thread::sleep(Duration::from_millis(30));
    }
    let processed = c.info_u64(1, "total_commands_processed") - processed;
    let by_poller = c.info_u64(1, "commands_read_by_poller") - by_poller;
    assert!(processed >= 41, "40 requests and an INFO, counted {processed}");
    // A request that arrives before the connection has parked is its
    // thread's to read (at most the first, with these pauses).
    assert!((39..=processed).contains(&by_poller), "{by_poller} of {processed} read by the poller");
}

/// Context switches of the node's client connection threads so far.
fn client_thread_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    let mut total = 0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "client" {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum::<u64>();
    }
    total
}

#[test]
fn idle_connections_cost_no_wake_ups() {
    let c = one_node(&[]);
    let pid = c.nodes[&1].pid().expect("running");
    let clients: Vec<Client> = (0..20)
        .map(|i| {
            let mut client = Client::connect(&c.nodes[&1].client_addr).expect("connect");
            let key = format!("idle-{i}");
            assert_eq!(client.cmd(&["SET", &key, "v"]).expect("SET"), Reply::ok());
            assert_eq!(client.cmd(&["GET", &key]).expect("GET"), Reply::bulk("v"));
            // Answered by the thread itself: no batch is left out.
            assert_eq!(client.cmd(&["PING"]).expect("PING"), Reply::Simple("PONG".into()));
            client
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before = client_thread_switches(pid);
    assert!(before > 0, "the client threads of {pid} are not in /proc");
    // Longer than the answer timeout (7 s), at which parked threads used
    // to wake to look for a batch out too long.
    std::thread::sleep(Duration::from_secs(8));
    let woke = client_thread_switches(pid) - before;
    println!("20 idle connections' threads switched context {woke} times in 8 s");
    assert!(woke < 10, "20 idle connections' threads switched context {woke} times in 8 s");
    for mut client in clients {
        assert_eq!(client.cmd(&["GET", "idle-0"]).expect("GET after idling"), Reply::bulk("v"));
    }
}
