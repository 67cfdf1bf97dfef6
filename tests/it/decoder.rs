//! A property test of the storefront decoder and intake validation: arbitrary bytes, arbitrary
//! JSON values and valid orders with one field replaced by an arbitrary value never panic, and
//! each is either accepted or refused with a documented code. Fixed seed and case count, so a
//! run is repeatable (and a failure reproducible).

use std::collections::BTreeSet;

use proptest::{
    prelude::*,
    test_runner::{Config, RngAlgorithm, TestRng, TestRunner},
};
use serde_json::{json, Value};
use souk::domain::order::{parse_command, plan_order, Catalogue, StorefrontCommand};

const CASES: u32 = 3_000;

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        Just(json!("\u{0}")),
        Just(json!("SF-\u{202E}1")),
        Just(json!("-5000-01-01T00:00:00Z")),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!(i64::MAX)),
        Just(json!(-3_000_000_000i64)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_order() -> Value {
    json!({"type": "order.placed", "version": 1, "order": {
        "id": "SF-1", "customer": {"id": "c-1", "email": "c@example.org"}, "currency": "EUR",
        "lines": [{"merchant_id": "m1", "sku": "A", "quantity": 2, "unit_price_minor": 1000}],
        "shipping_address": {"country": "FR"},
        "payment": {"provider": "stripe", "payment_id": "pi_1"},
        "placed_at": "2026-11-24T10:00:00Z"}})
}

const PATHS: &[&str] = &[
    "/version",
    "/order/id",
    "/order/customer",
    "/order/customer/id",
    "/order/customer/name",
    "/order/currency",
    "/order/lines",
    "/order/lines/0",
    "/order/lines/0/quantity",
    "/order/lines/0/unit_price_minor",
    "/order/lines/0/sku",
    "/order/shipping_address",
    "/order/payment/payment_id",
    "/order/placed_at",
    "/order/metadata",
];

/// Every code a refusal of the decoder or of intake validation may carry.
const CODES: &[&str] = &[
    "missing_payload",
    "payload_too_large",
    "malformed_json",
    "invalid_characters",
    "invalid_message",
    "unsupported_version",
    "invalid_id",
    "quantity_out_of_range",
    "invalid_order_id",
    "invalid_customer",
    "wrong_currency",
    "unknown_payment_provider",
    "invalid_payment",
    "invalid_shipping_address",
    "invalid_placed_at",
    "no_lines",
    "too_many_lines",
    "invalid_quantity",
    "invalid_price",
    "unknown_merchant",
    "unknown_sku",
    "conflicting_prices",
    "amount_overflow",
];

/// Runs a raw message through the decoder and, for an order, intake validation.
fn outcome(raw: &str) -> Result<(), &'static str> {
    let merchants: BTreeSet<String> = ["m1", "m2"].iter().map(|s| s.to_string()).collect();
    let skus: BTreeSet<(String, String)> = [("m1", "A"), ("m1", "B"), ("m2", "C")]
        .iter()
        .map(|(m, s)| (m.to_string(), s.to_string()))
        .collect();
    match parse_command(raw).map_err(|r| r.code)? {
        StorefrontCommand::OrderPlaced { order, .. } => {
            let cat = Catalogue {
                currency: "EUR",
                merchants: &merchants,
                skus: &skus,
                providers: &["stripe"],
                now: chrono::Utc::now(),
            };
            plan_order(&order, &cat).map(|_| ()).map_err(|r| r.code)
        }
        _ => Ok(()),
    }
}

fn check(raw: &str) -> Result<(), TestCaseError> {
    if let Err(code) = outcome(raw) {
        prop_assert!(CODES.contains(&code), "undeclared code {code} for {raw:?}");
    }
    Ok(())
}

fn runner() -> TestRunner {
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[42; 32]))
}

#[test]
fn arbitrary_bytes_are_accepted_or_refused_with_a_code() {
    runner()
        .run(&prop::collection::vec(any::<u8>(), 0..300), |bytes| {
            check(&String::from_utf8_lossy(&bytes))
        })
        .unwrap();
}

#[test]
fn arbitrary_json_values_are_accepted_or_refused_with_a_code() {
    runner().run(&arb_json(), |v| check(&v.to_string())).unwrap();
}

#[test]
fn an_order_with_any_field_replaced_is_accepted_or_refused_with_a_code() {
    assert_eq!(
        outcome(&valid_order().to_string()),
        Ok(()),
        "the base case is valid"
    );
    let strategy = (prop::sample::select(PATHS), arb_json());
    runner()
        .run(&strategy, |(path, value)| {
            let mut msg = valid_order();
            if let Some(slot) = msg.pointer_mut(path) {
                *slot = value;
            }
            check(&msg.to_string())
        })
        .unwrap();
}

#[test]
fn every_code_is_documented() {
    let doc = include_str!("../../docs/storefront.md");
    for code in CODES {
        assert!(
            doc.contains(&format!("`{code}`")),
            "{code} is not in docs/storefront.md"
        );
    }
}
