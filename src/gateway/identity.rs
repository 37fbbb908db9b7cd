//! The verified identity as headers: `x-auth-sub` and the claims chosen with
//! [`ForwardedClaim`], each value made safe to put in a header. Shared by the proxy (headers
//! added to the forwarded request) and forward-auth (headers of its `200`).

use http::header::{HeaderName, HeaderValue};
use http::HeaderMap;
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use serde_json::Value;

use super::{ClaimMap, IDENTITY_PREFIX};
use crate::Claims;

/// How a claim whose value is an array becomes one header value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ArrayStyle {
    /// The array as JSON text (`["admin","ops"]`, percent-encoded as
    /// [the module docs](super) say): the default, and what an upstream that parses JSON wants.
    #[default]
    Json,
    /// Each element encoded on its own (strings as they are, anything else as JSON), joined
    /// with `,`: `admin,ops`. An element holding a `,` arrives as `%2C`, so the upstream can
    /// split on `,` and decode each part.
    Join,
}

/// A claim the gateway (or forward-auth) sends on as a header, when the token carries it.
///
/// The claim is named either plainly (`roles`: a top-level claim, whatever characters its
/// name has, so `https://example.com/roles` works) or, starting with `/`, as a JSON Pointer
/// (RFC 6901) into the claims (`/realm_access/roles`, `~1` for a `/` inside a name).
/// The header defaults to `x-auth-<name>` (lower-cased; for a pointer, its segments joined
/// with `-`), and may be chosen, as long as it starts with `x-auth-`: those are the headers
/// the gateway removes from every client request, so a client can never send one itself.
///
/// ```
/// use jwt_gate::gateway::{ArrayStyle, ForwardedClaim};
///
/// let roles = ForwardedClaim::with_header("/realm_access/roles", "x-auth-roles")
///     .unwrap()
///     .arrays(ArrayStyle::Join);
/// assert_eq!(roles.header_name(), "x-auth-roles");
/// assert_eq!(ForwardedClaim::new("email").unwrap().header_name(), "x-auth-email");
/// assert!(ForwardedClaim::with_header("email", "x-user").is_err(), "not x-auth-*");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedClaim {
    claim: String,
    header: HeaderName,
    arrays: ArrayStyle,
}

/// A [`ForwardedClaim`] that cannot be: an empty claim name, a header name that is not
/// valid or does not start with `x-auth-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidForwardedClaim(String);

impl std::fmt::Display for InvalidForwardedClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidForwardedClaim {}

impl ForwardedClaim {
    /// [`new`](Self::new) for a name given as configuration to a builder: a bad one panics
    /// there, when the gateway is built, never at a request.
    pub(super) fn configured(claim: &str) -> Self {
        Self::new(claim).unwrap_or_else(|error| panic!("{error}"))
    }

    /// Forwards `claim` (a name, or a JSON Pointer starting with `/`) as `x-auth-<name>`.
    pub fn new(claim: &str) -> Result<Self, InvalidForwardedClaim> {
        let name = match claim.strip_prefix('/') {
            Some(pointer) => pointer
                .split('/')
                .map(|segment| segment.replace("~1", "/").replace("~0", "~"))
                .collect::<Vec<_>>()
                .join("-"),
            None => claim.to_owned(),
        };
        if name.is_empty() {
            return Err(InvalidForwardedClaim(
                "a claim name may not be empty".into(),
            ));
        }
        let header = format!("{IDENTITY_PREFIX}{}", name.to_ascii_lowercase());
        let header = HeaderName::try_from(header.as_str()).map_err(|_| {
            InvalidForwardedClaim(format!(
                "{header:?} is not a valid header name: choose one for claim {claim:?}"
            ))
        })?;
        Ok(Self {
            claim: claim.to_owned(),
            header,
            arrays: ArrayStyle::Json,
        })
    }

    /// Forwards `claim` as `header`, which must start with `x-auth-`: for claims whose name
    /// makes no header name (`https://example.com/roles`), or to choose one's own.
    pub fn with_header(claim: &str, header: &str) -> Result<Self, InvalidForwardedClaim> {
        if claim.is_empty() || claim == "/" {
            return Err(InvalidForwardedClaim(
                "a claim name may not be empty".into(),
            ));
        }
        let name = HeaderName::try_from(header)
            .map_err(|_| InvalidForwardedClaim(format!("{header:?} is not a valid header name")))?;
        if !name.as_str().starts_with(IDENTITY_PREFIX) || name.as_str() == "x-auth-sub" {
            return Err(InvalidForwardedClaim(format!(
                "{header:?} must start with {IDENTITY_PREFIX:?} (and not be x-auth-sub): \
                 only those headers are removed from what clients send"
            )));
        }
        Ok(Self {
            claim: claim.to_owned(),
            header: name,
            arrays: ArrayStyle::Json,
        })
    }

    /// How an array value becomes a header value (default [`ArrayStyle::Json`]).
    #[must_use]
    pub fn arrays(mut self, style: ArrayStyle) -> Self {
        self.arrays = style;
        self
    }

    /// The header the claim is sent as.
    pub fn header_name(&self) -> &HeaderName {
        &self.header
    }

    /// The claim as given to [`new`](Self::new).
    pub fn claim(&self) -> &str {
        &self.claim
    }

    /// The header value for this claim, if the claims carry it.
    fn value<C>(&self, claims: &Claims<C>, extra: Option<&ClaimMap>) -> Option<HeaderValue> {
        // A registered claim by name or by a pointer to it (`/iss`): it has a field of its
        // own, never a place among the other claims.
        let registered = match self.claim.strip_prefix('/') {
            Some(pointer) if !pointer.contains('/') => pointer,
            Some(_) => "",
            None => &self.claim,
        };
        if let Some(value) = registered_claim(claims, registered) {
            return Some(value);
        }
        let extra = extra?;
        let value = match self.claim.strip_prefix('/') {
            Some(pointer) => {
                let (first, rest) = pointer
                    .split_once('/')
                    .map_or((pointer, ""), |(a, b)| (a, b));
                let first = first.replace("~1", "/").replace("~0", "~");
                let top = extra.get(&first)?;
                if rest.is_empty() {
                    top
                } else {
                    top.pointer(&format!("/{rest}"))?
                }
            }
            None => extra.get(&self.claim)?,
        };
        Some(match (value, self.arrays) {
            (Value::Array(items), ArrayStyle::Join) => {
                let parts: Vec<String> = items.iter().map(|item| encode(&text(item))).collect();
                HeaderValue::try_from(parts.join(","))
                    .expect("percent-encoded text is visible ASCII, a valid header value")
            }
            (value, _) => identity_value(&text(value)),
        })
    }
}

/// Writes `x-auth-sub` and each of `forwarded` into `headers`, from the verified claims in
/// `extensions` (`Claims<ClaimMap>` or `Claims`); nothing when there are none.
pub(super) fn write_identity(
    forwarded: &[ForwardedClaim],
    extensions: &http::Extensions,
    headers: &mut HeaderMap,
) {
    if let Some(claims) = extensions.get::<Claims<ClaimMap>>() {
        write(forwarded, claims, Some(&claims.extra), headers);
    } else if let Some(claims) = extensions.get::<Claims>() {
        write(forwarded, claims, None, headers);
    }
}

fn write<C>(
    forwarded: &[ForwardedClaim],
    claims: &Claims<C>,
    extra: Option<&ClaimMap>,
    headers: &mut HeaderMap,
) {
    headers.insert(
        HeaderName::from_static("x-auth-sub"),
        identity_value(&claims.sub),
    );
    for claim in forwarded {
        if let Some(value) = claim.value(claims, extra) {
            headers.insert(claim.header.clone(), value);
        }
    }
}

/// A registered claim as a header value; `aud` as a list, each audience encoded apart.
fn registered_claim<C>(claims: &Claims<C>, name: &str) -> Option<HeaderValue> {
    let text = match name {
        "iss" => claims.iss.clone()?,
        "aud" if claims.aud.is_empty() => return None,
        "aud" => {
            let audiences: Vec<String> =
                claims.aud.iter().map(|audience| encode(audience)).collect();
            return HeaderValue::try_from(audiences.join(",")).ok();
        }
        "jti" => claims.jti.clone(),
        "exp" => claims.exp.to_string(),
        "iat" => claims.iat.to_string(),
        "nbf" => claims.nbf?.to_string(),
        _ => return None,
    };
    Some(identity_value(&text))
}

/// A claim as text: a string as it is, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The bytes of an identity value that an upstream could trim (spaces, controls), split on
/// (`,`), mis-decode (non-ASCII) or decode once too often (`%`).
const UNSAFE_IN_IDENTITY: &AsciiSet = &CONTROLS.add(b' ').add(b'%').add(b',');

/// `text` percent-encoded (UTF-8, RFC 3986) wherever [`UNSAFE_IN_IDENTITY`] says: `alice`
/// stays `alice`, `alice ` becomes `alice%20`, `a,b` becomes `a%2Cb`. The encoding is one to
/// one, so distinct identities stay distinct even for an upstream that never decodes.
fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNSAFE_IN_IDENTITY).to_string()
}

fn identity_value(text: &str) -> HeaderValue {
    HeaderValue::try_from(encode(text))
        .expect("percent-encoded text is visible ASCII, a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(extra: Value) -> Claims<ClaimMap> {
        let Value::Object(map) = extra else { panic!() };
        Claims::new("alice", 1, 2).with_extra(map)
    }

    fn headers(forwarded: &[ForwardedClaim], claims: &Claims<ClaimMap>) -> HeaderMap {
        let mut extensions = http::Extensions::new();
        extensions.insert(claims.clone());
        let mut headers = HeaderMap::new();
        write_identity(forwarded, &extensions, &mut headers);
        headers
    }

    #[test]
    fn nested_claims_arrays_and_chosen_headers() {
        let claims = claims(serde_json::json!({
            "realm_access": {"roles": ["admin", "on,call"]},
            "https://example.com/org": "Acme Inc",
            "tenant": {"id": 7},
        }));
        let forwarded = [
            ForwardedClaim::with_header("/realm_access/roles", "x-auth-roles")
                .unwrap()
                .arrays(ArrayStyle::Join),
            ForwardedClaim::new("/realm_access/roles").unwrap(),
            // A URL-named claim makes no header name of its own: one is chosen.
            ForwardedClaim::with_header("https://example.com/org", "x-auth-org").unwrap(),
            ForwardedClaim::new("/tenant/id").unwrap(),
            ForwardedClaim::new("/tenant/missing").unwrap(),
        ];
        let headers = headers(&forwarded, &claims);
        assert_eq!(headers["x-auth-sub"], "alice");
        assert_eq!(headers["x-auth-roles"], "admin,on%2Ccall");
        assert_eq!(
            headers["x-auth-realm_access-roles"],
            "[\"admin\"%2C\"on%2Ccall\"]"
        );
        assert_eq!(headers["x-auth-org"], "Acme%20Inc");
        assert_eq!(headers["x-auth-tenant-id"], "7");
        assert!(!headers.contains_key("x-auth-tenant-missing"));
        // A registered claim named by a pointer is found in its own field.
        let issued = self::claims(serde_json::json!({})).with_issuer("https://login.test");
        let by_pointer = [
            ForwardedClaim::new("/iss").unwrap(),
            ForwardedClaim::with_header("/exp", "x-auth-until").unwrap(),
        ];
        let headers = self::headers(&by_pointer, &issued);
        assert_eq!(headers["x-auth-iss"], "https://login.test");
        assert_eq!(headers["x-auth-until"], "2");
    }

    #[test]
    fn chosen_headers_must_be_identity_headers() {
        assert!(ForwardedClaim::with_header("email", "x-email").is_err());
        assert!(ForwardedClaim::with_header("email", "x-auth-sub").is_err());
        assert!(ForwardedClaim::with_header("email", "x auth").is_err());
        assert!(ForwardedClaim::with_header("email", "X-Auth-Email").is_ok());
        assert!(ForwardedClaim::with_header("", "x-auth-e").is_err());
        assert!(ForwardedClaim::new("").is_err());
        assert!(ForwardedClaim::new("a b").is_err());
        assert!(ForwardedClaim::new("https://example.com/org").is_err());
    }
}
