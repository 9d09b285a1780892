//! HTTP tests against a real palaver on a random port. Every test gets its own database:
//! a temporary SQLite file, or a fresh Postgres database when `TEST_DATABASE_URL` is set
//! (the test script runs the suite once each way).

// Test code: a failed unwrap is a failed test, which is what we want.
#![allow(clippy::unwrap_used)]

mod agents;
mod auth;
mod cli;
mod code_interpreter;
mod completions;
mod connections;
mod connectors;
mod conversations;
mod errors;
mod files;
mod handoffs;
mod helpers;
mod idempotency;
mod image_generation;
mod mcp;
mod metrics;
mod mock;
mod models;
mod openapi;
mod otel;
mod outage;
mod replicas;
mod resume;
mod streaming;
mod upstream;
mod web_search;
