//! Message groups: entries of one queue that share a group key run one at a time, in stream
//! order, while entries of different groups run in parallel (as SQS FIFO message groups or
//! Kafka partitions give). The storefront queue uses them so that commands about one order, one
//! SKU, one return or one complaint take effect in the order they were sent.
//!
//! A queue's [`GroupRule`] is a Lua function `group_keys(payload)` returning the entry's keys,
//! computed from the payload alone inside the read script, so registration happens atomically
//! with the read: whichever consumer reads first, the earlier entry is ahead in every group.
//!
//! State, all under the queue's hash tag (one Redis Cluster slot):
//! - `g:<key>`: a list of the sequence ids (the entry id of the first read) waiting in the
//!   group, head first;
//! - `gkeys`: hash, sequence id → its keys (JSON array);
//! - `held`: hash, sequence id → the entry's fields (JSON), for an entry read while not the
//!   head of all of its groups: it leaves the stream and waits here, costing no consumer
//!   anything.
//!
//! A held entry keeps its job id (its first entry id when it had none), so handlers' idempotency
//! keys and recorded refusals name the id its producer got from `XADD`.
//!
//! An admitted entry carries its sequence id in the field `gseq` whenever it goes back to the
//! stream (retry, snooze, give-back at shutdown, release of a held entry), so it keeps its
//! place: a retried or snoozed head holds its groups through its retry schedule. The head is
//! released only when it is settled done or dead (in the same script as its `XACK`); the next
//! entry of each of its groups that is now the head of all of its groups goes back to the
//! stream at once. A dead letter retried by an operator is a new command, at the end of its
//! groups.
//!
//! Keys inside the scripts are formed from the queue's tag (`ARGV` prefix), so every key a
//! script touches is in the slot of the keys it declares.

use redis::{Script, Value};

/// The Lua that releases a finished head and moves every held entry that became the head of
/// all of its groups back to the stream, tagged with its sequence id.
const RELEASE_LUA: &str = r#"
local function admit(h, gk, held, pfx, stream)
  local f = redis.call('HGET', held, h)
  if not f then return end
  local ks = redis.call('HGET', gk, h)
  if ks then
    for _, k in ipairs(cjson.decode(ks)) do
      if redis.call('LINDEX', pfx .. k, 0) ~= h then return end
    end
  end
  local args = {}
  for k, v in pairs(cjson.decode(f)) do
    args[#args + 1] = k
    args[#args + 1] = v
  end
  args[#args + 1] = 'gseq'
  args[#args + 1] = h
  redis.call('XADD', stream, '*', unpack(args))
  redis.call('HDEL', held, h)
end
local function release(seq, gk, held, pfx, stream)
  if seq == '' then return end
  local ks = redis.call('HGET', gk, seq)
  if not ks then return end
  redis.call('HDEL', gk, seq)
  local keys = cjson.decode(ks)
  for _, k in ipairs(keys) do
    redis.call('LREM', pfx .. k, 1, seq)
  end
  for _, k in ipairs(keys) do
    local h = redis.call('LINDEX', pfx .. k, 0)
    if h then admit(h, gk, held, pfx, stream) end
  end
end
"#;

/// Reads new entries for a consumer, registers each in its groups and hands out only the
/// heads; the others are held. Returns `{read, last_id, {{id, fields, seq}, ...}}`; `last_id`
/// (the newest id in the stream, when nothing was read) is where a blocking `XREAD` waits for
/// the next entry without consuming it.
/// KEYS: stream, gkeys, held. ARGV: group, consumer, count, group key prefix.
const READ_LUA: &str = r#"
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', tonumber(ARGV[3]), 'STREAMS', KEYS[1], '>')
local out = {}
if not r then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  return {0, last[1] and last[1][1] or '0-0', out}
end
local entries = r[1][2]
for _, e in ipairs(entries) do
  local id, f = e[1], e[2]
  local m = {}
  for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
  if m.gseq then
    out[#out + 1] = {id, f, m.gseq}
  else
    local ok, found = pcall(group_keys, m.payload)
    local keys, seen = {}, {}
    if ok and type(found) == 'table' then
      for _, k in ipairs(found) do
        if type(k) == 'string' and not seen[k] then
          seen[k] = true
          keys[#keys + 1] = k
        end
      end
    end
    if #keys == 0 then
      out[#out + 1] = {id, f, ''}
    else
      local head = true
      for _, k in ipairs(keys) do
        redis.call('RPUSH', ARGV[4] .. k, id)
        if head and redis.call('LINDEX', ARGV[4] .. k, 0) ~= id then head = false end
      end
      redis.call('HSET', KEYS[2], id, cjson.encode(keys))
      if head then
        out[#out + 1] = {id, f, id}
      else
        -- Its job id and enqueue time default to its entry id's; it comes back under a new one.
        if not m.job_id or m.job_id == '' then m.job_id = id end
        if not m.enqueued_at then m.enqueued_at = string.match(id, '^(%d+)') end
        redis.call('XACK', KEYS[1], ARGV[1], id)
        redis.call('XDEL', KEYS[1], id)
        redis.call('HSET', KEYS[3], id, cjson.encode(m))
      end
    end
  end
end
return {#entries, '', out}
"#;

/// Acknowledges finished entries and releases their groups.
/// KEYS: stream, gkeys, held. ARGV: group, group key prefix, then (entry_id, seq) pairs.
const DONE_LUA: &str = r#"
local n = 0
for i = 3, #ARGV, 2 do
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[i]) == 1 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    release(ARGV[i + 1], KEYS[2], KEYS[3], ARGV[2], KEYS[1])
    n = n + 1
  end
end
return n
"#;

/// Acknowledges an entry (when ARGV[2] is not empty), records its dead letter and releases
/// its groups. KEYS: stream, dead, dead_index, gkeys, held.
/// ARGV: group, entry_id, dead_id, record, now_ms, group key prefix, seq.
const DEAD_LUA: &str = r#"
if ARGV[2] == '' or redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
  if ARGV[2] ~= '' then redis.call('XDEL', KEYS[1], ARGV[2]) end
  release(ARGV[7], KEYS[4], KEYS[5], ARGV[6], KEYS[1])
  return 1
end
return 0
"#;

/// How a queue groups its entries: the Lua source of `local function group_keys(payload)`,
/// which returns a list of key strings (none: the entry runs ungrouped). It must not touch
/// Redis and must not fail on any payload (a failure counts as "no keys").
pub struct GroupRule {
    pub(crate) read: Script,
    pub(crate) done: Script,
    pub(crate) dead: Script,
}

impl GroupRule {
    pub fn new(group_keys_lua: &str) -> Self {
        Self {
            read: Script::new(&format!("{group_keys_lua}\n{READ_LUA}")),
            done: Script::new(&format!("{RELEASE_LUA}\n{DONE_LUA}")),
            dead: Script::new(&format!("{RELEASE_LUA}\n{DEAD_LUA}")),
        }
    }
}

/// The read script's reply: how many entries it read, where to wait when none, and the
/// entries it handed out (`[id, fields, seq]` each, which [`super::backend::parse_entries`]
/// reads as `[id, fields]`).
pub(crate) fn parse_read(v: &Value) -> (usize, String, Vec<super::backend::RawEntry>) {
    let Value::Array(parts) = v else {
        return (0, "0-0".to_owned(), Vec::new());
    };
    let read = match parts.first() {
        Some(Value::Int(n)) => (*n).max(0) as usize,
        _ => 0,
    };
    let last = parts
        .get(1)
        .and_then(super::backend::text)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "0-0".to_owned());
    let entries = parts
        .get(2)
        .map(super::backend::parse_entries)
        .unwrap_or_default();
    (read, last, entries)
}
