//! schemathesis (from PyPI, installed by .ci/run) against a running `souk run` serving the
//! merchant API with a test merchant's key: no 5xx, and every answer matches
//! docs/openapi/merchant-v1.json (status codes, content types, schemas, headers).

use std::time::Duration;

use serde_json::json;
use souk::merchant_api::keys::{self, Scope};

use crate::support::{eventually, free_port, pipeline::Pipeline, Reaper};

/// Examples per operation: sized so this test stays within a couple of minutes on 2 cores.
const MAX_EXAMPLES: &str = "30";

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    if !crate::support::have_tool(&["schemathesis", "--version"], "pip install schemathesis") {
        return;
    }
    let p = Pipeline::start_without_workers(&[]).await;
    p.merchant("m-st", "manual", "reject", 3600).await;
    p.stock("m-st", "A", 50).await;
    let listen = format!("127.0.0.1:{}", free_port());
    let _souk = Reaper(vec![p.spawn_worker(&[
        ("SOUK_MERCHANT_API__LISTEN", listen.as_str()),
        ("SOUK_MERCHANT_API__REQUESTS_PER_MINUTE", "1000000"),
        ("SOUK_MERCHANT_API__ACTION_WAIT_MS", "500"),
    ])]);
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), "the merchant API listening", || async {
        http.get(format!("{base}/merchant/v1/openapi.json"))
            .send()
            .await
            .is_ok()
    })
    .await;
    // Something to find: an order waiting for the merchant.
    p.send(&p.order("SF-ST", &[("m-st", "A", 1, 900)], "requires_capture"))
        .await;
    eventually(Duration::from_secs(20), "the order waits", || async {
        p.sub_statuses("SF-ST").await.get("m-st").map(String::as_str) == Some("awaiting_acceptance")
    })
    .await;
    // And a shipped one with a return, and a complaint: ids for the routes that name one.
    p.send(&p.order("SF-ST2", &[("m-st", "A", 2, 400)], "requires_capture"))
        .await;
    eventually(Duration::from_secs(20), "the second order waits", || async {
        p.sub_statuses("SF-ST2").await.get("m-st").map(String::as_str) == Some("awaiting_acceptance")
    })
    .await;
    for cmd in [
        json!({"type": "merchant.decision", "version": 1, "storefront_order_id": "SF-ST2", "merchant_id": "m-st", "decision": "accept"}),
        json!({"type": "shipment.created", "version": 1, "storefront_order_id": "SF-ST2", "merchant_id": "m-st",
               "tracking_number": "1Z999AA10123456784", "carrier": "ups"}),
        json!({"type": "return.requested", "version": 1, "return_id": "RMA-ST", "storefront_order_id": "SF-ST2",
               "merchant_id": "m-st", "lines": [{"sku": "A", "quantity": 1}], "reason": "too big"}),
        json!({"type": "complaint.opened", "version": 1, "complaint_id": "CASE-ST", "storefront_order_id": "SF-ST",
               "merchant_id": "m-st", "subject": "late", "message": "where is it?"}),
    ] {
        p.send(&cmd).await;
    }
    eventually(
        Duration::from_secs(20),
        "the return and the complaint recorded",
        || async {
            p.scalar(
                "SELECT count(*) FROM returns WHERE storefront_return_id = $1",
                "RMA-ST",
            )
            .await
                == 1
                && p.scalar(
                    "SELECT count(*) FROM complaints WHERE storefront_complaint_id = $1",
                    "CASE-ST",
                )
                .await
                    == 1
        },
    )
    .await;
    let key = keys::create(&p.env.app.pool, "m-st", Scope::Act, Some("schemathesis"))
        .await
        .unwrap()
        .key;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/schemathesis");
    let out = tokio::process::Command::new("schemathesis")
        .args(["--config-file", &format!("{dir}/schemathesis.toml")])
        .args(["run", &format!("{base}/merchant/v1/openapi.json")])
        .args([
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--workers",
            "1",
        ])
        .args(["--seed", "1"])
        .env("SCHEMATHESIS_HOOKS", "souk_hooks")
        .env("PYTHONPATH", dir)
        .env("SOUK_TEST_KEY", &key)
        // Its caches (.schemathesis, .hypothesis) go there, not into the checkout.
        .current_dir(std::env::temp_dir())
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    drop(_souk);
    p.stop().await;
}
