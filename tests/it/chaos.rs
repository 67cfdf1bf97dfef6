//! A short run of `souk bench chaos`: the real binary, on a Redis and a PostgreSQL of its
//! own, with workers killed -9, Redis killed and restarted on its append-only file and
//! PostgreSQL restarted in immediate mode; every invariant must come out 0.

use std::process::Command;

async fn chaos(args: &[&str]) -> serde_json::Value {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_souk"))
            .args(["bench", "chaos"])
            .args(&args)
            .arg("--json")
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
    serde_json::from_str(last).expect("JSON")
}

fn books_are_clean(v: &serde_json::Value) {
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
}

/// Three hosts (network namespaces behind a hub namespace the bench makes), one cut off for
/// 20 s, longer than `queue.claim_idle_ms` (15 s): everything it held was taken over before
/// its link came back, and the work it finished late applied nothing twice.
#[tokio::test]
async fn workers_on_three_hosts_ride_out_one_host_cut_off() {
    if !souk::bench::netns::available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "network namespaces cannot be made here (needs root and iproute2)"
        );
        eprintln!("SKIPPED: network namespaces cannot be made here (needs root and iproute2)");
        return;
    }
    let v = chaos(&[
        "--orders",
        "900",
        "--workers",
        "3",
        "--hosts",
        "3",
        "--seconds",
        "24",
        "--kill-every-s",
        "6",
        "--cut-host-s",
        "20",
        "--settle-limit-s",
        "180",
    ])
    .await;
    assert_eq!(
        (v["hosts"].as_i64(), v["host_cuts"].as_i64()),
        (Some(3), Some(1)),
        "{v}"
    );
    assert_eq!(
        v["cut_host_pending_at_heal"], 0,
        "entries left with the cut-off host: {v}"
    );
    books_are_clean(&v);
    assert!(v["provider_captures"].as_i64().unwrap() > 300, "{v}");
}

#[tokio::test]
async fn a_short_chaos_run_loses_nothing_and_keeps_the_books() {
    let v = chaos(&[
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
    ])
    .await;
    assert_eq!(v["worker_kills"], 3, "{v}");
    books_are_clean(&v);
    let settled = v["settled_s_after_last_fault"].as_f64().expect("settled");
    assert!(settled <= 60.0, "settled {settled} s after the last fault: {v}");
    assert!(v["provider_captures"].as_i64().unwrap() > 100, "{v}");
}

/// The same faults on a Redis Cluster of the bench's own (3 masters, 3 replicas, souk waiting
/// for one replica per write), its Redis fault a failover: the storefront stream's master is
/// killed -9 mid-run and its replica takes over. Nothing acknowledged is lost.
#[tokio::test]
async fn a_master_failover_mid_run_loses_nothing_and_keeps_the_books() {
    let v = chaos(&[
        "--orders",
        "300",
        "--workers",
        "2",
        "--seconds",
        "12",
        "--kill-every-s",
        "4",
        "--redis-cluster",
        "--settle-limit-s",
        "120",
    ])
    .await;
    assert_eq!(
        (v["redis_cluster"].as_bool(), v["master_failovers"].as_i64()),
        (Some(true), Some(1)),
        "{v}"
    );
    let promoted = v["failover_promoted_s"].as_f64().expect("a replica took over");
    assert!(promoted < 30.0, "failover took {promoted} s: {v}");
    books_are_clean(&v);
    assert!(v["provider_captures"].as_i64().unwrap() > 100, "{v}");
}
