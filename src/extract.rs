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
/// The scheme is matched case-insensitively; a non-empty token of at most `max_len` bytes
/// must follow. Length is checked first, so an oversized header costs nothing more than its
/// length. The token's characters are checked by [`check_token_syntax`], which the verifier
/// runs before decoding a token it has not seen: a token it has seen passed it already.
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
    // Header values are visible ASCII or obs-text; obs-text is refused by the syntax check.
    std::str::from_utf8(token)
        .map(Credentials::Bearer)
        .map_err(|_| AuthError::InvalidCharacters)
}

const OTHER: u8 = 0;
const TOKEN_CHAR: u8 = 1;
const PADDING: u8 = 2;
const WHITESPACE: u8 = 3;

/// Each byte's class under RFC 6750's `b64token` grammar, so checking a token is one table
/// lookup a byte.
static CLASSES: [u8; 256] = {
    let mut classes = [OTHER; 256];
    let mut index = 0;
    while index < 256 {
        let byte = index as u8;
        classes[index] = if byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        {
            TOKEN_CHAR
        } else if byte == b'=' {
            PADDING
        } else if byte == b' ' || byte == b'\t' {
            WHITESPACE
        } else {
            OTHER
        };
        index += 1;
    }
    classes
};

/// `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`, where
/// whitespace inside means a second token.
pub(crate) fn check_token_syntax(token: &[u8]) -> Result<(), AuthError> {
    let mut padding = false;
    let mut body = false;
    for &byte in token {
        match CLASSES[usize::from(byte)] {
            TOKEN_CHAR if !padding => body = true,
            PADDING => padding = true,
            WHITESPACE => return Err(AuthError::MultipleTokens),
            _ => return Err(AuthError::InvalidCharacters),
        }
    }
    if body {
        Ok(())
    } else {
        Err(AuthError::InvalidCharacters)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Extraction and syntax together, as a request meets them.
    fn bearer(headers: &HeaderMap, max_len: usize) -> Result<Credentials<'_>, AuthError> {
        let credentials = bearer_token(headers, max_len)?;
        if let Credentials::Bearer(token) = credentials {
            check_token_syntax(token.as_bytes())?;
        }
        Ok(credentials)
    }

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
                bearer(&headers(&[value]), 100),
                Ok(Credentials::Bearer("abc.def.ghi"))
            );
        }
    }

    #[test]
    fn other_schemes_and_no_header_are_no_credentials() {
        assert_eq!(bearer(&headers(&[]), 100), Ok(Credentials::None));
        assert_eq!(
            bearer(&headers(&["Basic dXNlcjpwYXNz"]), 100),
            Ok(Credentials::None)
        );
        assert_eq!(bearer(&headers(&["Bearerabc"]), 100), Ok(Credentials::None));
    }

    #[test]
    fn malformed_headers_are_invalid_requests() {
        assert_eq!(
            bearer(&headers(&["Bearer"]), 100),
            Err(AuthError::EmptyToken)
        );
        assert_eq!(
            bearer(&headers(&["Bearer   "]), 100),
            Err(AuthError::EmptyToken)
        );
        assert_eq!(
            bearer(&headers(&["Bearer a b"]), 100),
            Err(AuthError::MultipleTokens)
        );
        assert_eq!(
            bearer(&headers(&["Bearer a\tb"]), 100),
            Err(AuthError::MultipleTokens)
        );
        assert_eq!(
            bearer(&headers(&["Bearer a", "Bearer b"]), 100),
            Err(AuthError::MultipleAuthorizationHeaders)
        );
        assert_eq!(
            bearer(&headers(&["Bearer a,b"]), 100),
            Err(AuthError::InvalidCharacters)
        );
        assert_eq!(
            bearer(&headers(&["Bearer ==="]), 100),
            Err(AuthError::InvalidCharacters)
        );
        assert_eq!(
            bearer(&headers(&[&format!("Bearer {}", "a".repeat(101))]), 100),
            Err(AuthError::TokenTooLong)
        );
    }
}
