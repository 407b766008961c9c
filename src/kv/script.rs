//! Lua scripts (`EVAL`, docs/commands.md), run as Redis runs them: Lua 5.1 with
//! `redis.call` and `redis.pcall`, `KEYS` and `ARGV`, Redis's conversions
//! between Lua values and replies.
//!
//! A script that writes is one log entry, so every node runs it, on the
//! same state, at the same place in the order of writes: it must do the
//! same thing everywhere. The sandbox therefore offers no clock, no file,
//! no OS: only the base, table, string and math libraries, with
//! `math.random` drawing from a generator seeded alike on every run, and a
//! script ends, on every node at the same instruction, once it has run
//! [`INSTRUCTIONS_MAX`] Lua instructions or holds [`MEMORY_MAX`] bytes.
//! Each run gets a fresh interpreter: nothing a script leaves in globals
//! reaches the next.

use std::cell::{Cell, RefCell};

use mlua::{HookTriggers, Lua, LuaOptions, MultiValue, StdLib, Table, Value, VmState};
use sha1::{Digest, Sha1};

use crate::resp::Reply;

/// Lua instructions one run may take: tens of milliseconds of work, for a
/// script runs on the thread that applies every write and a longer one
/// would hold up heartbeats; past it the script fails, at the same point on
/// every node.
pub const INSTRUCTIONS_MAX: u64 = 20_000_000;
/// Bytes the interpreter of one run may hold.
pub const MEMORY_MAX: usize = 64 << 20;
/// The hook's step, in instructions.
const HOOK_EVERY: u32 = 10_000;
/// Tables nested deeper than this in a script's result are an error (a
/// table can hold itself); the reply parsers of clients and of our own
/// forwarding stop at the same depth.
const RESULT_DEPTH_MAX: usize = 64;
/// Lua 5.1's pattern matcher runs in C, out of the instruction count's
/// sight, in time up to the subject's length to the power of one plus the
/// pattern's quantifiers, and recursing once per `?`. A call whose worst
/// case passes this many steps, or whose pattern is longer than
/// `PATTERN_BYTES_MAX`, fails instead, the same on every node.
const PATTERN_STEPS_MAX: f64 = 1e8;
const PATTERN_BYTES_MAX: usize = 256;

/// The SHA-1 of a script's body, lowercase hex: its name for EVALSHA.
pub fn sha1_hex(body: &[u8]) -> String {
    Sha1::digest(body).iter().map(|b| format!("{b:02x}")).collect()
}

/// What a script's `redis.call` runs: the command's arguments in, its reply
/// out.
pub type Call<'a> = dyn FnMut(&[Vec<u8>]) -> Reply + 'a;

/// Whether a body compiles (SCRIPT LOAD refuses one that does not).
pub fn compiles(body: &[u8]) -> Result<(), Reply> {
    let lua = sandbox().map_err(|e| Reply::err(format!("Error creating the script interpreter: {e}")))?;
    lua.load(body).set_name("@user_script").into_function().map(|_| ()).map_err(|e| compile_error(&e))
}

const COMPILE_ERROR: &str = "ERR Error compiling script";

fn compile_error(e: &mlua::Error) -> Reply {
    Reply::Error(format!("{COMPILE_ERROR} (new function): {}", one_line(&e.to_string())))
}

/// Whether a script's reply says its body did not compile (EVAL keeps
/// only bodies that do).
pub fn is_compile_error(reply: &Reply) -> bool {
    matches!(reply, Reply::Error(e) if e.starts_with(COMPILE_ERROR))
}

fn one_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_string()
}

/// A fresh interpreter with only what a deterministic script may use.
fn sandbox() -> mlua::Result<Lua> {
    let lua = Lua::new_with(StdLib::TABLE | StdLib::STRING | StdLib::MATH, LuaOptions::default())?;
    lua.set_memory_limit(MEMORY_MAX)?;
    let globals = lua.globals();
    for name in ["dofile", "loadfile", "print", "collectgarbage", "gcinfo", "newproxy"] {
        globals.set(name, Value::Nil)?;
    }
    // The same sequence on every node and every run (Redis does the same).
    let state = Cell::new(0x2545_f491_4f6c_dd1d_u64);
    let next = move || {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    let random = lua.create_function(move |_, (m, n): (Option<f64>, Option<f64>)| {
        let r = next();
        Ok(match (m, n) {
            (None, _) => r,
            (Some(m), None) => (r * m).floor() + 1.0,
            (Some(m), Some(n)) => (r * (n - m + 1.0)).floor() + m,
        })
    })?;
    let math: Table = globals.get("math")?;
    math.set("random", random)?;
    math.set("randomseed", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
    // tostring of a table or function shows its address, which differs
    // between processes: the type's name alone, on every node.
    let tostring: mlua::Function = globals.get("tostring")?;
    globals.set(
        "tostring",
        lua.create_function(move |lua, v: Value| match v {
            Value::Table(_) | Value::Function(_) | Value::Thread(_) | Value::UserData(_) | Value::LightUserData(_) => {
                Ok(Value::String(lua.create_string(v.type_name())?))
            }
            v => tostring.call::<Value>(v),
        })?,
    )?;
    let string: Table = globals.get("string")?;
    for name in ["find", "match", "gmatch", "gsub"] {
        let original: mlua::Function = string.get(name)?;
        let guarded = lua.create_function(move |_, args: MultiValue| {
            let subject = args.front().and_then(|v| v.as_string().map(|s| s.as_bytes().len())).unwrap_or(0);
            let pattern = args.get(1).and_then(|v| v.as_string().map(|s| s.as_bytes().to_vec())).unwrap_or_default();
            let plain = name == "find" && args.get(3).is_some_and(|v| v.as_boolean() == Some(true));
            if !plain {
                check_pattern(&pattern, subject)?;
            }
            original.call::<MultiValue>(args)
        })?;
        string.set(name, guarded)?;
    }
    let steps = Cell::new(0u64);
    lua.set_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), move |_, _| {
        steps.set(steps.get() + HOOK_EVERY as u64);
        if steps.get() > INSTRUCTIONS_MAX {
            return Err(mlua::Error::RuntimeError(format!(
                "the script ran {INSTRUCTIONS_MAX} instructions, the limit for one script"
            )));
        }
        Ok(VmState::Continue)
    })?;
    Ok(lua)
}

/// Refuses a pattern whose worst case could stall every node (see
/// `PATTERN_STEPS_MAX`).
fn check_pattern(pattern: &[u8], subject: usize) -> mlua::Result<()> {
    let mut quantifiers = 0i32;
    let mut escaped = false;
    for &b in pattern {
        match b {
            _ if escaped => escaped = false,
            b'%' => escaped = true,
            b'*' | b'+' | b'-' | b'?' => quantifiers += 1,
            _ => {}
        }
    }
    let steps = (subject.max(1) as f64).powi(quantifiers + 1);
    if pattern.len() > PATTERN_BYTES_MAX || steps > PATTERN_STEPS_MAX {
        return Err(mlua::Error::RuntimeError(format!(
            "pattern too complex for a replicated script: {quantifiers} quantifiers over {subject} bytes"
        )));
    }
    Ok(())
}

/// Runs `body` with `KEYS` and `ARGV`; `call` carries out each command it
/// issues. The reply is the script's result, converted as Redis does.
pub fn run(body: &[u8], keys: &[Vec<u8>], args: &[Vec<u8>], call: &mut Call<'_>) -> Reply {
    let lua = match sandbox() {
        Ok(lua) => lua,
        Err(e) => return Reply::err(format!("Error creating the script interpreter: {e}")),
    };
    let function = match lua.load(body).set_name("@user_script").into_function() {
        Ok(f) => f,
        Err(e) => return compile_error(&e),
    };
    let call = RefCell::new(call);
    // `redis.setresp`: how replies reach the script and its result leaves.
    let resp3 = Cell::new(false);
    // The error reply a `redis.call` raised, to answer it as it was.
    let raised: RefCell<Option<String>> = RefCell::new(None);
    let invoke = |lua: &Lua, values: MultiValue| -> mlua::Result<Reply> {
        let args = command_args(lua, values)?;
        Ok((call.borrow_mut())(&args))
    };
    let result = lua.scope(|scope| {
        let globals = lua.globals();
        globals.set("KEYS", list(&lua, keys)?)?;
        globals.set("ARGV", list(&lua, args)?)?;
        let redis = lua.create_table()?;
        redis.set(
            "call",
            scope.create_function(|lua, values: MultiValue| match invoke(lua, values)? {
                Reply::Error(e) => {
                    *raised.borrow_mut() = Some(e.clone());
                    Err(mlua::Error::RuntimeError(e))
                }
                reply => to_lua(lua, &reply, resp3.get()),
            })?,
        )?;
        redis.set(
            "pcall",
            scope.create_function(|lua, values: MultiValue| to_lua(lua, &invoke(lua, values)?, resp3.get()))?,
        )?;
        redis.set(
            "setresp",
            scope.create_function(|_, version: Value| {
                match version {
                    Value::Integer(2) => resp3.set(false),
                    Value::Integer(3) => resp3.set(true),
                    Value::Number(n) if n == 2.0 || n == 3.0 => resp3.set(n == 3.0),
                    _ => return Err(mlua::Error::RuntimeError("RESP version must be 2 or 3.".into())),
                }
                Ok(())
            })?,
        )?;
        redis.set(
            "error_reply",
            lua.create_function(|lua, text: String| {
                let t = lua.create_table()?;
                t.set("err", text)?;
                Ok(t)
            })?,
        )?;
        redis.set(
            "status_reply",
            lua.create_function(|lua, text: String| {
                let t = lua.create_table()?;
                t.set("ok", text)?;
                Ok(t)
            })?,
        )?;
        redis.set("sha1hex", lua.create_function(|_, text: mlua::LuaString| Ok(sha1_hex(&text.as_bytes())))?)?;
        redis.set("log", lua.create_function(|_, _: MultiValue| Ok(()))?)?;
        for (name, level) in [("LOG_DEBUG", 0), ("LOG_VERBOSE", 1), ("LOG_NOTICE", 2), ("LOG_WARNING", 3)] {
            redis.set(name, level)?;
        }
        globals.set("redis", redis)?;
        let value: Value = function.call(())?;
        Ok(from_lua(&value, 0, resp3.get()).unwrap_or_else(|e| e))
    });
    match result {
        Ok(reply) => reply,
        Err(e) => match raised.take() {
            Some(text) if e.to_string().contains(&text) => Reply::Error(text),
            _ => {
                let text = one_line(&e.to_string());
                let text = text.strip_prefix("runtime error: ").unwrap_or(&text);
                Reply::err(format!("Error running script: {text}"))
            }
        },
    }
}

fn list(lua: &Lua, items: &[Vec<u8>]) -> mlua::Result<Table> {
    let t = lua.create_table_with_capacity(items.len(), 0)?;
    for (i, item) in items.iter().enumerate() {
        t.raw_set(i + 1, lua.create_string(item)?)?;
    }
    Ok(t)
}

/// `redis.call`'s arguments: strings, or numbers written as Lua writes them.
fn command_args(lua: &Lua, values: MultiValue) -> mlua::Result<Vec<Vec<u8>>> {
    if values.is_empty() {
        return Err(mlua::Error::RuntimeError("Please specify at least one argument for this redis lib call".into()));
    }
    values
        .into_iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.as_bytes().to_vec()),
            v @ (Value::Integer(_) | Value::Number(_)) => match lua.coerce_string(v)? {
                Some(s) => Ok(s.as_bytes().to_vec()),
                None => Err(bad_argument()),
            },
            _ => Err(bad_argument()),
        })
        .collect()
}

fn bad_argument() -> mlua::Error {
    mlua::Error::RuntimeError("Lua redis lib command arguments must be strings or integers".into())
}

/// A reply as a script sees it: Redis's RESP2 to Lua conversion, or after
/// `redis.setresp(3)` its RESP3 one (a map is `{map = {...}}`, a set
/// `{set = {member = true}}`, a double `{double = x}`, a boolean a boolean,
/// null `nil`).
fn to_lua(lua: &Lua, reply: &Reply, resp3: bool) -> mlua::Result<Value> {
    let wrapped = |name: &str, value: Value| -> mlua::Result<Value> {
        let t = lua.create_table()?;
        t.set(name, value)?;
        Ok(Value::Table(t))
    };
    let text = |s: &str| -> mlua::Result<Value> { Ok(Value::String(lua.create_string(s)?)) };
    Ok(match reply {
        Reply::Map(pairs) if resp3 => {
            let t = lua.create_table_with_capacity(0, pairs.len())?;
            for (k, v) in pairs {
                t.raw_set(to_lua(lua, k, resp3)?, to_lua(lua, v, resp3)?)?;
            }
            wrapped("map", Value::Table(t))?
        }
        Reply::Set(items) if resp3 => {
            let t = lua.create_table_with_capacity(0, items.len())?;
            for item in items {
                t.raw_set(to_lua(lua, item, resp3)?, true)?;
            }
            wrapped("set", Value::Table(t))?
        }
        Reply::Double(x) if resp3 => wrapped("double", Value::Number(*x))?,
        Reply::BigNumber(n) if resp3 => wrapped("big_number", text(n)?)?,
        Reply::Verbatim(v) if resp3 => {
            let t = lua.create_table()?;
            t.set("format", "txt")?;
            t.set("string", text(v)?)?;
            wrapped("verbatim_string", Value::Table(t))?
        }
        Reply::Bool(b) if resp3 => Value::Boolean(*b),
        Reply::Bulk(None) | Reply::Array(None) if resp3 => Value::Nil,
        Reply::Integer(n) => Value::Number(*n as f64),
        Reply::Bulk(Some(b)) => Value::String(lua.create_string(b)?),
        Reply::Value(b) => Value::String(lua.create_string(&b[..])?),
        Reply::Bulk(None) | Reply::Array(None) => Value::Boolean(false),
        Reply::Simple(s) => wrapped("ok", text(s)?)?,
        Reply::Error(e) => wrapped("err", text(e)?)?,
        Reply::Array(Some(items)) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                t.raw_set(i + 1, to_lua(lua, item, resp3)?)?;
            }
            Value::Table(t)
        }
        Reply::Map(_)
        | Reply::Set(_)
        | Reply::Verbatim(_)
        | Reply::Bool(_)
        | Reply::Double(_)
        | Reply::BigNumber(_) => to_lua(lua, &reply.to_resp2(), false)?,
    })
}

/// A script's result as a reply (Redis's Lua to RESP conversion): numbers
/// truncate to integers, `nil` is null, a table with `err` or `ok` is an
/// error or a status, with `double`, `map`, `set`, `big_number` or
/// `verbatim_string` that RESP3 type (given to a RESP2 client as Redis
/// gives it), any other table an array up to its first nil. A boolean is
/// `1` or null, or after `redis.setresp(3)` a RESP3 boolean.
fn from_lua(value: &Value, depth: usize, resp3: bool) -> Result<Reply, Reply> {
    if depth > RESULT_DEPTH_MAX {
        return Err(Reply::err("reached lua stack limit: the script's result nests too deep"));
    }
    let lossy = |s: &mlua::LuaString| String::from_utf8_lossy(&s.as_bytes()).into_owned();
    Ok(match value {
        Value::Boolean(b) if resp3 => Reply::Bool(*b),
        Value::Nil | Value::Boolean(false) => Reply::nil(),
        Value::Boolean(true) => Reply::Integer(1),
        Value::Integer(n) => Reply::Integer(*n),
        Value::Number(n) => Reply::Integer(*n as i64),
        Value::String(s) => Reply::bulk(s.as_bytes().to_vec()),
        Value::Table(t) => {
            if let Ok(Value::String(e)) = t.raw_get::<Value>("err") {
                return Ok(Reply::Error(lossy(&e)));
            }
            if let Ok(Value::String(s)) = t.raw_get::<Value>("ok") {
                return Ok(Reply::Simple(lossy(&s)));
            }
            match t.raw_get::<Value>("double") {
                Ok(Value::Number(x)) => return Ok(Reply::Double(x)),
                Ok(Value::Integer(n)) => return Ok(Reply::Double(n as f64)),
                _ => {}
            }
            if let Ok(Value::String(n)) = t.raw_get::<Value>("big_number") {
                return Ok(Reply::BigNumber(lossy(&n)));
            }
            if let Ok(Value::Table(v)) = t.raw_get::<Value>("verbatim_string")
                && let Ok(Value::String(text)) = v.raw_get::<Value>("string")
            {
                return Ok(Reply::Verbatim(lossy(&text)));
            }
            if let Ok(Value::Table(m)) = t.raw_get::<Value>("map") {
                let mut pairs = Vec::new();
                for pair in m.pairs::<Value, Value>() {
                    let (k, v) = pair.map_err(|e| Reply::err(format!("Error running script: {e}")))?;
                    pairs.push((from_lua(&k, depth + 1, resp3)?, from_lua(&v, depth + 1, resp3)?));
                }
                return Ok(Reply::Map(pairs));
            }
            if let Ok(Value::Table(m)) = t.raw_get::<Value>("set") {
                let mut items = Vec::new();
                for pair in m.pairs::<Value, Value>() {
                    let (k, _) = pair.map_err(|e| Reply::err(format!("Error running script: {e}")))?;
                    items.push(from_lua(&k, depth + 1, resp3)?);
                }
                return Ok(Reply::Set(items));
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<Value>(i) {
                    Ok(Value::Nil) | Err(_) => break,
                    Ok(v) => items.push(from_lua(&v, depth + 1, resp3)?),
                }
            }
            Reply::array(items)
        }
        _ => Reply::nil(),
    })
}
