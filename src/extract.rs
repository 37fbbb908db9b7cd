//! Finding the bearer token in a request (RFC 6750 §2.1).

use http::header::AUTHORIZATION;
use http::HeaderMap;

use crate::AuthError;

/// What the request's `Authorization` header holds.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Credentials<'a> {
    /// No `Authorization` header, or one for another scheme (`Basic …`).
    None,
    /// One syntactically valid bearer token.
    Bearer(&'a str),
}

/// Reads the bearer token from `headers`.
///
/// The scheme is matched case-insensitively; exactly one token must follow, of RFC 6750's
/// `b64token` characters and at most `max_len` bytes. Length is checked first, so an
/// oversized header costs nothing more than its length.
pub(crate) fn bearer_token(
    headers: &HeaderMap,
    max_len: usize,
) -> Result<Credentials<'_>, AuthError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(Credentials::None);
    };
    if values.next().is_some() {
        return Err(AuthError::MultipleAuthorizationHeaders);
    }
    let value = value.as_bytes();
    let (scheme, rest) = match value.iter().position(|&byte| byte == b' ') {
        Some(space) => (&value[..space], &value[space..]),
        None => (value, &value[value.len()..]),
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok(Credentials::None);
    }
    // RFC 7235: the scheme and the credentials are separated by one or more spaces.
    let token = rest.trim_ascii();
    if token.is_empty() {
        return Err(AuthError::EmptyToken);
    }
    if token.len() > max_len {
        return Err(AuthError::TokenTooLong);
    }
    if token.iter().any(|byte| byte.is_ascii_whitespace()) {
        return Err(AuthError::MultipleTokens);
    }
    if !is_b64token(token) {
        return Err(AuthError::InvalidCharacters);
    }
    // b64token characters are ASCII, so this cannot fail.
    std::str::from_utf8(token)
        .map(Credentials::Bearer)
        .map_err(|_| AuthError::InvalidCharacters)
}

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`
fn is_b64token(token: &[u8]) -> bool {
    let body_end = token.len() - token.iter().rev().take_while(|&&byte| byte == b'=').count();
    body_end > 0
        && token[..body_end].iter().all(|&byte| {
            byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn reads_one_token_with_any_scheme_case() {
        for value in [
            "Bearer abc.def.ghi",
            "bearer abc.def.ghi",
            "BEARER   abc.def.ghi  ",
        ] {
            assert_eq!(
                bearer_token(&headers(&[value]), 100),
                Ok(Credentials::Bearer("abc.def.ghi"))
            );
        }
    }

    #[test]
    fn other_schemes_and_no_header_are_no_credentials() {
        assert_eq!(bearer_token(&headers(&[]), 100), Ok(Credentials::None));
        assert_eq!(
            bearer_token(&headers(&["Basic dXNlcjpwYXNz"]), 100),
            Ok(Credentials::None)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearerabc"]), 100),
            Ok(Credentials::None)
        );
    }

    #[test]
    fn malformed_headers_are_invalid_requests() {
        assert_eq!(
            bearer_token(&headers(&["Bearer"]), 100),
            Err(AuthError::EmptyToken)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer   "]), 100),
            Err(AuthError::EmptyToken)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a b"]), 100),
            Err(AuthError::MultipleTokens)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a\tb"]), 100),
            Err(AuthError::MultipleTokens)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a", "Bearer b"]), 100),
            Err(AuthError::MultipleAuthorizationHeaders)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer a,b"]), 100),
            Err(AuthError::InvalidCharacters)
        );
        assert_eq!(
            bearer_token(&headers(&["Bearer ==="]), 100),
            Err(AuthError::InvalidCharacters)
        );
        assert_eq!(
            bearer_token(&headers(&[&format!("Bearer {}", "a".repeat(101))]), 100),
            Err(AuthError::TokenTooLong)
        );
    }
}
