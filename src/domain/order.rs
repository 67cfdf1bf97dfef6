//! The storefront's messages (version 1) and the rules that accept, reject and split an order.
//!
//! Parsing and validation are pure: the handler passes the raw text and what the database
//! knows (merchants, SKUs, the marketplace currency); the result is either a validated order
//! split per merchant or a rejection with a reason a person can read.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// Largest message souk accepts on the storefront stream.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Most lines one order may carry.
pub const MAX_LINES: usize = 500;
/// Most units of one line.
pub const MAX_QUANTITY: i64 = 10_000;

/// A storefront command, the `payload` of an entry on `souk.storefront.v1`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum StorefrontCommand {
    /// A customer placed an order.
    #[serde(rename = "order.placed")]
    OrderPlaced { version: u32, order: OrderMessage },
    /// Set a merchant's stock on hand for a SKU (creates the SKU).
    #[serde(rename = "inventory.set")]
    InventorySet {
        version: u32,
        merchant_id: String,
        sku: String,
        on_hand: i64,
    },
    /// Add to (or with a negative delta, take from) a merchant's stock on hand.
    #[serde(rename = "inventory.adjust")]
    InventoryAdjust {
        version: u32,
        merchant_id: String,
        sku: String,
        delta: i64,
    },
    /// A merchant accepts or rejects its part of an order.
    #[serde(rename = "merchant.decision")]
    MerchantDecision {
        version: u32,
        storefront_order_id: String,
        merchant_id: String,
        decision: Decision,
        #[serde(default)]
        reason: Option<String>,
    },
    /// A merchant shipped its part of an order, or some of its lines: a tracking number, and
    /// the carrier when known (detected from the number otherwise).
    #[serde(rename = "shipment.created")]
    ShipmentCreated {
        version: u32,
        storefront_order_id: String,
        merchant_id: String,
        tracking_number: String,
        #[serde(default)]
        carrier: Option<String>,
        /// What the parcel carries when it is not everything left to ship.
        #[serde(default)]
        lines: Option<Vec<super::after_sales::ItemLine>>,
    },
    /// The customer or the storefront cancels an order (before shipment).
    #[serde(rename = "order.cancel")]
    OrderCancel {
        version: u32,
        storefront_order_id: String,
        #[serde(default)]
        reason: Option<String>,
    },
    /// The customer asks to send goods of a shipped sub-order back.
    #[serde(rename = "return.requested")]
    ReturnRequested {
        version: u32,
        return_id: String,
        storefront_order_id: String,
        merchant_id: String,
        lines: Vec<super::after_sales::ItemLine>,
        #[serde(default)]
        reason: Option<String>,
    },
    /// The merchant approves or refuses a return request.
    #[serde(rename = "return.decision")]
    ReturnDecision {
        version: u32,
        return_id: String,
        decision: super::after_sales::ReturnDecision,
        #[serde(default)]
        reason: Option<String>,
        /// The merchant deciding: when given, it must be the return's merchant.
        #[serde(default)]
        merchant_id: Option<String>,
    },
    /// The customer sent the approved return back: its parcel is tracked like any other.
    #[serde(rename = "return.shipped")]
    ReturnShipped {
        version: u32,
        return_id: String,
        tracking_number: String,
        #[serde(default)]
        carrier: Option<String>,
    },
    /// The merchant has the goods back (refund goes out) and says whether they can be sold
    /// again (restocked when they can).
    #[serde(rename = "return.received")]
    ReturnReceived {
        version: u32,
        return_id: String,
        sellable: bool,
        #[serde(default)]
        note: Option<String>,
        /// As for `return.decision`.
        #[serde(default)]
        merchant_id: Option<String>,
    },
    /// The customer opens a complaint about a merchant's part of an order.
    #[serde(rename = "complaint.opened")]
    ComplaintOpened {
        version: u32,
        complaint_id: String,
        storefront_order_id: String,
        merchant_id: String,
        subject: String,
        message: String,
    },
    /// A message on a complaint, from the customer, the merchant or the platform.
    #[serde(rename = "complaint.message")]
    ComplaintMessage {
        version: u32,
        complaint_id: String,
        author: super::after_sales::Author,
        message: String,
        /// Required when `author` is `merchant`, and it must be the complaint's merchant.
        #[serde(default)]
        merchant_id: Option<String>,
    },
    /// The complaint is settled.
    #[serde(rename = "complaint.closed")]
    ComplaintClosed {
        version: u32,
        complaint_id: String,
        by: super::after_sales::Author,
        resolution: String,
        /// Required when `by` is `merchant`, and it must be the complaint's merchant.
        #[serde(default)]
        merchant_id: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Accept,
    Reject,
}

/// The order document inside `order.placed`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OrderMessage {
    pub id: String,
    pub customer: Customer,
    pub currency: String,
    pub lines: Vec<LineMessage>,
    pub shipping_address: serde_json::Value,
    pub payment: PaymentRef,
    pub placed_at: chrono::DateTime<chrono::Utc>,
    #[serde(default)]
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LineMessage {
    pub merchant_id: String,
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PaymentRef {
    pub provider: String,
    pub payment_id: String,
}

/// Why a message was refused; the text is shown to storefront developers as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Rejection {
    /// A stable machine-readable code (`malformed_json`, `unknown_merchant`, ...).
    pub code: &'static str,
    pub message: String,
}

fn reject(code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection {
        code,
        message: message.into(),
    }
}

/// Parses a raw storefront message. Size first (a huge payload is never parsed), then JSON,
/// then the command's shape, then its version.
pub fn parse_command(raw: &str) -> Result<StorefrontCommand, Rejection> {
    if raw.is_empty() {
        return Err(reject(
            "missing_payload",
            "the entry has no `payload` field (or it is empty): put the command there",
        ));
    }
    if raw.len() > MAX_MESSAGE_BYTES {
        return Err(reject(
            "payload_too_large",
            format!("message is {} bytes; the limit is {MAX_MESSAGE_BYTES}", raw.len()),
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| reject("malformed_json", format!("not valid JSON: {e}")))?;
    input::no_nul(&value)?;
    let cmd: StorefrontCommand = serde_json::from_value(value).map_err(|e| {
        reject(
            "invalid_message",
            format!("does not match the storefront schema: {e}"),
        )
    })?;
    let version = match &cmd {
        StorefrontCommand::OrderPlaced { version, .. }
        | StorefrontCommand::InventorySet { version, .. }
        | StorefrontCommand::InventoryAdjust { version, .. }
        | StorefrontCommand::MerchantDecision { version, .. }
        | StorefrontCommand::ShipmentCreated { version, .. }
        | StorefrontCommand::OrderCancel { version, .. }
        | StorefrontCommand::ReturnRequested { version, .. }
        | StorefrontCommand::ReturnDecision { version, .. }
        | StorefrontCommand::ReturnShipped { version, .. }
        | StorefrontCommand::ReturnReceived { version, .. }
        | StorefrontCommand::ComplaintOpened { version, .. }
        | StorefrontCommand::ComplaintMessage { version, .. }
        | StorefrontCommand::ComplaintClosed { version, .. } => *version,
    };
    if version != 1 {
        return Err(reject(
            "unsupported_version",
            format!("version {version} is not supported; send 1"),
        ));
    }
    match &cmd {
        StorefrontCommand::InventorySet {
            merchant_id,
            sku,
            on_hand,
            ..
        } => {
            input::check_id("invalid_id", "merchant_id", merchant_id)?;
            input::check_id("invalid_id", "sku", sku)?;
            input::check_on_hand(*on_hand)?;
        }
        StorefrontCommand::InventoryAdjust { delta, .. } => input::check_delta(*delta)?,
        StorefrontCommand::ReturnRequested { return_id, .. } => {
            input::check_id("invalid_id", "return_id", return_id)?
        }
        StorefrontCommand::ComplaintOpened { complaint_id, .. } => {
            input::check_id("invalid_id", "complaint_id", complaint_id)?
        }
        StorefrontCommand::ComplaintMessage {
            author, merchant_id, ..
        }
        | StorefrontCommand::ComplaintClosed {
            by: author,
            merchant_id,
            ..
        } => input::merchant_named(*author, merchant_id.as_deref())?,
        _ => {}
    }
    Ok(cmd)
}

/// The storefront order id of a message, when one can be read (for recording rejections).
pub fn storefront_order_id(raw: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    v.pointer("/order/id")
        .or_else(|| v.get("storefront_order_id"))
        .and_then(|x| x.as_str())
        .map(|s| s.chars().take(200).collect())
}

/// What the database knows that validation needs.
pub struct Catalogue<'a> {
    pub currency: &'a str,
    pub merchants: &'a BTreeSet<String>,
    /// (merchant id, SKU) pairs that exist.
    pub skus: &'a BTreeSet<(String, String)>,
    pub providers: &'a [&'a str],
    /// souk's clock, for the bounds of `placed_at`.
    pub now: chrono::DateTime<chrono::Utc>,
}

/// One merchant's share of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubOrderPlan {
    pub merchant_id: String,
    /// (SKU, quantity, unit price), SKUs merged and sorted.
    pub lines: Vec<(String, i64, i64)>,
    pub subtotal_minor: i64,
}

/// A validated order, split per merchant (sorted by merchant id).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderPlan {
    pub total_minor: i64,
    pub sub_orders: Vec<SubOrderPlan>,
}

use super::input::{self, id_ok};

/// Validates an order against the catalogue and splits it into one sub-order per merchant.
/// Lines for the same merchant and SKU are merged (at one unit price, else rejected).
pub fn plan_order(o: &OrderMessage, cat: &Catalogue<'_>) -> Result<OrderPlan, Rejection> {
    if !id_ok(&o.id) {
        return Err(reject(
            "invalid_order_id",
            "order.id must be 1–200 printable characters",
        ));
    }
    if !id_ok(&o.customer.id) {
        return Err(reject(
            "invalid_customer",
            "customer.id must be 1–200 printable characters",
        ));
    }
    if o.currency != cat.currency {
        return Err(reject(
            "wrong_currency",
            format!(
                "currency {:?} is not this marketplace's ({})",
                o.currency, cat.currency
            ),
        ));
    }
    if !cat.providers.contains(&o.payment.provider.as_str()) {
        return Err(reject(
            "unknown_payment_provider",
            format!("payment provider {:?} is not configured", o.payment.provider),
        ));
    }
    if !id_ok(&o.payment.payment_id) {
        return Err(reject(
            "invalid_payment",
            "payment.payment_id must be 1–200 printable characters",
        ));
    }
    if !o.shipping_address.is_object() {
        return Err(reject(
            "invalid_shipping_address",
            "shipping_address must be an object (the address merchants ship to)",
        ));
    }
    input::check_placed_at(o.placed_at, cat.now)?;
    if o.lines.is_empty() {
        return Err(reject("no_lines", "an order needs at least one line"));
    }
    if o.lines.len() > MAX_LINES {
        return Err(reject(
            "too_many_lines",
            format!("{} lines; the limit is {MAX_LINES}", o.lines.len()),
        ));
    }
    let mut by_merchant: BTreeMap<&str, BTreeMap<&str, (i64, i64)>> = BTreeMap::new();
    for (i, l) in o.lines.iter().enumerate() {
        let n = i + 1;
        if l.quantity <= 0 {
            return Err(reject(
                "invalid_quantity",
                format!("line {n}: quantity must be at least 1, got {}", l.quantity),
            ));
        }
        if l.quantity > MAX_QUANTITY {
            return Err(reject(
                "invalid_quantity",
                format!("line {n}: quantity {} is over {MAX_QUANTITY}", l.quantity),
            ));
        }
        if l.unit_price_minor < 0 {
            return Err(reject(
                "invalid_price",
                format!("line {n}: unit_price_minor must not be negative"),
            ));
        }
        if !cat.merchants.contains(&l.merchant_id) {
            return Err(reject(
                "unknown_merchant",
                format!("line {n}: merchant {:?} is not known", l.merchant_id),
            ));
        }
        if !cat.skus.contains(&(l.merchant_id.clone(), l.sku.clone())) {
            return Err(reject(
                "unknown_sku",
                format!("line {n}: merchant {:?} has no SKU {:?}", l.merchant_id, l.sku),
            ));
        }
        let entry = by_merchant
            .entry(&l.merchant_id)
            .or_default()
            .entry(&l.sku)
            .or_insert((0, l.unit_price_minor));
        if entry.1 != l.unit_price_minor {
            return Err(reject(
                "conflicting_prices",
                format!("line {n}: SKU {:?} appears at two prices", l.sku),
            ));
        }
        entry.0 += l.quantity;
        if entry.0 > MAX_QUANTITY {
            return Err(reject(
                "invalid_quantity",
                format!("SKU {:?}: total quantity over {MAX_QUANTITY}", l.sku),
            ));
        }
    }
    let mut sub_orders = Vec::new();
    let mut total: i64 = 0;
    for (merchant, skus) in by_merchant {
        let mut subtotal: i64 = 0;
        let mut lines = Vec::new();
        for (sku, (qty, price)) in skus {
            let amount = qty
                .checked_mul(price)
                .ok_or_else(|| reject("amount_overflow", "line amount overflows"))?;
            subtotal = subtotal
                .checked_add(amount)
                .ok_or_else(|| reject("amount_overflow", "subtotal overflows"))?;
            lines.push((sku.to_owned(), qty, price));
        }
        total = total
            .checked_add(subtotal)
            .ok_or_else(|| reject("amount_overflow", "total overflows"))?;
        sub_orders.push(SubOrderPlan {
            merchant_id: merchant.to_owned(),
            lines,
            subtotal_minor: subtotal,
        });
    }
    Ok(OrderPlan {
        total_minor: total,
        sub_orders,
    })
}

/// A SHA-256 (hex) of what makes an order the order it is: its lines (in any order), prices,
/// currency, payment and customer. Key order and whitespace of the message do not count, nor
/// do the shipping address, metadata or `placed_at`. A resent order id whose hash differs from
/// the stored one is refused as `order_conflict`.
pub fn content_hash(o: &OrderMessage) -> String {
    use sha2::{Digest, Sha256};
    let mut lines: Vec<(&str, &str, i64, i64)> = o
        .lines
        .iter()
        .map(|l| {
            (
                l.merchant_id.as_str(),
                l.sku.as_str(),
                l.quantity,
                l.unit_price_minor,
            )
        })
        .collect();
    lines.sort_unstable();
    // A fixed structure serialised by serde_json: field order is the code's, not the message's.
    let canonical = serde_json::json!([
        1,
        o.currency,
        o.payment.provider,
        o.payment.payment_id,
        o.customer.id,
        o.customer.email,
        o.customer.name,
        lines,
    ]);
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Commission on a subtotal in basis points, rounded half up.
pub fn commission(subtotal_minor: i64, bps: i32) -> i64 {
    (subtotal_minor as i128 * bps as i128 + 5_000).div_euclid(10_000) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue_sets() -> (BTreeSet<String>, BTreeSet<(String, String)>) {
        let merchants: BTreeSet<String> = ["m1", "m2"].iter().map(|s| s.to_string()).collect();
        let skus = [("m1", "A"), ("m1", "B"), ("m2", "C")]
            .iter()
            .map(|(m, s)| (m.to_string(), s.to_string()))
            .collect();
        (merchants, skus)
    }

    fn order(lines: Vec<(&str, &str, i64, i64)>) -> OrderMessage {
        OrderMessage {
            id: "SF-1".into(),
            customer: Customer {
                id: "c1".into(),
                email: None,
                name: None,
            },
            currency: "EUR".into(),
            lines: lines
                .into_iter()
                .map(|(m, s, q, p)| LineMessage {
                    merchant_id: m.into(),
                    sku: s.into(),
                    quantity: q,
                    unit_price_minor: p,
                })
                .collect(),
            shipping_address: serde_json::json!({"country": "FR"}),
            payment: PaymentRef {
                provider: "stripe".into(),
                payment_id: "pi_1".into(),
            },
            placed_at: chrono::Utc::now(),
            metadata: serde_json::Value::Null,
        }
    }

    fn plan(o: &OrderMessage) -> Result<OrderPlan, Rejection> {
        let (m, s) = catalogue_sets();
        plan_order(
            o,
            &Catalogue {
                currency: "EUR",
                merchants: &m,
                skus: &s,
                providers: &["stripe"],
                now: chrono::Utc::now(),
            },
        )
    }

    #[test]
    fn an_order_splits_into_one_sub_order_per_merchant_with_merged_lines() {
        let p = plan(&order(vec![
            ("m2", "C", 1, 500),
            ("m1", "B", 2, 100),
            ("m1", "A", 1, 250),
            ("m1", "B", 1, 100),
        ]))
        .unwrap();
        assert_eq!(p.total_minor, 500 + 300 + 250);
        assert_eq!(p.sub_orders.len(), 2);
        assert_eq!(p.sub_orders[0].merchant_id, "m1");
        assert_eq!(
            p.sub_orders[0].lines,
            vec![("A".into(), 1, 250), ("B".into(), 3, 100)]
        );
        assert_eq!(p.sub_orders[0].subtotal_minor, 550);
        assert_eq!(p.sub_orders[1].subtotal_minor, 500);
    }

    #[test]
    fn bad_orders_are_rejected_with_a_code_and_a_readable_reason() {
        let cases: Vec<(OrderMessage, &str)> = vec![
            (order(vec![("m1", "A", 0, 100)]), "invalid_quantity"),
            (order(vec![("m1", "A", -2, 100)]), "invalid_quantity"),
            (order(vec![("m1", "A", 1, -1)]), "invalid_price"),
            (order(vec![("m9", "A", 1, 1)]), "unknown_merchant"),
            (order(vec![("m1", "Z", 1, 1)]), "unknown_sku"),
            (order(vec![("m2", "A", 1, 1)]), "unknown_sku"),
            (order(vec![]), "no_lines"),
            (
                order(vec![("m1", "A", 1, 100), ("m1", "A", 1, 200)]),
                "conflicting_prices",
            ),
            (order(vec![("m1", "A", 10_000, i64::MAX / 2)]), "amount_overflow"),
        ];
        for (o, code) in cases {
            assert_eq!(plan(&o).unwrap_err().code, code, "{:?}", o.lines);
        }
        let mut o = order(vec![("m1", "A", 1, 1)]);
        o.currency = "USD".into();
        let e = plan(&o).unwrap_err();
        assert_eq!(e.code, "wrong_currency");
        assert!(e.message.contains("EUR"));
        let mut o = order(vec![("m1", "A", 1, 1)]);
        o.payment.provider = "paypal".into();
        assert_eq!(plan(&o).unwrap_err().code, "unknown_payment_provider");
    }

    #[test]
    fn parsing_rejects_garbage_shapes_versions_and_huge_payloads() {
        assert_eq!(parse_command("{nope").unwrap_err().code, "malformed_json");
        assert_eq!(
            parse_command("{\"type\":\"order.placed\",\"version\":1}")
                .unwrap_err()
                .code,
            "invalid_message"
        );
        assert_eq!(
            parse_command("{\"type\":\"teleport\",\"version\":1}")
                .unwrap_err()
                .code,
            "invalid_message"
        );
        let v2 = r#"{"type":"inventory.set","version":2,"merchant_id":"m","sku":"s","on_hand":1}"#;
        assert_eq!(parse_command(v2).unwrap_err().code, "unsupported_version");
        let big = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(parse_command(&big).unwrap_err().code, "payload_too_large");
        let ok = r#"{"type":"inventory.adjust","version":1,"merchant_id":"m","sku":"s","delta":-2}"#;
        assert!(matches!(
            parse_command(ok),
            Ok(StorefrontCommand::InventoryAdjust { delta: -2, .. })
        ));
        assert_eq!(
            storefront_order_id(r#"{"order":{"id":"SF-9"}}"#).as_deref(),
            Some("SF-9")
        );
    }

    #[test]
    fn commission_rounds_half_up_in_basis_points() {
        assert_eq!(commission(10_000, 1_250), 1_250);
        assert_eq!(commission(999, 1_000), 100);
        assert_eq!(commission(0, 1_500), 0);
    }
}

#[cfg(test)]
mod documented_examples {
    use super::*;

    /// The examples in docs/examples are what storefront developers copy: they must parse.
    #[test]
    fn every_documented_example_is_a_valid_command() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/examples");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) == Some("json") {
                let text = std::fs::read_to_string(&path).unwrap();
                parse_command(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                n += 1;
            }
        }
        assert_eq!(n, 13);
    }

    /// The JSON Schema names exactly the command types the parser knows.
    #[test]
    fn the_schema_lists_every_command_type() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/schema/storefront-command.v1.json")).unwrap();
        let mut types: Vec<String> = schema["$defs"]
            .as_object()
            .unwrap()
            .values()
            .filter_map(|d| {
                d.pointer("/properties/type/const")
                    .and_then(|t| t.as_str())
                    .map(str::to_owned)
            })
            .collect();
        types.sort();
        assert_eq!(
            types,
            [
                "complaint.closed",
                "complaint.message",
                "complaint.opened",
                "inventory.adjust",
                "inventory.set",
                "merchant.decision",
                "order.cancel",
                "order.placed",
                "return.decision",
                "return.received",
                "return.requested",
                "return.shipped",
                "shipment.created"
            ]
        );
    }
}
