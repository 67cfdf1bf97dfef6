//! Courier tracking rules, pure: carrier detection from tracking numbers, the normalised status
//! set with each provider's mapping, the roll-up from shipments to sub-orders to orders,
//! adaptive polling and what silence means, and verification of provider pushes.
//!
//! Groundwork of the shipping-and-tracking issue: the jobs, tables and provider clients that use
//! these are not built yet.

pub mod carrier;
pub mod poll;
pub mod signature;
pub mod status;
