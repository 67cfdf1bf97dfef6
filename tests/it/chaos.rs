//! A short run of `souk bench chaos`: the real binary, on a Redis and a PostgreSQL of its
//! own, with workers killed -9, Redis killed and restarted on its append-only file and
//! PostgreSQL restarted in immediate mode; every invariant must come out 0.

use std::process::Command;

#[tokio::test]
async fn a_short_chaos_run_loses_nothing_and_keeps_the_books() {
    let out = tokio::task::spawn_blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_souk"))
            .args([
                "bench",
                "chaos",
                "--orders",
                "300",
                "--workers",
                "2",
                "--seconds",
                "12",
                "--kill-every-s",
                "3",
                "--settle-limit-s",
                "120",
                "--json",
            ])
            .env_remove("RUST_LOG")
            .output()
            .expect("souk bench chaos")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench chaos failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a JSON line");
    let v: serde_json::Value = serde_json::from_str(last).expect("JSON");
    assert_eq!(v["worker_kills"], 3, "{v}");
    for key in [
        "lost",
        "stored_twice",
        "oversold",
        "captures_unrecorded",
        "refunds_above_captures",
        "money_kept_wrong",
        "cancelled_with_open_authorisation",
        "orders_not_final",
        "sub_orders_not_final",
        "webhooks_not_final",
        "refused_commands",
    ] {
        assert_eq!(v[key], 0, "{key}: {v}");
    }
    let settled = v["settled_s_after_last_fault"].as_f64().expect("settled");
    assert!(settled <= 60.0, "settled {settled} s after the last fault: {v}");
    assert!(v["provider_captures"].as_i64().unwrap() > 100, "{v}");
}
