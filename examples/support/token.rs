//! The examples' `token <sub>` command: prints a 15-minute access token signed with the
//! example's own keys, to try a server with curl or grpcurl without logging in. Included with
//! `#[path]`; not an example of its own.

use jwt_gate::{Claims, Keys};

/// When `args` are `token <sub>`, prints a token for `sub` and says how that went.
pub(crate) fn print_if_asked(keys: &Keys, args: &[String]) -> Option<Result<(), String>> {
    let [command, sub] = args else {
        return None;
    };
    if command != "token" {
        return None;
    }
    let now = jwt_gate::clock::Clock::now(&jwt_gate::clock::SystemClock);
    Some(
        keys.sign(&Claims::new(sub.as_str(), now, now + 15 * 60))
            .map(|token| println!("{token}"))
            .map_err(|error| error.to_string()),
    )
}
