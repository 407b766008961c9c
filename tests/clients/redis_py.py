"""redis-py at its defaults against a raftkv cluster (docs/commands.md).

Usage: python3 redis_py.py HOST:PORT HOST:PORT ...  (the nodes' client
addresses). Prints "ok" when every check passed; the first failure raises
with what was expected.
"""
import sys
import time

import redis


def main(addrs):
    nodes = []
    for addr in addrs:
        host, port = addr.rsplit(":", 1)
        nodes.append((host, int(port)))
    # The library's defaults: RESP3 for redis-py 8 (HELLO 3).
    a = redis.Redis(host=nodes[0][0], port=nodes[0][1], decode_responses=True)
    b = redis.Redis(host=nodes[1][0], port=nodes[1][1], decode_responses=True)
    resp2 = redis.Redis(host=nodes[2][0], port=nodes[2][1], decode_responses=True, protocol=2)
    for r in (a, b, resp2):
        assert r.ping() is True
    if int(redis.__version__.split(".")[0]) >= 8:
        check("resp=3" in a.execute_command("CLIENT", "INFO"), True, "RESP3 by default")
    check("resp=2" in resp2.execute_command("CLIENT", "INFO"), True, "RESP2 when asked")
    a.flushall()

    strings(a, b)
    expiry(a, b)
    hashes(a, resp2)
    scans(a)
    pipelines(a, b)
    transactions(a, b)
    scripts(a, b, resp2)
    connection(a, resp2)
    print("ok")


def check(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def strings(a, b):
    check(a.set("s", "v"), True, "SET")
    check(b.get("s"), "v", "GET through another node")
    check(a.set("s", "w", nx=True), None, "SET NX on an existing key")
    check(a.set("s", "w", xx=True, get=True), "v", "SET XX GET")
    check(a.set("new", "x", xx=True), None, "SET XX on an absent key")
    check(a.set("t", "1", ex=100), True, "SET EX")
    check(0 < a.ttl("t") <= 100, True, "TTL after SET EX")
    check(a.set("t", "1", px=100000, keepttl=False), True, "SET PX")
    check(a.set("t", "2", keepttl=True), True, "SET KEEPTTL")
    check(a.pttl("t") > 90000, True, "KEEPTTL kept the deadline")
    check(a.set("t", "3", exat=int(time.time()) + 50), True, "SET EXAT")
    check(a.set("t", "3", pxat=int(time.time() * 1000) + 50000), True, "SET PXAT")
    check(a.incr("n"), 1, "INCR")
    check(a.incr("n", 10), 11, "INCRBY (redis-py's incr with an amount)")
    check(a.decr("n"), 10, "DECR")
    check(a.decr("n", 5), 5, "DECRBY")
    check(a.incrbyfloat("f", 1.5), 1.5, "INCRBYFLOAT")
    check(a.getset("n", "0"), "5", "GETSET")
    check(a.getdel("n"), "0", "GETDEL")
    check(a.setnx("n", "1"), True, "SETNX")
    check(a.mset({"m1": "1", "m2": "2"}), True, "MSET")
    check(b.mget("m1", "m2", "m3"), ["1", "2", None], "MGET")
    check(a.msetnx({"m1": "x", "m9": "y"}), False, "MSETNX")
    check(a.append("m1", "23"), 3, "APPEND")
    check(a.strlen("m1"), 3, "STRLEN")
    check(a.getrange("m1", 1, -1), "23", "GETRANGE")
    check(a.setrange("m1", 1, "zz"), 3, "SETRANGE")
    check(a.getex("m1", ex=30), "1zz", "GETEX")
    check(a.exists("m1", "m2", "nope"), 2, "EXISTS")
    check(a.type("m1"), "string", "TYPE")
    check(a.rename("m1", "m1b"), True, "RENAME")
    check(a.renamenx("m1b", "m2"), False, "RENAMENX")
    check(a.delete("m1b", "m2", "nope"), 2, "DEL")
    check(a.unlink("m9"), 0, "UNLINK")


def expiry(a, b):
    a.set("e", "v")
    check(a.expire("e", 100, nx=True), True, "EXPIRE NX")
    check(a.expire("e", 50, gt=True), False, "EXPIRE GT")
    check(a.pexpire("e", 200), True, "PEXPIRE")
    check(a.persist("e"), True, "PERSIST")
    check(a.ttl("e"), -1, "TTL without a deadline")
    check(a.ttl("nope"), -2, "TTL of an absent key")
    check(a.expireat("e", int(time.time()) + 100), True, "EXPIREAT")
    check(abs(a.expiretime("e") - (int(time.time()) + 100)) <= 2, True, "EXPIRETIME")
    # A key past its deadline is gone on every node.
    a.set("short", "v", px=300)
    check(b.get("short"), "v", "GET before the deadline")
    time.sleep(0.5)
    for r in (a, b):
        check(r.get("short"), None, "GET after the deadline")
        check(r.exists("short"), 0, "EXISTS after the deadline")


def hashes(a, resp2):
    check(a.hset("h", mapping={"f1": "1", "f2": "2"}), 2, "HSET mapping")
    check(a.hset("h", "f3", "3"), 1, "HSET")
    check(a.hget("h", "f1"), "1", "HGET")
    check(a.hmget("h", ["f1", "nope"]), ["1", None], "HMGET")
    check(a.hgetall("h"), {"f1": "1", "f2": "2", "f3": "3"}, "HGETALL (RESP3 map)")
    check(resp2.hgetall("h"), {"f1": "1", "f2": "2", "f3": "3"}, "HGETALL (RESP2)")
    check(a.hexists("h", "f1"), True, "HEXISTS")
    check(a.hlen("h"), 3, "HLEN")
    check(sorted(a.hkeys("h")), ["f1", "f2", "f3"], "HKEYS")
    check(sorted(a.hvals("h")), ["1", "2", "3"], "HVALS")
    check(a.hincrby("h", "f1", 5), 6, "HINCRBY")
    check(a.hsetnx("h", "f1", "x"), False, "HSETNX")
    check(a.hdel("h", "f1", "f2"), 2, "HDEL")
    check(dict(a.hscan_iter("h")), {"f3": "3"}, "HSCAN")
    try:
        a.get("h")
        raise AssertionError("GET on a hash did not fail")
    except redis.ResponseError as e:
        check(str(e).startswith("WRONGTYPE"), True, "WRONGTYPE")


def scans(a):
    for i in range(300):
        a.set(f"scan:{i}", i)
    found = set(a.scan_iter(match="scan:*", count=7))
    check(len(found), 300, "SCAN finds every key")
    check(len(a.keys("scan:1*")), 111, "KEYS with a pattern")
    check(a.randomkey() is not None, True, "RANDOMKEY")
    check(a.dbsize() >= 300, True, "DBSIZE")


def pipelines(a, b):
    p = a.pipeline(transaction=False)
    for i in range(100):
        p.set(f"p:{i}", i)
        p.incr("pc")
    results = p.execute()
    check(results[-1], 100, "a non-transactional pipeline in order")
    check(b.get("p:99"), "99", "pipelined writes seen elsewhere")


def transactions(a, b):
    # redis-py's default pipeline is MULTI/EXEC.
    p = a.pipeline()
    p.set("tx", "1").incr("tx").get("tx").hset("txh", "f", "v").ping()
    check(p.execute(), [True, 2, "2", 1, True], "MULTI/EXEC replies")
    # A queued syntax error aborts everything: nothing is applied.
    a.set("untouched", "0")
    p = a.pipeline()
    p.set("untouched", "1")
    p.execute_command("SET", "untouched")  # wrong arity: refused at queue time
    try:
        p.execute()
        raise AssertionError("EXEC with a bad command did not fail")
    except redis.ResponseError as e:
        check("EXECABORT" in str(e) or "wrong number" in str(e), True, "EXECABORT")
    check(a.get("untouched"), "0", "an aborted transaction applied nothing")
    # WATCH: a change made through another node makes EXEC fail.
    a.set("balance", "10")
    with a.pipeline() as p:
        p.watch("balance")
        current = int(p.get("balance"))
        b.set("balance", "999")
        p.multi()
        p.set("balance", current - 1)
        try:
            p.execute()
            raise AssertionError("EXEC after a concurrent change did not fail")
        except redis.WatchError:
            pass
    check(a.get("balance"), "999", "the watched transaction applied nothing")
    # WATCH without a conflict goes through; the usual retry loop works.
    def decrement(pipe):
        value = int(pipe.get("balance"))
        pipe.multi()
        pipe.set("balance", value - 1)

    a.transaction(decrement, "balance")
    check(a.get("balance"), "998", "a watched transaction without conflict")


def scripts(a, b, resp2):
    # redis-py's Lock: SET NX PX to take it, Lua scripts (EVALSHA, loaded
    # on NOSCRIPT) to release and extend it.
    lock = a.lock("resource", timeout=10, blocking_timeout=1)
    check(lock.acquire(), True, "Lock.acquire")
    other = b.lock("resource", timeout=10, blocking_timeout=0.2)
    check(other.acquire(), False, "a second Lock through another node waits and gives up")
    check(lock.extend(5), True, "Lock.extend (a script)")
    check(lock.owned(), True, "Lock.owned")
    lock.release()
    check(other.acquire(), True, "acquired once released")
    other.release()
    with a.lock("resource2", timeout=5):
        check(b.exists("resource2"), 1, "the lock key seen through another node")
    check(b.exists("resource2"), 0, "released by the context manager")
    # Scripts loaded through one node run through another.
    incr_by = a.register_script("return redis.call('incrby', KEYS[1], ARGV[1])")
    check(incr_by(keys=["sc"], args=[5]), 5, "a registered script")
    sha = a.script_load("return ARGV[1]")
    check(b.evalsha(sha, 0, "x"), "x", "EVALSHA of a script loaded through another node")
    check(b.script_exists(sha), [True], "SCRIPT EXISTS")
    check(a.eval("return {KEYS[1], ARGV[1]}", 1, "k", "v"), ["k", "v"], "EVAL")
    # RESP3's types from scripts, as redis-py reads them in each protocol.
    check(resp2.eval("redis.setresp(3); return true", 0), 1, "a boolean over RESP2")
    check(resp2.eval("return {double = 3.5}", 0), "3.5", "a double over RESP2")
    if int(redis.__version__.split(".")[0]) >= 8:
        check(a.eval("redis.setresp(3); return true", 0), True, "a RESP3 boolean")
        check(a.eval("return true", 0), 1, "a script's true without setresp(3)")
        check(a.eval("return {double = 3.5}", 0), 3.5, "a RESP3 double")
        check(a.eval("return {map = {f = 'v'}}", 0), {"f": "v"}, "a RESP3 map")


def connection(a, resp2):
    check(a.client_setname("suite"), True, "CLIENT SETNAME")
    check(a.client_getname(), "suite", "CLIENT GETNAME")
    check(isinstance(a.client_id(), int), True, "CLIENT ID")
    check(any(c.get("name") == "suite" for c in a.client_list()), True, "CLIENT LIST")
    check(a.echo("hi"), "hi", "ECHO")
    secs, micros = a.time()
    check(abs(secs - time.time()) < 5, True, "TIME")
    check(a.execute_command("SELECT", 0), True, "SELECT 0")
    try:
        a.execute_command("SELECT", 1)
        raise AssertionError("SELECT 1 did not fail")
    except redis.ResponseError as e:
        check("out of range" in str(e), True, "SELECT 1")
    check("appendfsync" in resp2.config_get("append*"), True, "CONFIG GET")
    check(resp2.command_count() > 50, True, "COMMAND COUNT")
    info = a.info("keyspace")
    check("db0" in info and info["db0"]["keys"] >= 1, True, "INFO keyspace")
    check("redis_version" in a.info("server"), True, "INFO server")


if __name__ == "__main__":
    main(sys.argv[1:])
