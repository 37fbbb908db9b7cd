//! Which paths the gate leaves open or makes optional.

use http::{HeaderMap, Method, Uri};

/// What the gate asks of a request on a given path (and method): see
/// [`JwtAuthLayer::method_path`](crate::JwtAuthLayer::method_path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A valid token is required (the default).
    Protected,
    /// A valid token is used when present; none is fine; an invalid one is still refused.
    Optional,
    /// No token is looked at.
    Open,
}

impl Access {
    /// How much this access asks of a request: what breaks a tie between rules that match
    /// equally well.
    fn strictness(self) -> u8 {
        match self {
            Self::Open => 0,
            Self::Optional => 1,
            Self::Protected => 2,
        }
    }

    pub(crate) fn stricter(self, other: Self) -> Self {
        if other.strictness() > self.strictness() {
            other
        } else {
            self
        }
    }
}

/// `path` with its escapes decoded, if it has any: what a server that decodes before routing
/// routes. Only for a canonical path, whose escapes are all of printable ASCII.
pub(crate) fn decoded(path: &str) -> Option<String> {
    if !path.as_bytes().contains(&b'%') {
        return None;
    }
    String::from_utf8(percent_decoded(path, false)).ok()
}

/// `text` with its `%XX` escapes decoded (a `%` not followed by two hex digits stays as it
/// is), and `+` read as a space where a form says so (query strings, form bodies).
pub(crate) fn percent_decoded(text: impl AsRef<[u8]>, plus_is_space: bool) -> Vec<u8> {
    let bytes = text.as_ref();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match (
            bytes[index],
            bytes.get(index + 1..index + 3).and_then(unhex),
        ) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                index += 3;
            }
            (b'+', _) if plus_is_space => {
                decoded.push(b' ');
                index += 1;
            }
            (byte, _) => {
                decoded.push(byte);
                index += 1;
            }
        }
    }
    decoded
}

#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    Exact(String),
    /// Matches the prefix itself and anything below it, segment-wise: `/auth` matches
    /// `/auth` and `/auth/token`, never `/authz`.
    Prefix(String),
}

impl Pattern {
    pub(crate) fn exact(path: &str) -> Self {
        Self::Exact(path.to_owned())
    }

    pub(crate) fn prefix(prefix: &str) -> Self {
        Self::Prefix(prefix.trim_end_matches('/').to_owned())
    }

    /// Returns how specific the match is, if it matches.
    pub(crate) fn matches(&self, path: &str) -> Option<usize> {
        match self {
            Self::Exact(exact) => {
                same_bytes(path.as_bytes(), exact.as_bytes()).then_some(usize::MAX)
            }
            Self::Prefix(prefix) => is_under(path, prefix).then_some(prefix.len()),
        }
    }

    /// Whether `path` is a spelling of this pattern as a server making `reading` routes it,
    /// and how specific the match is ([`matches`](Self::matches)'s measure). Every reading
    /// matches whatever [`matches`](Self::matches) does, and more. A decision taken on a
    /// reading is only ever kept when it is the stricter one: a requirement adds to what a
    /// request must carry, while an open path matched another way would take a token's check
    /// away. Each reading is one real server's: they are judged apart, never combined, so that
    /// no spelling that no server reads can choose between two rules.
    pub(crate) fn matches_as(&self, reading: Reading, path: &str) -> Option<usize> {
        let ignoring_case = <[u8]>::eq_ignore_ascii_case;
        let (matched, specificity) = match (reading, self) {
            (Reading::Lenient, Self::Exact(exact)) => (
                ignoring_case(
                    without_trailing_slash(path).as_bytes(),
                    without_trailing_slash(exact).as_bytes(),
                ),
                usize::MAX,
            ),
            (Reading::Lenient, Self::Prefix(prefix)) => {
                (is_under_by(path, prefix, ignoring_case), prefix.len())
            }
            (reading, Self::Exact(exact)) => (
                segments_alike(reading, path, without_trailing_slash(exact), true),
                usize::MAX,
            ),
            (reading, Self::Prefix(prefix)) => {
                (segments_alike(reading, path, prefix, false), prefix.len())
            }
        };
        matched.then_some(specificity)
    }

    /// Whether `path` is this pattern in any [`Reading`], or byte for byte.
    pub(crate) fn matches_in_any_reading(&self, path: &str) -> bool {
        self.matches(path).is_some()
            || Reading::ALL
                .into_iter()
                .any(|reading| reading.applies(path) && self.matches_as(reading, path).is_some())
    }
}

/// A way a server routes a path other than byte for byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    /// Its ASCII letters in any case (Express, ASP.NET Core and IIS route so by default), and,
    /// for an exact path, with or without one trailing `/` (Express without `strict`).
    Lenient,
    /// In any case, each segment without its trailing dots and spaces, as IIS and Windows'
    /// file APIs read it: `/static/private./x` is `/static/private/x`.
    Windows,
    /// Letters as written, the last segment without a format suffix and a trailing `/`, as
    /// Rails' `(.:format)` and Django REST's format suffixes route it: `/orders.json` is
    /// `/orders`.
    Format,
    /// As [`Format`](Self::Format), in any case: ASP.NET Core routes case-insensitively and
    /// reads a `.{format?}` template's suffix (`/Orders.xml` is `/orders`).
    AnyCaseFormat,
}

impl Reading {
    pub(crate) const ALL: [Self; 4] = [
        Self::Lenient,
        Self::Windows,
        Self::Format,
        Self::AnyCaseFormat,
    ];

    /// Whether this reading can tell `path` apart from the exact and lenient ones: the others
    /// read a `.`, a space or a trailing `/` otherwise, and most paths have none of them.
    pub(crate) fn applies(self, path: &str) -> bool {
        self == Self::Lenient
            || path.ends_with('/')
            || path.bytes().any(|byte| byte == b'.' || byte == b' ')
    }
}

/// Whether `path` begins with `pattern`'s segments (and, when `whole`, has no others), as a
/// server making `reading` compares them.
fn segments_alike(reading: Reading, path: &str, pattern: &str, whole: bool) -> bool {
    let mut segments = without_trailing_slash(path).split('/').peekable();
    for wanted in pattern.split('/') {
        let Some(segment) = segments.next() else {
            return false;
        };
        let last = segments.peek().is_none();
        let alike = match reading {
            Reading::Lenient => segment.eq_ignore_ascii_case(wanted),
            // Both sides, as such a server reads the rule's path too (`/a.` is `/a` there).
            Reading::Windows => segment
                .trim_end_matches(['.', ' '])
                .eq_ignore_ascii_case(wanted.trim_end_matches(['.', ' '])),
            Reading::Format | Reading::AnyCaseFormat => {
                let same = |spelling: &str| match reading {
                    Reading::Format => same_bytes(spelling.as_bytes(), wanted.as_bytes()),
                    _ => spelling.eq_ignore_ascii_case(wanted),
                };
                same(segment)
                    || (last
                        && segment
                            .rsplit_once('.')
                            .is_some_and(|(stem, suffix)| !suffix.is_empty() && same(stem)))
            }
        };
        if !alike {
            return false;
        }
    }
    !whole || segments.next().is_none()
}

/// Whether a requirement for `rule_method` holds a request by `method`: its own method, and
/// for a `GET` rule also `HEAD`, which servers (axum, Express, Flask) answer with the `GET`
/// handler. (Access is judged for `HEAD` both ways instead: see [`PathRules::access_for`].)
pub(crate) fn holds(rule_method: &Method, method: &Method) -> bool {
    rule_method == method || (*rule_method == Method::GET && *method == Method::HEAD)
}

/// `path` without one trailing `/`, unless it is the root.
fn without_trailing_slash(path: &str) -> &str {
    match path.strip_suffix('/') {
        Some(trimmed) if !trimmed.is_empty() => trimmed,
        _ => path,
    }
}

/// Whether `path` is `prefix` (given without a trailing `/`) or below it, segment-wise:
/// `/auth` holds `/auth` and `/auth/token`, never `/authz`.
pub(crate) fn is_under(path: &str, prefix: &str) -> bool {
    is_under_by(path, prefix, same_bytes)
}

/// [`is_under`], the prefix compared by `same`.
fn is_under_by(path: &str, prefix: &str, same: impl Fn(&[u8], &[u8]) -> bool) -> bool {
    let (path, prefix) = (path.as_bytes(), prefix.as_bytes());
    path.split_at_checked(prefix.len())
        .is_some_and(|(head, rest)| same(head, prefix) && (rest.is_empty() || rest[0] == b'/'))
}

/// Whether two byte strings are equal, compared in place, a word at a time. The paths and
/// names a gate compares on every request are a few bytes long, and for those a call to the
/// C library's `memcmp` (what `==` on slices becomes) costs more than the comparison: four
/// such calls were most of what requirements added to a cache hit (`cargo bench --bench gate
/// -- authorize`).
#[inline]
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, b_words) = (a.chunks_exact(8), b.chunks_exact(8));
    let (a_rest, b_rest) = (a_words.remainder(), b_words.remainder());
    a_words.zip(b_words).all(|(x, y)| word(x) == word(y))
        && a_rest.iter().zip(b_rest).all(|(x, y)| x == y)
}

fn word(bytes: &[u8]) -> u64 {
    <[u8; 8]>::try_from(bytes).map_or(0, u64::from_ne_bytes)
}

/// The configured exceptions to "every path needs a token".
#[derive(Debug, Clone, Default)]
pub(crate) struct PathRules {
    /// Each rule, for one method or (`None`) for all.
    rules: Vec<(Option<Method>, Pattern, Access)>,
}

impl PathRules {
    pub(crate) fn exact(&mut self, path: &str, access: Access) {
        self.exact_for(None, path, access);
    }

    pub(crate) fn prefix(&mut self, prefix: &str, access: Access) {
        self.prefix_for(None, prefix, access);
    }

    pub(crate) fn exact_for(&mut self, method: Option<Method>, path: &str, access: Access) {
        self.rules.push((method, Pattern::exact(path), access));
    }

    pub(crate) fn prefix_for(&mut self, method: Option<Method>, prefix: &str, access: Access) {
        self.rules.push((method, Pattern::prefix(prefix), access));
    }

    /// The access rule for a request to `path` with `method`: an exact rule beats a prefix, a
    /// longer prefix a shorter, and at the same path a rule for the method beats one for all.
    ///
    /// A path that is not in canonical form is always protected: a router or upstream that
    /// normalises `/health/../admin` or `/auth%2F..%2Fadmin` after the gate must never
    /// receive it as "open". So is a method with lower-case letters ([`is_canonical_method`]).
    ///
    /// A path with escapes (`/users/a%40b`) is judged by both its spellings, as sent and
    /// decoded, and the stricter answer wins: an upstream that decodes before routing serves
    /// the second, one that does not the first. Each spelling is also judged as a
    /// case-insensitive or lenient router reads it ([`Pattern::matches_as`], each [`Reading`]
    /// apart), and again
    /// the stricter answer wins: `/docs/INTERNAL` is protected under an open `/docs` that
    /// protects `/docs/internal`, and `/HEALTH` is not opened by an open `/health`. A `HEAD`
    /// is judged as itself and as the `GET` whose handler most servers answer it with, the
    /// stricter answer winning. Of rules that match equally well, the strictest decides.
    pub(crate) fn access_for(&self, method: &Method, path: &str) -> Access {
        if self.rules.is_empty() || !is_canonical(path) || !is_canonical_method(method) {
            return Access::Protected;
        }
        let access = self.judge_spellings(method, path);
        if method == Method::HEAD {
            access.stricter(self.judge_spellings(&Method::GET, path))
        } else {
            access
        }
    }

    /// The stricter answer of the path's spellings: as sent and decoded, each matched
    /// exactly and in every reading that applies to it.
    fn judge_spellings(&self, method: &Method, path: &str) -> Access {
        let judge = |path: &str| {
            Reading::ALL
                .into_iter()
                .filter(|reading| reading.applies(path))
                .fold(
                    self.judge(method, path, Pattern::matches),
                    |access, reading| {
                        access.stricter(self.judge(method, path, |pattern, path| {
                            pattern.matches_as(reading, path)
                        }))
                    },
                )
        };
        let as_sent = judge(path);
        match decoded(path) {
            Some(decoded) => as_sent.stricter(judge(&decoded)),
            None => as_sent,
        }
    }

    fn judge(
        &self,
        method: &Method,
        path: &str,
        matches: impl Fn(&Pattern, &str) -> Option<usize>,
    ) -> Access {
        self.rules
            .iter()
            .filter(|(only, _, _)| only.as_ref().is_none_or(|only| only == method))
            .filter_map(|(only, pattern, access)| {
                matches(pattern, path).map(|specificity| {
                    ((specificity, only.is_some(), access.strictness()), *access)
                })
            })
            .max_by_key(|(rank, _)| *rank)
            .map_or(Access::Protected, |(_, access)| access)
    }

    /// Whether any rule is for one method only.
    pub(crate) fn by_method(&self) -> bool {
        self.rules.iter().any(|(method, _, _)| method.is_some())
    }

    /// As [`access_for`](Self::access_for), for a `GET`.
    #[cfg(test)]
    pub(crate) fn access(&self, path: &str) -> Access {
        self.access_for(&Method::GET, path)
    }
}

/// Whether `path` is in the one form that every server and framework reads the same way, so
/// that the prefix the gate matched is the prefix the upstream serves.
///
/// An allowlist, not a list of known tricks: servlet containers strip `;` parameters and
/// resolve `..` after decoding, some servers decode twice (`%252e`), understand `%u002e` or
/// overlong UTF-8 (`%c0%ae`), or read `\` as `/`. Anything outside plain path characters and
/// escapes of harmless printable ASCII is refused, so none of that can turn an open path into
/// another one. Checked in place: this runs on every request once any path rule exists.
pub(crate) fn is_canonical(path: &str) -> bool {
    // One pass, with no searcher to set up: it runs on every request once a path rule or a
    // route requirement exists.
    let bytes = path.as_bytes();
    let mut index = 0;
    // The current segment: its length, and whether it is dots only (`.`, `..`, `...`: some
    // servers, IIS among them, trim trailing dots, so every such segment is refused).
    let (mut segment_len, mut dots_only) = (0, true);
    while index < bytes.len() {
        let byte = bytes[index];
        if byte == b'/' {
            // `//` (an empty segment), or a dot segment ending here.
            if (index > 0 && segment_len == 0) || (segment_len > 0 && dots_only) {
                return false;
            }
            (segment_len, dots_only) = (0, true);
            index += 1;
            continue;
        }
        if byte == b'%' {
            match bytes.get(index + 1..index + 3).and_then(unhex) {
                Some(decoded) if is_harmless_escape(decoded) => index += 3,
                _ => return false,
            }
            dots_only = false;
        } else if is_path_char(byte) {
            dots_only &= byte == b'.';
            index += 1;
        } else {
            return false;
        }
        segment_len += 1;
    }
    segment_len == 0 || !dots_only
}

/// RFC 3986 `pchar` without `%` (escapes are checked apart) and without `;`, which servlet
/// containers take as the start of a path parameter and strip.
fn is_path_char(byte: u8) -> bool {
    PATH_CHARS[usize::from(byte)]
}

/// [`is_path_char`] as a table: one load a byte instead of a chain of comparisons.
const PATH_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        table[byte] = is_path_char_by_rule(byte as u8);
        byte += 1;
    }
    table
};

const fn is_path_char_by_rule(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'/' | b'-'
                | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b'='
                | b':'
                | b'@'
        )
}

/// What an escape may decode to: printable ASCII (space included, so `/static/a%20b` stays
/// open), but never an unreserved character (letters, digits, `-`, `.`, `_`, `~`: RFC 3986
/// says they are never escaped, and a server that decodes before routing reads `/%6frders` as
/// `/orders`), a separator (`/`, `\\`), a second round of decoding (`%`) or a path parameter
/// (`;`). Non-ASCII bytes are refused: overlong UTF-8 decodes to `.`. What is left (`%40` for
/// `@`, `%20`) is judged in both spellings ([`decoded`]).
fn is_harmless_escape(byte: u8) -> bool {
    (0x20..0x7f).contains(&byte)
        && !byte.is_ascii_alphanumeric()
        && !matches!(byte, b'-' | b'.' | b'_' | b'~' | b'/' | b'\\' | b'%' | b';')
}

/// The headers through which a client asks the application for another method than the
/// request's own: Rack (Rails, Sinatra), Express's `method-override`, Symfony, ASP.NET Core
/// and Google's APIs read one or another of them on a `POST`.
const METHOD_OVERRIDE_HEADERS: [&str; 3] = [
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// The methods a request asks the application to act on instead of its own: each value of a
/// method-override header (also spelt with `_`, as a CGI or Rack server reads it) and of a
/// `_method` query parameter (Express's `method-override('_method')`, Symfony and Laravel;
/// after a `&` or a `;`), as the frameworks read them: decoded, trimmed and upper-cased (Rack and Symfony upper-case
/// `delete`). Each method once; a value that is no method (`DELETE, GET`) ends the list with
/// one that has lower-case letters, never canonical ([`is_canonical_method`]), so the request
/// is judged the strictest way. A rule that depends on the method must hold for each of them
/// as for the request's own: whichever one the application acts on, it was judged. A
/// `_method` in a form body is out of sight (see `docs/security.md`).
pub(crate) fn overriding_methods(uri: &Uri, headers: &HeaderMap) -> Vec<Method> {
    let mut methods = Vec::new();
    let headers = headers
        .iter()
        .filter(|(name, _)| {
            METHOD_OVERRIDE_HEADERS
                .iter()
                .any(|header| reads_as(name.as_str(), header))
        })
        .map(|(_, value)| value.as_bytes().to_vec());
    let parameters = uri
        .query()
        .unwrap_or_default()
        // PHP splits on each byte of `arg_separator.input`, which sites set to `&;`, and
        // Rack 2 on `;` too: a parameter after a `;` is a parameter to them.
        .split(['&', ';'])
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            is_method_parameter(&percent_decoded(key, true)).then(|| percent_decoded(value, true))
        });
    for value in headers.chain(parameters) {
        // A request naming many methods is judged the strictest way at once: each method
        // costs a judgement of the path and the routes, before any token is looked at.
        let method = if methods.len() == MOST_OVERRIDES {
            not_a_method()
        } else {
            Method::from_bytes(&value.trim_ascii().to_ascii_uppercase())
                .unwrap_or_else(|_| not_a_method())
        };
        let last = !is_canonical_method(&method);
        if !methods.contains(&method) {
            methods.push(method);
        }
        if last {
            break;
        }
    }
    methods
}

/// The most methods an override may name before the request is judged as naming no method.
const MOST_OVERRIDES: usize = 4;

/// Whether a query key names the method as PHP and `qs` (Express) read keys: `_method`, also
/// as `.method` or `_method\0anything` and after leading spaces (PHP skips leading spaces,
/// turns `.` and spaces into `_`, and reads a key up to its first NUL), and as an array
/// (`_method[]`, whose first value `method-override` takes).
fn is_method_parameter(key: &[u8]) -> bool {
    let key = key.split(|&byte| byte == 0).next().unwrap_or_default();
    let start = key
        .iter()
        .position(|&byte| byte != b' ')
        .unwrap_or(key.len());
    let key: Vec<u8> = key[start..]
        .iter()
        .map(|&byte| {
            if matches!(byte, b'.' | b' ') {
                b'_'
            } else {
                byte
            }
        })
        .collect();
    key == b"_method" || key.starts_with(b"_method[")
}

/// Whether header `name` starts with `prefix` (lower case, with `-`) as a CGI, Rack or WSGI
/// server reads it: they turn `-` and `_` into the same `HTTP_*` variable (lighttpd turns
/// every byte that is not a letter or digit into `_`), so `x_auth_sub` and `x.auth.sub` are
/// `x-auth-sub` to the application.
pub(crate) fn starts_as(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name.bytes().zip(prefix.bytes()).all(|(byte, expected)| {
            byte == expected || (expected == b'-' && !byte.is_ascii_alphanumeric())
        })
}

/// Whether header `name` is `expected` as a CGI, Rack or WSGI server reads it ([`starts_as`]).
pub(crate) fn reads_as(name: &str, expected: &str) -> bool {
    name.len() == expected.len() && starts_as(name, expected)
}

/// A method no rule names and [`is_canonical_method`] refuses.
fn not_a_method() -> Method {
    Method::from_bytes(b"not-a-method").expect("a token")
}

/// Whether `method` is in the one form every server reads the same way: no lower-case
/// letters. Methods are case-sensitive (RFC 9110), yet some servers and frameworks upper-case
/// them before routing (Werkzeug reads `post` as `POST`) and others do not, so a rule for
/// `POST` could neither match nor miss `post` safely: such a request is treated as a path
/// not in canonical form is (always protected, and every route's requirements apply).
pub(crate) fn is_canonical_method(method: &Method) -> bool {
    !method
        .as_str()
        .bytes()
        .any(|byte| byte.is_ascii_lowercase())
}

fn unhex(pair: &[u8]) -> Option<u8> {
    let digit = |byte: u8| char::from(byte).to_digit(16);
    Some((digit(pair[0])? * 16 + digit(pair[1])?) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loose_match_ignores_ascii_case_and_one_trailing_slash_of_an_exact_path() {
        let exact = Pattern::exact("/orders");
        for path in ["/orders", "/ORDERS", "/Orders", "/orders/", "/oRdErS/"] {
            assert!(exact.matches_as(Reading::Lenient, path).is_some(), "{path}");
        }
        for path in [
            "/orders//",
            "/orders/1",
            "/order",
            "/ordersx",
            "/",
            "",
            "/ÖRDERS",
        ] {
            assert!(exact.matches_as(Reading::Lenient, path).is_none(), "{path}");
        }
        assert!(Pattern::exact("/orders/")
            .matches_as(Reading::Lenient, "/ORDERS")
            .is_some());
        assert!(Pattern::exact("/")
            .matches_as(Reading::Lenient, "/")
            .is_some());

        let prefix = Pattern::prefix("/admin/");
        for path in ["/admin", "/ADMIN", "/Admin/users", "/aDmIn/", "/ADMIN/x/y"] {
            assert!(
                prefix.matches_as(Reading::Lenient, path).is_some(),
                "{path}"
            );
        }
        for path in ["/administrators", "/ADMINX", "/adm", "/", "/x/admin"] {
            assert!(
                prefix.matches_as(Reading::Lenient, path).is_none(),
                "{path}"
            );
        }
    }

    #[test]
    fn windows_and_format_readings_are_read_as_their_servers_do() {
        use Reading::{AnyCaseFormat, Format, Windows};
        // Windows' file APIs (IIS, ASP.NET Core and Express static files on Windows) drop a
        // segment's trailing dots and spaces, in any case; Rails and Django REST route
        // `/orders.json` (and `/orders.json/`) to `/orders`, letters as written.
        let prefix = Pattern::prefix("/static/private");
        for (reading, path) in [
            (Windows, "/static/private./report.pdf"),
            (Windows, "/static/private../report.pdf"),
            (Windows, "/static/private /report.pdf"),
            (Windows, "/static./private/report.pdf"),
            (Windows, "/STATIC/Private./report.pdf"),
            (Windows, "/static/private."),
            (Format, "/static/private.json"),
            (Format, "/static/private.json/"),
            (Format, "/static/private.x-y_z~"),
        ] {
            assert!(
                prefix.matches_as(reading, path).is_some(),
                "{reading:?} {path}"
            );
        }
        for (reading, path) in [
            (Windows, "/static/privates/x"),
            (Windows, "/static/private.d/x"),
            (Windows, "/static/privat./x"),
            (Windows, "/static/private.json"),
            (Format, "/static/Private.json"),
            (Format, "/static/private./x"),
            (Format, "/static/public.json"),
            (Format, "/static/private.json.bak/x"),
            (Format, "/static/private."),
        ] {
            assert!(
                prefix.matches_as(reading, path).is_none(),
                "{reading:?} {path}"
            );
        }
        let exact = Pattern::exact("/orders");
        for (reading, path) in [
            (Format, "/orders.json"),
            (Format, "/orders.json/"),
            (AnyCaseFormat, "/ORDERS.json"),
            (Windows, "/ORDERS."),
            (Windows, "/orders "),
        ] {
            assert!(
                exact.matches_as(reading, path).is_some(),
                "{reading:?} {path}"
            );
        }
        for (reading, path) in [
            (Format, "/orders.json/1"),
            (Format, "/orders.v1.json"),
            (Format, "/ORDERS.json"),
            (AnyCaseFormat, "/order.json"),
            (Format, "/order.json"),
            (Windows, "/orders.json"),
        ] {
            assert!(
                exact.matches_as(reading, path).is_none(),
                "{reading:?} {path}"
            );
        }
        // Every reading matches what the pattern matches byte for byte.
        for reading in Reading::ALL {
            for (pattern, path) in [
                (Pattern::exact("/a.b"), "/a.b"),
                (Pattern::exact("/a."), "/a."),
                (Pattern::prefix("/a /"), "/a /b"),
                (Pattern::prefix("/"), "/x.y/z"),
            ] {
                assert!(
                    pattern.matches_as(reading, path).is_some(),
                    "{reading:?} {path}"
                );
            }
        }
    }

    #[test]
    fn readings_are_judged_apart_so_no_mix_of_them_opens_a_protected_path() {
        // Case-insensitive servers do not strip format suffixes, and Rails is case-sensitive:
        // `/Admin/login.json` is under the protected `/admin` for the first, and no page of
        // Rails'. Read both ways at once it would be the open `/admin/login`.
        let mut rules = PathRules::default();
        rules.prefix("/", Access::Open);
        rules.prefix("/admin", Access::Protected);
        rules.exact("/admin/login", Access::Open);
        for path in ["/Admin/login.json", "/admin./login.json", "/ADMIN/login."] {
            assert_eq!(rules.access(path), Access::Protected, "{path}");
        }
        // A trailing `/` alone is read by the format reading too (Rails, case as written).
        let mut rules = PathRules::default();
        rules.prefix("/", Access::Open);
        rules.exact("/orders", Access::Protected);
        rules.exact_for(Some(Method::GET), "/Orders", Access::Open);
        assert_eq!(rules.access("/orders/"), Access::Protected);
        // The open page itself, in any case a lenient server routes to it.
        for path in ["/admin/login", "/Admin/login", "/ADMIN/LOGIN/"] {
            assert_eq!(rules.access(path), Access::Open, "{path}");
        }
    }

    fn rules() -> PathRules {
        let mut rules = PathRules::default();
        rules.exact("/health", Access::Open);
        rules.prefix("/auth/", Access::Open);
        rules.prefix("/auth/logout", Access::Protected);
        rules.prefix("/public", Access::Optional);
        rules
    }

    #[test]
    fn a_rule_for_the_method_beats_one_for_all_at_the_same_path() {
        let mut rules = rules();
        rules.prefix_for(Some(Method::GET), "/public", Access::Open);
        rules.exact_for(Some(Method::DELETE), "/health", Access::Protected);
        assert_eq!(rules.access_for(&Method::GET, "/public/page"), Access::Open);
        assert_eq!(
            rules.access_for(&Method::POST, "/public/page"),
            Access::Optional
        );
        assert_eq!(rules.access_for(&Method::GET, "/health"), Access::Open);
        assert_eq!(
            rules.access_for(&Method::DELETE, "/health"),
            Access::Protected
        );
        // A more specific path still beats a method: `/auth/logout` stays protected.
        rules.prefix_for(Some(Method::POST), "/auth", Access::Open);
        assert_eq!(
            rules.access_for(&Method::POST, "/auth/logout"),
            Access::Protected
        );
    }

    /// A protected carve-out in an open or optional area holds every letter case of its path,
    /// as a case-insensitive upstream serves it; an open path opens only its exact spelling.
    #[test]
    fn a_loose_spelling_can_only_make_the_answer_stricter() {
        let mut rules = rules();
        rules.exact("/public/drafts.html", Access::Protected);
        for path in ["/auth/LOGOUT", "/AUTH/logout", "/auth/Logout/x"] {
            assert_eq!(rules.access(path), Access::Protected, "{path}");
        }
        for path in [
            "/public/DRAFTS.html",
            "/public/drafts.html/",
            "/public/Drafts.HTML/",
        ] {
            assert_eq!(rules.access(path), Access::Protected, "{path}");
        }
        for path in ["/HEALTH", "/health/", "/Auth/token", "/PUBLIC/page"] {
            assert_eq!(rules.access(path), Access::Protected, "{path}");
        }
        // Decoded, then read case-insensitively: still the carve-out.
        rules.exact("/public/$batch", Access::Protected);
        assert_eq!(rules.access("/PUBLIC/%24batch"), Access::Protected);
        assert_eq!(rules.access("/public/page"), Access::Optional);
    }

    /// Servers answer `HEAD` with the `GET` handler, so a `GET` rule holds it too.
    #[test]
    fn a_get_rule_holds_head() {
        let mut rules = rules();
        rules.exact_for(Some(Method::GET), "/public/report", Access::Protected);
        assert_eq!(
            rules.access_for(&Method::HEAD, "/public/report"),
            Access::Protected
        );
        assert_eq!(
            rules.access_for(&Method::POST, "/public/report"),
            Access::Optional
        );
        assert!(holds(&Method::GET, &Method::HEAD));
        assert!(!holds(&Method::HEAD, &Method::GET));
        assert!(!holds(&Method::POST, &Method::HEAD));
    }

    /// Judging `HEAD` as a `GET` too can only make it stricter: an open `GET` rule opens no
    /// `HEAD` that another rule protects, whatever the order the rules came in.
    #[test]
    fn a_head_is_never_opened_by_a_rule_for_get() {
        for get_first in [true, false] {
            let mut rules = PathRules::default();
            let add = |rules: &mut PathRules, get: bool| {
                if get {
                    rules.exact_for(Some(Method::GET), "/x", Access::Open);
                    rules.prefix_for(Some(Method::GET), "/docs", Access::Open);
                } else {
                    rules.exact_for(Some(Method::HEAD), "/x", Access::Protected);
                    rules.prefix("/docs", Access::Protected);
                }
            };
            add(&mut rules, get_first);
            add(&mut rules, !get_first);
            assert_eq!(rules.access_for(&Method::GET, "/x"), Access::Open);
            assert_eq!(rules.access_for(&Method::HEAD, "/x"), Access::Protected);
            assert_eq!(rules.access_for(&Method::GET, "/docs/a"), Access::Open);
            assert_eq!(
                rules.access_for(&Method::HEAD, "/docs/a"),
                Access::Protected
            );
        }
    }

    /// Rules that match equally well (the same path but for case or a trailing `/`): the
    /// strictest decides, not the order they came in.
    #[test]
    fn of_rules_matching_equally_well_the_strictest_decides() {
        for protected_first in [true, false] {
            let mut rules = PathRules::default();
            let rules_in_order = if protected_first {
                [("/a", Access::Protected), ("/a/", Access::Open)]
            } else {
                [("/a/", Access::Open), ("/a", Access::Protected)]
            };
            for (path, access) in rules_in_order {
                rules.exact(path, access);
            }
            assert_eq!(rules.access("/a/"), Access::Protected, "{protected_first}");
            assert_eq!(rules.access("/a"), Access::Protected, "{protected_first}");
        }
    }

    #[test]
    fn exact_and_prefix_rules_apply_segment_wise() {
        let rules = rules();
        assert_eq!(rules.access("/health"), Access::Open);
        assert_eq!(rules.access("/health/x"), Access::Protected);
        assert_eq!(rules.access("/auth"), Access::Open);
        assert_eq!(rules.access("/auth/token"), Access::Open);
        assert_eq!(rules.access("/authz"), Access::Protected);
        assert_eq!(
            rules.access("/auth/logout"),
            Access::Protected,
            "longer prefix wins"
        );
        assert_eq!(rules.access("/public/page"), Access::Optional);
        assert_eq!(rules.access("/admin"), Access::Protected);
    }

    /// The allowlist as first written, in three passes: the one-pass `is_canonical` must
    /// agree with it on every path.
    fn is_canonical_in_three_passes(path: &str) -> bool {
        let bytes = path.as_bytes();
        if path.contains("//") {
            return false;
        }
        let mut index = 0;
        while index < bytes.len() {
            if bytes[index] == b'%' {
                match bytes.get(index + 1..index + 3).and_then(unhex) {
                    Some(decoded) if is_harmless_escape(decoded) => index += 3,
                    _ => return false,
                }
            } else if is_path_char(bytes[index]) {
                index += 1;
            } else {
                return false;
            }
        }
        !path
            .split('/')
            .any(|segment| !segment.is_empty() && segment.bytes().all(|byte| byte == b'.'))
    }

    proptest::proptest! {
        #[test]
        fn same_bytes_agrees_with_slice_equality(
            a in proptest::collection::vec(0u8..4, 0..40),
            b in proptest::collection::vec(0u8..4, 0..40),
        ) {
            proptest::prop_assert_eq!(same_bytes(&a, &b), a == b);
            proptest::prop_assert!(same_bytes(&a, &a.clone()));
        }

        #[test]
        fn one_pass_agrees_with_three(path in "[/.a%2eEcC0;\\\\u5f]{0,12}") {
            proptest::prop_assert_eq!(is_canonical(&path), is_canonical_in_three_passes(&path));
        }
    }

    #[test]
    fn same_bytes_sees_a_difference_anywhere() {
        let long = b"/orders.v1.Orders/Cancel-and-more";
        for at in 0..long.len() {
            let mut other = *long;
            other[at] ^= 1;
            assert!(!same_bytes(long, &other), "a difference at {at}");
            assert!(same_bytes(&long[..at], &other[..at]));
        }
    }

    #[test]
    fn one_pass_agrees_with_three_on_the_known_tricks() {
        for path in [
            "",
            "/",
            "//",
            "/a",
            "a",
            "a/",
            "/a/",
            "/a//b",
            "//a",
            "/.",
            "/..",
            "/./",
            "/a/.",
            "/a/..",
            "/.a",
            "/a.",
            "/...",
            "/a/.../b",
            "/%2e",
            "/%41",
            "/a%2",
            "/a%",
            ".",
            "..",
            "a/..",
            "/a/b/",
            "/a/./b",
            "/%2e%2e/x",
            "/x/%20/",
        ] {
            assert_eq!(
                is_canonical(path),
                is_canonical_in_three_passes(path),
                "{path:?}"
            );
        }
    }

    #[test]
    fn non_canonical_paths_are_never_open() {
        let rules = rules();
        for path in [
            "/auth/../admin",
            "/auth/./token",
            "/auth/%2e%2e/admin",
            "/auth%2F..%2Fadmin",
            "/auth//token",
            "/auth\\..\\admin",
            "/auth/..;/admin",
            "/auth/%252e%252e/admin",
            "/auth/%u002e%u002e/admin",
            "/auth/%c0%ae%c0%ae/admin",
            "/auth/..%5cadmin",
            "/auth/..%5Cadmin",
            "/auth/%3b/token",
            "/auth/.../token",
            "/auth/token%00",
            "/auth/token%7f",
            "/auth/token%",
            "/auth/token%2",
            "/auth/t\u{e9}",
            "/auth/a|b",
            "auth/token",
            "",
        ] {
            assert_eq!(rules.access(path), Access::Protected, "{path:?}");
        }
    }

    #[test]
    fn a_harmless_escape_does_not_hide_what_follows_it() {
        // Each escape is skipped by exactly its three bytes: the escaped dots and backslashes
        // after an escaped letter or space are still seen.
        let rules = rules();
        for path in [
            "/auth/%3c%2e%2e/admin",
            "/auth/a%20b%5c..%5cadmin",
            "/auth/%7b%3b/token",
        ] {
            assert_eq!(rules.access(path), Access::Protected, "{path:?}");
        }
    }

    #[test]
    fn an_escaped_unreserved_character_is_not_canonical() {
        // A server that decodes before routing reads `/%6frders` as `/orders`: a second
        // spelling of a path the rules name, which must not slip past them.
        let rules = rules();
        for path in [
            "/auth/a%41b",
            "/auth/%7e",
            "/%61uth/token",
            "/auth/%5f",
            "/auth/%2D",
        ] {
            assert!(!is_canonical(path), "{path:?}");
            assert_eq!(rules.access(path), Access::Protected, "{path:?}");
        }
    }

    #[test]
    fn a_path_with_escapes_is_judged_by_both_spellings() {
        let mut rules = PathRules::default();
        rules.prefix("/files/a@b", Access::Open);
        rules.prefix("/files", Access::Optional);
        assert_eq!(rules.access("/files/a@b/x"), Access::Open);
        // Decoded, it is open; as sent, only optional: a server that does not decode serves
        // `/files/a%40b/x`, which the rules make optional.
        assert_eq!(rules.access("/files/a%40b/x"), Access::Optional);
        assert_eq!(rules.access("/files/c%40d"), Access::Optional);
        assert_eq!(decoded("/a%40b%20c").as_deref(), Some("/a@b c"));
        assert_eq!(decoded("/plain"), None);
    }

    #[test]
    fn a_method_with_lower_case_letters_is_never_open() {
        let rules = rules();
        assert_eq!(rules.access_for(&Method::GET, "/auth/token"), Access::Open);
        for method in ["get", "Get", "pOST"] {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            assert!(!is_canonical_method(&method), "{method}");
            assert_eq!(rules.access_for(&method, "/auth/token"), Access::Protected);
        }
        assert!(is_canonical_method(
            &Method::from_bytes(b"PROPFIND").unwrap()
        ));
    }

    #[test]
    fn harmless_escapes_and_characters_stay_open() {
        let rules = rules();
        for path in [
            "/auth/a%20b",
            "/auth/a%3Cb",
            "/auth/%7b%7D%40",
            "/auth/a.b",
            "/auth/..a",
            "/auth/",
            "/auth/!$&'()*+,=:@-_~",
        ] {
            assert_eq!(rules.access(path), Access::Open, "{path:?}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// How the most lenient upstream could read a path: escapes decoded twice (`%XX`, and
    /// `%uXXXX` as IIS does), overlong UTF-8 for `.` and `/`, `\` taken as `/`, `;`
    /// parameters stripped as servlet containers do, repeated `/` merged as nginx does, and
    /// dot segments resolved.
    fn lenient_reading(path: &str) -> String {
        let mut bytes = path.as_bytes().to_vec();
        for _ in 0..2 {
            bytes = percent_decode(&bytes);
        }
        let text = String::from_utf8_lossy(&bytes).replace('\\', "/");
        let mut resolved: Vec<&str> = Vec::new();
        for segment in text.split('/') {
            let segment = segment.split(';').next().unwrap_or_default();
            match segment {
                "" | "." => {}
                ".." => {
                    resolved.pop();
                }
                other => resolved.push(other),
            }
        }
        format!("/{}", resolved.join("/"))
    }

    fn percent_decode(bytes: &[u8]) -> Vec<u8> {
        let hex = |slice: &[u8]| {
            std::str::from_utf8(slice)
                .ok()
                .and_then(|text| u32::from_str_radix(text, 16).ok())
        };
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut index = 0;
        while index < bytes.len() {
            let rest = &bytes[index..];
            if rest.len() >= 6 && rest[0] == b'%' && rest[1].eq_ignore_ascii_case(&b'u') {
                if let Some(code) = hex(&rest[2..6]).and_then(char::from_u32) {
                    let mut buffer = [0; 4];
                    decoded.extend_from_slice(code.encode_utf8(&mut buffer).as_bytes());
                    index += 6;
                    continue;
                }
            }
            if rest.len() >= 3 && rest[0] == b'%' {
                if let Some(byte) = hex(&rest[1..3]) {
                    decoded.push(byte as u8);
                    index += 3;
                    continue;
                }
            }
            decoded.push(rest[0]);
            index += 1;
        }
        // Overlong two-byte forms of ASCII, which lax UTF-8 decoders accept.
        let mut folded = Vec::with_capacity(decoded.len());
        let mut index = 0;
        while index < decoded.len() {
            if index + 1 < decoded.len() && decoded[index] & 0xfe == 0xc0 {
                folded.push(((decoded[index] & 0x01) << 6) | (decoded[index + 1] & 0x3f));
                index += 2;
            } else {
                folded.push(decoded[index]);
                index += 1;
            }
        }
        folded
    }

    fn rules() -> PathRules {
        let mut rules = PathRules::default();
        rules.exact("/health", Access::Open);
        rules.prefix("/static", Access::Open);
        rules.prefix("/public", Access::Optional);
        rules
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("static"),
            Just("public"),
            Just("health"),
            Just("admin"),
            Just(".."),
            Just("."),
            Just("..;"),
            Just(";jsessionid=1"),
            Just("%2e%2e"),
            Just("%2E%2e"),
            Just("%252e%252e"),
            Just("%u002e%u002e"),
            Just("%c0%ae%c0%ae"),
            Just("..%2f"),
            Just("..%5c"),
            Just("..\\"),
            Just("a%20b"),
            Just(""),
        ]
        .prop_map(str::to_owned)
    }

    fn path() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::collection::vec(segment(), 0..7)
                .prop_map(|segments| format!("/{}", segments.join("/"))),
            // Under an open or optional prefix, where a stretched path would do harm: without
            // this, a random path starts there too rarely to catch a missing check.
            (
                prop_oneof![Just("static"), Just("public")],
                prop::collection::vec(segment(), 1..5)
            )
                .prop_map(|(prefix, segments)| format!("/{prefix}/{}", segments.join("/"))),
            "/(static|public|health)[a-z0-9./;%\\\\uUcC~ -]{0,16}",
        ]
    }

    proptest! {
        #[test]
        fn an_open_or_optional_path_stays_where_it_was_judged(path in path()) {
            let access = rules().access(&path);
            let read = lenient_reading(&path);
            let prefix = match access {
                Access::Protected => return Ok(()),
                Access::Open if path == "/health" => "/health",
                Access::Open => "/static",
                Access::Optional => "/public",
            };
            prop_assert!(
                is_under(&path, prefix) && is_under(&read, prefix),
                "{path:?} judged {access:?} is read upstream as {read:?}"
            );
        }

        #[test]
        fn any_path_gets_an_answer(path in any::<String>()) {
            let _ = rules().access(&path);
        }
    }
}
