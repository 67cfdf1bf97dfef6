//! A fleet-wide rate limiter: at most `limit` calls in any sliding second, shared by every
//! process through one Redis sorted set (Redis's clock, so hosts' clocks do not matter).

use std::{sync::LazyLock, time::Duration};

use redis::{aio::ConnectionManager, Script};

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
pub async fn take(
    conn: &mut ConnectionManager,
    key: &str,
    limit: u32,
) -> redis::RedisResult<Result<(), Duration>> {
    let member = format!("{}-{}", std::process::id(), fastrand::u64(..));
    let wait: i64 = TAKE.key(key).arg(limit).arg(member).invoke_async(conn).await?;
    Ok(if wait == 0 {
        Ok(())
    } else {
        Err(Duration::from_millis(wait as u64))
    })
}
