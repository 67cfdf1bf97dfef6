//! The jobs souk runs: one file per job with its arguments, stable queue name, handler and
//! registration. [`ALL`] lists them for `souk run --queues`.

pub mod record_sample;

use apalis::prelude::Monitor;

use crate::app::App;

/// A job kind: its queue and how to add its workers to a monitor.
pub struct JobKind {
    pub queue: &'static str,
    pub register: fn(Monitor, &App, crate::queue::backend::QueueContext) -> Monitor,
}

/// Every job kind, in the order `souk run` starts them.
pub const ALL: &[JobKind] = &[JobKind {
    queue: record_sample::QUEUE,
    register: record_sample::register,
}];
