//! A node stays up under heavy and hostile clients (README, Limits): it refuses or
//! disconnects the one client, never crashes, stalls the others or grows
//! without bound. Each test is one of the attacks that hurt a node before,
//! with the node's peak memory measured from /proc and bounded.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use raftkv::resp;
use support::{Client, TestCluster, parse_info, text};

fn leader(c: &mut TestCluster) -> u64 {
    c.wait_for_leader(Duration::from_secs(15)).unwrap_or_else(|| panic!("no leader\n{}", c.logs()))
}

/// Samples RSS every 20 ms while `f` runs; returns the peak.
fn peak_rss_during(c: &TestCluster, id: u64, f: impl FnOnce()) -> f64 {
    let pid = c.nodes[&id].pid().expect("running");
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0.0f64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let bytes = raftkv::limits::resident_bytes(&pid.to_string()).unwrap_or(0);
                peak = peak.max(bytes as f64 / (1024.0 * 1024.0));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    f();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap()
}

/// A connection the node serves (PING answered), waiting up to 10 s for a
/// place.
fn take_place(c: &TestCluster, addr: &str) -> Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut client = Client::connect(addr).unwrap();
        match client.cmd(&["PING"]) {
            Ok(reply) if text(&reply) == "PONG" => return client,
            other => assert!(Instant::now() < deadline, "no place: {other:?}\n{}", c.logs()),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One numeric field of `INFO section`, asked on `client`'s connection.
fn info_field(client: &mut Client, section: &str, field: &str) -> u64 {
    let reply = text(&client.cmd(&["INFO", section]).unwrap());
    parse_info(&reply).get(field).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("no {field} in {reply}"))
}

fn stat(c: &TestCluster, id: u64, field: &str) -> u64 {
    c.info_u64(id, field)
}

#[test]
fn past_maxclients_the_next_client_is_told_and_closed() {
    let mut c = TestCluster::new(1);
    c.flags.extend(["--maxclients".to_string(), "5".to_string()]);
    c.start(1);
    leader(&mut c);
    let addr = c.nodes[&1].client_addr.clone();
    // Connections the harness closed a moment ago (its INFOs while waiting
    // for the leader) keep their places until the node reads their end, so
    // each place is taken with a PING, again until answered.
    let held: Vec<Client> = (0..4).map(|_| take_place(&c, &addr)).collect();
    let mut info = take_place(&c, &addr);
    let rejected_before = info_field(&mut info, "stats", "rejected_connections");
    let mut extra = TcpStream::connect(&addr).unwrap();
    extra.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    let _ = extra.read_to_string(&mut got);
    assert_eq!(got, "-ERR max number of clients reached\r\n");
    assert_eq!(info_field(&mut info, "stats", "rejected_connections"), rejected_before + 1);
    let reply = info.cmd(&["INFO", "clients"]).unwrap();
    assert!(text(&reply).contains("connected_clients:5") && text(&reply).contains("maxclients:5"), "{}", text(&reply));
    drop(held);
}

/// One connection pipelines 10,000 GETs of a 4 MiB value and reads nothing:
/// past --client-output-limit it is disconnected, the node's memory stays
/// bounded, and other clients are served all along.
#[test]
fn a_client_that_does_not_read_is_disconnected_at_its_output_limit() {
    let mut c = TestCluster::new(1);
    c.start(1);
    leader(&mut c);
    let addr = c.nodes[&1].client_addr.clone();
    let mut setter = Client::connect(&addr).unwrap();
    let big = vec![b'v'; 4 << 20];
    assert_eq!(text(&setter.cmd_bytes(&[b"SET", b"big", &big]).unwrap()), "OK");
    let peak = peak_rss_during(&c, 1, || {
        let mut greedy = TcpStream::connect(&addr).unwrap();
        let mut requests = Vec::new();
        for _ in 0..10_000 {
            resp::encode_request(&[b"GET".as_slice(), b"big"], &mut requests);
        }
        // The node stops reading once its replies pile up; the rest of the
        // requests may never be taken.
        greedy.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = greedy.write_all(&requests);
        let deadline = Instant::now() + Duration::from_secs(20);
        while stat(&c, 1, "client_output_buffer_limit_disconnections") < 1 {
            assert!(Instant::now() < deadline, "the greedy client was not disconnected\n{}", c.logs());
            assert_eq!(text(&setter.cmd(&["PING"]).unwrap()), "PONG", "another client is stalled");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    println!("peak RSS with a client not reading 10,000 x 4 MiB: {peak:.0} MB");
    assert!(peak < 300.0, "the node grew to {peak:.0} MB");
    assert_eq!(text(&setter.cmd(&["GET", "small"]).unwrap()), "(nil)");
    assert!(c.logs().contains("--client-output-limit"), "the disconnection is logged\n{}", c.logs());
}

/// A hundred clients each send half of a 16 MiB MSET and stop: the node
/// holds a bounded amount of their partial requests (README, Limits), closing the
/// clients past it.
#[test]
fn half_sent_requests_hold_a_bounded_amount_of_memory() {
    let mut c = TestCluster::new(1);
    c.start(1);
    leader(&mut c);
    let addr = c.nodes[&1].client_addr.clone();
    let value = vec![b'x'; 4 << 20];
    let mut request = Vec::new();
    resp::encode_request(&[b"MSET".as_slice(), b"a", &value, b"b", &value, b"c", &value, b"d", &value], &mut request);
    let half = &request[..request.len() / 2];
    let mut conns = Vec::new();
    let peak = peak_rss_during(&c, 1, || {
        for _ in 0..100 {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.write_all(half);
            conns.push(s);
        }
        std::thread::sleep(Duration::from_millis(500));
    });
    println!("peak RSS with 100 half-sent 16 MiB requests: {peak:.0} MB");
    assert!(peak < 512.0, "the node grew to {peak:.0} MB");
    assert!(stat(&c, 1, "client_query_buffer_limit_disconnections") > 0, "{}", c.logs());
    let mut other = Client::connect(&addr).unwrap();
    assert_eq!(text(&other.cmd(&["SET", "k", "v"]).unwrap()), "OK");
    drop(conns);
    c.assert_none_exited();
}

/// MGET of one 4 MiB key a thousand times: 4 GB of reply, streamed from the
/// one stored copy, to a node that may use 2 GB of address space at most.
#[test]
fn a_huge_mget_is_streamed_not_built() {
    let mut c = TestCluster::new(1);
    c.wrapper.insert(1, vec!["sh".into(), "-c".into(), "ulimit -v 2000000 && exec \"$0\" \"$@\"".into()]);
    c.start(1);
    leader(&mut c);
    let addr = c.nodes[&1].client_addr.clone();
    let mut setter = Client::connect(&addr).unwrap();
    let big = vec![b'v'; 4 << 20];
    assert_eq!(text(&setter.cmd_bytes(&[b"SET", b"big", &big]).unwrap()), "OK");
    let mut args: Vec<&[u8]> = vec![b"MGET"];
    args.extend(std::iter::repeat_n(b"big".as_slice(), 1000));
    let mut request = Vec::new();
    resp::encode_request(&args, &mut request);
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&request).unwrap();
    let header = b"$4194304\r\n".len() + (4 << 20) + 2;
    let expected = b"*1000\r\n".len() + 1000 * header;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 20];
    while got < expected {
        let n = s.read(&mut chunk).unwrap_or_else(|e| panic!("after {got} of {expected} bytes: {e}\n{}", c.logs()));
        assert!(n > 0, "the node closed after {got} of {expected} bytes\n{}", c.logs());
        got += n;
    }
    assert_eq!(got, expected);
    c.assert_none_exited();
    assert_eq!(text(&setter.cmd(&["PING"]).unwrap()), "PONG");
}

/// With a low open-file limit, --maxclients is lowered to fit (and says
/// so); clients past it are refused with the error, not left hanging, and
/// the node goes on.
#[test]
fn maxclients_fits_the_open_file_limit() {
    let mut c = TestCluster::new(1);
    c.wrapper.insert(1, vec!["sh".into(), "-c".into(), "ulimit -n 400 && exec \"$0\" \"$@\"".into()]);
    c.start(1);
    leader(&mut c);
    let addr = c.nodes[&1].client_addr.clone();
    let max = stat(&c, 1, "maxclients");
    assert!(max > 0 && max < 400, "maxclients {max}");
    assert!(c.logs().contains("--maxclients 10000 lowered to"), "{}", c.logs());
    let conns: Vec<TcpStream> = (0..max + 20).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let mut held = Vec::new();
    let mut refused = 0;
    for mut s in conns {
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {
                assert!(buf[..n].starts_with(b"-ERR max number of clients reached"));
                refused += 1;
            }
            _ => held.push(s),
        }
    }
    assert!(refused >= 20, "{refused} refused of {} over {max}", max + 20);
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    let mut conn = Client::connect(&addr).unwrap();
    assert_eq!(text(&conn.cmd(&["SET", "after", "flood"]).unwrap()), "OK");
    c.assert_none_exited();
}

#[test]
fn an_idle_client_is_closed_after_client_timeout() {
    let mut c = TestCluster::new(1);
    c.flags.extend(["--client-timeout".to_string(), "1".to_string()]);
    c.start(1);
    leader(&mut c);
    let addr = c.nodes[&1].client_addr.clone();
    let mut idle = TcpStream::connect(&addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(idle.read(&mut buf).unwrap_or(0), 0, "the idle client is closed");
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(stat(&c, 1, "client_idle_disconnections") >= 1);
}
