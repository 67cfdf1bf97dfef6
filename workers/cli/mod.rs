//! The operator commands that print: one file per command group, called from `main.rs`.

pub(crate) mod dead;
pub(crate) mod forecast;
pub(crate) mod merchants;
