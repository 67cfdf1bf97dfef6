//! The merchant API over HTTP on its own listener: keys and scopes, isolation between
//! merchants, actions through the storefront stream, Idempotency-Key and the rate limit.

use std::time::Duration;

use serde_json::{json, Value};
use souk::merchant_api::keys::{self, Scope};

use crate::support::eventually;
use crate::support::pipeline::Pipeline;

#[tokio::test]
async fn each_merchant_sees_and_acts_on_its_own_orders_only_and_actions_apply_once() {
    let p = Pipeline::start(&[("SOUK_MERCHANT_API__REQUESTS_PER_MINUTE", "40")]).await;
    p.merchant("m-a", "manual", "reject", 3600).await;
    p.merchant("m-b", "manual", "reject", 3600).await;
    p.stock("m-a", "A", 10).await;
    p.stock("m-b", "B", 10).await;
    let base = crate::support::serve_merchant_api(&p.env.app).await;
    let pool = &p.env.app.pool;
    let ka = keys::create(pool, "m-a", Scope::Act, Some("tests"))
        .await
        .unwrap()
        .key;
    let kb = keys::create(pool, "m-b", Scope::Act, None).await.unwrap().key;
    let ro = keys::create(pool, "m-a", Scope::Read, None).await.unwrap();
    let http = reqwest::Client::new();
    let get = |key: &str, path: &str| http.get(format!("{base}{path}")).bearer_auth(key).send();

    p.send(&p.order(
        "SF-API",
        &[("m-a", "A", 2, 700), ("m-b", "B", 1, 300)],
        "requires_capture",
    ))
    .await;
    eventually(
        Duration::from_secs(20),
        "both sub-orders wait for a decision",
        || async {
            // One read: an order not stored yet has no sub-orders, and all() of none is true.
            let s = p.sub_statuses("SF-API").await;
            s.len() == 2 && s.values().all(|s| s == "awaiting_acceptance")
        },
    )
    .await;

    // No key, a wrong key: 401 problem+json.
    let r = http
        .get(format!("{base}/merchant/v1/sub-orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert_eq!(
        get("smk_nope", "/merchant/v1/sub-orders").await.unwrap().status(),
        401
    );

    let list: Value = get(&ka, "/merchant/v1/sub-orders?state=awaiting_acceptance")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mine = list["data"].as_array().unwrap();
    let statuses = p.sub_statuses("SF-API").await;
    assert_eq!(mine.len(), 1, "{list} {statuses:?}");
    let sub_a = mine[0]["id"].as_i64().unwrap();
    assert!(mine[0]["accept_by"].is_string());
    let list_b: Value = get(&kb, "/merchant/v1/sub-orders")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let sub_b = list_b["data"][0]["id"].as_i64().unwrap();
    assert_ne!(sub_a, sub_b);

    // Isolation: B's key finds nothing of A's, on every route that names a resource.
    for path in [
        format!("/merchant/v1/sub-orders/{sub_a}"),
        "/merchant/v1/stock/A".to_owned(),
    ] {
        assert_eq!(get(&kb, &path).await.unwrap().status(), 404, "{path}");
        assert_eq!(get(&ka, &path).await.unwrap().status(), 200, "{path}");
    }
    for (path, body) in [
        (format!("/merchant/v1/sub-orders/{sub_a}/accept"), json!({})),
        (
            format!("/merchant/v1/sub-orders/{sub_a}/reject"),
            json!({"reason": "no"}),
        ),
        (
            format!("/merchant/v1/sub-orders/{sub_a}/shipments"),
            json!({"tracking_number": "1Z999AA10123456784"}),
        ),
    ] {
        let r = http
            .post(format!("{base}{path}"))
            .bearer_auth(&kb)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // A to-ship sub-order shows no address yet while it awaits acceptance.
    let one: Value = get(&ka, &format!("/merchant/v1/sub-orders/{sub_a}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(one["shipping_address"].is_null(), "{one}");
    assert_eq!(one["lines"][0]["sku"], "A");

    // A read-only key cannot act.
    let r = http
        .post(format!("{base}/merchant/v1/sub-orders/{sub_a}/accept"))
        .bearer_auth(&ro.key)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // Accept with an Idempotency-Key: applied through the storefront stream, answered 200.
    let accept = || {
        http.post(format!("{base}/merchant/v1/sub-orders/{sub_a}/accept"))
            .bearer_auth(&ka)
            .header("idempotency-key", "accept-1")
            .json(&json!({}))
            .send()
    };
    let r = accept().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["ratelimit-policy"]
        .to_str()
        .unwrap()
        .contains("q=40;w=60"));
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["operation"]["status"], "applied", "{first}");
    assert_eq!(p.sub_statuses("SF-API").await["m-a"], "accepted");
    // The same request again: the first answer, replayed, and nothing enqueued twice.
    let r = accept().await.unwrap();
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["operation"]["id"], first["operation"]["id"]);
    let decisions: i64 = sqlx::query_scalar("SELECT count(*) FROM api_operations WHERE merchant_id = 'm-a'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(decisions, 1);
    // The same key with another body is refused.
    let r = http
        .post(format!("{base}/merchant/v1/sub-orders/{sub_a}/reject"))
        .bearer_auth(&ka)
        .header("idempotency-key", "accept-1")
        .json(&json!({"reason": "changed my mind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    // A refusal by the service comes back with its code: a second decision.
    let r = http
        .post(format!("{base}/merchant/v1/sub-orders/{sub_a}/reject"))
        .bearer_auth(&ka)
        .json(&json!({"reason": "late"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.unwrap();
    assert_eq!(problem["code"], "decision_refused", "{problem}");
    let op = problem["operation"]["id"].as_str().unwrap().to_owned();
    let polled: Value = get(&ka, &format!("/merchant/v1/operations/{op}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(polled["status"], "refused");
    assert_eq!(
        get(&kb, &format!("/merchant/v1/operations/{op}"))
            .await
            .unwrap()
            .status(),
        404
    );

    // Accepted and not shipped: the address is shown, and the read is logged.
    let one: Value = get(&ka, &format!("/merchant/v1/sub-orders/{sub_a}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["state"], "to_ship", "{one}");
    assert_eq!(one["shipping_address"]["city"], "Lyon");
    let reads = souk::store::merchant_api::reads::address_reads(
        pool,
        "m-a",
        chrono::Utc::now() - chrono::Duration::hours(1),
        10,
    )
    .await
    .unwrap();
    assert_eq!(reads.len(), 1);

    // Stock through the API: set, adjust, read back; B cannot see A's SKU.
    let r = http
        .post(format!("{base}/merchant/v1/stock/A/adjustments"))
        .bearer_auth(&ka)
        .header("idempotency-key", "adj-1")
        .json(&json!({"delta": -3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = get(&ka, "/merchant/v1/stock/A")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["on_hand"], 5, "10, 2 sold, 3 taken: {s}");

    // Key rotation keeps the old key for its overlap; a revoked key is refused at once.
    let ka_id = keys::list(pool, "m-a")
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.label.as_deref() == Some("tests"))
        .unwrap()
        .id;
    let ka2 = keys::rotate(pool, "m-a", &ka_id, 3600).await.unwrap();
    assert_eq!(get(&ka, "/merchant/v1/stock").await.unwrap().status(), 200);
    assert_eq!(get(&ka2.key, "/merchant/v1/stock").await.unwrap().status(), 200);
    keys::revoke(pool, "m-a", &ka_id).await.unwrap();
    assert_eq!(get(&ka, "/merchant/v1/stock").await.unwrap().status(), 401);

    // The rate limit: 40 a minute per key, then 429 with Retry-After.
    let mut limited = None;
    for _ in 0..45 {
        let r = get(&kb, "/merchant/v1/stock").await.unwrap();
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("the limit was reached");
    assert!(r.headers().contains_key("retry-after"));
    assert!(r.headers()["ratelimit"].to_str().unwrap().contains("r=0"));
    p.stop().await;
}

#[test]
fn the_openapi_document_lists_every_route() {
    crate::support::check_openapi_routes(
        "docs/openapi/merchant-v1.json",
        souk::merchant_api::OPENAPI,
        souk::merchant_api::ROUTES,
    );
}

/// `souk merchants test-webhook` and `POST /merchant/v1/webhooks/test` against an endpoint that
/// verifies with the official Standard Webhooks library (tests/sdk/merchant_endpoint.py).
#[tokio::test]
async fn test_webhooks_verify_with_the_official_library_and_a_wrong_secret_shows() {
    if !crate::support::have_tool(
        &["python3", "-c", "import standardwebhooks"],
        "pip install standardwebhooks",
    ) {
        return;
    }
    use souk::store::merchants::MerchantInput;
    let env = crate::support::TestEnv::with(&[("SOUK_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true")]).await;
    let port = crate::support::free_port();
    let url = |m: &str| format!("http://127.0.0.1:{port}/{m}/webhook");
    let input = |m: &str| MerchantInput {
        name: None,
        webhook_url: Some(url(m)),
        acceptance_mode: None,
        acceptance_default: None,
        acceptance_deadline_s: None,
        commission_bps: None,
        webhook_version: None,
    };
    let good = souk::admin::add_merchant(&env.app, "m-good", &input("m-good"))
        .await
        .unwrap();
    souk::admin::add_merchant(&env.app, "m-bad", &input("m-bad"))
        .await
        .unwrap();
    // m-bad's endpoint was set up with an old secret it never replaced.
    let stale = souk::admin::generate_secret().unwrap();
    let secrets = json!({"m-good": good, "m-bad": stale}).to_string();
    let mut endpoint = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sdk/merchant_endpoint.py"
        ))
        .env("MERCHANT_SECRETS", &secrets)
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(endpoint.stdout.take().unwrap());
    let mut first = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut first)
        .await
        .unwrap();
    assert!(first.starts_with("listening"), "{first}");

    // The operator's command: every event type verified, exit 0.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_souk"));
    cmd.args(["merchants", "test-webhook", "m-good", "--all"])
        .env_remove("RUST_LOG");
    for (k, v) in env.child_env() {
        cmd.env(k, v);
    }
    cmd.env("SOUK_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true");
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kinds = souk::merchant_api::test_webhook::EVENT_TYPES;
    assert_eq!(stdout.matches(" verified ").count(), kinds.len(), "{stdout}");
    // The endpoint saw each one, verified by the official library.
    let mut seen = Vec::new();
    for _ in 0..kinds.len() {
        let mut l = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut l)
            .await
            .unwrap();
        seen.push(l.split_whitespace().nth(2).unwrap_or_default().to_owned());
    }
    seen.sort();
    let mut want: Vec<String> = kinds.iter().map(|(k, _)| k.to_string()).collect();
    want.sort();
    assert_eq!(seen, want);

    // The merchant's own call, with the stale secret on its side: each answer shows the failure.
    let base = crate::support::serve_merchant_api(&env.app).await;
    let key = keys::create(&env.app.pool, "m-bad", Scope::Act, None)
        .await
        .unwrap()
        .key;
    let r: Value = reqwest::Client::new()
        .post(format!("{base}/merchant/v1/webhooks/test"))
        .bearer_auth(&key)
        .json(&json!({"event_type": "sub_order.created"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["all_verified"], false, "{r}");
    assert_eq!(r["sent"][0]["status"], 400, "{r}");
    assert!(
        r["sent"][0]["answer"].as_str().unwrap().contains("not verified"),
        "{r}"
    );
    assert!(r["sent"][0]["webhook_id"]
        .as_str()
        .unwrap()
        .starts_with("msg_test_"));
    let _ = endpoint.kill().await;
    env.cleanup().await;
}
