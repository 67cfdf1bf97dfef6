//! Stream entries as Redis returns them, and the records souk makes of them.

use redis::Value;

use super::{now_ms, Delivery};

/// The JSON record of a dead letter (see `docs/queue.md`).
pub(crate) fn dead_record(d: &Delivery, error: &str) -> String {
    serde_json::json!({
        "queue": &*d.queue,
        "job_id": d.job_id,
        "entry_id": d.entry_id,
        "payload": &*d.payload,
        "attempts": d.attempt,
        "deliveries": d.deliveries,
        "error": truncate(error, 4000),
        "enqueued_at": d.enqueued_at_ms,
        "died_at": now_ms(),
    })
    .to_string()
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// One stream entry as Redis returns it.
#[derive(Debug)]
pub(crate) struct RawEntry {
    pub id: String,
    pub fields: Vec<(String, String)>,
    /// A field's bytes were not UTF-8 (read with replacement characters).
    pub invalid_utf8: bool,
}

impl RawEntry {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn text(v: &Value) -> Option<String> {
    checked_text(v).map(|(s, _)| s)
}

/// [`text`], and whether the bytes were valid UTF-8 (read with replacement characters if not).
fn checked_text(v: &Value) -> Option<(String, bool)> {
    match v {
        Value::BulkString(b) => Some(match String::from_utf8(b.clone()) {
            Ok(s) => (s, true),
            Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), false),
        }),
        Value::SimpleString(s) => Some((s.clone(), true)),
        Value::Int(i) => Some((i.to_string(), true)),
        _ => None,
    }
}

/// Parses `[[id, [field, value, ...]], ...]` (XRANGE, XCLAIM, one stream of XREADGROUP).
pub(crate) fn parse_entries(v: &Value) -> Vec<RawEntry> {
    let Value::Array(items) = v else { return Vec::new() };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let Value::Array(pair) = item else { continue };
        let Some(id) = pair.first().and_then(text) else {
            continue;
        };
        let mut fields = Vec::new();
        let mut invalid_utf8 = false;
        if let Some(Value::Array(kv)) = pair.get(1) {
            for c in kv.chunks(2) {
                if let (Some((k, k_ok)), Some((v, v_ok))) =
                    (c.first().and_then(checked_text), c.get(1).and_then(checked_text))
                {
                    invalid_utf8 |= !(k_ok && v_ok);
                    fields.push((k, v));
                }
            }
        }
        out.push(RawEntry {
            id,
            fields,
            invalid_utf8,
        });
    }
    out
}

/// Parses an XREADGROUP reply for one stream (RESP2 array or RESP3 map).
pub(crate) fn parse_read_reply(v: &Value) -> Vec<RawEntry> {
    match v {
        Value::Array(streams) => streams
            .iter()
            .filter_map(|s| match s {
                Value::Array(p) => p.get(1).map(parse_entries),
                _ => None,
            })
            .flatten()
            .collect(),
        Value::Map(m) => m.iter().flat_map(|(_, e)| parse_entries(e)).collect(),
        _ => Vec::new(),
    }
}

/// How far before its entry a storefront's `enqueued_at` may be.
const DAY_MS: i64 = 24 * 3600 * 1000;
/// How far after its entry (the producer's clock ahead of Redis's).
const CLOCK_SKEW_MS: i64 = 60_000;

/// An entry's job id and enqueue time; with the sent `enqueued_at` when it was ignored.
///
/// `seq` is set on a grouped queue, which producers outside souk write (the storefront's), and
/// of such an entry's fields only the documented ones count (docs/storefront.md): its job id,
/// on which handlers deduplicate, is its first entry id (the sequence id it keeps through
/// holds, retries and give-backs), never a `job_id` field it was sent with; and a sent
/// `enqueued_at` is ignored when it is after the entry or more than a day before it. Entries of
/// souk's own queues keep the `job_id` and `enqueued_at` souk wrote.
pub(crate) fn identity(e: &RawEntry, seq: Option<&str>) -> (String, i64, Option<i64>) {
    let job_id = match seq {
        Some(first) => first.to_owned(),
        None => e
            .field("job_id")
            .filter(|j| !j.is_empty())
            .unwrap_or(&e.id)
            .to_owned(),
    };
    let entry_ms = id_millis(seq.unwrap_or(&e.id));
    match e.field("enqueued_at").and_then(|t| t.parse::<i64>().ok()) {
        Some(t) if seq.is_some() && !(entry_ms - DAY_MS..=entry_ms + CLOCK_SKEW_MS).contains(&t) => {
            (job_id, entry_ms, Some(t))
        }
        Some(t) => (job_id, t, None),
        None => (job_id, entry_ms, None),
    }
}

/// The millisecond part of a stream id.
pub(crate) fn id_millis(id: &str) -> i64 {
    id.split('-').next().and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_entries_and_tolerates_missing_fields() {
        let v = Value::Array(vec![
            Value::Array(vec![
                bulk("1-0"),
                Value::Array(vec![bulk("payload"), bulk("{}"), bulk("attempt"), bulk("2")]),
            ]),
            Value::Array(vec![bulk("2-0"), Value::Nil]),
        ]);
        let e = parse_entries(&v);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].field("payload"), Some("{}"));
        assert_eq!(e[0].field("attempt"), Some("2"));
        assert!(e[1].fields.is_empty());
        assert_eq!(id_millis("1700000000123-4"), 1_700_000_000_123);
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let s = "é".repeat(10);
        let t = truncate(&s, 5);
        assert!(t.ends_with('…'));
        assert!(t.len() <= 5 + '…'.len_utf8());
    }
}
