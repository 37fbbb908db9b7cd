//! Scaling out: users in PostgreSQL, revocations and throttling in Redis, and the demo server run as a
//! user runs it, alone and as a fleet. Needs `DATABASE_URL` and `REDIS_URL`.

// A test binary exports nothing: `pub` marks what its sibling modules use.
#![allow(unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod auth_postgres;
mod demo_fleet;
mod demo_server;
mod logs;
mod metrics;
mod openapi;
mod postgres_store;
mod redis_revocations;
mod throttle_redis;
