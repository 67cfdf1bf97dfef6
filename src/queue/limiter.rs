//! Fleet-wide coordination in Redis: a rate limiter (at most `limit` calls in any sliding second,
//! shared by every process through one sorted set, on Redis's clock) and a mutex with a lease.

use std::{sync::LazyLock, time::Duration};

use crate::queue::conn::Conn;
use redis::Script;

/// KEYS: the window set. ARGV: limit, a unique member. Returns 0 when admitted, else the ms to
/// wait until the oldest call leaves the window.
static TAKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 1000)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 2000)
  return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + 1000 - now)
"#,
    )
});

/// Takes a slot of `key`'s window; `Err(wait)` when the window is full.
pub async fn take(conn: &mut Conn, key: &str, limit: u32) -> redis::RedisResult<Result<(), Duration>> {
    let member = format!("{}-{}", std::process::id(), fastrand::u64(..));
    let wait: i64 = TAKE.key(key).arg(limit).arg(member).invoke_async(conn).await?;
    Ok(if wait == 0 {
        Ok(())
    } else {
        Err(Duration::from_millis(wait as u64))
    })
}

/// KEYS: the lock. ARGV: the holder's token. Deletes the lock only if this holder still has it.
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#,
    )
});

/// A fleet-wide mutex: `Some(token)` when this caller now holds `key` for at most `ttl` (a
/// crashed holder's lock frees itself), `None` when someone else holds it.
pub async fn try_lock(conn: &mut Conn, key: &str, ttl: Duration) -> redis::RedisResult<Option<String>> {
    let token = format!("{}-{}", std::process::id(), fastrand::u64(..));
    let ok: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(&token)
        .arg("NX")
        .arg("PX")
        .arg(ttl.as_millis().max(1) as u64)
        .query_async(conn)
        .await?;
    Ok(ok.map(|_| token))
}

/// Releases a lock taken by [`try_lock`], unless it expired and someone else holds it now.
pub async fn unlock(conn: &mut Conn, key: &str, token: &str) -> redis::RedisResult<()> {
    let _: i64 = UNLOCK.key(key).arg(token).invoke_async(conn).await?;
    Ok(())
}

/// KEYS: the lock. ARGV: the holder's token, the lease (ms). Extends the lease only if this
/// holder still has the lock; 1 when it did.
static RENEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"#,
    )
});

/// Extends a lock taken by [`try_lock`] to `ttl` from now; false when this holder lost it (its
/// lease ran out and someone else may hold it).
pub async fn renew(conn: &mut Conn, key: &str, token: &str, ttl: Duration) -> redis::RedisResult<bool> {
    let n: i64 = RENEW
        .key(key)
        .arg(token)
        .arg(ttl.as_millis().max(1) as u64)
        .invoke_async(conn)
        .await?;
    Ok(n == 1)
}

/// KEYS: the lock. ARGV: the lease (ms). Takes the lock unless held, with a fencing token as its
/// value: Redis's clock at the moment, in microseconds (`<seconds><6-digit micros>`), so a later
/// holder always has a larger token. Returns the token, or false when held.
static LOCK_FENCED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local t = redis.call('TIME')
local token = t[1] .. string.format('%06d', tonumber(t[2]))
if redis.call('SET', KEYS[1], token, 'NX', 'PX', ARGV[1]) then
  return token
end
return false
"#,
    )
});

/// [`try_lock`] whose token is a fencing number: `Some(fence)` when this caller now holds `key`.
/// A holder that lost its lease carries an older fence than whoever holds the lock after it, so
/// a store that keeps the largest fence it has seen refuses the stale holder's writes. (Tokens
/// follow Redis's clock: a clock stepped back by the operator could reorder two holders.)
pub async fn try_lock_fenced(conn: &mut Conn, key: &str, ttl: Duration) -> redis::RedisResult<Option<i64>> {
    let token: Option<String> = LOCK_FENCED
        .key(key)
        .arg(ttl.as_millis().max(1) as u64)
        .invoke_async(conn)
        .await?;
    token
        .map(|t| {
            t.parse::<i64>().map_err(|_| {
                redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "fencing token is not a number",
                ))
            })
        })
        .transpose()
}
