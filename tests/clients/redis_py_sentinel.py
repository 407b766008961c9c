"""redis-py's Sentinel against raftkv: every node answers as a sentinel.

Usage: python3 redis_py_sentinel.py SECONDS HOST:PORT ...  Writes INCRs
through `Sentinel(...).master_for('raftkv')` for SECONDS while the test
kills leaders and hands leadership over, and prints one JSON line:
acknowledged INCRs, the final value, the errors that reached the
application by class name, and what `ROLE` says through the client at the
end (`master`: it talks to the leader).
"""
import json
import sys
import time

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel


def main(seconds, addrs):
    sentinels = [(a.rsplit(":", 1)[0], int(a.rsplit(":", 1)[1])) for a in addrs]
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.02), 20)
    sentinel = Sentinel(sentinels, socket_timeout=2.0, sentinel_kwargs={"socket_timeout": 1.0})
    master = sentinel.master_for("raftkv", socket_timeout=2.0, retry=retry, decode_responses=True)
    host, port = sentinel.discover_master("raftkv")
    assert any(port == p for (_, p) in sentinels), (host, port)
    assert len(sentinel.discover_slaves("raftkv")) == len(sentinels) - 1
    acked, errors = 0, {}
    end = time.time() + seconds
    while time.time() < end:
        try:
            master.incr("sentinel:counter")
            acked += 1
        except redis.RedisError as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            time.sleep(0.05)
    final = None
    for _ in range(100):
        try:
            final = int(master.get("sentinel:counter"))
            break
        except redis.RedisError:
            time.sleep(0.1)
    role = master.execute_command("ROLE")[0]
    role = role.decode() if isinstance(role, bytes) else role
    print(json.dumps({"acked": acked, "final": final, "errors": errors, "role": role}))


if __name__ == "__main__":
    main(float(sys.argv[1]), sys.argv[2:])
