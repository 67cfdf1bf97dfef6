//! souk's integration tests: one binary, against the real Redis and PostgreSQL.
//!
//! Every test gets its own database (`souk_t_<random>`) and its own Redis key prefix, so tests
//! run in parallel. Process tests start the real `souk` binary.

mod support;

mod admin_api;
mod after_sales;
mod bad_input;
mod chaos;
mod decoder;
mod forecast;
mod forecast_accuracy;
mod forecast_import;
mod forecast_weekly;
mod groups;
mod merchant_api;
mod merchant_day;
mod merchant_guide;
mod money;
mod ordering;
mod pgbouncer;
mod pipeline;
mod queue_inprocess;
mod queue_processes;
mod sandbox_sdk;
mod schemathesis;
mod seams;
mod settlement;
mod store_batches;
mod tracking;
mod webhooks;
