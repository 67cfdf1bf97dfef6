//! Returns, complaints and partial shipments: which lines may be returned or shipped, what a
//! return refunds, and the platform's share of it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::order::Rejection;

/// Longest complaint subject and message souk keeps (characters).
pub const MAX_SUBJECT: usize = 200;
pub const MAX_MESSAGE: usize = 5_000;

/// Some units of one SKU of a sub-order: a line of a return request or of a parcel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ItemLine {
    pub sku: String,
    pub quantity: i64,
}

/// A merchant's answer to a return request.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ReturnDecision {
    Approve,
    Refuse,
}

/// Who wrote a complaint message or closed the case.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Author {
    Customer,
    Merchant,
    Platform,
}

impl Author {
    pub fn as_str(self) -> &'static str {
        match self {
            Author::Customer => "customer",
            Author::Merchant => "merchant",
            Author::Platform => "platform",
        }
    }
}

/// A return line priced at what the customer paid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PricedLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_minor: i64,
}

/// Checks a return request against what the sub-order holds (`ordered`: SKU → (quantity,
/// unit price)) and what earlier returns not refused already claim (`claimed`: SKU → quantity).
/// Returns the priced lines, or why the request is refused.
pub fn plan_return(
    requested: &[ItemLine],
    ordered: &BTreeMap<String, (i64, i64)>,
    claimed: &BTreeMap<String, i64>,
) -> Result<Vec<PricedLine>, Rejection> {
    claim(requested, ordered, claimed, "returned").map_err(|m| Rejection {
        code: "invalid_return_lines",
        message: m,
    })
}

/// Checks the lines a parcel carries against the sub-order (`ordered`) and what earlier parcels
/// carried (`shipped`). No lines given: everything not shipped yet. Refused when nothing is left.
pub fn plan_shipment(
    requested: Option<&[ItemLine]>,
    ordered: &BTreeMap<String, (i64, i64)>,
    shipped: &BTreeMap<String, i64>,
) -> Result<Vec<PricedLine>, Rejection> {
    let rest: Vec<ItemLine>;
    let requested = match requested {
        Some(r) => r,
        None => {
            rest = ordered
                .iter()
                .map(|(sku, (q, _))| ItemLine {
                    sku: sku.clone(),
                    quantity: q - shipped.get(sku).copied().unwrap_or(0),
                })
                .filter(|l| l.quantity > 0)
                .collect();
            if rest.is_empty() {
                return Err(Rejection {
                    code: "nothing_left_to_ship",
                    message: "every line of the sub-order has shipped already".into(),
                });
            }
            &rest
        }
    };
    claim(requested, ordered, shipped, "shipped").map_err(|m| Rejection {
        code: "invalid_shipment_lines",
        message: m,
    })
}

/// Lines claimed from a sub-order (returned, shipped): repeated SKUs add up, each within what
/// was bought less what earlier claims took.
fn claim(
    requested: &[ItemLine],
    ordered: &BTreeMap<String, (i64, i64)>,
    claimed: &BTreeMap<String, i64>,
    verb: &str,
) -> Result<Vec<PricedLine>, String> {
    if requested.is_empty() {
        return Err("at least one line is needed".into());
    }
    let mut wanted: BTreeMap<&str, i64> = BTreeMap::new();
    for l in requested {
        if l.quantity <= 0 {
            return Err(format!(
                "{}: quantity must be positive, got {}",
                l.sku, l.quantity
            ));
        }
        *wanted.entry(l.sku.as_str()).or_insert(0) += l.quantity;
    }
    let mut out = Vec::with_capacity(wanted.len());
    for (sku, q) in wanted {
        let Some(&(bought, price)) = ordered.get(sku) else {
            return Err(format!("{sku} is not in this merchant's part of the order"));
        };
        let left = bought - claimed.get(sku).copied().unwrap_or(0);
        if q > left {
            return Err(format!(
                "{sku}: {q} asked, but only {left} of {bought} bought can still be {verb}"
            ));
        }
        out.push(PricedLine {
            sku: sku.to_owned(),
            quantity: q,
            unit_price_minor: price,
        });
    }
    Ok(out)
}

/// What a return refunds.
pub fn refund_of(lines: &[PricedLine]) -> i64 {
    lines.iter().map(|l| l.quantity * l.unit_price_minor).sum()
}

/// The part of a sub-order's commission that goes back with a refund of `refund` out of
/// `subtotal` (pro rata, half up), never more than what earlier returns left (`left`).
pub fn commission_share(commission: i64, subtotal: i64, refund: i64, left: i64) -> i64 {
    if subtotal <= 0 {
        return 0;
    }
    let share =
        (commission as i128 * refund as i128 * 2 + subtotal as i128).div_euclid(2 * subtotal as i128) as i64;
    share.clamp(0, left.max(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordered() -> BTreeMap<String, (i64, i64)> {
        [("A".to_owned(), (3, 1500)), ("B".to_owned(), (1, 700))]
            .into_iter()
            .collect()
    }

    fn line(sku: &str, q: i64) -> ItemLine {
        ItemLine {
            sku: sku.into(),
            quantity: q,
        }
    }

    #[test]
    fn a_return_is_priced_at_what_was_paid_and_repeated_skus_add_up() {
        let lines = plan_return(
            &[line("A", 1), line("A", 1), line("B", 1)],
            &ordered(),
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(refund_of(&lines), 2 * 1500 + 700);
    }

    #[test]
    fn nothing_can_be_returned_twice_or_that_was_not_bought() {
        let claimed: BTreeMap<String, i64> = [("A".to_owned(), 2)].into_iter().collect();
        assert!(plan_return(&[line("A", 1)], &ordered(), &claimed).is_ok());
        let e = plan_return(&[line("A", 2)], &ordered(), &claimed).unwrap_err();
        assert_eq!(e.code, "invalid_return_lines");
        assert!(
            e.message.contains("only 1 of 3 bought can still be returned"),
            "{}",
            e.message
        );
        assert!(plan_return(&[line("Z", 1)], &ordered(), &BTreeMap::new()).is_err());
        assert!(plan_return(&[line("A", 0)], &ordered(), &BTreeMap::new()).is_err());
        assert!(plan_return(&[line("A", -1)], &ordered(), &BTreeMap::new()).is_err());
        assert!(plan_return(&[], &ordered(), &BTreeMap::new()).is_err());
    }

    #[test]
    fn a_parcel_carries_what_is_left_or_the_lines_named_within_it() {
        let none = BTreeMap::new();
        let all = plan_shipment(None, &ordered(), &none).unwrap();
        assert_eq!(
            all.iter()
                .map(|l| (l.sku.as_str(), l.quantity))
                .collect::<Vec<_>>(),
            [("A", 3), ("B", 1)]
        );
        let part = plan_shipment(Some(&[line("A", 2)]), &ordered(), &none).unwrap();
        assert_eq!((part[0].sku.as_str(), part[0].quantity), ("A", 2));
        let shipped: BTreeMap<String, i64> = [("A".to_owned(), 2)].into_iter().collect();
        let rest = plan_shipment(None, &ordered(), &shipped).unwrap();
        assert_eq!(
            rest.iter()
                .map(|l| (l.sku.as_str(), l.quantity))
                .collect::<Vec<_>>(),
            [("A", 1), ("B", 1)]
        );
        assert_eq!(
            plan_shipment(Some(&[line("A", 2)]), &ordered(), &shipped)
                .unwrap_err()
                .code,
            "invalid_shipment_lines"
        );
        let everything: BTreeMap<String, i64> =
            [("A".to_owned(), 3), ("B".to_owned(), 1)].into_iter().collect();
        assert_eq!(
            plan_shipment(None, &ordered(), &everything).unwrap_err().code,
            "nothing_left_to_ship"
        );
    }

    #[test]
    fn the_commission_goes_back_pro_rata_and_never_more_than_was_kept() {
        // 10 % of 5,200 is 520; returning 1,500 of it gives back 150.
        assert_eq!(commission_share(520, 5_200, 1_500, 520), 150);
        // Half up: 333 × 1/3 = 111; 100 × 1/3 = 33.33 → 33; 100 × 1/6 → 16.67 → 17.
        assert_eq!(commission_share(100, 300, 100, 100), 33);
        assert_eq!(commission_share(100, 600, 100, 100), 17);
        // Everything returned gives everything back, but never beyond what is left.
        assert_eq!(commission_share(520, 5_200, 5_200, 520), 520);
        assert_eq!(commission_share(520, 5_200, 5_200, 300), 300);
        assert_eq!(commission_share(0, 0, 0, 0), 0);
    }
}
