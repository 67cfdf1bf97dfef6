//! The pipeline fixture: a test's world (database, key prefix), the sandbox's payment provider
//! and merchant endpoints over HTTP on 127.0.0.1, workers in-process or in `souk` child
//! processes, and readers of what happened.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use serde_json::{json, Value};
use souk::{
    admin,
    jobs::intake_storefront,
    sandbox::{self, EndpointSettings, Sandbox},
    store::merchants::{self, MerchantInput},
};
use tokio::sync::watch;

use super::TestEnv;

pub(crate) const KEY: &str = "sk_test_pipeline";

pub(crate) struct Pipeline {
    pub(crate) env: TestEnv,
    pub(crate) sb: Arc<Sandbox>,
    pub(crate) base: String,
    pub(crate) stop: watch::Sender<bool>,
    pub(crate) workers: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// The settings this pipeline's world runs with, for `souk` child processes to join it.
    pub(crate) vars: Vec<(String, String)>,
}

impl Pipeline {
    pub(crate) async fn start(extra: &[(&str, &str)]) -> Pipeline {
        Self::start_tracking("/aftership", extra).await
    }

    /// A pipeline whose tracking client points at `path` of its sandbox.
    pub(crate) async fn start_tracking(path: &str, extra: &[(&str, &str)]) -> Pipeline {
        Self::start_with(path, extra, true).await
    }

    /// A pipeline whose workers run in `souk` child processes the test starts itself
    /// ([`Pipeline::spawn_worker`]), so that it can kill them.
    pub(crate) async fn start_without_workers(extra: &[(&str, &str)]) -> Pipeline {
        Self::start_with("/aftership", extra, false).await
    }

    /// Starts `souk run --no-cron` in this pipeline's world, with `extra` settings on top.
    pub(crate) fn spawn_worker(&self, extra: &[(&str, &str)]) -> std::process::Child {
        let mut vars: Vec<(&str, &str)> = self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        vars.extend_from_slice(extra);
        self.env.spawn_souk(&["run", "--no-cron"], &vars)
    }

    async fn start_with(path: &str, extra: &[(&str, &str)], in_process: bool) -> Pipeline {
        let sb = Sandbox::new(KEY);
        let (addr, _h) = sandbox::start("127.0.0.1:0".parse().unwrap(), sb.clone())
            .await
            .unwrap();
        let base = format!("http://{addr}");
        let tracking = format!("{base}{path}");
        let mut vars: Vec<(&str, &str)> = vec![
            ("SOUK_TRACKING__BASE_URL", tracking.as_str()),
            ("SOUK_TRACKING__API_KEY", KEY),
            ("SOUK_PAYMENT__BASE_URL", base.as_str()),
            ("SOUK_PAYMENT__API_KEY", KEY),
            ("SOUK_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"),
            ("SOUK_WEBHOOKS__SCHEDULE_S", "[0, 1, 1, 1, 1, 1]"),
            ("SOUK_WEBHOOKS__TIMEOUT_MS", "3000"),
            ("SOUK_MARKETPLACE__PAYMENT_RECHECK_MS", "200"),
        ];
        vars.extend_from_slice(extra);
        let env = TestEnv::with(&vars).await;
        let (stop, mut rx) = watch::channel(false);
        let app = env.app.clone();
        let workers = tokio::spawn(async move {
            if !in_process {
                return Ok(());
            }
            app.run_workers(&[], false, async move {
                let _ = rx.changed().await;
            })
            .await
        });
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Pipeline {
            env,
            sb,
            base,
            stop,
            workers,
            vars,
        }
    }

    pub(crate) async fn merchant(&self, id: &str, mode: &str, default: &str, deadline_s: i32) {
        let input = MerchantInput {
            name: Some(id.to_owned()),
            webhook_url: Some(format!("{}/merchants/{id}/webhook", self.base)),
            acceptance_mode: Some(mode.to_owned()),
            acceptance_default: Some(default.to_owned()),
            acceptance_deadline_s: Some(deadline_s),
            commission_bps: Some(1_000),
            webhook_version: None,
        };
        let secret = admin::add_merchant(&self.env.app, id, &input).await.unwrap();
        self.sb.configure_endpoint(
            id,
            &EndpointSettings {
                secrets: Some(vec![secret]),
                ..Default::default()
            },
        );
    }

    pub(crate) async fn stock(&self, merchant: &str, sku: &str, on_hand: i64) {
        let mut tx = self.env.app.pool.begin().await.unwrap();
        merchants::set_stock(&mut tx, merchant, sku, on_hand)
            .await
            .unwrap()
            .unwrap();
        tx.commit().await.unwrap();
    }

    pub(crate) fn order(&self, id: &str, lines: &[(&str, &str, i64, i64)], status: &str) -> Value {
        let total: i64 = lines.iter().map(|l| l.2 * l.3).sum();
        let pi = if status == "processing" {
            self.sb
                .create_intent(total, "eur", "requires_capture", Some(Duration::from_secs(3600)))
        } else {
            self.sb.create_intent(total, "eur", status, None)
        };
        json!({"type": "order.placed", "version": 1, "order": {
            "id": id, "customer": {"id": "c-1", "email": "c@example.org"}, "currency": "EUR",
            "lines": lines.iter().map(|(m, s, q, p)| json!({"merchant_id": m, "sku": s, "quantity": q, "unit_price_minor": p})).collect::<Vec<_>>(),
            "shipping_address": {"country": "FR", "city": "Lyon"},
            "payment": {"provider": "stripe", "payment_id": pi},
            "placed_at": "2026-11-24T10:00:00Z"
        }})
    }

    pub(crate) async fn send(&self, msg: &Value) -> String {
        self.env
            .app
            .producer
            .push_raw(intake_storefront::QUEUE, &msg.to_string())
            .await
            .unwrap()
    }

    pub(crate) async fn scalar(&self, sql: &str, sf: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(sf)
            .fetch_one(&self.env.app.pool)
            .await
            .unwrap()
    }

    pub(crate) async fn order_status(&self, sf: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM orders WHERE storefront_order_id = $1")
            .bind(sf)
            .fetch_optional(&self.env.app.pool)
            .await
            .unwrap()
    }

    pub(crate) async fn sub_statuses(&self, sf: &str) -> BTreeMap<String, String> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT s.merchant_id, s.status FROM sub_orders s JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id = $1",
        )
        .bind(sf)
        .fetch_all(&self.env.app.pool)
        .await
        .unwrap();
        rows.into_iter().collect()
    }

    pub(crate) async fn deliveries(&self, sf: &str) -> Vec<(String, String, String, i32)> {
        sqlx::query_as(
            "SELECT d.id, d.merchant_id, d.status, d.attempts FROM webhook_deliveries d JOIN orders o ON o.id = d.order_id
             WHERE o.storefront_order_id = $1 ORDER BY d.id",
        )
        .bind(sf)
        .fetch_all(&self.env.app.pool)
        .await
        .unwrap()
    }

    pub(crate) async fn all_delivered(&self, sf: &str, n: usize) -> bool {
        let d = self.deliveries(sf).await;
        d.len() == n && d.iter().all(|x| x.2 == "delivered")
    }

    pub(crate) async fn outcome_types(&self, sf: &str) -> Vec<String> {
        let key = souk::outcomes::stream_key(&self.env.prefix);
        let v: redis::Value = redis::cmd("XRANGE")
            .arg(&key)
            .arg("-")
            .arg("+")
            .query_async(&mut self.env.redis())
            .await
            .unwrap();
        let mut out = Vec::new();
        if let redis::Value::Array(entries) = v {
            for e in entries {
                let redis::Value::Array(pair) = e else { continue };
                let Some(redis::Value::Array(fields)) = pair.get(1) else {
                    continue;
                };
                let f: Vec<String> = fields
                    .iter()
                    .filter_map(|x| redis::from_redis_value::<String>(x.clone()).ok())
                    .collect();
                let get = |k: &str| {
                    f.chunks(2)
                        .find(|c| c[0] == k)
                        .map(|c| c[1].clone())
                        .unwrap_or_default()
                };
                if get("storefront_order_id") == sf {
                    out.push(get("type"));
                }
            }
        }
        out
    }

    /// Waits until souk has nothing left to do soon: every queue's stream empty (nothing
    /// waiting, held or running) and no delayed job due within 2 s, seen on two reads in a row.
    /// A check that something did *not* happen is made after this, not after a sleep.
    pub(crate) async fn quiet(&self) {
        let limit = std::time::Instant::now() + Duration::from_secs(30);
        let mut calm = 0;
        while calm < 2 {
            calm = if self.idle().await { calm + 1 } else { 0 };
            assert!(std::time::Instant::now() < limit, "souk never went quiet");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn idle(&self) -> bool {
        use souk::queue::{keys::QueueKeys, stats};
        let mut conn = self.env.redis();
        let prefix = &self.env.prefix;
        let soon = chrono::Utc::now().timestamp_millis() + 2_000;
        for q in stats::queue_names(&mut conn, prefix).await.unwrap() {
            let keys = QueueKeys::new(prefix, &q);
            let s = stats::queue_stats(&mut conn, &keys).await.unwrap();
            let due: i64 = redis::cmd("ZCOUNT")
                .arg(&keys.delayed)
                .arg("-inf")
                .arg(soon)
                .query_async(&mut conn)
                .await
                .unwrap();
            if s.length > 0 || s.held > 0 || due > 0 {
                return false;
            }
        }
        true
    }

    /// Runs the sweeper (what cron does every 30 s) once, through the queue.
    pub(crate) async fn sweep(&self) {
        self.env
            .app
            .producer
            .push(
                souk::jobs::sweep_orders::QUEUE,
                &souk::jobs::sweep_orders::Args {},
            )
            .await
            .unwrap();
    }

    /// Every version 2 webhook body the merchants received matches its type's published schema
    /// (docs/schema/webhooks/v2): checked at the end of every pipeline test. (Merchants start on
    /// version 2; bodies without a `version` come from merchants a test moved to version 1.)
    pub(crate) async fn check_webhook_schemas(&self) {
        let schemas = super::schema::webhook_schemas();
        let bad: Vec<String> = self
            .sb
            .received_bodies()
            .iter()
            .filter_map(|(m, body)| {
                let v: Value = serde_json::from_str(body).expect("a JSON body");
                (v["version"] == 2)
                    .then(|| super::schema::check_webhook(&schemas, &v).err())
                    .flatten()
                    .map(|e| format!("{m}: {e}"))
            })
            .collect();
        assert!(bad.is_empty(), "webhooks off their schema:\n{}", bad.join("\n"));
    }

    /// Every entry of the outcome stream matches docs/schema/outcome-event.v1.json.
    pub(crate) async fn check_outcome_schema(&self) {
        let schema: Value =
            serde_json::from_str(include_str!("../../../docs/schema/outcome-event.v1.json")).unwrap();
        let all: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(souk::outcomes::stream_key(&self.env.prefix))
            .arg("-")
            .arg("+")
            .query_async(&mut self.env.redis())
            .await
            .unwrap();
        for (id, fields) in all {
            let mut entry = serde_json::Map::new();
            for (k, v) in fields {
                let v = if k == "data" {
                    serde_json::from_str(&v).unwrap()
                } else {
                    Value::String(v)
                };
                entry.insert(k, v);
            }
            let e = super::schema::errors(&schema, &Value::Object(entry.clone()));
            assert!(
                e.is_empty(),
                "outcome entry {id} off its schema: {e:?}\n{entry:?}"
            );
        }
    }

    pub(crate) async fn stop(self) {
        self.check_webhook_schemas().await;
        self.check_outcome_schema().await;
        let _ = self.stop.send(true);
        self.workers.await.unwrap().unwrap();
        self.env.cleanup().await;
    }
}

/// A tracking number whose sandbox life ends delivered (some end returned to sender).
pub(crate) fn delivered_number(seed: &str) -> String {
    (0..100)
        .map(|i| format!("{seed}{i:04}"))
        .find(|n| souk::sandbox::tracking::script(n).last().map(|s| s.0) == Some("Delivered"))
        .unwrap()
}
