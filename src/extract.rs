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

    #[test]
    fn padding_ends_the_token() {
        for token in ["abc=", "abc==", "a-._~+/Z9=", "abc"] {
            assert_eq!(check_token_syntax(token.as_bytes()), Ok(()), "{token}");
        }
        for token in ["abc=d", "abc=.", "a=b=", "=abc", "abc=/", "="] {
            assert_eq!(
                check_token_syntax(token.as_bytes()),
                Err(AuthError::InvalidCharacters),
                "{token}"
            );
        }
    }

    #[test]
    fn the_length_cap_is_inclusive() {
        let token = "a".repeat(100);
        let value = format!("Bearer {token}");
        assert_eq!(
            bearer(&headers(&[&value]), 100),
            Ok(Credentials::Bearer(token.as_str()))
        );
        assert_eq!(
            bearer(&headers(&[&value]), 99),
            Err(AuthError::TokenTooLong)
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    /// RFC 6750 §2.1 `b64token`, written out differently from the table the gate uses.
    fn is_b64token(token: &str) -> bool {
        let body = token.trim_end_matches('=');
        !body.is_empty()
            && body
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-._~+/".contains(&byte))
    }

    fn headers(value: &[u8]) -> Option<HeaderMap> {
        let value = HeaderValue::from_bytes(value).ok()?;
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        Some(headers)
    }

    proptest! {
        #[test]
        fn a_well_formed_header_gives_back_its_token(
            token in "[A-Za-z0-9._~+/-]{1,40}={0,3}",
            scheme in "[bB][eE][aA][rR][eE][rR]",
            spaces in " {1,3}",
            trailing in " {0,2}",
        ) {
            let value = format!("{scheme}{spaces}{token}{trailing}");
            let headers = headers(value.as_bytes()).unwrap();
            prop_assert_eq!(bearer_token(&headers, 64), Ok(Credentials::Bearer(token.as_str())));
            prop_assert_eq!(check_token_syntax(token.as_bytes()), Ok(()));
        }

        #[test]
        fn the_syntax_check_is_exactly_b64token(token in "[a-zA-Z0-9=/+~ ,.%\t-]{0,12}") {
            prop_assert_eq!(check_token_syntax(token.as_bytes()).is_ok(), is_b64token(&token));
        }

        #[test]
        fn any_header_bytes_get_an_answer(value in prop::collection::vec(any::<u8>(), 0..80)) {
            if let Some(headers) = headers(&value) {
                if let Ok(Credentials::Bearer(token)) = bearer_token(&headers, 64) {
                    // What comes out is a piece of what went in, within the cap.
                    prop_assert!(token.len() <= 64 && !token.is_empty());
                    prop_assert!(value.windows(token.len()).any(|window| window == token.as_bytes()));
                    let _ = check_token_syntax(token.as_bytes());
                }
            }
        }
    }
}
