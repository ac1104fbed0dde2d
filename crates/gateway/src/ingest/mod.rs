//! Every way in. Each ingest turns what it received into [`crate::spool::NewRequest`]s and
//! submits them in one call that answers only after the spool's commit
//! ([`crate::http::ApiState::commit`]).
//!
//! - `json`: the HTTP API's notification documents (DESIGN §3), with their defaults and every
//!   error code, checked whole before anything is stored.
//! - `mcmt`: Momentum's MCMT messages (`message/vnd.msys.apn` parts), shared by the SMTP
//!   listener (`crate::smtp`) and the REST injector (`/v1.0/inject`); each part goes through
//!   `json`'s checks, so the defaults are the same everywhere.

pub mod json;
pub mod mcmt;
