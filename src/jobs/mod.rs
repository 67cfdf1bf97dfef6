//! The jobs souk runs: one file per job with its arguments, stable queue name, handler and
//! registration. [`ALL`] lists them for `souk run --queues`.
//!
//! The order pipeline: `intake_storefront` (storefront commands) → `confirm_payment` (which
//! reserves every sub-order through the group commit; `reserve_stock` re-drives one) →
//! `adjust_payment` (capture, cancel or refund what will not ship) → `notify_merchant` (one per
//! webhook) and `expire_acceptance` (merchant deadline).
//! `sweep_orders` runs from cron as a safety net.
//!
//! Shipping: `shipment.created` on the storefront channel → `track_shipment` (polls until the
//! parcel's end, snoozing between polls).
//!
//! After-sales: returns and complaints arrive on the storefront channel; a return received back
//! → `adjust_payment` (the refund) → `reverse_payout` when the sub-order was already paid out.
//! `sweep_orders` applies return and complaint deadlines.
//!
//! Forecasting: `plan_forecasts` (nightly from cron) → `forecast_merchant` (one per merchant).

pub mod adjust_payment;
pub mod compute_kpis;
pub mod confirm_payment;
pub mod expire_acceptance;
pub mod forecast_merchant;
pub mod intake_storefront;
pub mod notify_merchant;
pub mod pay_merchant;
pub mod plan_forecasts;
pub mod record_sample;
pub mod reserve_stock;
pub mod reverse_payout;

/// The message groups of the storefront stream (docs/storefront.md, "Order of commands"), for
/// the queue bench that measures them outside the fleet.
pub fn storefront_groups() -> &'static crate::queue::groups::GroupRule {
    &intake_storefront::GROUPS
}
pub mod sweep_orders;
pub mod track_shipment;

use apalis::prelude::Monitor;

use crate::app::App;

/// A job kind: its queue and how to add its workers to a monitor.
pub struct JobKind {
    pub queue: &'static str,
    pub register: fn(Monitor, &App, crate::queue::backend::QueueContext) -> Monitor,
}

/// Every job kind, in the order `souk run` starts them.
pub const ALL: &[JobKind] = &[
    JobKind {
        queue: intake_storefront::QUEUE,
        register: intake_storefront::register,
    },
    JobKind {
        queue: confirm_payment::QUEUE,
        register: confirm_payment::register,
    },
    JobKind {
        queue: reserve_stock::QUEUE,
        register: reserve_stock::register,
    },
    JobKind {
        queue: adjust_payment::QUEUE,
        register: adjust_payment::register,
    },
    JobKind {
        queue: notify_merchant::QUEUE,
        register: notify_merchant::register,
    },
    JobKind {
        queue: expire_acceptance::QUEUE,
        register: expire_acceptance::register,
    },
    JobKind {
        queue: sweep_orders::QUEUE,
        register: sweep_orders::register,
    },
    JobKind {
        queue: compute_kpis::QUEUE,
        register: compute_kpis::register,
    },
    JobKind {
        queue: pay_merchant::QUEUE,
        register: pay_merchant::register,
    },
    JobKind {
        queue: reverse_payout::QUEUE,
        register: reverse_payout::register,
    },
    JobKind {
        queue: track_shipment::QUEUE,
        register: track_shipment::register,
    },
    JobKind {
        queue: plan_forecasts::QUEUE,
        register: plan_forecasts::register,
    },
    JobKind {
        queue: forecast_merchant::QUEUE,
        register: forecast_merchant::register,
    },
    JobKind {
        queue: record_sample::QUEUE,
        register: record_sample::register,
    },
];

/// Registers a handler `fn(Args, Data<Delivery>, Data<App>)` on its queue with the standard
/// layers (concurrency, timeout, panic capture). `$backend` builds the backend from the context.
macro_rules! register_job {
    ($monitor:expr, $app:expr, $ctx:expr, $queue:expr, $backend:expr, $handler:expr) => {{
        let app = $app.clone();
        let ctx = $ctx;
        $monitor.register(move |_restarts| {
            let s = &ctx.settings;
            apalis::prelude::WorkerBuilder::new($queue)
                .backend(($backend)(ctx.clone()))
                .concurrency(s.concurrency)
                .timeout($crate::app::handler_timeout(s))
                .catch_panic()
                .data(app.clone())
                .build($handler)
        })
    }};
}
pub(crate) use register_job;
