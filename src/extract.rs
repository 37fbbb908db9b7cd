//! Finding the token in a request: the `Authorization: Bearer` header (RFC 6750 §2.1), and,
//! when a gate is configured for browsers, a cookie (RFC 6265) or a header of its own; the
//! cross-site check for cookie-borne tokens, and CORS preflights.

use std::fmt;

use http::header::{
    ACCESS_CONTROL_REQUEST_METHOD, AUTHORIZATION, COOKIE, HOST, ORIGIN, PROXY_AUTHORIZATION,
    SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderName, Method, Uri};

use crate::AuthError;

/// Where a gate looks for the token, as plain data: the `Authorization: Bearer` header (the
/// default, and the only source unless others are named), a cookie, a header of your own.
/// Give it to [`JwtAuthLayer::token_sources`](crate::JwtAuthLayer::token_sources), or use the
/// layer's shortcuts ([`token_cookie`](crate::JwtAuthLayer::token_cookie),
/// [`token_header`](crate::JwtAuthLayer::token_header),
/// [`trust_origin`](crate::JwtAuthLayer::trust_origin)).
///
/// - **One token a request.** Every configured source is read; two that carry *different*
///   tokens are refused `400 invalid_request` ([`AuthError::ConflictingTokens`]). The *same*
///   token in two places is accepted, and counts as sent in a header.
/// - **Cookie**: the value of the cookie named `cookie`, read strictly: sent twice (in one
///   `Cookie` header or across several, as HTTP/2 splits them), or under a name differing only
///   in case or surrounding whitespace, is `400` ([`AuthError::DuplicateCookie`]), never
///   first-wins; a value outside RFC 6265 `cookie-octet`s (quotes included) or a name not
///   exactly as configured is `400` ([`AuthError::MalformedCookie`]). An empty value counts as
///   no cookie (that is how a logout clears it). Other cookies are not looked at.
/// - **Header**: the bare token (no `Bearer `) in the header named `header`, sent once.
/// - **Cross-site requests**: a request whose token came *only* from the cookie and whose
///   method is not `GET`, `HEAD` or `OPTIONS` must come from the gate's own origin or from one
///   of `trusted_origins`, else it is refused `403` ([`AuthError::CrossSiteRequest`]) and never
///   reaches the inner service: `Sec-Fetch-Site: same-origin` or `none` passes; another
///   `Sec-Fetch-Site` passes only with an `Origin` in `trusted_origins`; without
///   `Sec-Fetch-Site`, an `Origin` passes when trusted or naming the request's own host, and
///   a request with neither header passes (no browser sends a cross-site request without
///   them; see `docs/security.md`). Tokens sent in a header are not checked: browsers never
///   attach those by themselves.
///
/// Every limit of the `Authorization` header holds for the others (the length cap, the
/// `b64token` syntax).
///
/// ```
/// use jwt_gate::{JwtAuthLayer, Keys, TokenSources};
///
/// let sources = TokenSources {
///     cookie: Some("__Host-access_token".to_owned()),
///     trusted_origins: vec!["https://admin.example".to_owned()],
///     ..TokenSources::default()
/// };
/// assert!(sources.check().is_ok());
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let layer = JwtAuthLayer::from_keys(keys).token_sources(sources);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSources {
    /// Whether `Authorization: Bearer <token>` is read (default `true`).
    pub authorization: bool,
    /// The name of a cookie holding the token (RFC 6265 `token` characters), if any.
    pub cookie: Option<String>,
    /// The name of a header holding the bare token, if any.
    pub header: Option<String>,
    /// Origins other than the gate's own (`https://admin.example`, `http://localhost:5173`)
    /// whose pages may send unsafe requests authenticated by the cookie.
    pub trusted_origins: Vec<String>,
}

impl Default for TokenSources {
    fn default() -> Self {
        Self {
            authorization: true,
            cookie: None,
            header: None,
            trusted_origins: Vec::new(),
        }
    }
}

/// What is wrong with a [`TokenSources`], naming the field and the value.
///
/// ```
/// use jwt_gate::TokenSources;
///
/// let sources = TokenSources { cookie: Some("a;b".to_owned()), ..TokenSources::default() };
/// let error = sources.check().unwrap_err();
/// assert!(error.to_string().contains("cookie"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourcesError {
    field: &'static str,
    value: String,
    reason: &'static str,
}

impl fmt::Display for SourcesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "token sources: `{}` {:?} {}",
            self.field, self.value, self.reason
        )
    }
}

impl std::error::Error for SourcesError {}

impl TokenSources {
    /// Whether this configuration can be used: names that are valid, origins that are
    /// `scheme://host[:port]`, at least one source. The layer panics on the same errors, as
    /// it does on any bad configuration, never at a request.
    pub fn check(&self) -> Result<(), SourcesError> {
        Sources::compile(self).map(drop)
    }
}

/// [`TokenSources`], checked and ready for requests.
#[derive(Debug, Clone)]
pub(crate) struct Sources {
    authorization: bool,
    cookie: Option<Box<str>>,
    header: Option<HeaderName>,
    /// Serialized as browsers send `Origin`: lowercase, no default port, no path.
    trusted_origins: Box<[Box<str>]>,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            authorization: true,
            cookie: None,
            header: None,
            trusted_origins: Box::default(),
        }
    }
}

/// Headers the gate reads for something else, so none can be the token header.
const RESERVED_HEADERS: [HeaderName; 6] = [
    AUTHORIZATION,
    PROXY_AUTHORIZATION,
    COOKIE,
    ORIGIN,
    HOST,
    HeaderName::from_static("sec-fetch-site"),
];

/// Where the request's token was found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'a> {
    /// No source carries a token.
    None,
    /// In a header (`Authorization` or the gate's own), which a browser never attaches by
    /// itself.
    Header(&'a str),
    /// Only in the cookie, which a browser attaches to any request for the site.
    Cookie(&'a str),
}

impl<'a> Found<'a> {
    pub(crate) fn token(&self) -> Option<&'a str> {
        match *self {
            Self::None => None,
            Self::Header(token) | Self::Cookie(token) => Some(token),
        }
    }

    /// Adds a token found in another source: the same token keeps the first (a header, as
    /// headers are read first); a different one makes the request ambiguous.
    fn and(self, other: Self) -> Result<Self, AuthError> {
        match (self.token(), other.token()) {
            (None, _) => Ok(other),
            (_, None) => Ok(self),
            (Some(first), Some(second)) if first == second => Ok(self),
            _ => Err(AuthError::ConflictingTokens),
        }
    }
}

impl Sources {
    pub(crate) fn compile(declared: &TokenSources) -> Result<Self, SourcesError> {
        let error = |field, value: &str, reason| SourcesError {
            field,
            value: value.to_owned(),
            reason,
        };
        let cookie = match declared.cookie.as_deref() {
            Some(name) if name.is_empty() || !name.bytes().all(is_token_char) => {
                return Err(error(
                    "cookie",
                    name,
                    "is not a cookie name (RFC 6265: visible ASCII without separators)",
                ))
            }
            name => name.map(Box::from),
        };
        let header = match declared.header.as_deref() {
            Some(name) => {
                let parsed = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| error("header", name, "is not a header name"))?;
                if RESERVED_HEADERS.contains(&parsed) {
                    return Err(error(
                        "header",
                        name,
                        "is read by the gate for something else; choose another name",
                    ));
                }
                Some(parsed)
            }
            None => None,
        };
        if !declared.authorization && cookie.is_none() && header.is_none() {
            return Err(error(
                "authorization",
                "false",
                "leaves no source: name a cookie or a header",
            ));
        }
        if cookie.is_none() {
            if let Some(origin) = declared.trusted_origins.first() {
                return Err(error(
                    "trusted_origins",
                    origin,
                    "only applies to a cookie source, and no cookie is named",
                ));
            }
        }
        let trusted_origins = declared
            .trusted_origins
            .iter()
            .map(|origin| {
                serialize_origin(origin).ok_or_else(|| {
                    error(
                        "trusted_origins",
                        origin,
                        "is not an origin: http:// or https://, a host, an optional port, no path",
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            authorization: declared.authorization,
            cookie,
            header,
            trusted_origins,
        })
    }

    /// The request's one token, and where it came from. With the default sources this is
    /// [`bearer_token`] alone: nothing allocates, nothing else is looked at.
    pub(crate) fn find<'a>(
        &self,
        headers: &'a HeaderMap,
        max_len: usize,
    ) -> Result<Found<'a>, AuthError> {
        let mut found = Found::None;
        if self.authorization {
            if let Credentials::Bearer(token) = bearer_token(headers, max_len)? {
                found = Found::Header(token);
            }
        }
        if let Some(name) = &self.header {
            if let Some(token) = header_token(headers, name, max_len)? {
                found = found.and(Found::Header(token))?;
            }
        }
        if let Some(name) = &self.cookie {
            if let Some(token) = cookie_token(headers, name, max_len)? {
                found = found.and(Found::Cookie(token))?;
            }
        }
        Ok(found)
    }

    #[cfg_attr(not(feature = "openapi"), allow(dead_code))]
    pub(crate) fn reads_authorization(&self) -> bool {
        self.authorization
    }

    #[cfg_attr(not(feature = "openapi"), allow(dead_code))]
    pub(crate) fn cookie_name(&self) -> Option<&str> {
        self.cookie.as_deref()
    }

    #[cfg_attr(not(feature = "openapi"), allow(dead_code))]
    pub(crate) fn header_name(&self) -> Option<&str> {
        self.header.as_ref().map(HeaderName::as_str)
    }

    /// The request's one token, as the gate reads it: [`find`](Self::find), and a token found
    /// only in the cookie refused (`CrossSiteRequest`) where [`cookie_allowed`](Self::cookie_allowed)
    /// says so. Everything that authenticates a request reads it here, so the gate and the
    /// auth service's logout cannot disagree on where the token is.
    pub(crate) fn request_token<'a>(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &'a HeaderMap,
        max_len: usize,
    ) -> Result<Option<&'a str>, AuthError> {
        match self.find(headers, max_len)? {
            Found::Cookie(_) if !self.cookie_allowed(method, uri, headers) => {
                Err(AuthError::CrossSiteRequest)
            }
            found => Ok(found.token()),
        }
    }

    /// Whether a request authenticated only by the cookie may pass: any safe method does; an
    /// unsafe one must come from the gate's own origin or a trusted one (see
    /// [`TokenSources`]). Ambiguous evidence (a header sent twice) refuses. A WebSocket
    /// handshake is a `GET` but not safe: CORS does not guard the socket it opens, so another
    /// site's page could read and write as the cookie's owner (cross-site WebSocket hijacking).
    pub(crate) fn cookie_allowed(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> bool {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
            && !may_open_a_socket(headers)
        {
            return true;
        }
        let (Ok(origin), Ok(site)) = (
            single(headers, &ORIGIN),
            single(headers, &HeaderName::from_static("sec-fetch-site")),
        ) else {
            return false;
        };
        let trusted = |origin: &[u8]| {
            self.trusted_origins
                .iter()
                .any(|trusted| trusted.as_bytes() == origin)
        };
        match (site, origin) {
            (Some(b"same-origin" | b"none"), _) => true,
            // The browser says another site sent it: only a trusted origin may.
            (Some(_), origin) => origin.is_some_and(trusted),
            // A browser that predates Fetch Metadata: Origin alone decides.
            (None, Some(origin)) => trusted(origin) || names_own_host(origin, uri, headers),
            // No browser sends an unsafe cross-site request without either header.
            (None, None) => true,
        }
    }
}

/// A CORS preflight: `OPTIONS` with `Origin` and `Access-Control-Request-Method`, which
/// browsers send without credentials before a cross-origin request.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(ORIGIN)
        && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

/// The one value of `name`, if any; `Err` when it is sent more than once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Result<Option<&'a [u8]>, ()> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().map(http::HeaderValue::as_bytes);
    match values.next() {
        Some(_) => Err(()),
        None => Ok(first),
    }
}

/// Whether an `Origin` names the host the request was sent to (its `Host` header, or the
/// authority of an HTTP/2 request), whatever its scheme.
fn names_own_host(origin: &[u8], uri: &Uri, headers: &HeaderMap) -> bool {
    let Some(origin_host) = origin
        .strip_prefix(b"https://")
        .or_else(|| origin.strip_prefix(b"http://"))
    else {
        return false;
    };
    let host = match uri.authority() {
        Some(authority) => Some(authority.as_str().as_bytes()),
        None => single(headers, &HOST).ok().flatten(),
    };
    host.is_some_and(|host| !host.is_empty() && host.eq_ignore_ascii_case(origin_host))
}

/// `origin` as a browser serializes it (RFC 6454 §6.1), or `None` if it is not one.
fn serialize_origin(origin: &str) -> Option<Box<str>> {
    let uri: Uri = origin.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let authority = uri.authority()?;
    let path_ok = uri
        .path_and_query()
        .is_none_or(|path| path.as_str().is_empty() || path.as_str() == "/");
    if authority.as_str().contains('@') || authority.host().is_empty() || !path_ok {
        return None;
    }
    let host = authority.host().to_ascii_lowercase();
    Some(
        match authority.port_u16() {
            Some(port) if port != default_port => format!("{scheme}://{host}:{port}"),
            _ => format!("{scheme}://{host}"),
        }
        .into_boxed_str(),
    )
}

/// RFC 7230 `tchar`, which RFC 6265 cookie names and authentication schemes are made of.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// Whether every byte is an RFC 6265 §4.1.1 `cookie-octet`: visible ASCII but `"`, `,`, `;`
/// and `\`. Without an early exit, so the compiler can check many bytes at once: a token is a
/// few hundred bytes, and this runs on every request that carries the cookie.
fn all_cookie_octets(value: &[u8]) -> bool {
    let outside = value.iter().fold(false, |outside, &byte| {
        outside
            | !(0x21..=0x7E).contains(&byte)
            | (byte == b'"')
            | (byte == b',')
            | (byte == b';')
            | (byte == b'\\')
    });
    !outside
}

/// The bare token of the header `name`, sent at most once.
fn header_token<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
    max_len: usize,
) -> Result<Option<&'a str>, AuthError> {
    let value = single(headers, name)
        .map_err(|()| AuthError::DuplicateTokenHeader)?
        .map(<[u8]>::trim_ascii);
    checked_token(value, max_len)
}

/// The token a source gave: not empty, within the cap, text.
fn checked_token(token: Option<&[u8]>, max_len: usize) -> Result<Option<&str>, AuthError> {
    match token {
        None => Ok(None),
        Some([]) => Err(AuthError::EmptyToken),
        Some(token) if token.len() > max_len => Err(AuthError::TokenTooLong),
        Some(token) => std::str::from_utf8(token)
            .map(Some)
            .map_err(|_| AuthError::InvalidCharacters),
    }
}

/// The value of the cookie `name` across every `Cookie` header (HTTP/2 sends one a cookie),
/// read as the [`TokenSources`] documentation says.
fn cookie_token<'a>(
    headers: &'a HeaderMap,
    name: &str,
    max_len: usize,
) -> Result<Option<&'a str>, AuthError> {
    // The one occurrence, and whether it is well formed; its faults are said only once it
    // is known to be the only one, so a duplicate is always called a duplicate.
    let mut occurrence: Option<(&[u8], bool)> = None;
    for field in headers.get_all(COOKIE) {
        for pair in field.as_bytes().split(|&byte| byte == b';') {
            let pair = pair.trim_ascii();
            let Some(equals) = pair.iter().position(|&byte| byte == b'=') else {
                continue;
            };
            let (pair_name, value) = (&pair[..equals], &pair[equals + 1..]);
            if !pair_name.trim_ascii().eq_ignore_ascii_case(name.as_bytes()) {
                continue;
            }
            if occurrence.is_some() {
                return Err(AuthError::DuplicateCookie);
            }
            let well_formed = pair_name == name.as_bytes() && all_cookie_octets(value);
            occurrence = Some((value, well_formed));
        }
    }
    match occurrence {
        None | Some(([], true)) => Ok(None),
        Some((_, false)) => Err(AuthError::MalformedCookie),
        Some((value, true)) => checked_token(Some(value), max_len),
    }
}

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
        // `Bearer` then a tab, a no-break space (0xA0), a comma: no scheme of its own (a
        // scheme is a token), but a server that splits on any whitespace reads a bearer
        // token in it, which the gate would pass on unread.
        let bearer_then_separator = scheme.len() > 6
            && scheme[..6].eq_ignore_ascii_case(b"bearer")
            && !is_token_char(scheme[6]);
        if bearer_then_separator {
            return Err(AuthError::InvalidCharacters);
        }
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

/// Whether a request may be a WebSocket handshake. `Upgrade` alone is not enough to tell:
/// nginx's `proxy_pass` clears it (and `Connection`) on the `auth_request` subrequest that
/// forward-auth judges, while the handshake's own headers, and the browser's
/// `Sec-Fetch-Mode: websocket`, reach it.
fn may_open_a_socket(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        || headers.contains_key(SEC_WEBSOCKET_KEY)
        || headers.contains_key(SEC_WEBSOCKET_VERSION)
        || headers
            .get_all("sec-fetch-mode")
            .iter()
            .any(|mode| mode.as_bytes().eq_ignore_ascii_case(b"websocket"))
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
        // RFC 7235 separates the scheme with spaces only; an upstream that splits on any
        // whitespace would read a token the gate never looked at.
        assert_eq!(
            bearer(&headers(&["Bearer\tabc"]), 100),
            Err(AuthError::InvalidCharacters)
        );
        assert_eq!(
            bearer(&headers(&["bearer\t abc"]), 100),
            Err(AuthError::InvalidCharacters)
        );
        let no_break_space = HeaderValue::from_bytes(b"Bearer\xa0abc").unwrap();
        let mut map = HeaderMap::new();
        map.insert(AUTHORIZATION, no_break_space);
        assert_eq!(bearer(&map, 100), Err(AuthError::InvalidCharacters));
        assert_eq!(
            bearer(&headers(&["Bearer,abc"]), 100),
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
mod source_tests {
    use super::*;
    use http::HeaderValue;

    fn sources(cookie: Option<&str>, header: Option<&str>, trusted: &[&str]) -> Sources {
        Sources::compile(&TokenSources {
            cookie: cookie.map(str::to_owned),
            header: header.map(str::to_owned),
            trusted_origins: trusted.iter().map(|&origin| origin.to_owned()).collect(),
            ..TokenSources::default()
        })
        .unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for &(name, value) in pairs {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn cookie(values: &[&str]) -> Result<Found<'static>, AuthError> {
        let pairs: Vec<_> = values.iter().map(|&value| ("cookie", value)).collect();
        let headers = Box::leak(Box::new(headers(&pairs)));
        sources(Some("tok"), None, &[]).find(headers, 100)
    }

    #[test]
    fn the_default_reads_only_the_authorization_header() {
        let headers = headers(&[("cookie", "tok=a.b.c"), ("x-token", "a.b.c")]);
        assert_eq!(Sources::default().find(&headers, 100), Ok(Found::None));
        let headers = headers_with_bearer("a.b.c");
        assert_eq!(
            Sources::default().find(&headers, 100),
            Ok(Found::Header("a.b.c"))
        );
    }

    fn headers_with_bearer(token: &str) -> HeaderMap {
        headers(&[("authorization", &format!("Bearer {token}"))])
    }

    #[test]
    fn a_cookie_is_read_strictly() {
        assert_eq!(cookie(&["tok=a.b.c"]), Ok(Found::Cookie("a.b.c")));
        assert_eq!(
            cookie(&["theme=dark; tok=a.b.c; lang=en"]),
            Ok(Found::Cookie("a.b.c"))
        );
        // HTTP/2 sends one cookie a field.
        assert_eq!(
            cookie(&["theme=dark", "tok=a.b.c"]),
            Ok(Found::Cookie("a.b.c"))
        );
        // Other cookies, however odd, are not ours to judge.
        assert_eq!(
            cookie(&["odd cookie=\"x y\"; nameless; tok=a.b.c"]),
            Ok(Found::Cookie("a.b.c"))
        );
        assert_eq!(cookie(&["tokx=a; xtok=b"]), Ok(Found::None));
        // A cleared cookie is no cookie.
        assert_eq!(cookie(&["tok="]), Ok(Found::None));
        for duplicate in [
            &["tok=a.b.c; tok=d.e.f"][..],
            &["tok=a.b.c; tok=a.b.c"],
            &["tok=a.b.c", "tok=d.e.f"],
            &["tok=; tok=a.b.c"],
            &["tok=a.b.c; Tok=d.e.f"],
            &["tok=a.b.c; tok =d.e.f"],
            &["tok=\"a\"; tok=a.b.c"],
        ] {
            assert_eq!(
                cookie(duplicate),
                Err(AuthError::DuplicateCookie),
                "{duplicate:?}"
            );
        }
        for malformed in [
            "TOK=a.b.c",
            "tok =a.b.c",
            "tok=\"a.b.c\"",
            "tok=a b",
            "tok=a,b",
            "tok=a\\b",
        ] {
            assert_eq!(
                cookie(&[malformed]),
                Err(AuthError::MalformedCookie),
                "{malformed}"
            );
        }
        let long = format!("tok={}", "a".repeat(101));
        assert_eq!(cookie(&[&long]), Err(AuthError::TokenTooLong));
    }

    #[test]
    fn two_sources_must_agree() {
        let sources = sources(Some("tok"), Some("x-token"), &[]);
        let found = |pairs: &[(&'static str, &str)]| {
            let headers = Box::leak(Box::new(headers(pairs)));
            sources.find(headers, 100)
        };
        assert_eq!(
            found(&[("authorization", "Bearer a.b.c"), ("cookie", "tok=a.b.c")]),
            Ok(Found::Header("a.b.c"))
        );
        assert_eq!(
            found(&[("x-token", "a.b.c"), ("cookie", "tok=a.b.c")]),
            Ok(Found::Header("a.b.c"))
        );
        for pairs in [
            &[("authorization", "Bearer a.b.c"), ("cookie", "tok=d.e.f")][..],
            &[("authorization", "Bearer a.b.c"), ("x-token", "d.e.f")],
            &[("x-token", "a.b.c"), ("cookie", "tok=d.e.f")],
        ] {
            assert_eq!(found(pairs), Err(AuthError::ConflictingTokens), "{pairs:?}");
        }
        assert_eq!(
            found(&[("x-token", "a.b.c"), ("x-token", "a.b.c")]),
            Err(AuthError::DuplicateTokenHeader)
        );
        assert_eq!(found(&[("x-token", "")]), Err(AuthError::EmptyToken));
        // A malformed source is refused even beside a good one.
        assert_eq!(
            found(&[
                ("authorization", "Bearer a.b.c"),
                ("cookie", "tok=a; tok=a")
            ]),
            Err(AuthError::DuplicateCookie)
        );
        // Basic credentials are no token.
        assert_eq!(
            found(&[("authorization", "Basic dXNlcg=="), ("cookie", "tok=a.b.c")]),
            Ok(Found::Cookie("a.b.c"))
        );
    }

    #[test]
    fn unsafe_cookie_requests_must_come_from_the_site_or_a_trusted_origin() {
        let sources = sources(Some("tok"), None, &["https://Admin.Example:443/"]);
        let uri: Uri = "/orders".parse().unwrap();
        let allowed = |method: Method, pairs: &[(&'static str, &str)]| {
            let mut pairs = pairs.to_vec();
            pairs.push(("host", "shop.example"));
            sources.cookie_allowed(&method, &uri, &headers(&pairs))
        };
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert!(allowed(method, &[("sec-fetch-site", "cross-site")]));
        }
        let cases: &[(&[(&'static str, &str)], bool)] = &[
            (&[("sec-fetch-site", "same-origin")], true),
            (&[("sec-fetch-site", "none")], true),
            (&[("sec-fetch-site", "cross-site")], false),
            (&[("sec-fetch-site", "same-site")], false),
            (&[("sec-fetch-site", "Same-Origin")], false),
            (
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://evil.example"),
                ],
                false,
            ),
            (
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://admin.example"),
                ],
                true,
            ),
            // Same host, but the browser says another site sent it.
            (
                &[
                    ("sec-fetch-site", "cross-site"),
                    ("origin", "https://shop.example"),
                ],
                false,
            ),
            (&[("origin", "https://shop.example")], true),
            (&[("origin", "http://SHOP.example")], true),
            (&[("origin", "https://admin.example")], true),
            (&[("origin", "https://evil.example")], false),
            (&[("origin", "https://shop.example.evil.example")], false),
            (&[("origin", "null")], false),
            (&[], true),
            (
                &[
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-site", "cross-site"),
                ],
                false,
            ),
            (
                &[
                    ("origin", "https://shop.example"),
                    ("origin", "https://evil.example"),
                ],
                false,
            ),
        ];
        for (pairs, expected) in cases {
            for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
                assert_eq!(allowed(method, pairs), *expected, "{pairs:?}");
            }
        }
        // Over HTTP/2 the request's authority names the site.
        let h2: Uri = "https://shop.example/orders".parse().unwrap();
        let origin = headers(&[("origin", "https://shop.example")]);
        assert!(sources.cookie_allowed(&Method::POST, &h2, &origin));
        let evil = headers(&[("origin", "https://evil.example")]);
        assert!(!sources.cookie_allowed(&Method::POST, &h2, &evil));
    }

    #[test]
    fn bad_configuration_names_its_field() {
        let check = |sources: TokenSources| sources.check().map_err(|error| error.to_string());
        let base = TokenSources::default;
        for (sources, field) in [
            (
                TokenSources {
                    cookie: Some("a b".into()),
                    ..base()
                },
                "`cookie`",
            ),
            (
                TokenSources {
                    cookie: Some(String::new()),
                    ..base()
                },
                "`cookie`",
            ),
            (
                TokenSources {
                    header: Some("Cookie".into()),
                    ..base()
                },
                "`header`",
            ),
            (
                TokenSources {
                    header: Some("x token".into()),
                    ..base()
                },
                "`header`",
            ),
            (
                TokenSources {
                    authorization: false,
                    ..base()
                },
                "`authorization`",
            ),
            (
                TokenSources {
                    trusted_origins: vec!["https://a.example".into()],
                    ..base()
                },
                "`trusted_origins`",
            ),
        ] {
            let error = check(sources).unwrap_err();
            assert!(error.contains(field), "{error}");
        }
        for origin in [
            "a.example",
            "ftp://a.example",
            "https://a.example/path",
            "https://user@a.example",
            "https://a.example?q",
            "https://",
            "*",
        ] {
            let sources = TokenSources {
                cookie: Some("tok".into()),
                trusted_origins: vec![origin.into()],
                ..base()
            };
            assert!(check(sources).is_err(), "{origin}");
        }
        assert_eq!(
            serialize_origin("HTTPS://A.Example:443").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            serialize_origin("http://localhost:5173/").as_deref(),
            Some("http://localhost:5173")
        );
        assert_eq!(
            serialize_origin("http://[::1]:8080").as_deref(),
            Some("http://[::1]:8080")
        );
    }

    #[test]
    fn a_cross_site_refusal_is_a_403_without_a_challenge_over_http_and_7_over_grpc() {
        let (status, headers, body) = AuthError::CrossSiteRequest.render("shop", false, None);
        assert_eq!(status, http::StatusCode::FORBIDDEN);
        assert!(!headers.contains_key(http::header::WWW_AUTHENTICATE));
        assert_eq!(headers["cache-control"], "no-store");
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"], "cross_site_request");
        let (status, headers, _) = AuthError::CrossSiteRequest.render("shop", true, None);
        assert_eq!(status, http::StatusCode::OK);
        assert_eq!(headers["grpc-status"], "7");
        for error in [
            AuthError::ConflictingTokens,
            AuthError::DuplicateCookie,
            AuthError::MalformedCookie,
            AuthError::DuplicateTokenHeader,
        ] {
            let (status, headers, _) = error.render("shop", false, None);
            assert_eq!(status, http::StatusCode::BAD_REQUEST, "{error:?}");
            let challenge = headers[http::header::WWW_AUTHENTICATE].to_str().unwrap();
            assert!(
                challenge.starts_with("Bearer realm=\"shop\", error=\"invalid_request\""),
                "{challenge}"
            );
            assert_eq!(error.render("shop", true, None).1["grpc-status"], "16");
        }
    }

    #[test]
    fn a_preflight_names_an_origin_and_a_method() {
        let both = headers(&[
            ("origin", "https://a.example"),
            ("access-control-request-method", "POST"),
        ]);
        assert!(is_preflight(&Method::OPTIONS, &both));
        assert!(!is_preflight(&Method::GET, &both));
        assert!(!is_preflight(
            &Method::OPTIONS,
            &headers(&[("origin", "https://a.example")])
        ));
        assert!(!is_preflight(
            &Method::OPTIONS,
            &headers(&[("access-control-request-method", "POST")])
        ));
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
