//! The companion auth service over HTTP (register, token, refresh, logout, throttling,
//! passwords) and the user stores that back it, each held to one contract.

// A test binary exports nothing: `pub` marks what its sibling modules use.
#![allow(unreachable_pub)]

#[path = "../common/mod.rs"]
mod common;

mod async_store;
mod grants;
mod grants_upgrade;
mod logout;
mod passwords;
mod refresh;
mod register;
mod revoke;
mod session_cap;
mod sqlite;
mod store_contract;
mod store_failures;
mod throttle;
mod token;
