//! `souk demo`: souk's main job, played end to end.
//!
//! The demo starts the sandbox (a Stripe-compatible payment provider and merchant webhook
//! receivers on 127.0.0.1), points a configuration at it, migrates, seeds merchants and their
//! stock through the storefront channel, starts every worker in this process and then plays a
//! storefront placing orders: most paid, some unpaid or declined, some for stock that runs out,
//! a few malformed, one merchant endpoint down for a while. Merchants accept or reject through
//! the storefront channel; silent ones hit their deadline. It ends with a summary read back
//! from PostgreSQL and the sandbox. It kills nothing. [`World`] is shared with the benchmarks.

use std::{
    collections::BTreeMap,
    io::Write,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use crate::{app::App, config::Config, sandbox::EndpointSettings};

mod history;
mod world;

pub use world::{sku, World, WorldOptions, SANDBOX_KEY};

/// Counts of final states for the orders of a run (status → count).
async fn order_states(app: &App, run: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM orders WHERE storefront_order_id LIKE $1 GROUP BY status",
    )
    .bind(format!("demo-{run}-%"))
    .fetch_all(&app.pool)
    .await?;
    Ok(rows.into_iter().collect())
}

fn bar(done: i64, total: i64) -> String {
    let width = 30usize;
    let filled = ((done as f64 / total.max(1) as f64) * width as f64).round() as usize;
    format!(
        "[{}{}]",
        "#".repeat(filled.min(width)),
        ".".repeat(width - filled.min(width))
    )
}

/// Runs the demo with `orders` orders.
pub async fn run(config: Config, orders: usize) -> anyhow::Result<()> {
    println!("souk demo: a storefront places {orders} orders; souk confirms payments, reserves stock, captures, notifies merchants.\n");
    println!("  redis    {}", crate::config::redact_url(&config.redis.url));
    println!("  postgres {}", crate::config::redact_url(&config.database.url));
    let world = World::start(
        config,
        WorldOptions {
            merchants: 5,
            skus_per_merchant: 20,
            stock_per_sku: 60,
            auto_accept_every: 3,
            acceptance_deadline_s: 4,
            unpaid_timeout_s: 6,
            in_process_workers: true,
        },
    )
    .await?;
    let app = world.app.clone();
    println!(
        "  sandbox  {} (payments and merchant endpoints)",
        app.config.payment.base_url
    );
    println!(
        "  run      {} (Redis prefix {})\n",
        world.run, app.config.redis.key_prefix
    );

    // One merchant's endpoint is down for the first 5 s: its webhooks are retried.
    let down = world.merchants[1].clone();
    world.sandbox.configure_endpoint(
        &down,
        &EndpointSettings {
            down_for_ms: Some(5_000),
            ..Default::default()
        },
    );

    let mut rng = fastrand::Rng::with_seed(7);
    let mut msgs = Vec::with_capacity(orders + 4);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for n in 0..orders {
        let merchants = 1 + rng.usize(..3).min(world.merchants.len() - 1);
        let mut lines = Vec::new();
        let first = rng.usize(..world.merchants.len());
        for j in 0..merchants {
            let m = (first + j) % world.merchants.len();
            // SKU 0 of each merchant is the hot one: it sells out.
            let k = if rng.f64() < 0.2 {
                0
            } else {
                rng.usize(..world.skus_per_merchant)
            };
            lines.push((m, k, rng.i64(1..=3)));
        }
        let roll = rng.f64();
        let (status, kind) = if roll < 0.03 {
            ("processing", "unpaid")
        } else if roll < 0.05 {
            ("requires_payment_method", "payment declined")
        } else if roll < 0.30 {
            ("succeeded", "paid (captured at checkout)")
        } else {
            ("requires_capture", "authorised")
        };
        *kinds.entry(kind).or_default() += 1;
        msgs.push(world.order(n, &lines, status).1.to_string());
    }
    // A storefront sends the same order twice, and a few bad messages.
    msgs.push(msgs[0].clone());
    msgs.push("{\"type\": \"order.placed\", \"version\": 1, \"order\": {\"id\": \"broken".to_owned());
    let mut bad_sku = world.order(orders + 1, &[(0, 0, 1)], "requires_capture").1;
    bad_sku["order"]["lines"][0]["sku"] = json!("NO-SUCH-SKU");
    msgs.push(bad_sku.to_string());
    let mut zero = world.order(orders + 2, &[(0, 1, 1)], "requires_capture").1;
    zero["order"]["lines"][0]["quantity"] = json!(0);
    msgs.push(zero.to_string());

    let started = Instant::now();
    let producer = &app.producer;
    producer.push_raw_many(crate::enqueue::STOREFRONT, &msgs).await?;
    println!(
        "storefront enqueued {} messages in {:.2} s:",
        msgs.len(),
        started.elapsed().as_secs_f64()
    );
    for (k, v) in &kinds {
        println!("  {v:>6}  {k}");
    }
    println!(
        "  {:>6}  duplicate / malformed / unknown SKU / zero quantity (1 each)\n",
        4
    );

    // Merchants decide once notified: most accept, some reject; the rest stay silent until
    // their deadline.
    let mut decided = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let awaiting: Vec<(i64, String, String)> = sqlx::query_as(
            "SELECT s.id, o.storefront_order_id, s.merchant_id FROM sub_orders s JOIN orders o ON o.id = s.order_id
             JOIN webhook_deliveries d ON d.order_id = s.order_id AND d.sub_order_id = s.id AND d.event_type = 'sub_order.created' AND d.status = 'delivered'
             WHERE o.storefront_order_id LIKE $1 AND s.status = 'awaiting_acceptance' LIMIT 2000",
        )
        .bind(format!("demo-{}-%", world.run))
        .fetch_all(&app.pool)
        .await?;
        for (id, sf, merchant) in awaiting {
            if !decided.insert(id) {
                continue;
            }
            let roll = rng.f64();
            if roll < 0.80 {
                let decision = if roll < 0.72 { "accept" } else { "reject" };
                let cmd = json!({"type": "merchant.decision", "version": 1, "storefront_order_id": sf, "merchant_id": merchant, "decision": decision, "reason": if decision == "reject" { Some("cannot ship to this address") } else { None }});
                producer.push(crate::enqueue::STOREFRONT, &cmd).await?;
            }
        }
        let states = order_states(&app, &world.run).await?;
        let total: i64 = states.values().sum();
        let settled =
            states.get("captured").copied().unwrap_or(0) + states.get("cancelled").copied().unwrap_or(0);
        let (delivered, webhooks): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE d.status <> 'pending'), count(*) FROM webhook_deliveries d JOIN orders o ON o.id = d.order_id
             WHERE o.storefront_order_id LIKE $1",
        )
        .bind(format!("demo-{}-%", world.run))
        .fetch_one(&app.pool)
        .await?;
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id
             WHERE o.storefront_order_id LIKE $1 AND s.status IN ('pending', 'reserved', 'awaiting_acceptance')",
        )
        .bind(format!("demo-{}-%", world.run))
        .fetch_one(&app.pool)
        .await?;
        print!(
            "\r  orders settled {} {settled:>5}/{orders}   webhooks done {} {delivered:>5}/{webhooks:<5}  open sub-orders {open:<5} {:>5.1}s ",
            bar(settled, orders as i64),
            bar(delivered, webhooks),
            started.elapsed().as_secs_f64()
        );
        let _ = std::io::stdout().flush();
        if total >= orders as i64 && settled >= orders as i64 && delivered >= webhooks && open == 0 {
            break;
        }
        if Instant::now() > deadline {
            println!();
            anyhow::bail!(
                "the demo did not settle within 300 s; look with `souk queues` (prefix {})",
                app.config.redis.key_prefix
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!("\n");
    summary(&world, elapsed).await?;
    let forecast_hint = forecast_chapter(&world).await?;
    let prefix = app.config.redis.key_prefix.clone();
    let example: Option<String> = sqlx::query_scalar(
        "SELECT o.storefront_order_id FROM orders o WHERE o.storefront_order_id LIKE $1 AND o.refunded_minor > 0 ORDER BY o.id LIMIT 1",
    )
    .bind(format!("demo-{}-%", world.run))
    .fetch_optional(&app.pool)
    .await?;
    world.stop().await?;
    println!("\nlook at any order, for example one partly refunded:");
    println!(
        "  cargo run --release -- orders show {}",
        example.unwrap_or_else(|| "<storefront order id>".into())
    );
    println!("at a forecast with its chart:");
    println!("  {forecast_hint}");
    println!("and at the queues of this run:");
    println!("  SOUK_REDIS__KEY_PREFIX={prefix} cargo run --release -- queues");
    Ok(())
}

/// Demand forecasting: loads two years of generated history for the demo's merchants, runs the
/// forecast as the nightly job would, waits for the at-risk digests to reach the merchants'
/// endpoints, and prints what came out. Returns a `souk forecast show` command to try.
async fn forecast_chapter(world: &World) -> anyhow::Result<String> {
    use crate::{
        domain::forecast::generator::PanelSpec,
        forecast::{self, generate},
    };
    let app = &world.app;
    let started = Instant::now();
    let spec = PanelSpec {
        merchants: world.merchants.len(),
        skus: 200 * world.merchants.len(),
        days: 730,
        seed: 2026,
    };
    let as_of = chrono::Utc::now().date_naive();
    println!(
        "\ndemand forecasting: {} SKUs with two years of generated sales history (plus this demo's orders) for the {} merchants",
        spec.skus, spec.merchants
    );
    // Each merchant's first generated SKUs carry the names of the SKUs this demo stocked and
    // sold, so those get two years of their own history (different for every merchant) under
    // today's orders; the history ends yesterday, and today is the demo's orders.
    let named: Vec<String> = (0..world.skus_per_merchant).map(world::sku).collect();
    generate::load(
        app,
        &spec,
        &world.merchants,
        as_of - chrono::Duration::days(1),
        "unused",
        &named,
    )
    .await?;
    let dir = std::env::temp_dir().join(format!("souk-demo-{}", world.run));
    let own = history::import_samples(app, &world.merchants[0], as_of, dir).await?;
    let run = forecast::open_run(app, &format!("demo:{}", world.run), as_of, Some(&world.merchants)).await?;
    let (ok, failed) = forecast::run_in_process(app, &run, |m, r| {
        if let Ok(o) = r {
            println!(
                "  {m:<28} {:>5} SKUs forecast, {:>3} at risk of a stock-out",
                o.skus, o.at_risk
            );
        }
    })
    .await?;
    anyhow::ensure!(failed == 0, "{failed} merchants' forecasts failed");
    let digests: Vec<String> = world
        .merchants
        .iter()
        .map(|m| forecast::digest_id(run.id, m))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (delivered, sent) = loop {
        let (done, total): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status <> 'pending'), count(*) FROM webhook_deliveries WHERE id = ANY($1)",
        )
        .bind(&digests)
        .fetch_one(&app.pool)
        .await?;
        if done >= total || Instant::now() > deadline {
            break (done, total);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let models: Vec<(String, i64)> = sqlx::query_as(
        "SELECT model, count(*) FROM sku_forecasts WHERE run_id = $1 GROUP BY 1 ORDER BY 2 DESC",
    )
    .bind(run.id)
    .fetch_all(&app.pool)
    .await?;
    let classes: Vec<(String, i64)> = sqlx::query_as(
        "SELECT demand_class, count(*) FROM sku_forecasts WHERE run_id = $1 GROUP BY 1 ORDER BY 2 DESC",
    )
    .bind(run.id)
    .fetch_all(&app.pool)
    .await?;
    let list = |v: &[(String, i64)]| {
        v.iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!("  demand patterns: {}", list(&classes));
    println!("  models chosen by rolling-origin validation: {}", list(&models));
    let top: Vec<(String, String, f64, i32, i32, i64)> = sqlx::query_as(
        "SELECT merchant_id, sku, stockout_probability, available, suggested_order, value_at_risk_minor FROM stock_advice
         WHERE run_id = $1 AND at_risk ORDER BY stockout_probability * (value_at_risk_minor + 1) DESC LIMIT 5",
    )
    .bind(run.id)
    .fetch_all(&app.pool)
    .await?;
    println!("  riskiest SKUs (table stock_advice):");
    for (m, sku, p, avail, order, value) in &top {
        println!(
            "    {m:<28} {sku:<12} P(out) {:>3.0} %  in stock {avail:>4}  order {order:>4}  lost sales at risk {:>8.2} EUR",
            p * 100.0,
            *value as f64 / 100.0
        );
    }
    let mean: Vec<f64> = sqlx::query_scalar(
        "SELECT mean FROM sku_forecasts WHERE run_id = $1 AND merchant_id = $2 AND sku = $3",
    )
    .bind(run.id)
    .bind(&own.merchant)
    .bind(history::SKU)
    .fetch_one(&app.pool)
    .await?;
    let ahead = (own.promotion_ahead - as_of).num_days() as usize - 1;
    let on_sale = ahead..(ahead + 3).min(mean.len());
    let usual: Vec<f64> = (0..mean.len())
        .filter(|d| !on_sale.contains(d))
        .map(|d| mean[d])
        .collect();
    println!("  a merchant's own history and calendar (souk forecast import, souk forecast calendar):");
    println!(
        "    {}: {} days of {} for {}, the last 14 out of stock",
        own.history.display(),
        own.rows,
        history::SKU,
        own.merchant
    );
    println!(
        "    {}: 4 promotions ({} days), the next from {}",
        own.calendar.display(),
        own.days,
        own.promotion_ahead
    );
    println!(
        "    forecast: {:.1} a day (the empty shelf is lost demand, not a fall), {:.1} a day in the promotion ahead",
        usual.iter().sum::<f64>() / usual.len().max(1) as f64,
        mean[on_sale.clone()].iter().sum::<f64>() / on_sale.len().max(1) as f64
    );
    println!(
        "  {ok} merchants forecast, {delivered}/{sent} at-risk digests delivered (forecast.stock_risk webhooks) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(match top.first() {
        Some((m, sku, ..)) => format!("cargo run --release -- forecast show --merchant {m} --sku {sku}"),
        None => format!(
            "cargo run --release -- forecast show --merchant {}",
            world.merchants[0]
        ),
    })
}

async fn summary(world: &World, elapsed: f64) -> anyhow::Result<()> {
    let app = &world.app;
    let like = format!("demo-{}-%", world.run);
    println!("orders by final state (table orders):");
    for (status, n) in order_states(app, &world.run).await? {
        println!("  {n:>6}  {status}");
    }
    let reasons: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(status_reason, '-'), count(*) FROM orders WHERE storefront_order_id LIKE $1 AND status = 'cancelled'
         GROUP BY 1 ORDER BY 2 DESC LIMIT 5",
    )
    .bind(&like)
    .fetch_all(&app.pool)
    .await?;
    for (r, n) in reasons {
        println!("          {n:>5} cancelled: {r}");
    }
    let subs: Vec<(String, i64)> = sqlx::query_as(
        "SELECT s.status, count(*) FROM sub_orders s JOIN orders o ON o.id = s.order_id WHERE o.storefront_order_id LIKE $1 GROUP BY 1 ORDER BY 1",
    )
    .bind(&like)
    .fetch_all(&app.pool)
    .await?;
    println!("\nsub-orders (one per merchant per order):");
    for (s, n) in subs {
        println!("  {n:>6}  {s}");
    }
    let rejected: Vec<(String, i64)> = sqlx::query_as("SELECT code, count(*) FROM rejected_messages WHERE created_at > now() - interval '1 hour' AND (storefront_order_id LIKE $1 OR storefront_order_id IS NULL) GROUP BY 1 ORDER BY 1")
        .bind(&like)
        .fetch_all(&app.pool)
        .await?;
    println!("\nmessages refused at intake (table rejected_messages), by code:");
    for (c, n) in rejected {
        println!("  {n:>6}  {c}");
    }
    let (captured, refunded): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT sum(captured_minor)::bigint, sum(refunded_minor)::bigint FROM orders WHERE storefront_order_id LIKE $1",
    )
    .bind(&like)
    .fetch_one(&app.pool)
    .await?;
    let c = world.sandbox.counters();
    println!(
        "\npayments: captured {:.2} EUR, refunded {:.2} EUR; provider calls: {} captures, {} cancellations, {} refunds, {} replays of an idempotency key",
        captured.unwrap_or(0) as f64 / 100.0,
        refunded.unwrap_or(0) as f64 / 100.0,
        c.get("capture").unwrap_or(&0),
        c.get("cancel").unwrap_or(&0),
        c.get("refund").unwrap_or(&0),
        c.get("replayed").unwrap_or(&0)
    );
    let (delivered, attempts, p50, p99): (i64, Option<i64>, Option<f64>, Option<f64>) = sqlx::query_as(
        "WITH per_order AS (
            SELECT o.id, max(d.delivered_at) - o.enqueued_at AS lat FROM orders o JOIN webhook_deliveries d ON d.order_id = o.id
            WHERE o.storefront_order_id LIKE $1 AND d.event_type = 'sub_order.created' AND d.status = 'delivered' GROUP BY o.id)
         SELECT (SELECT count(*) FROM webhook_deliveries d JOIN orders o ON o.id = d.order_id WHERE o.storefront_order_id LIKE $1 AND d.status = 'delivered'),
                (SELECT sum(attempts)::bigint FROM webhook_deliveries d JOIN orders o ON o.id = d.order_id WHERE o.storefront_order_id LIKE $1),
                (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM lat)) FROM per_order),
                (SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM lat)) FROM per_order)",
    )
    .bind(&like)
    .fetch_one(&app.pool)
    .await?;
    println!("\nmerchant notifications: {delivered} webhooks delivered in {} attempts (the endpoint of {} was down for 5 s)", attempts.unwrap_or(0), world.merchants[1]);
    let mut verified = 0;
    let mut dups = 0;
    let mut bad = 0;
    for m in &world.merchants {
        let r = world.sandbox.endpoint_report(m);
        verified += r.distinct;
        dups += r.duplicates;
        bad += r.bad_signatures;
    }
    println!("  merchant endpoints verified {verified} distinct signed webhooks ({dups} repeats of a webhook-id, {bad} bad signatures)");
    println!(
        "  enqueue → last merchant notified, per order: p50 {:.0} ms, p99 {:.0} ms",
        p50.unwrap_or(0.0) * 1000.0,
        p99.unwrap_or(0.0) * 1000.0
    );
    let oversold: i64 =
        sqlx::query_scalar("SELECT count(*) FROM stock WHERE reserved > on_hand OR on_hand < 0")
            .fetch_one(&app.pool)
            .await?;
    let sold_out: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM stock WHERE merchant_id = ANY($1) AND on_hand - reserved = 0",
    )
    .bind(&world.merchants)
    .fetch_one(&app.pool)
    .await?;
    println!("\nstock: {sold_out} SKUs sold out, {oversold} oversold");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM order_events e JOIN orders o ON o.id = e.order_id WHERE o.storefront_order_id LIKE $1")
        .bind(&like)
        .fetch_one(&app.pool)
        .await?;
    println!(
        "outcome stream {}:outcomes carries {events} order events for the storefront",
        app.config.redis.key_prefix
    );
    println!("\n{elapsed:.1} s from the first message to every order settled");
    Ok(())
}

/// Renders an order's story (from [`crate::admin::order_story`]) for people.
pub fn render_story(story: &Value) -> String {
    let mut out = String::new();
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    if let Some(rej) = story.get("rejections") {
        out.push_str(&format!(
            "order {}: rejected at intake\n",
            s(&story["storefront_order_id"])
        ));
        for r in rej.as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  {}  {}: {}\n",
                s(&r["at"]),
                s(&r["code"]),
                s(&r["reason"])
            ));
        }
        return out;
    }
    let o = &story["order"];
    out.push_str(&format!(
        "order {} (souk id {}): {}{}\n  total {} {}  payment {} {} captured {} refunded {}\n  customer {}\n",
        s(&o["storefront_order_id"]),
        s(&o["id"]),
        s(&o["status"]),
        o["status_reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default(),
        s(&o["total_minor"]),
        s(&o["currency"]),
        s(&o["payment"]["payment_id"]),
        s(&o["payment"]["status"]),
        s(&o["payment"]["captured_minor"]),
        s(&o["payment"]["refunded_minor"]),
        o["customer"]
    ));
    for so in story["sub_orders"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  sub-order {} · merchant {} · {}{} · subtotal {} commission {}\n",
            s(&so["id"]),
            s(&so["merchant_id"]),
            s(&so["status"]),
            so["status_reason"]
                .as_str()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            s(&so["subtotal_minor"]),
            s(&so["commission_minor"])
        ));
        for l in so["lines"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    line {} × {} at {}\n",
                s(&l["sku"]),
                s(&l["quantity"]),
                s(&l["unit_price_minor"])
            ));
        }
        for r in so["reservations"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    reservation {} × {}: {}\n",
                s(&r["sku"]),
                s(&r["quantity"]),
                s(&r["status"])
            ));
        }
        for w in so["webhooks"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "    webhook {} {}: {}\n",
                s(&w["webhook_id"]),
                s(&w["type"]),
                s(&w["status"])
            ));
            for a in w["attempts"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "      {}  status {}  {} ms  {}\n",
                    s(&a["at"]),
                    s(&a["status_code"]),
                    s(&a["latency_ms"]),
                    a["error"].as_str().unwrap_or("")
                ));
            }
        }
    }
    out.push_str("\n  payment calls:\n");
    for p in story["payment_operations"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "    {}  {} {}  key {}\n",
            s(&p["at"]),
            s(&p["kind"]),
            s(&p["amount_minor"]),
            s(&p["idempotency_key"])
        ));
    }
    let shipments = story["shipments"].as_array().cloned().unwrap_or_default();
    if !shipments.is_empty() {
        out.push_str("\n  shipments:\n");
    }
    for sh in &shipments {
        out.push_str(&format!(
            "    {}{} {} ({}) for sub-order {}: {}, {} polls\n",
            if sh["return_id"].is_null() {
                ""
            } else {
                "return parcel to "
            },
            s(&sh["merchant_id"]),
            s(&sh["tracking_number"]),
            sh["carrier"].as_str().unwrap_or("carrier left to the provider"),
            s(&sh["sub_order_id"]),
            s(&sh["status"]),
            s(&sh["polls"])
        ));
        for e in sh["events"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "      {}  {:<20} {:<14} {}\n",
                s(&e["at"]),
                e["status"].as_str().unwrap_or("(unmapped)"),
                e["location"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            ));
        }
    }
    for r in story["returns"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  return {} · sub-order {} · {} · refund {}{}\n",
            s(&r["id"]),
            s(&r["sub_order_id"]),
            s(&r["status"]),
            s(&r["refund_minor"]),
            if r["restocked_at"].is_null() {
                ""
            } else {
                " · restocked"
            }
        ));
        for l in r["lines"].as_array().into_iter().flatten() {
            out.push_str(&format!("    line {} × {}\n", s(&l["sku"]), s(&l["quantity"])));
        }
        case_messages(&mut out, &r["messages"]);
    }
    for c in story["complaints"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\n  complaint {} · sub-order {} · {} · {:?} · reply by {}\n",
            s(&c["id"]),
            s(&c["sub_order_id"]),
            s(&c["status"]),
            s(&c["subject"]),
            s(&c["reply_by"])
        ));
        case_messages(&mut out, &c["messages"]);
    }
    out.push_str("\n  timeline:\n");
    for e in story["timeline"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "    {}  {:<32} {:<22} {}\n",
            s(&e["at"]),
            s(&e["type"]),
            s(&e["actor"]),
            e["reason"].as_str().unwrap_or("")
        ));
    }
    out
}

fn case_messages(out: &mut String, messages: &Value) {
    for m in messages.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "    {}  {:<9} {:<8} {}\n",
            m["at"].as_str().unwrap_or(""),
            m["author"].as_str().unwrap_or(""),
            m["kind"].as_str().unwrap_or(""),
            m["body"].as_str().unwrap_or("")
        ));
    }
}
