//! The pure core: rules and calculations with no IO, no clock and no randomness of their own.
//!
//! Nothing here may depend on tokio, sqlx, redis or reqwest; callers pass in the time and any
//! random numbers, so every rule is unit-tested directly.

pub mod address;
pub mod after_sales;
pub mod backoff;
pub mod forecast;
pub mod ids;
pub mod input;
pub mod order;
pub mod payment;
pub mod status;
pub mod tracking;
pub mod webhook;
