//! Redis key names of a queue.
//!
//! Every key of one queue carries the hash tag `{<queue>}`, so all of them live in one Redis
//! Cluster slot and the Lua scripts that touch several of them stay legal there.

/// The keys of one queue under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    pub queue: String,
    pub prefix: String,
    /// The stream entries are added to (`XADD`) and read from.
    pub stream: String,
    /// Sorted set of entries waiting for a time (retries, snoozes, pushes for later); score = due ms.
    pub delayed: String,
    /// Hash of dead letters: dead id → JSON record.
    pub dead: String,
    /// Sorted set of dead ids by time of death, for listing and retention.
    pub dead_index: String,
    /// Per-minute counters (done, retried, snoozed, dead), each key expiring after an hour.
    pub stats: String,
    /// Message groups (grouped queues only): sequence id → its group keys.
    pub gkeys: String,
    /// Message groups: sequence id → fields of an entry waiting for its turn.
    pub held: String,
    /// Prefix of a group's list of waiting sequence ids (`<prefix><group key>`).
    pub group_prefix: String,
    tag: String,
}

impl QueueKeys {
    pub fn new(prefix: &str, queue: &str) -> Self {
        let tag = format!("{prefix}:{{{queue}}}");
        Self {
            queue: queue.to_owned(),
            prefix: prefix.to_owned(),
            stream: format!("{tag}:stream"),
            delayed: format!("{tag}:delayed"),
            dead: format!("{tag}:dead"),
            dead_index: format!("{tag}:dead_index"),
            stats: format!("{tag}:stats"),
            gkeys: format!("{tag}:gkeys"),
            held: format!("{tag}:held"),
            group_prefix: format!("{tag}:g:"),
            tag,
        }
    }

    /// The guard key of an idempotent push.
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}:idem:{key}", self.tag)
    }

    /// The last tick fired by a cron job that pushes to this queue.
    pub fn cron_last(&self, job: &str) -> String {
        format!("{}:cron:{job}", self.tag)
    }

    /// The per-minute counter hash for unix minute `minute`.
    pub fn stats_minute(&self, minute: i64) -> String {
        format!("{}:{minute}", self.stats)
    }

    /// The set of all known queue names under `prefix` (not slot-bound; read by `souk queues`).
    pub fn registry(prefix: &str) -> String {
        format!("{prefix}:queues")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = key[open..].find('}').unwrap() + open;
        &key[open + 1..close]
    }

    #[test]
    fn all_keys_of_a_queue_share_one_hash_tag() {
        let k = QueueKeys::new("souk", "souk.notify_merchant.v1");
        for key in [
            &k.stream,
            &k.delayed,
            &k.dead,
            &k.dead_index,
            &k.stats,
            &k.gkeys,
            &k.held,
            &k.group_prefix,
        ] {
            assert_eq!(slot_tag(key), "souk.notify_merchant.v1", "{key}");
        }
        assert_eq!(slot_tag(&k.idempotency("order-1")), "souk.notify_merchant.v1");
        assert_eq!(slot_tag(&k.cron_last("nightly")), "souk.notify_merchant.v1");
        assert_eq!(slot_tag(&k.stats_minute(5)), "souk.notify_merchant.v1");
        assert_eq!(k.stream, "souk:{souk.notify_merchant.v1}:stream");
    }
}
