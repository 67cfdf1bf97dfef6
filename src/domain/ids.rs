//! Webhook ids: the `webhook-id` header of every delivery souk makes, formed here and nowhere
//! else. Each is derived from what the event is about, so recreating a delivery (a rerun, a
//! sweep) finds the same row and a merchant deduplicating on the id sees one event.

/// An event about a sub-order (`sub_order.created`, `.cancelled`, `.late`, …).
pub fn sub_order_webhook_id(sub_order_id: i64, event_type: &str) -> String {
    format!("msg_so{sub_order_id}_{}", event_type.replace('.', "_"))
}

/// A shipment's change to `status`.
pub fn shipment_webhook_id(shipment_id: i64, status: &str) -> String {
    format!("msg_sh{shipment_id}_{status}")
}

/// A return's event (`requested`, `approved`, `received`, `refunded`, …).
pub fn return_webhook_id(return_id: i64, event: &str) -> String {
    format!("msg_ret{return_id}_{event}")
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
