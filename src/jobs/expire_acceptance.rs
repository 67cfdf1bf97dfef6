//! `souk.expire_acceptance.v1`: at a sub-order's acceptance deadline, applies the merchant's
//! default (accept or reject, like Mirakl's auto-accept / auto-refuse) if it has not decided.

use std::time::Duration;

use apalis::prelude::*;
use serde::{Deserialize, Serialize};

use super::{adjust_payment, db, register_job};
use crate::{
    app::App,
    queue::{backend::QueueContext, Delivery, JobError, StreamsBackend},
    store::orders,
};

pub const QUEUE: &str = "souk.expire_acceptance.v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pub sub_order_id: i64,
}

pub async fn handle(args: Args, _d: Data<Delivery>, app: Data<App>) -> Result<(), JobError> {
    let Some(s) = orders::sub_order(&app.pool, args.sub_order_id)
        .await
        .map_err(db)?
    else {
        return Err(JobError::abort("no such sub-order"));
    };
    if s.status != "awaiting_acceptance" {
        return Ok(());
    }
    if let Some(at) = s.accept_by {
        let left = at - chrono::Utc::now();
        if left > chrono::Duration::zero() {
            return Err(JobError::Snooze(left.to_std().unwrap_or(Duration::from_secs(1))));
        }
    }
    let accept = s.acceptance_default == "accept";
    let reason = if accept {
        "no decision by the deadline: accepted by default"
    } else {
        "no decision by the deadline: rejected by default"
    };
    let changed = orders::decide(&app.pool, s.id, accept, "souk:deadline", Some(reason))
        .await
        .map_err(db)?;
    if changed && !accept {
        let a = adjust_payment::Args::new(s.order_id);
        app.push_once(
            adjust_payment::QUEUE,
            &format!("adjust:{}:rejected:{}", s.order_id, s.id),
            &a,
            None,
        )
        .await?;
    }
    Ok(())
}

pub fn register(monitor: Monitor, app: &App, ctx: QueueContext) -> Monitor {
    register_job!(monitor, app, ctx, QUEUE, StreamsBackend::<Args>::new, handle)
}
