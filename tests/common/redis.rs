//! The Redis every machine runs (`REDIS_URL`, default `redis://127.0.0.1:6379`), and key
//! prefixes that keep tests apart on it.

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;

use super::login;

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A random Redis key prefix whose keys are deleted when the test ends, pass or fail.
pub struct KeyPrefix(pub String);

impl KeyPrefix {
    pub fn fresh() -> Self {
        let mut bytes = [0_u8; 8];
        getrandom::getrandom(&mut bytes).unwrap();
        let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
        Self(format!("jwt-gate-fleet-test:{hex}:"))
    }

    /// The keys under this prefix now.
    pub fn keys(&self) -> Vec<String> {
        let Ok(mut connection) = connection() else {
            return Vec::new();
        };
        redis::cmd("KEYS")
            .arg(format!("{}*", self.0))
            .query(&mut connection)
            .unwrap_or_default()
    }
}

fn connection() -> redis::RedisResult<redis::Connection> {
    redis::Client::open(redis_url())
        .and_then(|client| client.get_connection_with_timeout(Duration::from_secs(1)))
}

impl Drop for KeyPrefix {
    fn drop(&mut self) {
        let keys = self.keys();
        if let (false, Ok(mut connection)) = (keys.is_empty(), connection()) {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}

/// Fails to log in as `username` at `a` and `b` in turn until one answers `429`, and asserts
/// that the two counted together. Counted apart, each would answer its own five free
/// failures and a sixth, twelve in all, before refusing; counted together, the sixth failure
/// sets the delay. (On the real clock a slow hash can outlast a short delay and let one more
/// through: hence a bound, not an exact count.)
pub async fn assert_counted_together(a: SocketAddr, b: SocketAddr, username: &str) {
    let mut answered = 0;
    loop {
        let at = if answered % 2 == 0 { a } else { b };
        let reply = login(at, username, "wrong password").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            assert!(reply.header("retry-after").is_some());
            break;
        }
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{reply:?}");
        answered += 1;
        assert!(answered < 12, "the servers count apart");
    }
    assert!(
        answered >= 6,
        "five free failures and the sixth: {answered}"
    );
}
