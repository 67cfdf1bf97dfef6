//! The demo's world, shared with the benchmarks: the sandbox, an [`App`] pointed at it,
//! seeded merchants and stock, and the storefront's `order.placed` messages.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::{
    admin,
    app::App,
    config::Config,
    sandbox::{self, EndpointSettings, Sandbox},
    store::merchants::MerchantInput,
};

/// The API key the demo's sandbox accepts.
pub const SANDBOX_KEY: &str = "sk_test_souk_demo";

/// A running demo world: the sandbox, an [`App`] pointed at it, seeded merchants.
pub struct World {
    pub app: App,
    pub sandbox: Arc<Sandbox>,
    pub run: String,
    pub merchants: Vec<String>,
    pub skus_per_merchant: usize,
    stop: watch::Sender<bool>,
    workers: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// How to build a world.
pub struct WorldOptions {
    pub merchants: usize,
    pub skus_per_merchant: usize,
    pub stock_per_sku: i64,
    /// Merchants (by index) that accept automatically.
    pub auto_accept_every: usize,
    pub acceptance_deadline_s: i32,
    pub unpaid_timeout_s: u64,
    /// Run every worker in this process (the demo, most benches); else the caller starts
    /// `souk run` processes and the stock is written directly.
    pub in_process_workers: bool,
}

const NAMES: [&str; 8] = [
    "atlas-home",
    "baobab-books",
    "cedar-kitchen",
    "delta-sports",
    "ember-electronics",
    "fjord-outdoor",
    "garnet-toys",
    "harbor-tea",
];

impl World {
    /// Starts the sandbox and workers and seeds merchants and stock under a fresh key prefix.
    pub async fn start(config: Config, opts: WorldOptions) -> anyhow::Result<World> {
        Self::start_on(config, opts, std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// [`World::start`] with the sandbox listening on `ip` (another host's view of it).
    pub async fn start_on(
        mut config: Config,
        opts: WorldOptions,
        ip: std::net::IpAddr,
    ) -> anyhow::Result<World> {
        let run = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
        let sb = Sandbox::new(SANDBOX_KEY);
        let (addr, _h) = sandbox::start(std::net::SocketAddr::new(ip, 0), sb.clone())
            .await
            .context("starting the sandbox")?;
        config.redis.key_prefix = format!("{}-demo-{run}", config.redis.key_prefix);
        config.payment.base_url = format!("http://{addr}");
        config.payment.api_key = crate::config::Secret(SANDBOX_KEY.to_owned());
        config.tracking.base_url = format!("http://{addr}/aftership");
        config.tracking.api_key = crate::config::Secret(SANDBOX_KEY.to_owned());
        // The sandbox's merchant endpoints are on 127.0.0.1, which souk refuses by default.
        config.webhooks.allow_private_targets = true;
        config.webhooks.schedule_s = vec![0, 1, 2, 3, 5, 5, 5, 5, 5, 5];
        config.webhooks.timeout_ms = 5_000;
        config.marketplace.unpaid_timeout_s = opts.unpaid_timeout_s;
        config.marketplace.payment_recheck_ms = 500;
        config.ops.listen = String::new();
        let app = App::connect(config).await?;
        let mut merchants = Vec::new();
        for i in 0..opts.merchants {
            let id = NAMES
                .get(i)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("merchant-{i:03}"));
            let input = MerchantInput {
                name: Some(id.replace('-', " ")),
                webhook_url: Some(format!("http://{addr}/merchants/{id}/webhook")),
                acceptance_mode: Some(
                    if opts.auto_accept_every > 0 && i % opts.auto_accept_every == 0 {
                        "auto"
                    } else {
                        "manual"
                    }
                    .to_owned(),
                ),
                acceptance_default: Some("accept".to_owned()),
                acceptance_deadline_s: Some(opts.acceptance_deadline_s),
                commission_bps: Some(1_000 + 50 * i as i32),
                webhook_version: None,
            };
            // Merchants persist across runs: create, or point the existing one at this sandbox.
            let secret = match admin::add_merchant(&app, &id, &input).await {
                Ok(s) => s,
                Err(admin::AdminError::Conflict(_)) => {
                    admin::update_merchant(&app, &id, &input).await?;
                    admin::rotate_secret(&app, &id, true).await?
                }
                Err(e) => return Err(e.into()),
            };
            sb.configure_endpoint(
                &id,
                &EndpointSettings {
                    secrets: Some(vec![secret]),
                    ..Default::default()
                },
            );
            merchants.push(id);
        }
        if !opts.in_process_workers {
            let mut tx = app.pool.begin().await?;
            for m in &merchants {
                for k in 0..opts.skus_per_merchant {
                    crate::store::merchants::set_stock(&mut tx, m, &sku(k), opts.stock_per_sku)
                        .await?
                        .map_err(|e| anyhow::anyhow!(e.message))?;
                }
            }
            tx.commit().await?;
        }
        // Stock arrives through the storefront channel, like any inventory update.
        let mut cmds = Vec::new();
        for m in &merchants {
            for k in 0..opts.skus_per_merchant {
                cmds.push(json!({"type": "inventory.set", "version": 1, "merchant_id": m, "sku": sku(k), "on_hand": opts.stock_per_sku}));
            }
        }
        app.producer.declare(crate::enqueue::STOREFRONT).await?;
        if opts.in_process_workers {
            app.producer.push_many(crate::enqueue::STOREFRONT, &cmds).await?;
        }
        let (stop, mut rx) = watch::channel(false);
        let in_process = opts.in_process_workers;
        let workers = {
            let app = app.clone();
            tokio::spawn(async move {
                if !in_process {
                    return Ok(());
                }
                app.run_workers(&[], true, async move {
                    let _ = rx.changed().await;
                })
                .await
            })
        };
        // Wait for the stock to land before orders refer to it.
        let want = (merchants.len() * opts.skus_per_merchant) as i64;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM stock WHERE merchant_id = ANY($1) AND on_hand = $2")
                    .bind(&merchants)
                    .bind(opts.stock_per_sku as i32)
                    .fetch_one(&app.pool)
                    .await?;
            if n >= want {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "stock did not arrive within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(World {
            app,
            sandbox: sb,
            run,
            merchants,
            skus_per_merchant: opts.skus_per_merchant,
            stop,
            workers,
        })
    }

    /// An `order.placed` message for the given (merchant, SKU index, quantity) lines, with a
    /// payment intent created in the sandbox in `status` (or processing forever).
    pub fn order(&self, n: usize, lines: &[(usize, usize, i64)], status: &str) -> (String, Value) {
        let id = format!("demo-{}-{n:06}", self.run);
        let lines: Vec<Value> = lines
            .iter()
            .map(|(m, k, q)| json!({"merchant_id": self.merchants[*m], "sku": sku(*k), "quantity": q, "unit_price_minor": price(*k)}))
            .collect();
        let total: i64 = lines
            .iter()
            .map(|l| l["quantity"].as_i64().unwrap_or(0) * l["unit_price_minor"].as_i64().unwrap_or(0))
            .sum();
        let payment = if status == "processing" {
            self.sandbox.create_intent(
                total,
                "eur",
                "requires_capture",
                Some(Duration::from_secs(86_400)),
            )
        } else {
            self.sandbox.create_intent(total, "eur", status, None)
        };
        let msg = json!({
            "type": "order.placed",
            "version": 1,
            "order": {
                "id": id,
                "customer": {"id": format!("cust-{}", n % 997), "email": format!("customer{}@example.org", n % 997)},
                "currency": "EUR",
                "lines": lines,
                "shipping_address": {"name": "A. Customer", "line1": "1 Rue de la Paix", "city": "Paris", "postal_code": "75002", "country": "FR"},
                "payment": {"provider": "stripe", "payment_id": payment},
                "placed_at": chrono::Utc::now(),
                "metadata": {"channel": "web"}
            }
        });
        (id, msg)
    }

    /// Stops the workers gracefully.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.workers.await??;
        Ok(())
    }
}

pub fn sku(k: usize) -> String {
    format!("SKU-{k:04}")
}

pub(crate) fn price(k: usize) -> i64 {
    500 + (k as i64 * 137) % 4_500
}
