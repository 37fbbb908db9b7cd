//! Authorization: what a verified, unrevoked token must also hold. Scopes (`scope` or `scp`),
//! roles at a configurable claim path, and predicates over [`Claims<C>`], per gate
//! ([`JwtAuthLayer::require`](crate::JwtAuthLayer::require)), per route
//! ([`JwtAuthLayer::require_route`](crate::JwtAuthLayer::require_route)), or on a nested
//! service of its own ([`RequireLayer`]). A request that falls short is answered `403` with
//! `error="insufficient_scope"` (RFC 6750 §3.1), or `grpc-status: 7` over gRPC.
//!
//! Scopes and roles are read from the token once, when it is first verified, and kept with it
//! in the verified-token cache, so a cached token is checked without parsing its claims again.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use pin_project_lite::pin_project;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use tower_layer::Layer;
use tower_service::Service;

use crate::error::DEFAULT_REALM;
use crate::layer::ResponseBody;
use crate::metrics::GateMetrics;
use crate::paths::{decoded, holds, is_canonical, is_canonical_method, same_bytes, Pattern};
use crate::{AuthError, Claims};

/// Where in a token's claims its roles are: a dot-separated path to an array of strings (or
/// one string), such as `roles` (Entra ID), `realm_access.roles` or
/// `resource_access.<client>.roles` (Keycloak), `permissions` (Auth0), `groups` (Okta). A
/// claim whose name holds a `.`, as Auth0's namespaced custom claims do
/// (`https://example.com/roles`), is named by a JSON Pointer (RFC 6901: a leading `/`, `~1`
/// for `/` and `~0` for `~` within a name): `/https:~1~1example.com~1roles`.
///
/// A path that can never hold roles is refused here, when the configuration is made, not at
/// the first request: an empty path or segment, more than 8 segments, or a path into one of
/// the registered claims the verifier reads itself (`sub`, `exp`, `iat`, `nbf`, `jti`, `sid`,
/// `iss`, `aud`) or the scope claims (`scope`, `scp`).
///
/// ```
/// use jwt_gate::ClaimPath;
///
/// assert!(ClaimPath::new("resource_access.orders-api.roles").is_ok());
/// let error = ClaimPath::new("realm_access..roles").unwrap_err();
/// assert!(error.to_string().contains("realm_access..roles"));
/// assert!(ClaimPath::new("sub.roles").is_err());
///
/// let auth0 = ClaimPath::new("/https:~1~1example.com~1roles").unwrap();
/// assert_eq!(auth0.segments().collect::<Vec<_>>(), ["https://example.com/roles"]);
/// // Shown as it is written back: a pointer where a name holds a `.`.
/// assert_eq!(auth0.to_string(), "/https:~1~1example.com~1roles");
/// assert_eq!(ClaimPath::new("/realm_access/roles").unwrap().to_string(), "realm_access.roles");
/// assert!(ClaimPath::new("/a~2b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPath {
    segments: Box<[Box<str>]>,
}

/// Why a [`ClaimPath`] cannot hold roles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimPathError {
    path: String,
    reason: &'static str,
}

impl fmt::Display for ClaimPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the roles claim path {:?} {}", self.path, self.reason)
    }
}

impl std::error::Error for ClaimPathError {}

/// Claims the verifier reads itself: none can hold roles.
const RESERVED: [&str; 10] = [
    "sub", "exp", "iat", "nbf", "jti", "sid", "iss", "aud", "scope", "scp",
];

impl ClaimPath {
    /// Parses a dot-separated path, refusing one that can never hold roles.
    pub fn new(path: &str) -> Result<Self, ClaimPathError> {
        let refuse = |reason| {
            Err(ClaimPathError {
                path: path.to_owned(),
                reason,
            })
        };
        let segments: Vec<Cow<'_, str>> = match path.strip_prefix('/') {
            Some(pointer) => {
                let mut segments = Vec::new();
                for segment in pointer.split('/') {
                    match unescape_pointer(segment) {
                        Some(segment) => segments.push(segment),
                        None => return refuse("has a `~` that is not `~0` or `~1`"),
                    }
                }
                segments
            }
            None => path.split('.').map(Cow::Borrowed).collect(),
        };
        if segments.iter().any(|segment| segment.is_empty()) {
            return refuse("has an empty segment");
        }
        if segments.len() > 8 {
            return refuse("is deeper than 8 segments");
        }
        if RESERVED.contains(&&*segments[0]) {
            return refuse("starts at a registered or scope claim, which never holds roles");
        }
        Ok(Self {
            segments: segments.into_iter().map(Box::from).collect(),
        })
    }

    /// The claim names along the path, the top-level claim first.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|segment| &**segment)
    }

    fn first(&self) -> &str {
        &self.segments[0]
    }
}

impl Default for ClaimPath {
    /// `roles`.
    fn default() -> Self {
        Self {
            segments: Box::new([Box::from("roles")]),
        }
    }
}

/// A JSON Pointer segment's name: `~1` is `/`, `~0` is `~`; `None` for any other `~`.
fn unescape_pointer(segment: &str) -> Option<Cow<'_, str>> {
    if !segment.contains('~') {
        return Some(Cow::Borrowed(segment));
    }
    let mut name = String::with_capacity(segment.len());
    let mut chars = segment.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            name.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => name.push('~'),
            Some('1') => name.push('/'),
            _ => return None,
        }
    }
    Some(Cow::Owned(name))
}

impl fmt::Display for ClaimPath {
    /// The dot-separated form where it reads back as the same path, else a JSON Pointer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dotted = !self.segments[0].starts_with('/')
            && self.segments.iter().all(|segment| !segment.contains('.'));
        if dotted {
            return f.write_str(&self.segments.join("."));
        }
        for segment in &self.segments {
            write!(f, "/{}", segment.replace('~', "~0").replace('/', "~1"))?;
        }
        Ok(())
    }
}

/// The scopes and roles a verified token grants. The gate puts it into the request
/// extensions beside the [`Claims`] when the token grants any; absent means none.
///
/// ```
/// use jwt_gate::Grants;
///
/// let none = Grants::default();
/// assert!(!none.has_scope("orders:read"));
/// assert_eq!(none.scopes().count(), 0);
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Grants(Option<Arc<[u8]>>);

// A token's grants are one allocation, so that a cache hit checking a requirement at ten
// thousand tokens and more meets one or two cold cache lines, not one per name (`cargo bench
// --bench gate -- authorize`): where the roles start (u32, little-endian, from after it), then
// one record a name, its length (u16) and its bytes, scopes (sorted, without repeats) first.
const HEAD: usize = 4;

impl Grants {
    /// Packs `scopes` and `roles`; nothing granted if there are none, or more than a length
    /// can say (a name over 65,535 bytes).
    fn pack(scopes: &[Box<str>], roles: &[Box<str>]) -> Self {
        if scopes.is_empty() && roles.is_empty() {
            return Self(None);
        }
        let records = |names: &[Box<str>]| names.iter().map(|name| 2 + name.len()).sum::<usize>();
        let (scope_bytes, role_bytes) = (records(scopes), records(roles));
        let Ok(roles_at) = u32::try_from(scope_bytes) else {
            return Self(None);
        };
        let mut packed = Vec::with_capacity(HEAD + scope_bytes + role_bytes);
        packed.extend_from_slice(&roles_at.to_le_bytes());
        for name in scopes.iter().chain(roles) {
            let Ok(len) = u16::try_from(name.len()) else {
                return Self(None);
            };
            packed.extend_from_slice(&len.to_le_bytes());
            packed.extend_from_slice(name.as_bytes());
        }
        Self(Some(packed.into()))
    }

    /// The scopes' records and the roles'.
    fn records(&self) -> (&[u8], &[u8]) {
        self.0
            .as_deref()
            .and_then(<[u8]>::split_first_chunk::<HEAD>)
            .and_then(|(roles_at, records)| {
                records.split_at_checked(u32::from_le_bytes(*roles_at) as usize)
            })
            .unwrap_or_default()
    }

    /// Whether the token was granted `scope` (by `scope` or `scp`).
    pub fn has_scope(&self, scope: &str) -> bool {
        Names(self.records().0).any(|name| same_bytes(name, scope.as_bytes()))
    }

    /// Whether the token holds `role` at the verifier's roles claim path.
    pub fn has_role(&self, role: &str) -> bool {
        Names(self.records().1).any(|name| same_bytes(name, role.as_bytes()))
    }

    /// The granted scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        Names(self.records().0).map(as_str)
    }

    /// The roles held.
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        Names(self.records().1).map(as_str)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// Bytes held beyond the handle, for the cache's weight.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.0
            .as_ref()
            .map_or(0, |packed| 2 * size_of::<usize>() + packed.len())
    }

    /// Reads the grants of a verified token's payload: `scope` (space-separated), `scp`
    /// (space-separated string, or array) and the roles at `roles`. A token whose grant
    /// claims are of another shape, or repeated, grants nothing: it stays valid, and every
    /// requirement refuses it.
    #[cfg(test)]
    pub(crate) fn read(payload: &[u8], roles: &ClaimPath) -> Self {
        read_claims::<de::IgnoredAny>(payload, roles)
            .map_or_else(|_| Self(None), |(_, grants)| grants)
    }
}

impl fmt::Debug for Grants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grants")
            .field("scopes", &self.scopes().collect::<Vec<_>>())
            .field("roles", &self.roles().collect::<Vec<_>>())
            .finish()
    }
}

/// The names in a run of packed [`Grants`] records, in order.
struct Names<'a>(&'a [u8]);

impl<'a> Iterator for Names<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<Self::Item> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let (name, rest) = rest.split_at_checked(usize::from(u16::from_le_bytes(*len)))?;
        self.0 = rest;
        Some(name)
    }
}

/// A packed name: whole `str`s were packed, so it is always UTF-8.
fn as_str(name: &[u8]) -> &str {
    std::str::from_utf8(name).unwrap_or_default()
}

/// Deserializes a token's payload as `T` (its claims) and reads its [`Grants`] as
/// `Grants::read` does, in the same pass: each grant claim's value is parsed once, looked at,
/// and handed on to `T`, so a token's first verification does not parse its payload twice.
#[cfg(test)]
pub(crate) fn read_claims<'de, T: serde::Deserialize<'de>>(
    payload: &'de [u8],
    roles: &ClaimPath,
) -> serde_json::Result<(T, Grants)> {
    read_claims_and_kinds(payload, roles).map(|(claims, grants, _)| (claims, grants))
}

/// [`read_claims`], and the payload's `typ` claims (every string one, a repeated one too):
/// the kind of token some identity providers write there (Keycloak's `ID`, `Refresh`).
pub(crate) fn read_claims_and_kinds<'de, T: serde::Deserialize<'de>>(
    payload: &'de [u8],
    roles: &ClaimPath,
) -> serde_json::Result<(T, Grants, Vec<Box<str>>)> {
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    let mut found = Found::default();
    let claims = T::deserialize(Spy {
        inner: &mut deserializer,
        notes: Notes {
            roles,
            found: &mut found,
        },
    })?;
    deserializer.end()?;
    let kinds = std::mem::take(&mut found.kinds);
    Ok((claims, found.into_grants(), kinds))
}

/// Which noted claim a top-level key names: a grant claim, or the token's kind.
#[derive(Clone, Copy)]
enum GrantClaim {
    Scope,
    Scp,
    Roles,
    /// `typ`: not a grant, but read in the same pass.
    Kind,
}

impl GrantClaim {
    fn of(key: &str, roles: &ClaimPath) -> Option<Self> {
        match key {
            "scope" => Some(Self::Scope),
            "scp" => Some(Self::Scp),
            key if key == roles.first() => Some(Self::Roles),
            "typ" => Some(Self::Kind),
            _ => None,
        }
    }
}

/// The grant claims met so far.
#[derive(Default)]
struct Found {
    scope: Option<Vec<Box<str>>>,
    scp: Option<Vec<Box<str>>>,
    roles: Option<Vec<Box<str>>>,
    /// A grant claim was repeated, or a scope claim was of another shape: nothing is granted.
    spoilt: bool,
    /// The string `typ` claims met.
    kinds: Vec<Box<str>>,
}

impl Found {
    fn record(&mut self, claim: GrantClaim, value: &serde_json::Value, roles: &ClaimPath) {
        let (slot, names) = match claim {
            GrantClaim::Scope => (&mut self.scope, scope_names(value)),
            GrantClaim::Scp => (&mut self.scp, scope_names(value)),
            GrantClaim::Roles => (&mut self.roles, Some(roles_at(value, &roles.segments[1..]))),
            GrantClaim::Kind => {
                self.kinds.extend(value.as_str().map(Box::from));
                return;
            }
        };
        match names {
            Some(names) if slot.is_none() => *slot = Some(names),
            _ => self.spoilt = true,
        }
    }

    fn into_grants(self) -> Grants {
        if self.spoilt {
            return Grants(None);
        }
        let mut scopes: Vec<Box<str>> = self.scope.into_iter().chain(self.scp).flatten().collect();
        scopes.sort_unstable();
        scopes.dedup();
        Grants::pack(&scopes, &self.roles.unwrap_or_default())
    }
}

/// Scope names from a space-separated string or an array of strings; `None` for any other
/// shape.
fn scope_names(value: &serde_json::Value) -> Option<Vec<Box<str>>> {
    match value {
        serde_json::Value::String(names) => {
            Some(names.split_ascii_whitespace().map(Box::from).collect())
        }
        serde_json::Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(Box::from))
            .collect(),
        _ => None,
    }
}

/// Where the grant claims are noted, and at which path roles are.
struct Notes<'a> {
    roles: &'a ClaimPath,
    found: &'a mut Found,
}

/// The payload's deserializer, seen through: the top-level object's grant claims are noted on
/// their way to the claims type. Everything else passes straight through.
struct Spy<'a, D> {
    inner: D,
    notes: Notes<'a>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Spy<'_, D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let (inner, visitor) = self.split(visitor);
        inner.deserialize_any(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        let (inner, visitor) = self.split(visitor);
        inner.deserialize_map(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let (inner, visitor) = self.split(visitor);
        inner.deserialize_struct(name, fields, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct enum identifier
        ignored_any
    }
}

impl<'a, D> Spy<'a, D> {
    fn split<V>(self, visitor: V) -> (D, SpyVisitor<'a, V>) {
        let notes = self.notes;
        (self.inner, SpyVisitor { visitor, notes })
    }
}

struct SpyVisitor<'a, V> {
    visitor: V,
    notes: Notes<'a>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for SpyVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.visitor.expecting(f)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.visitor.visit_map(SpyMap {
            map,
            notes: self.notes,
            pending: None,
        })
    }
}

struct SpyMap<'a, A> {
    map: A,
    notes: Notes<'a>,
    /// The grant claim whose key was just read: its value is to be noted.
    pending: Option<GrantClaim>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SpyMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.map.next_key_seed(KeySpy {
            seed,
            roles: self.notes.roles,
            pending: &mut self.pending,
        })
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let Some(claim) = self.pending.take() else {
            return self.map.next_value_seed(seed);
        };
        let value: serde_json::Value = self.map.next_value()?;
        self.notes.found.record(claim, &value, self.notes.roles);
        seed.deserialize(value).map_err(de::Error::custom)
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// Reads a key, notes whether it names a grant claim, and hands it on as it came (borrowed
/// from the payload when it has no escapes).
struct KeySpy<'a, K> {
    seed: K,
    roles: &'a ClaimPath,
    pending: &'a mut Option<GrantClaim>,
}

impl<'de, K: DeserializeSeed<'de>> DeserializeSeed<'de> for KeySpy<'_, K> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<K::Value, D::Error> {
        use serde::de::value::{BorrowedStrDeserializer, StringDeserializer};

        enum Key<'de> {
            Borrowed(&'de str),
            Owned(String),
        }

        struct KeyVisitor;

        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claim name")
            }

            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }

            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key.to_owned()))
            }

            fn visit_string<E: de::Error>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key::Owned(key))
            }
        }

        match deserializer.deserialize_str(KeyVisitor)? {
            Key::Borrowed(key) => {
                *self.pending = GrantClaim::of(key, self.roles);
                self.seed.deserialize(BorrowedStrDeserializer::new(key))
            }
            Key::Owned(key) => {
                *self.pending = GrantClaim::of(&key, self.roles);
                self.seed.deserialize(StringDeserializer::new(key))
            }
        }
    }
}

/// The strings at `path` below `value`: an array's strings (other items skipped), or one
/// string; nothing for any other shape.
fn roles_at(value: &serde_json::Value, path: &[Box<str>]) -> Vec<Box<str>> {
    let mut value = value;
    for segment in path {
        match value.get(&**segment) {
            Some(inner) => value = inner,
            None => return Vec::new(),
        }
    }
    match value {
        serde_json::Value::String(role) => vec![Box::from(role.as_str())],
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|item| item.as_str().map(Box::from))
            .collect(),
        _ => Vec::new(),
    }
}

type Predicate<C> = Arc<dyn Fn(&Claims<C>) -> bool + Send + Sync>;

/// What a request's token must hold: every scope, every role and every predicate listed.
///
/// Scope and role names are configuration: a name that is empty or has a character RFC 6749
/// does not allow in a scope (a space, `"`, `\`, a control or non-ASCII character) panics
/// when the requirement is made, never at a request.
///
/// ```
/// use jwt_gate::{Claims, Require};
///
/// #[derive(Clone, serde::Deserialize)]
/// struct Tenant { tenant: String }
///
/// let write = Require::scope("orders:write");
/// let admin = Require::role("admin").and_scope("orders:read");
/// // With your own claims type:
/// let acme = Require::predicate("tenant acme", |claims: &Claims<Tenant>| claims.extra.tenant == "acme")
///     .and_scope("orders:read");
/// ```
///
/// A gate for a Keycloak realm's tokens, roles of the client `orders-api`
/// (`docs/providers.md` has the other providers):
///
/// ```
/// use http::Method;
/// use jwt_gate::{ClaimPath, JwtAuthLayer, Keys, Require, TokenVerifier, Validation};
///
/// fn gate(keys: Keys) -> Result<JwtAuthLayer, Box<dyn std::error::Error>> {
///     let verifier = TokenVerifier::builder(keys)
///         .validation(Validation::third_party("https://sso.example/realms/acme", "orders-api"))
///         .roles_claim(ClaimPath::new("resource_access.orders-api.roles")?)
///         .build();
///     Ok(JwtAuthLayer::new(verifier)
///         .open_path("/health")
///         .require(Require::scope("orders:read"))
///         .require_route(Some(Method::POST), "/orders", Require::role("writer")))
/// }
/// # gate(Keys::hs256(b"an example secret of 32 bytes!!!").unwrap()).unwrap();
/// ```
pub struct Require<C = ()> {
    scopes: Vec<Box<str>>,
    roles: Vec<Box<str>>,
    predicates: Vec<(&'static str, Predicate<C>)>,
    /// The required scopes, space-separated, for the `scope` attribute of the challenge.
    scope_attribute: Option<Arc<str>>,
}

impl<C> Clone for Require<C> {
    fn clone(&self) -> Self {
        Self {
            scopes: self.scopes.clone(),
            roles: self.roles.clone(),
            predicates: self.predicates.clone(),
            scope_attribute: self.scope_attribute.clone(),
        }
    }
}

impl<C> fmt::Debug for Require<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Require")
            .field("scopes", &self.scopes)
            .field("roles", &self.roles)
            .field(
                "predicates",
                &self
                    .predicates
                    .iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<C> Default for Require<C> {
    /// Requires nothing beyond a valid token.
    fn default() -> Self {
        Self {
            scopes: Vec::new(),
            roles: Vec::new(),
            predicates: Vec::new(),
            scope_attribute: None,
        }
    }
}

fn checked_name(kind: &str, name: &str) -> Box<str> {
    assert!(
        !name.is_empty()
            && name
                .bytes()
                .all(|byte| byte > 0x20 && byte < 0x7f && byte != b'"' && byte != b'\\'),
        "jwt-gate: the {kind} {name:?} cannot be required: names are non-empty printable ASCII \
         without spaces, '\"' or '\\\\' (RFC 6749 §3.3)"
    );
    Box::from(name)
}

impl Require {
    /// Requires the scope `scope` (for a gate whose claims type is `Claims<()>`; with your own
    /// claims type, start from `Require::default().and_scope(..)`).
    pub fn scope(scope: &str) -> Self {
        Self::default().and_scope(scope)
    }

    /// Requires the role `role`, at the verifier's
    /// [roles claim path](crate::TokenVerifierBuilder::roles_claim) (for `Claims<()>`; with your
    /// own claims type, start from `Require::default().and_role(..)`).
    pub fn role(role: &str) -> Self {
        Self::default().and_role(role)
    }
}

impl<C> Require<C> {
    /// Requires `check` to hold for the token's claims; `name` is what a refusal says is
    /// missing (fixed text, so it never echoes the token).
    pub fn predicate(
        name: &'static str,
        check: impl Fn(&Claims<C>) -> bool + Send + Sync + 'static,
    ) -> Self {
        Self::default().and_predicate(name, check)
    }

    /// Requires the scope `scope` too.
    #[must_use]
    pub fn and_scope(mut self, scope: &str) -> Self {
        self.scopes.push(checked_name("scope", scope));
        self.scope_attribute = Some(Arc::from(self.scopes.join(" ")));
        self
    }

    /// Requires the role `role` too.
    #[must_use]
    pub fn and_role(mut self, role: &str) -> Self {
        self.roles.push(checked_name("role", role));
        self
    }

    /// Requires `check` to hold too.
    #[must_use]
    pub fn and_predicate(
        mut self,
        name: &'static str,
        check: impl Fn(&Claims<C>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicates.push((name, Arc::new(check)));
        self
    }

    /// `Ok` when `claims` and `grants` meet every part of the requirement; otherwise what is
    /// missing. Allocates only to describe a refusal.
    pub(crate) fn check(&self, claims: &Claims<C>, grants: &Grants) -> Result<(), Box<Forbidden>> {
        let scopes_met = self.scopes.iter().all(|scope| grants.has_scope(scope));
        let roles_met = self.roles.iter().all(|role| grants.has_role(role));
        let failed = self.predicates.iter().position(|(_, check)| !check(claims));
        if scopes_met && roles_met && failed.is_none() {
            return Ok(());
        }
        Err(Box::new(Forbidden {
            scope_attribute: self.scope_attribute.clone(),
            missing_scopes: missing(&self.scopes, |scope| grants.has_scope(scope)),
            missing_roles: missing(&self.roles, |role| grants.has_role(role)),
            failed_predicates: self
                .predicates
                .iter()
                .filter(|(_, check)| !check(claims))
                .map(|(name, _)| *name)
                .collect(),
        }))
    }
}

fn missing(names: &[Box<str>], held: impl Fn(&str) -> bool) -> Vec<Box<str>> {
    names.iter().filter(|name| !held(name)).cloned().collect()
}

/// What a refused request lacked, for the `403`: the `scope` attribute of the challenge and
/// the body's `missing` object. Holds configuration names only, never request data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forbidden {
    pub(crate) scope_attribute: Option<Arc<str>>,
    pub(crate) missing_scopes: Vec<Box<str>>,
    pub(crate) missing_roles: Vec<Box<str>>,
    pub(crate) failed_predicates: Vec<&'static str>,
}

impl Forbidden {
    pub(crate) fn missing_json(&self) -> serde_json::Value {
        let mut missing = serde_json::Map::new();
        if !self.missing_scopes.is_empty() {
            missing.insert("scopes".into(), serde_json::json!(self.missing_scopes));
        }
        if !self.missing_roles.is_empty() {
            missing.insert("roles".into(), serde_json::json!(self.missing_roles));
        }
        if !self.failed_predicates.is_empty() {
            missing.insert(
                "predicates".into(),
                serde_json::json!(self.failed_predicates),
            );
        }
        serde_json::Value::Object(missing)
    }
}

/// A requirement for one route: a method (any when `None`) and a path pattern.
struct RouteRule<C> {
    method: Option<Method>,
    pattern: Pattern,
    require: Require<C>,
}

impl<C> Clone for RouteRule<C> {
    fn clone(&self) -> Self {
        Self {
            method: self.method.clone(),
            pattern: self.pattern.clone(),
            require: self.require.clone(),
        }
    }
}

/// A gate's requirements: on every request with a token, and per route.
pub(crate) struct Requirements<C> {
    everywhere: Vec<Require<C>>,
    routes: Vec<RouteRule<C>>,
}

impl<C> Default for Requirements<C> {
    fn default() -> Self {
        Self {
            everywhere: Vec::new(),
            routes: Vec::new(),
        }
    }
}

impl<C> Clone for Requirements<C> {
    fn clone(&self) -> Self {
        Self {
            everywhere: self.everywhere.clone(),
            routes: self.routes.clone(),
        }
    }
}

impl<C> fmt::Debug for Requirements<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Requirements")
            .field("everywhere", &self.everywhere)
            .field(
                "routes",
                &self
                    .routes
                    .iter()
                    .map(|rule| (&rule.method, &rule.pattern, &rule.require))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl<C> Requirements<C> {
    pub(crate) fn everywhere(&mut self, require: Require<C>) {
        self.everywhere.push(require);
    }

    pub(crate) fn route(&mut self, method: Option<Method>, pattern: Pattern, require: Require<C>) {
        self.routes.push(RouteRule {
            method,
            pattern,
            require,
        });
    }

    /// The route rules that apply to a request. Every rule whose method and pattern match
    /// applies (they add up). A path not in canonical form matches every rule: a router that
    /// normalises it later could route it anywhere, so it must meet them all. So does a
    /// method with lower-case letters (`post`), which a server may read as `POST` or not. A
    /// path with escapes meets the rules of both its spellings, as sent and decoded, and a
    /// path meets the rules it matches as a case-insensitive or lenient router would route it
    /// ([`Pattern::matches_in_any_reading`]).
    /// A rule for `GET` holds `HEAD` too ([`holds`]).
    /// Whether it is canonical is asked only of a path some rule does not match, once.
    fn on_route<'a>(
        &'a self,
        method: &'a Method,
        path: &'a str,
    ) -> impl Iterator<Item = &'a Require<C>> + 'a {
        let mut canonical = None;
        // Both spellings of a path with escapes: as sent, and as a decoding server routes it
        // (decoded once, and only when a rule's method matches and the path as sent does not).
        let mut spelled = None;
        self.routes
            .iter()
            .filter(move |rule| {
                (rule
                    .method
                    .as_ref()
                    .is_none_or(|wanted| holds(wanted, method))
                    && (rule.pattern.matches_in_any_reading(path)
                        || spelled
                            .get_or_insert_with(|| decoded(path))
                            .as_deref()
                            .is_some_and(|decoded| rule.pattern.matches_in_any_reading(decoded))))
                    || !*canonical
                        .get_or_insert_with(|| is_canonical(path) && is_canonical_method(method))
            })
            .map(|rule| &rule.require)
    }

    /// Whether any route rule is for one method only.
    pub(crate) fn by_method(&self) -> bool {
        self.routes.iter().any(|rule| rule.method.is_some())
    }

    /// Whether a route rule applies to this request (it then needs a token, even on an
    /// optional path).
    pub(crate) fn has_route_rule(&self, method: &Method, path: &str) -> bool {
        self.on_route(method, path).next().is_some()
    }

    /// Checks a request's claims against every requirement that applies to it.
    pub(crate) fn check(
        &self,
        method: &Method,
        path: &str,
        claims: &Claims<C>,
        grants: &Grants,
    ) -> Result<(), Box<Forbidden>> {
        self.everywhere
            .iter()
            .chain(self.on_route(method, path))
            .try_for_each(|require| require.check(claims, grants))
    }
}

/// Applies a [`Require`] to a service of its own: a nested axum router, one tonic service.
/// It reads the [`Claims<C>`] and [`Grants`] a [`JwtAuthLayer`](crate::JwtAuthLayer) put in
/// the request extensions, so it goes *inside* the gate. Without claims (no gate in front, or
/// an optional path without a token) the request is refused `401`; without what the
/// requirement names, `403` (`grpc-status: 7` over gRPC), rendered as the gate renders.
///
/// ```
/// use axum::{routing::get, Router};
/// use jwt_gate::{JwtAuthLayer, Keys, Require, RequireLayer};
///
/// let keys = Keys::hs256(b"an example secret of 32 bytes!!!").unwrap();
/// let admin: Router = Router::new()
///     .route("/users", get(|| async { "every user" }))
///     .layer(RequireLayer::new(Require::role("admin")));
/// let app: Router = Router::new()
///     .route("/me", get(|| async { "me" }))
///     .nest("/admin", admin)
///     .layer(JwtAuthLayer::from_keys(keys));
/// ```
pub struct RequireLayer<C = ()> {
    require: Arc<Require<C>>,
    realm: Arc<str>,
    metrics: GateMetrics,
}

impl<C> Clone for RequireLayer<C> {
    fn clone(&self) -> Self {
        Self {
            require: self.require.clone(),
            realm: self.realm.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

impl<C> fmt::Debug for RequireLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireLayer")
            .field("require", &self.require)
            .field("realm", &self.realm)
            .finish()
    }
}

impl<C> RequireLayer<C> {
    /// A layer requiring `require`, answering in the default realm.
    pub fn new(require: Require<C>) -> Self {
        Self {
            require: Arc::new(require),
            realm: Arc::from(DEFAULT_REALM),
            // Its refusals count with the gate's, by reason.
            metrics: GateMetrics::register(),
        }
    }

    /// Names `realm` in the challenges (use the verifier's,
    /// [`TokenVerifier::realm`](crate::TokenVerifier::realm)).
    ///
    /// # Panics
    ///
    /// As [`TokenVerifierBuilder::realm`](crate::TokenVerifierBuilder::realm).
    #[must_use]
    pub fn realm(mut self, realm: &str) -> Self {
        crate::validate::assert_realm(realm);
        self.realm = Arc::from(realm);
        self
    }
}

impl<S, C> Layer<S> for RequireLayer<C> {
    type Service = RequireService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`RequireLayer`].
pub struct RequireService<S, C = ()> {
    inner: S,
    layer: RequireLayer<C>,
}

impl<S: Clone, C> Clone for RequireService<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for RequireService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for RequireService<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    C: Send + Sync + 'static,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = RequireFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let verdict = match request.extensions().get::<Claims<C>>() {
            None => Err((AuthError::MissingCredentials, None)),
            Some(claims) => {
                let grants = request
                    .extensions()
                    .get::<Grants>()
                    .cloned()
                    .unwrap_or_default();
                self.layer
                    .require
                    .check(claims, &grants)
                    .map_err(|forbidden| (AuthError::InsufficientScope, Some(forbidden)))
            }
        };
        match verdict {
            Ok(()) => RequireFuture {
                state: RequireState::Inner {
                    future: self.inner.call(request),
                },
            },
            Err((error, forbidden)) => RequireFuture {
                state: RequireState::Rejected {
                    response: Some(crate::layer::rejection(
                        error,
                        &self.layer.realm,
                        &self.layer.metrics,
                        forbidden.as_deref(),
                        &request,
                    )),
                },
            },
        }
    }
}

pin_project! {
    /// The response future of [`RequireService`]: the inner service's, or the refusal.
    pub struct RequireFuture<F, B> {
        #[pin]
        state: RequireState<F, B>,
    }
}

pin_project! {
    #[project = RequireStateProjection]
    enum RequireState<F, B> {
        Inner { #[pin] future: F },
        Rejected { response: Option<Response<ResponseBody<B>>> },
    }
}

impl<F, B> fmt::Debug for RequireFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RequireFuture")
    }
}

impl<F, B, E> Future for RequireFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            RequireStateProjection::Inner { future } => future
                .poll(cx)
                .map_ok(|response| response.map(ResponseBody::inner)),
            RequireStateProjection::Rejected { response } => Poll::Ready(Ok(response
                .take()
                .expect("RequireFuture polled after completion"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(payload: &str, roles: &str) -> Grants {
        Grants::read(payload.as_bytes(), &ClaimPath::new(roles).unwrap())
    }

    #[test]
    fn scope_and_scp_in_every_form_are_read() {
        let both = grants(r#"{"scope":"a b","scp":["c"],"sub":"x"}"#, "roles");
        assert_eq!(both.scopes().collect::<Vec<_>>(), ["a", "b", "c"]);
        let entra = grants(r#"{"scp":"read write"}"#, "roles");
        assert!(entra.has_scope("write"));
        assert!(grants("{}", "roles").is_empty());
    }

    /// Packed into one allocation, scopes and roles stay apart, keep every name whole (empty,
    /// non-ASCII, with spaces), and a name too long to pack grants nothing rather than
    /// something else.
    #[test]
    fn packed_grants_keep_scopes_and_roles_apart_and_whole() {
        let both = grants(
            r#"{"scope":"admin b a","roles":["ops","Domain Admins","","d\u00e9v"]}"#,
            "roles",
        );
        assert_eq!(both.scopes().collect::<Vec<_>>(), ["a", "admin", "b"]);
        assert_eq!(
            both.roles().collect::<Vec<_>>(),
            ["ops", "Domain Admins", "", "d\u{e9}v"]
        );
        assert!(both.has_scope("admin") && !both.has_role("admin"));
        assert!(both.has_role("ops") && !both.has_scope("ops"));
        assert!(both.has_role("Domain Admins") && both.has_role("d\u{e9}v"));
        assert!(!both.has_scope("adm") && !both.has_scope("admin b"));
        assert_eq!(
            format!("{both:?}"),
            r#"Grants { scopes: ["a", "admin", "b"], roles: ["ops", "Domain Admins", "", "dév"] }"#
        );
        let only_roles = grants(r#"{"roles":["x"]}"#, "roles");
        assert_eq!(only_roles.scopes().count(), 0);
        assert!(only_roles.has_role("x") && !only_roles.has_scope("x"));
        let long = "s".repeat(70_000);
        let too_long = grants(&format!(r#"{{"scope":"a {long}"}}"#), "roles");
        assert!(too_long.is_empty() && !too_long.has_scope("a"));
        assert_eq!(too_long, Grants::default());
    }

    #[test]
    fn roles_are_read_at_nested_paths_and_other_shapes_grant_nothing() {
        let keycloak = r#"{"realm_access":{"roles":["admin"]},"resource_access":{"orders":{"roles":["writer"]}}}"#;
        assert!(grants(keycloak, "realm_access.roles").has_role("admin"));
        assert!(grants(keycloak, "resource_access.orders.roles").has_role("writer"));
        assert!(!grants(keycloak, "resource_access.billing.roles").has_role("writer"));
        assert!(grants(r#"{"roles":"admin"}"#, "roles").has_role("admin"));
        assert!(grants(r#"{"roles":{"admin":true}}"#, "roles").is_empty());
        assert!(grants(r#"{"roles":[1,"ops"]}"#, "roles").has_role("ops"));
    }

    #[test]
    fn claims_and_grants_come_from_one_pass_and_the_claims_type_still_sees_the_grant_claims() {
        #[derive(serde::Deserialize)]
        struct Own {
            scope: String,
            realm_access: serde_json::Value,
            tenant: String,
        }
        let payload = br#"{"sub":"alice","exp":2,"iat":1,"scope":"a b","tenant":"acme",
            "realm_access":{"roles":["admin"]},"scp":["c"]}"#;
        let roles = ClaimPath::new("realm_access.roles").unwrap();
        let (claims, grants): (Claims<Own>, Grants) = read_claims(payload, &roles).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.extra.scope, "a b");
        assert_eq!(claims.extra.realm_access["roles"][0], "admin");
        assert_eq!(claims.extra.tenant, "acme");
        assert_eq!(grants.scopes().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(grants.has_role("admin"));
        assert_eq!(grants, Grants::read(payload, &roles));
        // A key written with escapes is the same claim name.
        let escaped = br#"{"sub":"bob","exp":2,"iat":1,"sc\u006fpe":"x"}"#;
        let (claims, grants): (Claims, Grants) = read_claims(escaped, &roles).unwrap();
        assert_eq!((claims.sub.as_str(), grants.has_scope("x")), ("bob", true));
    }

    #[test]
    fn a_payload_that_is_not_one_claims_object_is_an_error() {
        let roles = ClaimPath::default();
        for payload in [
            &br#"["sub","exp"]"#[..],
            br#"{"sub":"a","exp":2,"iat":1} {}"#,
            br#"{"sub":"a","exp":2,"iat":1,"scope":"#,
        ] {
            assert!(read_claims::<Claims>(payload, &roles).is_err());
        }
        // A grant claim of another shape spoils the grants, not the claims.
        let (_, grants): (Claims, Grants) =
            read_claims(br#"{"sub":"a","exp":2,"iat":1,"scope":7}"#, &roles).unwrap();
        assert!(grants.is_empty());
    }

    #[test]
    fn a_repeated_grant_claim_grants_nothing() {
        assert!(grants(r#"{"scope":"a","scope":"b"}"#, "roles").is_empty());
        assert!(grants(r#"{"roles":["a"],"roles":["b"]}"#, "roles").is_empty());
        assert!(grants(r#"{"scope":7}"#, "roles").is_empty());
    }

    #[test]
    fn paths_that_cannot_hold_roles_are_refused() {
        for path in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "sub",
            "aud.x",
            "scope",
            "scp",
            "1.2.3.4.5.6.7.8.9",
        ] {
            assert!(ClaimPath::new(path).is_err(), "{path:?}");
        }
        for path in [
            "roles",
            "groups",
            "permissions",
            "realm_access.roles",
            "resource_access.my-api.roles",
        ] {
            assert_eq!(ClaimPath::new(path).unwrap().to_string(), path);
        }
    }

    #[test]
    #[should_panic(expected = "cannot be required")]
    fn a_scope_with_a_quote_is_refused_when_configured() {
        let _ = Require::<()>::scope("a\"b");
    }
}
