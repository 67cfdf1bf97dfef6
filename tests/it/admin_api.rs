//! The admin API: its token, merchants, and secrets never shown.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::eventually;
use crate::support::pipeline::Pipeline;

#[tokio::test]
async fn the_admin_api_needs_its_token_manages_merchants_and_never_shows_secrets() {
    let token = "admin-token-for-tests-0123456789";
    let p = Pipeline::start(&[
        ("SOUK_ADMIN__TOKEN", token),
        ("SOUK_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "false"),
    ])
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = souk::http::router(p.env.app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let r = http.get(url("/admin/merchants")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(url("/admin/merchants"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(url("/admin/merchants"))
        .bearer_auth(token)
        .json(&json!({"id": "shop-1", "name": "Shop", "webhook_url": "http://127.0.0.1:9/hook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a loopback webhook URL is refused (SSRF guard)");
    let r = http
        .post(url("/admin/merchants"))
        .bearer_auth(token)
        .json(&json!({"id": "shop-1", "name": "Shop", "webhook_url": "https://shop.example/hook", "acceptance_mode": "auto"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.unwrap();
    let secret = body["signing_secret"].as_str().unwrap().to_owned();
    assert!(souk::domain::webhook::secret_is_valid(&secret));
    let r = http
        .post(url("/admin/merchants/shop-1/rotate-secret"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let rotated: Value = r.json().await.unwrap();
    assert_ne!(rotated["signing_secret"], body["signing_secret"]);
    let list = http
        .get(url("/admin/merchants"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("shop-1") && list.contains("\"secrets\":2"),
        "{list}"
    );
    assert!(!list.contains("whsec_"), "secrets never listed");
    // Any storefront command through the admin API: checked first, then enqueued.
    let bad = http
        .post(url("/admin/commands"))
        .bearer_auth(token)
        .body(r#"{"type": "shipment.created", "version": 1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("invalid_message"));
    let unauthorised = http
        .post(url("/admin/commands"))
        .body(r#"{"type": "inventory.set", "version": 1, "merchant_id": "shop-1", "sku": "S", "on_hand": 7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorised.status(), 401);
    let good = http
        .post(url("/admin/commands"))
        .bearer_auth(token)
        .body(r#"{"type": "inventory.set", "version": 1, "merchant_id": "shop-1", "sku": "S", "on_hand": 7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), 202);
    eventually(Duration::from_secs(10), "the command applied", || async {
        sqlx::query_scalar::<_, i32>("SELECT on_hand FROM stock WHERE merchant_id = 'shop-1' AND sku = 'S'")
            .fetch_optional(&p.env.app.pool)
            .await
            .unwrap()
            == Some(7)
    })
    .await;
    let r = http
        .get(url("/admin/orders/none"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // A merchant's API keys: created (shown once), listed (never shown), rotated, revoked.
    let post = |path: &str, body: Value| http.post(url(path)).bearer_auth(token).json(&body).send();
    let get = |path: &str| http.get(url(path)).bearer_auth(token).send();
    let made = post(
        "/admin/merchants/shop-1/keys",
        json!({"scope": "read", "label": "ERP"}),
    )
    .await
    .unwrap();
    assert_eq!(made.status(), 201);
    let made: Value = made.json().await.unwrap();
    let (id, key) = (made["id"].as_str().unwrap(), made["key"].as_str().unwrap());
    assert!(key.starts_with("smk_") && made["scope"] == "read", "{made}");
    let listed = get("/admin/merchants/shop-1/keys")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(id) && !listed.contains(key), "{listed}");
    assert_eq!(
        post("/admin/merchants/shop-1/keys", json!({"scope": "admin"}))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        post("/admin/merchants/nobody/keys", json!({}))
            .await
            .unwrap()
            .status(),
        404
    );
    let rotated: Value = post(
        &format!("/admin/merchants/shop-1/keys/{id}/rotate"),
        json!({"overlap_s": 0}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let new_id = rotated["new"]["id"].as_str().unwrap();
    assert_ne!(new_id, id);
    let caller =
        souk::merchant_api::keys::authenticate(&p.env.app.pool, rotated["new"]["key"].as_str().unwrap())
            .await
            .unwrap()
            .unwrap();
    assert_eq!(caller.merchant_id, "shop-1");
    assert!(
        souk::merchant_api::keys::authenticate(&p.env.app.pool, key)
            .await
            .unwrap()
            .is_none(),
        "no overlap"
    );
    let r = post(
        &format!("/admin/merchants/shop-1/keys/{new_id}/revoke"),
        json!({}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(&format!("/admin/merchants/other/keys/{new_id}/revoke"), json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a key is revoked through its own merchant only");
    let reads: Value = get("/admin/merchants/shop-1/address-reads")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reads["reads"], json!([]), "{reads}");
    assert_eq!(
        http.get(url("/admin/merchants/shop-1/keys"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Every route of the document is served (an unrouted path is axum's empty 404, a wrong
    // method its 405; every handler answers with a body).
    for (method, path) in souk::http::ADMIN_ROUTES {
        let path = path.replace("{id}", "nobody").replace("{key}", "key_none");
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(m, url(&path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status != 405 && !(status == 404 && body.is_empty()),
            "{method} {path} is not served: {status}"
        );
    }
    p.stop().await;
}

/// What operators see: a second `souk migrate` prints no PostgreSQL NOTICE, and a mistyped key
/// is named with where it was set.
#[tokio::test]
async fn a_cli_run_prints_no_notices_and_a_config_error_names_the_key_and_its_source() {
    let env = crate::support::TestEnv::new().await;
    let run = |extra: Vec<(String, String)>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_souk"));
        cmd.arg("migrate").env_remove("RUST_LOG");
        for (k, v) in env.child_env().into_iter().chain(extra) {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(vec![]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("already exists"), "{stderr}");
    let (ok, stderr) = run(vec![("SOUK_WEBHOOKS__TIMOUT_MS".into(), "5".into())]);
    assert!(!ok);
    assert!(
        stderr.contains("`webhooks.timout_ms` in environment variable SOUK_WEBHOOKS__TIMOUT_MS"),
        "{stderr}"
    );
    env.cleanup().await;
}

/// `souk health` is the container's healthcheck: 0 while the host's `souk run` answers on the
/// ops port, 1 once it is gone.
#[tokio::test]
async fn souk_health_says_whether_this_hosts_worker_answers() {
    let env = crate::support::TestEnv::new().await;
    let port = crate::support::free_port();
    let listen = format!("0.0.0.0:{port}");
    let health = |ready: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_souk"));
        cmd.arg("health").env_remove("RUST_LOG");
        if ready {
            cmd.arg("--ready");
        }
        for (k, v) in env.child_env() {
            cmd.env(k, v);
        }
        cmd.env("SOUK_OPS__LISTEN", &listen);
        cmd.output().unwrap().status.success()
    };
    assert!(!health(false), "nothing runs yet");
    let mut worker = env.spawn_souk(&["run", "--no-cron"], &[("SOUK_OPS__LISTEN", listen.as_str())]);
    eventually(Duration::from_secs(20), "the worker answers", || async {
        health(false) && health(true)
    })
    .await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert!(!health(false), "gone");
    env.cleanup().await;
}

#[test]
fn the_admin_openapi_document_lists_every_admin_route() {
    crate::support::check_openapi_routes(
        "docs/openapi/admin.json",
        souk::http::ADMIN_OPENAPI,
        souk::http::ADMIN_ROUTES,
    );
}
