//! Bad input always ends as a recorded refusal with a code, at once (never retried into the
//! dead letters); stream fields other than `payload` and a bounded `enqueued_at` are not
//! trusted; stock arithmetic neither wraps nor clamps; applied inventory is reported.

use std::time::Duration;

use serde_json::{json, Value};
use souk::{jobs::intake_storefront, store::merchants};

use crate::support::eventually;
use crate::support::pipeline::Pipeline;

/// Adds an entry with exactly these fields to the storefront stream; returns its id.
async fn xadd(p: &Pipeline, fields: &[(&str, &[u8])]) -> String {
    let key = p.env.app.producer.keys(intake_storefront::QUEUE).stream;
    let mut cmd = redis::cmd("XADD");
    cmd.arg(&key).arg("*");
    for (k, v) in fields {
        cmd.arg(*k).arg(*v);
    }
    cmd.query_async(&mut p.env.redis()).await.unwrap()
}

async fn code_of(p: &Pipeline, entry: &str) -> Option<String> {
    sqlx::query_scalar("SELECT code FROM rejected_messages WHERE entry_id = $1")
        .bind(entry)
        .fetch_optional(&p.env.app.pool)
        .await
        .unwrap()
}

fn adjust(delta: i64) -> Value {
    json!({"type": "inventory.adjust", "version": 1, "merchant_id": "m1", "sku": "A", "delta": delta})
}

#[tokio::test]
async fn bad_input_is_refused_with_a_code_at_once_and_stream_fields_are_not_trusted() {
    let p = Pipeline::start(&[]).await;
    p.merchant("m1", "auto", "accept", 3600).await;
    p.stock("m1", "A", 10).await;
    let with = |field: &str, v: Value| {
        let mut m = p.order("SF-BAD", &[("m1", "A", 1, 100)], "requires_capture");
        m["order"][field] = v;
        m.to_string()
    };
    let mut customer = p.order("SF-BAD", &[("m1", "A", 1, 100)], "requires_capture");
    customer["order"]["customer"]["loyalty_tier"] = json!("gold");
    let s = |v: &Value| v.to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("delta past i32", s(&adjust(-3_000_000_000)).into_bytes(), "quantity_out_of_range"),
        ("on_hand past i32", s(&json!({"type": "inventory.set", "version": 1, "merchant_id": "m1", "sku": "A", "on_hand": 3_000_000_000i64})).into_bytes(), "quantity_out_of_range"),
        ("result past i32", s(&adjust(2_147_483_640)).into_bytes(), "quantity_out_of_range"),
        ("below reserved", s(&adjust(-11)).into_bytes(), "below_reserved"),
        ("adjust unknown sku", s(&json!({"type": "inventory.adjust", "version": 1, "merchant_id": "m1", "sku": "NOPE", "delta": 1})).into_bytes(), "unknown_sku"),
        ("NUL in metadata", with("metadata", json!({"note": "a\u{0}b"})).into_bytes(), "invalid_characters"),
        ("year -5000", with("placed_at", json!("-5000-01-01T00:00:00Z")).into_bytes(), "invalid_placed_at"),
        ("year 1", with("placed_at", json!("0001-01-01T00:00:00Z")).into_bytes(), "invalid_placed_at"),
        ("year 9999", with("placed_at", json!("9999-01-01T00:00:00Z")).into_bytes(), "invalid_placed_at"),
        ("address null", with("shipping_address", Value::Null).into_bytes(), "invalid_shipping_address"),
        ("unknown customer field", s(&customer).into_bytes(), "invalid_message"),
        ("RLO in the id", with("id", json!("SF-\u{202E}1")).into_bytes(), "invalid_order_id"),
        ("invalid UTF-8", [br#"{"type": "inventory.set", "version": 1, "merchant_id": "m1", "sku": "A"#.as_slice(), &[0xff, 0xfe], br#"", "on_hand": 5}"#].concat(), "invalid_utf8"),
    ];
    let mut entries = Vec::new();
    for (name, payload, code) in &cases {
        entries.push((*name, xadd(&p, &[("payload", payload)]).await, *code));
    }
    // No payload at all: a recorded refusal with its outcome event, not only a dead letter.
    let missing = xadd(&p, &[("data", br#"{"type": "inventory.set"}"#)]).await;
    entries.push(("no payload", missing.clone(), "missing_payload"));
    for (name, entry, code) in &entries {
        eventually(Duration::from_secs(15), &format!("{name} refused"), || async {
            code_of(&p, entry).await.is_some()
        })
        .await;
        assert_eq!(code_of(&p, entry).await.as_deref(), Some(*code), "{name}");
    }
    let stats = souk::queue::stats::queue_stats(
        &mut p.env.redis(),
        &p.env.app.producer.keys(intake_storefront::QUEUE),
    )
    .await
    .unwrap();
    assert_eq!(stats.dead, 0, "nothing dead-lettered: {stats:?}");
    eventually(
        Duration::from_secs(10),
        "the missing payload's outcome event",
        || async {
            let all: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(souk::outcomes::stream_key(&p.env.prefix))
                .arg("-")
                .arg("+")
                .query_async(&mut p.env.redis())
                .await
                .unwrap();
            all.iter().any(|(_, f)| {
                f.iter().any(|(k, v)| k == "type" && v == "message.rejected")
                    && f.iter().any(|(k, v)| k == "data" && v.contains(&missing))
            })
        },
    )
    .await;
    assert_eq!(
        merchants::stock(&p.env.app.pool, "m1", "A").await.unwrap(),
        Some((10, 0)),
        "no clamping"
    );

    // Two entries carrying the same `job_id` field are two commands: both apply.
    for _ in 0..2 {
        xadd(&p, &[("payload", s(&adjust(1)).as_bytes()), ("job_id", b"same")]).await;
    }
    // An order stamped long ago is not cancelled as unpaid: its entry's time is used.
    let order = p.order("SF-OLD", &[("m1", "A", 1, 100)], "requires_capture");
    xadd(
        &p,
        &[
            ("payload", s(&order).as_bytes()),
            ("enqueued_at", b"-99999999999999"),
        ],
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "both adjusts applied and the order captured",
        || async {
            merchants::stock(&p.env.app.pool, "m1", "A").await.unwrap() == Some((11, 0))
                && p.order_status("SF-OLD").await.as_deref() == Some("captured")
        },
    )
    .await;
    let age: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - enqueued_at)::float8 FROM orders WHERE storefront_order_id = 'SF-OLD'",
    )
    .fetch_one(&p.env.app.pool)
    .await
    .unwrap();
    assert!(
        age.abs() < 600.0,
        "enqueued_at bounded to the entry's time, got {age} s ago"
    );
    // Every applied inventory command is reported with the stock it left.
    let applied: Vec<Value> = sqlx::query_scalar(
        "SELECT data FROM order_events WHERE type IN ('inventory.set', 'inventory.adjusted') ORDER BY id",
    )
    .fetch_all(&p.env.app.pool)
    .await
    .unwrap();
    let last = applied.last().expect("inventory events");
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert_eq!(
        (last["on_hand"].as_i64(), last["delta"].as_i64()),
        (Some(12), Some(1))
    );
    p.stop().await;
}

/// The backstop's classification, on errors the real PostgreSQL raises: a value refused for
/// what it is is the message's fault; a status CHECK is souk's; the rest may be retried.
#[tokio::test]
async fn database_errors_are_classified_by_what_caused_them() {
    use souk::store::{fault, Fault};
    let env = crate::support::TestEnv::new().await;
    let pool = &env.app.pool;
    let err = |sql: &'static str| async move { sqlx::query(sql).execute(pool).await.unwrap_err() };
    assert_eq!(
        fault(&err("SELECT 2147483648::int").await),
        Some(Fault::Input("value_out_of_range"))
    );
    assert_eq!(
        fault(&err("SELECT '2026-13-45'::date").await),
        Some(Fault::Input("invalid_date"))
    );
    assert_eq!(
        fault(&err("SELECT 'x'::int").await),
        Some(Fault::Input("invalid_value"))
    );
    sqlx::query("INSERT INTO merchants (id, name, webhook_url, signing_secrets) VALUES ('m1', 'M', 'http://127.0.0.1:9/', ARRAY['whsec_x'])")
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        fault(&err("INSERT INTO stock (merchant_id, sku, on_hand) VALUES ('m1', 'A', -1)").await),
        Some(Fault::Input("invalid_value")),
        "a CHECK on an input column"
    );
    let order =
        "INSERT INTO orders (storefront_order_id, customer, currency, total_minor, status, payment_provider,
                                     payment_id, shipping_address, placed_at, enqueued_at)
                 VALUES ('x', '{}', 'EUR', 1, 'teleported', 'stripe', 'pi', '{}', now(), now())";
    assert_eq!(
        fault(&err(order).await),
        Some(Fault::Bug),
        "a status CHECK is a bug"
    );
    assert_eq!(fault(&err("SELECT * FROM no_such_table").await), None);
    env.cleanup().await;
}
