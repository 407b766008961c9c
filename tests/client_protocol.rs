//! The client side of docs/commands.md end to end, without Raft: a one-node server made
//! of nothing but `resp`, `command` and `kv` answers real clients over
//! loopback TCP. It checks the the documented `nc` example byte for byte, that a
//! protocol error closes the connection, that `bin/kv` prints and exits as
//! documented, and, when they are installed, that `redis-cli` and
//! `redis-benchmark` run against it without complaint.

use std::io::{BufWriter, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use raftkv::command::{ClientCommand, parse};
use raftkv::kv::{KvStore, WriteOp};
use raftkv::resp::{ReadError, Reply, RequestReader};

const IO_TIMEOUT: Duration = Duration::from_secs(10);
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

/// A single-node server: what the real node does minus replication.
struct MiniServer {
    addr: String,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl MiniServer {
    fn start() -> MiniServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let store = Arc::new(Mutex::new(KvStore::new()));
        let stop_flag = stop.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if stop_flag.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let store = store.clone();
                thread::spawn(move || serve(conn, &store));
            }
        });
        MiniServer { addr, stop, accept: Some(accept) }
    }

    fn port(&self) -> String {
        self.addr.rsplit_once(':').unwrap().1.to_string()
    }
}

impl Drop for MiniServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(handle) = self.accept.take() {
            let _ = handle.join();
        }
    }
}

fn answer(command: ClientCommand, store: &Mutex<KvStore>) -> (Reply, bool) {
    let mut store = store.lock().unwrap();
    match command {
        ClientCommand::Write(args) => {
            (store.apply(&WriteOp::command(&args.iter().map(|a| &a[..]).collect::<Vec<_>>()), 1), false)
        }
        ClientCommand::Read(op) => (store.read(&op, 0, 0), false),
        ClientCommand::Reply(reply) => (reply, false),
        ClientCommand::Connection { name: "quit", .. } => (Reply::ok(), true),
        ClientCommand::Info { .. } => (Reply::bulk(format!("# Raft\r\nkeys:{}\r\n", store.len())), false),
        ClientCommand::Connection { name: "config", args } => {
            (Reply::array(args[2..].iter().flat_map(|p| [Reply::bulk(p.clone()), Reply::bulk("")]).collect()), false)
        }
        ClientCommand::Connection { .. } => (Reply::ok(), false),
        ClientCommand::Raft(_) | ClientCommand::Role | ClientCommand::Sentinel(_) => {
            (Reply::err("not a cluster"), false)
        }
    }
}

/// One connection: replies in order, flushed whenever no further request is
/// already buffered (so a pipeline gets one write per batch).
fn serve(conn: TcpStream, store: &Mutex<KvStore>) {
    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
    let mut reader = RequestReader::new(conn.try_clone().unwrap());
    let mut out = BufWriter::new(conn);
    loop {
        let (reply, close) = match reader.next_request() {
            Ok(Some(args)) => match parse(args) {
                Ok(command) => answer(command, store),
                Err(reply) => (reply, false),
            },
            Ok(None) | Err(ReadError::Io(_)) | Err(ReadError::EofInRequest { .. }) => return,
            Err(ReadError::Protocol(e)) => (e.reply(), true),
        };
        if out.write_all(&reply.to_bytes()).is_err() {
            return;
        }
        if (close || reader.buffered_bytes() == 0) && out.flush().is_err() {
            return;
        }
        if close {
            let _ = out.get_ref().shutdown(Shutdown::Both);
            return;
        }
    }
}

fn connect(server: &MiniServer) -> TcpStream {
    let conn = TcpStream::connect(&server.addr).unwrap();
    conn.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    conn
}

/// Sends `request` and reads until `expected.len()` bytes came back.
fn exchange(conn: &mut TcpStream, request: &[u8], expected: &[u8]) {
    conn.write_all(request).unwrap();
    let mut got = vec![0; expected.len()];
    conn.read_exact(&mut got).unwrap();
    assert_eq!(
        got.escape_ascii().to_string(),
        expected.escape_ascii().to_string(),
        "reply to {}",
        request.escape_ascii()
    );
}

#[test]
fn spec_nc_session_byte_for_byte() {
    let server = MiniServer::start();
    let mut conn = connect(&server);
    exchange(&mut conn, b"SET greeting hello\n", b"+OK\r\n");
    exchange(&mut conn, b"GET greeting\r\n", b"$5\r\nhello\r\n");
    exchange(&mut conn, b"GET missing\r\n", b"$-1\r\n");
    exchange(&mut conn, b"EXISTS greeting\r\n", b":1\r\n");
    exchange(&mut conn, b"INCR greeting\r\n", b"-ERR value is not an integer\r\n");
    exchange(&mut conn, b"CAS greeting hello bye\r\n", b":1\r\n");
    exchange(&mut conn, b"CAS greeting hello bye\r\n", b":0\r\n");
    exchange(&mut conn, b"DEL greeting nothere\r\n", b":1\r\n");
    exchange(&mut conn, b"FOO\r\n", b"-ERR unknown command 'FOO'\r\n");
    exchange(&mut conn, b"GET\r\n", b"-ERR wrong number of arguments for 'get'\r\n");
    // Pipelined RESP requests in one write.
    exchange(
        &mut conn,
        b"*3\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n*3\r\n$4\r\nMGET\r\n$1\r\na\r\n$1\r\nb\r\n*1\r\n$4\r\nPING\r\n",
        b"+OK\r\n*2\r\n$1\r\n1\r\n$-1\r\n+PONG\r\n",
    );
    exchange(&mut conn, b"QUIT\r\n", b"+OK\r\n");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "connection should close after QUIT");
}

#[test]
fn protocol_error_replies_then_closes() {
    let server = MiniServer::start();
    let mut conn = connect(&server);
    exchange(&mut conn, b"*1\r\n$-5\r\n", b"-ERR protocol error: invalid bulk length\r\n");
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "got {}", rest.escape_ascii());

    let mut conn = connect(&server);
    exchange(&mut conn, b"SET a \"b\n", b"-ERR protocol error: unbalanced quotes in request\r\n");
}

#[test]
fn oversized_value_is_refused_and_the_connection_stays_open() {
    let server = MiniServer::start();
    let mut conn = connect(&server);
    let mut request = Vec::new();
    let value = vec![b'v'; raftkv::config::VALUE_BYTES_MAX + 1];
    raftkv::resp::encode_request(&[&b"SET"[..], b"k", &value], &mut request);
    exchange(&mut conn, &request, b"-ERR value too large\r\n");
    exchange(&mut conn, b"PING\r\n", b"+PONG\r\n");
}

/// Waits for a child with a deadline; kills it if the deadline passes.
fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("child process did not finish in {CHILD_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn run(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    finish(child)
}

fn kv(server: &MiniServer, args: &[&str]) -> (String, i32) {
    let mut full = vec!["-a", &server.addr];
    full.extend_from_slice(args);
    let out = run(env!("CARGO_BIN_EXE_kv"), &full, b"");
    (String::from_utf8_lossy(&out.stdout).into_owned(), out.status.code().unwrap())
}

#[test]
fn kv_client_prints_like_redis_cli() {
    let server = MiniServer::start();
    assert_eq!(kv(&server, &["SET", "a", "b"]), ("OK\n".into(), 0));
    assert_eq!(kv(&server, &["GET", "a"]), ("\"b\"\n".into(), 0));
    assert_eq!(kv(&server, &["GET", "zz"]), ("(nil)\n".into(), 0));
    assert_eq!(kv(&server, &["INCR", "n"]), ("(integer) 1\n".into(), 0));
    assert_eq!(kv(&server, &["MGET", "a", "zz"]), ("1) \"b\"\n2) (nil)\n".into(), 0));
    assert_eq!(kv(&server, &["INCR", "a"]), ("(error) ERR value is not an integer\n".into(), 1));
    assert_eq!(kv(&server, &["--raw", "GET", "a"]), ("b\n".into(), 0));
}

#[test]
fn kv_client_reads_commands_from_stdin() {
    let server = MiniServer::start();
    let input = b"SET k \"two words\"\n\nGET k\nset k 'unbalanced\nquit\nGET k\n";
    let out = run(env!("CARGO_BIN_EXE_kv"), &["-a", &server.addr], input);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n\"two words\"\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "Invalid argument(s)\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn kv_client_exit_codes() {
    let out = run(env!("CARGO_BIN_EXE_kv"), &["--bogus"], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown flag '--bogus'"), "{stderr}");

    // A port nobody listens on: bind one, then free it.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = run(env!("CARGO_BIN_EXE_kv"), &["-a", &addr, "PING"], b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with(&format!("kv: could not connect to {addr}:")), "{stderr}");
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether a test that needs `program` can run. `make test` (and so CI)
/// installs redis-tools and sets RAFTKV_REQUIRE_REDIS_TOOLS, so there a
/// missing program is a failure, never a silent skip.
fn available(program: &str) -> bool {
    if installed(program) {
        return true;
    }
    assert!(std::env::var_os("RAFTKV_REQUIRE_REDIS_TOOLS").is_none(), "{program} is required but not installed");
    println!("skipped: {program} is not installed (make test installs it)");
    false
}

#[test]
fn redis_cli_works() {
    if !available("redis-cli") {
        return;
    }
    let server = MiniServer::start();
    let port = server.port();
    let cli = |args: &[&str], stdin: &[u8]| {
        let mut full = vec!["-h", "127.0.0.1", "-p", &port];
        full.extend_from_slice(args);
        run("redis-cli", &full, stdin)
    };
    let out = cli(&["SET", "a", "b"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n");
    let out = cli(&["--no-raw", "GET", "a"], b"");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\"b\"\n");
    // Commands piped in, as a script would.
    let out = cli(&[], b"SET n 41\nINCR n\nDBSIZE\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "OK\n42\n2\n");
    assert!(out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn redis_benchmark_works() {
    if !available("redis-benchmark") {
        return;
    }
    let server = MiniServer::start();
    let port = server.port();
    let out = run(
        "redis-benchmark",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-c",
            "4",
            "-n",
            "2000",
            "-P",
            "8",
            "-r",
            "1000",
            "-q",
            "-t",
            "ping,set,get,incr,mset",
        ],
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(!stderr.contains("WARN") && !stderr.contains("ERR"), "{stderr}");
    for test in ["PING_INLINE", "PING_MBULK", "SET", "GET", "INCR", "MSET (10 keys)"] {
        assert!(stdout.contains(&format!("{test}: ")), "{test} missing:\n{stdout}");
    }
}
