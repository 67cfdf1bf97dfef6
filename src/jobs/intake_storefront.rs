//! `souk.storefront.v1`: every storefront command (orders, inventory, merchant decisions,
//! shipments, cancellations, returns and complaints). The payload is read raw, so even malformed JSON is recorded as a rejected
//! message with its reason instead of vanishing into the dead letters.

use apalis::prelude::*;
use serde::{Deserialize, Serialize};

use super::register_job;
use crate::{
    app::App,
    enqueue,
    queue::{backend::QueueContext, groups::GroupRule, Delivery, JobError, StreamsBackend},
};

pub const QUEUE: &str = enqueue::STOREFRONT;

/// The raw message text.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RawMessage(pub String);

fn raw_decoder(s: &str) -> Result<RawMessage, String> {
    Ok(RawMessage(s.to_owned()))
}

pub async fn handle(msg: RawMessage, d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    crate::orders::commands::apply(&app, &d, &msg.0).await
}

/// Commands about one order, one merchant's SKU, one return or one complaint run one at a time
/// in stream order (docs/storefront.md, "Order of commands").
pub(crate) static GROUPS: std::sync::LazyLock<GroupRule> =
    std::sync::LazyLock::new(|| GroupRule::new(include_str!("storefront_groups.lua")));

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(
        monitor,
        app,
        ctx,
        QUEUE,
        |c| StreamsBackend::<RawMessage>::with_decoder(c, raw_decoder).grouped(&GROUPS),
        handle
    )
}
