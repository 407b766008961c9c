// node-redis and ioredis at their defaults against a raftkv cluster
// (docs/commands.md). Usage: node node_clients.mjs HOST:PORT HOST:PORT ...
// Prints "ok" when every check passed; the first failure throws.
import { createClient } from "redis";
import Redis from "ioredis";

const addrs = process.argv.slice(2).map((a) => {
  const i = a.lastIndexOf(":");
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
});

function check(got, want, what) {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
}

async function expectError(promise, pattern, what) {
  try {
    await promise;
  } catch (e) {
    if (!pattern.test(String(e && e.message))) throw new Error(`${what}: unexpected error ${e}`);
    return;
  }
  throw new Error(`${what}: did not fail`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function nodeRedis(resp) {
  const options = (a) => ({ socket: { host: a.host, port: a.port }, ...(resp ? { RESP: resp } : {}) });
  const a = createClient(options(addrs[0]));
  const b = createClient(options(addrs[1]));
  a.on("error", (e) => { throw e; });
  b.on("error", (e) => { throw e; });
  await a.connect();
  await b.connect();
  const p = `nr${resp ?? 2}:`;
  check(await a.ping(), "PONG", "PING");
  check(await a.set(p + "s", "v", { NX: true, EX: 100 }), "OK", "SET NX EX");
  check(await b.get(p + "s"), "v", "GET through another node");
  check(await a.set(p + "s", "w", { NX: true }), null, "SET NX on an existing key");
  check((await a.ttl(p + "s")) > 90, true, "TTL");
  check(await a.incrBy(p + "n", 5), 5, "INCRBY");
  check(await a.decrBy(p + "n", 2), 3, "DECRBY");
  check(await a.incrByFloat(p + "f", 1.5), "1.5", "INCRBYFLOAT");
  check(await a.getDel(p + "n"), "3", "GETDEL");
  check(await a.hSet(p + "h", { f1: "1", f2: "2" }), 2, "HSET object");
  const all = await a.hGetAll(p + "h");
  check({ ...all }, { f1: "1", f2: "2" }, "HGETALL");
  check(await a.hIncrBy(p + "h", "f1", 10), 11, "HINCRBY");
  const found = [];
  for await (const keys of a.scanIterator({ MATCH: p + "*", COUNT: 5 })) found.push(...(Array.isArray(keys) ? keys : [keys]));
  check(found.sort(), [p + "f", p + "h", p + "s"], "SCAN iterator");
  // MULTI/EXEC, and WATCH with a change through another node.
  const replies = await a.multi().set(p + "t", "1").incr(p + "t").get(p + "t").exec();
  check(replies, ["OK", 2, "2"], "MULTI/EXEC");
  const watcher = await a.duplicate().connect();
  await watcher.watch(p + "t");
  await b.set(p + "t", "changed");
  await expectError(watcher.multi().set(p + "t", "mine").exec(), /watch|aborted|null/i, "EXEC after a watched change");
  check(await a.get(p + "t"), "changed", "the aborted transaction applied nothing");
  await watcher.quit();
  // Pipelines (auto-pipelining of concurrent commands).
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) => a.incr(p + "pc")));
  check(results[results.length - 1] >= 50, true, "pipelined INCRs");
  // Expiry seen on every node.
  await a.set(p + "short", "v", { PX: 200 });
  await sleep(400);
  check(await b.get(p + "short"), null, "GET after the deadline");
  await expectError(a.get(p + "h"), /WRONGTYPE/, "WRONGTYPE");
  await a.quit();
  await b.quit();
}

async function ioredis() {
  const a = new Redis({ host: addrs[0].host, port: addrs[0].port, lazyConnect: true });
  const b = new Redis({ host: addrs[2].host, port: addrs[2].port, lazyConnect: true });
  await a.connect();
  await b.connect();
  const p = "io:";
  check(await a.set(p + "s", "v", "PX", 100000, "NX"), "OK", "SET PX NX");
  check(await b.get(p + "s"), "v", "GET through another node");
  check(await a.set(p + "s", "w", "XX", "GET"), "v", "SET XX GET");
  check(await a.incrby(p + "n", 7), 7, "INCRBY");
  check(await a.decr(p + "n"), 6, "DECR");
  check(await a.hset(p + "h", "a", "1", "b", "2"), 2, "HSET");
  check(await a.hgetall(p + "h"), { a: "1", b: "2" }, "HGETALL");
  check(await a.expire(p + "h", 100, "NX"), 1, "EXPIRE NX");
  check((await a.pttl(p + "h")) > 90000, true, "PTTL");
  const pipe = a.pipeline();
  for (let i = 0; i < 20; i++) pipe.set(p + "p" + i, i);
  const out = await pipe.exec();
  check(out.length, 20, "pipeline");
  check(await a.multi().set(p + "t", "1").incr(p + "t").exec(), [[null, "OK"], [null, 2]], "MULTI/EXEC");
  await a.watch(p + "t");
  await b.set(p + "t", "changed");
  check(await a.multi().set(p + "t", "mine").exec(), null, "EXEC after a watched change");
  check(await b.get(p + "t"), "changed", "nothing applied");
  const keys = [];
  await new Promise((resolve, reject) => {
    const stream = a.scanStream({ match: p + "*", count: 3 });
    stream.on("data", (k) => keys.push(...k));
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  check(new Set(keys).size >= 24, true, "scanStream");
  check(await a.select(0), "OK", "SELECT 0");
  await expectError(a.select(1), /out of range/, "SELECT 1 refused");
  a.disconnect();
  b.disconnect();
}

await nodeRedis(undefined);
await nodeRedis(3);
await ioredis();
console.log("ok");
process.exit(0);
