//! Which paths the gate leaves open or makes optional.

/// What the gate asks of a request on a given path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A valid token is required (the default).
    Protected,
    /// A valid token is used when present; none is fine; an invalid one is still refused.
    Optional,
    /// No token is looked at.
    Open,
}

#[derive(Debug, Clone)]
enum Pattern {
    Exact(String),
    /// Matches the prefix itself and anything below it, segment-wise: `/auth` matches
    /// `/auth` and `/auth/token`, never `/authz`.
    Prefix(String),
}

impl Pattern {
    fn prefix(prefix: &str) -> Self {
        Self::Prefix(prefix.trim_end_matches('/').to_owned())
    }

    /// Returns how specific the match is, if it matches.
    fn matches(&self, path: &str) -> Option<usize> {
        match self {
            Self::Exact(exact) => (path == exact).then_some(usize::MAX),
            Self::Prefix(prefix) => is_under(path, prefix).then_some(prefix.len()),
        }
    }
}

/// Whether `path` is `prefix` (given without a trailing `/`) or below it, segment-wise:
/// `/auth` holds `/auth` and `/auth/token`, never `/authz`.
pub(crate) fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The configured exceptions to "every path needs a token".
#[derive(Debug, Clone, Default)]
pub(crate) struct PathRules {
    rules: Vec<(Pattern, Access)>,
}

impl PathRules {
    pub(crate) fn exact(&mut self, path: &str, access: Access) {
        self.rules.push((Pattern::Exact(path.to_owned()), access));
    }

    pub(crate) fn prefix(&mut self, prefix: &str, access: Access) {
        self.rules.push((Pattern::prefix(prefix), access));
    }

    /// The access rule for `path`: an exact rule beats a prefix, a longer prefix a shorter.
    ///
    /// A path that is not in canonical form is always protected: a router or upstream that
    /// normalises `/health/../admin` or `/auth%2F..%2Fadmin` after the gate must never
    /// receive it as "open".
    pub(crate) fn access(&self, path: &str) -> Access {
        if self.rules.is_empty() || !is_canonical(path) {
            return Access::Protected;
        }
        self.rules
            .iter()
            .filter_map(|(pattern, access)| {
                pattern
                    .matches(path)
                    .map(|specificity| (specificity, *access))
            })
            .max_by_key(|(specificity, _)| *specificity)
            .map_or(Access::Protected, |(_, access)| access)
    }
}

fn is_canonical(path: &str) -> bool {
    let bytes = path.as_bytes();
    if bytes.contains(&b'\\') || path.contains("//") {
        return false;
    }
    // Percent-encoded '.', '/' and '\' are how dot-segments get past naive matching. Checked
    // in place: this runs on every request once any path rule exists.
    let encodes_separator = bytes.windows(3).any(|window| {
        window[0] == b'%'
            && matches!(
                [window[1], window[2].to_ascii_lowercase()],
                [b'2', b'e' | b'f'] | [b'5', b'c']
            )
    });
    if encodes_separator {
        return false;
    }
    !path
        .split('/')
        .any(|segment| segment == "." || segment == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> PathRules {
        let mut rules = PathRules::default();
        rules.exact("/health", Access::Open);
        rules.prefix("/auth/", Access::Open);
        rules.prefix("/auth/logout", Access::Protected);
        rules.prefix("/public", Access::Optional);
        rules
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
        ] {
            assert_eq!(rules.access(path), Access::Protected, "{path}");
        }
    }
}
