//! # ldlm-service
//!
//! The lock service every transport talks to.

pub mod driver;
pub mod metrics;
