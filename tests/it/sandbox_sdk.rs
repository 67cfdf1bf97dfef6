//! The sandbox as a storefront's test double: a checkout written with the official Stripe SDK
//! (stripe-python, installed by .ci/run) runs against it unchanged (tests/sdk/stripe_sandbox.py).

use souk::sandbox::{self, Sandbox};

#[tokio::test]
async fn the_official_stripe_sdk_runs_a_checkout_against_the_sandbox() {
    if !crate::support::have_tool(&["python3", "-c", "import stripe"], "pip install stripe") {
        return;
    }
    let key = "sk_test_sdk";
    let (addr, _h) = sandbox::start("127.0.0.1:0".parse().unwrap(), Sandbox::new(key))
        .await
        .unwrap();
    // Awaited, not blocked on: this test's runtime serves the sandbox meanwhile.
    let out = tokio::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/sdk/stripe_sandbox.py"
        ))
        .env("SANDBOX_URL", format!("http://{addr}"))
        .env("SANDBOX_KEY", key)
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("ok: stripe-python"), "{stdout}");
}
