//! The Lua scripts that make multi-key queue transitions atomic.
//!
//! Each script touches the keys of one queue only (one hash slot). Settling scripts begin with
//! `XACK` and do nothing more when it returns 0: the entry was already settled by someone else
//! (a consumer that took it over), so a retry or dead letter is never recorded twice.

use std::sync::LazyLock;

use redis::Script;

/// Moves due entries from the delayed set to the stream, at most ARGV[2] per call (keeping a
/// grouped entry's sequence id, so a retried head keeps its place), and returns
/// `{moved, next_due_score_or_false}`.
/// KEYS: delayed, stream. ARGV: now_ms, limit.
pub static PROMOTE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, m in ipairs(due) do
  local ok, j = pcall(cjson.decode, m)
  if ok and type(j) == 'table' and type(j.payload) == 'string' then
    if type(j.gseq) == 'string' then
      redis.call('XADD', KEYS[2], '*', 'payload', j.payload, 'job_id', tostring(j.job_id or ''),
        'attempt', tostring(j.attempt or '0'), 'enqueued_at', tostring(j.enqueued_at or ARGV[1]), 'gseq', j.gseq)
    else
      redis.call('XADD', KEYS[2], '*', 'payload', j.payload, 'job_id', tostring(j.job_id or ''),
        'attempt', tostring(j.attempt or '0'), 'enqueued_at', tostring(j.enqueued_at or ARGV[1]))
    end
  else
    redis.call('XADD', KEYS[2], '*', 'payload', m)
  end
  redis.call('ZREM', KEYS[1], m)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {#due, nxt[2] or false}
"#,
    )
});

/// Acknowledges an entry and parks it in the delayed set (retry, snooze).
/// KEYS: stream, delayed. ARGV: group, entry_id, due_ms, member. Returns 1 if settled here.
pub static SETTLE_LATER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
  redis.call('XDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});

/// Acknowledges an entry (when ARGV[2] is not empty) and records a dead letter.
/// KEYS: stream, dead, dead_index. ARGV: group, entry_id, dead_id, record, now_ms.
pub static SETTLE_DEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if ARGV[2] == '' or redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
  if ARGV[2] ~= '' then redis.call('XDEL', KEYS[1], ARGV[2]) end
  return 1
end
return 0
"#,
    )
});

/// Renews the lease on entries this consumer still owns (resets their idle time) and returns
/// the ids it no longer owns. XCLAIM alone does not check the owner, hence the XPENDING look.
/// KEYS: stream. ARGV: group, consumer, id...
pub static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local lost = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
"#,
    )
});

/// Pushes jobs of one queue, each once per idempotency key, in one call. Per job, in order:
/// `{1, job_id}` when pushed, `{0, first_job_id}` when its key was seen inside its window
/// (also earlier in the same call).
/// KEYS: stream, delayed, then the idem_key of each job. ARGV: window_ms, now_ms, then per job:
/// job_id, payload, due_ms (0 = now).
pub static PUSH_UNIQUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for i = 3, #KEYS do
  local a = 3 + (i - 3) * 3
  if redis.call('SET', KEYS[i], ARGV[a], 'NX', 'PX', ARGV[1]) then
    if tonumber(ARGV[a + 2]) > tonumber(ARGV[2]) then
      redis.call('ZADD', KEYS[2], ARGV[a + 2], cjson.encode({job_id = ARGV[a], payload = ARGV[a + 1], attempt = '0', enqueued_at = ARGV[2]}))
    else
      redis.call('XADD', KEYS[1], '*', 'payload', ARGV[a + 1], 'job_id', ARGV[a], 'enqueued_at', ARGV[2])
    end
    out[#out + 1] = {1, ARGV[a]}
  else
    out[#out + 1] = {0, redis.call('GET', KEYS[i])}
  end
end
return out
"#,
    )
});

/// Adds one raw entry to the stream once per key within a window, remembering its entry id.
/// KEYS: stream, guard. ARGV: payload, now_ms, window_ms. Returns {1, id} when added, {0, the
/// first push's id} when the key was used.
pub static PUSH_RAW_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local prev = redis.call('GET', KEYS[2])
if prev then return {0, prev} end
local id = redis.call('XADD', KEYS[1], '*', 'payload', ARGV[1], 'enqueued_at', ARGV[2])
redis.call('SET', KEYS[2], id, 'PX', ARGV[3])
return {1, id}
"#,
    )
});

/// Fires a cron tick once across the fleet: only a tick later than the last one fired pushes.
/// KEYS: cron_last, stream. ARGV: tick_ms, payload, job_id, now_ms. Returns 1 if fired here.
pub static CRON_FIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], '*', 'payload', ARGV[2], 'job_id', ARGV[3], 'enqueued_at', ARGV[4])
return 1
"#,
    )
});

/// Moves a dead letter back to the stream with a fresh attempt count.
/// KEYS: dead, dead_index, stream. ARGV: dead_id, now_ms. Returns 1 if moved.
pub static DEAD_RETRY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local rec = redis.call('HGET', KEYS[1], ARGV[1])
if not rec then return 0 end
local ok, j = pcall(cjson.decode, rec)
if not ok or type(j.payload) ~= 'string' then return redis.error_reply('dead letter record is not readable') end
redis.call('XADD', KEYS[3], '*', 'payload', j.payload, 'job_id', tostring(j.job_id or ''), 'attempt', '0',
  'enqueued_at', ARGV[2])
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"#,
    )
});

/// Deletes dead letters older than a cut-off, at most ARGV[2] per call.
/// KEYS: dead, dead_index. ARGV: cutoff_ms, limit. Returns the number deleted.
pub static DEAD_TRIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
return #ids
"#,
    )
});

/// Removes this consumer from the group when it holds no pending entry (deleting a consumer
/// with pending entries would orphan them). KEYS: stream. ARGV: group, consumer.
pub static LEAVE_GROUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if #p == 0 then return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2]) end
return -1
"#,
    )
});

/// Gives an entry this consumer fetched but never started back to the queue, as a new entry
/// any consumer can read at once (used at shutdown for prefetched entries); a grouped entry
/// keeps its sequence id (ARGV[7], empty when ungrouped) and so its place in its groups.
/// KEYS: stream. ARGV: group, entry_id, payload, job_id, attempt, enqueued_at, seq.
pub static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  if ARGV[7] ~= '' then
    redis.call('XADD', KEYS[1], '*', 'payload', ARGV[3], 'job_id', ARGV[4], 'attempt', ARGV[5], 'enqueued_at', ARGV[6], 'gseq', ARGV[7])
  else
    redis.call('XADD', KEYS[1], '*', 'payload', ARGV[3], 'job_id', ARGV[4], 'attempt', ARGV[5], 'enqueued_at', ARGV[6])
  end
  redis.call('XDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
"#,
    )
});
