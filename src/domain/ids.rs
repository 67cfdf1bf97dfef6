//! Ids: the aggregates' row ids as types of their own (an order's id cannot be passed where a
//! sub-order's is wanted; on the wire and in SQL each is the plain number), and the webhook
//! ids: the `webhook-id` header of every delivery souk makes, formed here and nowhere else.
//! Each webhook id is derived from what the event is about, so recreating a delivery (a rerun,
//! a sweep) finds the same row and a merchant deduplicating on the id sees one event.

use serde::{Deserialize, Serialize};

macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<i64> for $name {
            fn from(id: i64) -> Self {
                Self(id)
            }
        }
    };
}

row_id!(
    /// `orders.id`.
    OrderId
);
row_id!(
    /// `sub_orders.id`: one merchant's part of an order.
    SubOrderId
);
row_id!(
    /// `shipments.id`.
    ShipmentId
);
row_id!(
    /// `returns.id`.
    ReturnId
);

/// An event about a sub-order (`sub_order.created`, `.cancelled`, `.late`, …).
pub fn sub_order_webhook_id(sub_order_id: impl Into<SubOrderId>, event_type: &str) -> String {
    format!("msg_so{}_{}", sub_order_id.into(), event_type.replace('.', "_"))
}

/// A shipment's change to `status`.
pub fn shipment_webhook_id(shipment_id: impl Into<ShipmentId>, status: &str) -> String {
    format!("msg_sh{}_{status}", shipment_id.into())
}

/// A return's event (`requested`, `approved`, `received`, `refunded`, …).
pub fn return_webhook_id(return_id: impl Into<ReturnId>, event: &str) -> String {
    format!("msg_ret{}_{event}", return_id.into())
}

/// A complaint's event (`opened`, `m<message id>`, …).
pub fn complaint_webhook_id(complaint_id: i64, event: &str) -> String {
    format!("msg_cp{complaint_id}_{event}")
}

/// A merchant's forecast digest of one run.
pub fn digest_webhook_id(run_id: i64, merchant: &str) -> String {
    format!("msg_fc{run_id}_{merchant}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// These ids are on the wire: a change would make merchants see every event again.
    #[test]
    fn webhook_ids_keep_their_published_form() {
        assert_eq!(
            sub_order_webhook_id(12, "sub_order.created"),
            "msg_so12_sub_order_created"
        );
        assert_eq!(shipment_webhook_id(3, "in_transit"), "msg_sh3_in_transit");
        assert_eq!(return_webhook_id(4, "received"), "msg_ret4_received");
        assert_eq!(complaint_webhook_id(5, "m9"), "msg_cp5_m9");
        assert_eq!(digest_webhook_id(6, "atlas"), "msg_fc6_atlas");
    }
}
