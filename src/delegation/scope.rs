//! Scope sets and their narrowing for delegation (token exchange).
//!
//! A delegated token may carry only what its parent carried and what the
//! person approved for the delegatee: never more, at any hop (RFC 8693 §5,
//! scopes restrict delegated rights; ATTACKS TX-01). A request that asks
//! for more is refused rather than silently cut down (RFC 6749 §3.3: the
//! server may issue less only when it says so; we prefer `invalid_scope`
//! naming the scope, so a client never works from a scope it did not get),
//! and the scope issued is returned whenever it differs from the one asked
//! for (RFC 8693 §2.2.1).
//!
//! Scopes (RFC 6749 §3.3) are space-separated tokens of printable ASCII
//! without `"` or `\`. Two kinds are understood:
//!
//! - plain scopes (`openid`, `slcs:certificate`, `opendap:read`), each
//!   covered only by the identical string;
//! - WLCG storage scopes (WLCG Common JWT Profiles v1.0, §2.2.1
//!   "Capability-based Authorization: scope"): `<capability>:<path>` with
//!   one of the capabilities in [`STORAGE_CAPABILITIES`] and an absolute
//!   path, covering that path and everything below it, segment by segment
//!   (`storage.read:/a` covers `/a/b`, not `/a/bc`).
//!
//! Deliberate departures from the profile, all on the refusing side:
//!
//! - Capabilities are independent: the profile makes `storage.modify` a
//!   superset of `storage.create` and `storage.stage` one of
//!   `storage.read`, but a delegatee approved for one receives exactly
//!   that one; an implied capability is easy to widen by accident.
//! - Paths must already be normalised (RFC 3986 §6 as the profile asks of
//!   issuers): `.` and `..` segments, `//`, a trailing `/` (which the
//!   profile reads as "directory only", a distinction not modelled here),
//!   `%` escapes, `\` and control characters are refused, not normalised,
//!   so two spellings of one path can never be compared wrongly.
//! - A bare capability (`storage.read`) is accepted and means the whole
//!   storage area, `/`, as in the SciTokens profile. The WLCG profile
//!   requires a path and its relying parties reject one without, so the
//!   form given is kept: `storage.read` stays `storage.read` and
//!   `storage.read:/` stays `storage.read:/`, and narrowing never turns
//!   one into the other.

use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

/// The WLCG storage capabilities that take a path (WLCG Common JWT
/// Profiles v1.0 §2.2.1). Any other scope, including `compute.*`, is
/// plain: covered only by itself.
pub const STORAGE_CAPABILITIES: &[&str] = &[
    "storage.read",
    "storage.create",
    "storage.modify",
    "storage.stage",
];

/// Longest scope accepted, in bytes: a path of [`MAX_PATH_BYTES`] plus
/// the longest capability, with room to spare; anything longer is not a
/// scope anyone approved.
pub const MAX_SCOPE_BYTES: usize = 1100;

/// Longest storage path accepted, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// How much of an offending scope an error repeats: enough to recognise
/// it, not enough to turn an error message into an echo of a large body.
const ECHO_CHARS: usize = 100;

/// Why a scope was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// Not a scope: empty, too long, outside the RFC 6749 §3.3 character
    /// set, or a storage scope whose path is not absolute and normalised.
    /// Holds the scope, quoted and cut to 100 characters, and the reason.
    #[error("invalid scope {0}")]
    Invalid(String),
    /// A well-formed scope the delegated token may not carry: not within
    /// the parent token's scope, or not approved for the delegatee
    /// (RFC 6749 §3.3, ATTACKS TX-01). Holds the scope, cut to 100
    /// characters.
    #[error(
        "scope \"{0}\" is not within both the parent token's scope and the scopes approved for this delegatee"
    )]
    NotCovered(String),
}

/// One parsed scope.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// A scope covered only by the identical string.
    Plain(String),
    /// A WLCG storage scope: `capability` is one of
    /// [`STORAGE_CAPABILITIES`]; `path` is absolute and normalised, or
    /// empty for a bare capability given without a path, which covers
    /// the whole storage area (`/`) and displays back without a path.
    Storage {
        /// `storage.read`, `storage.create`, `storage.modify` or
        /// `storage.stage`.
        capability: String,
        /// `/`-prefixed path, or empty for the bare capability.
        path: String,
    },
}

impl Scope {
    /// The path a storage scope covers (`/` for a bare capability), or
    /// `None` for a plain scope.
    pub fn storage_path(&self) -> Option<&str> {
        match self {
            Scope::Plain(_) => None,
            Scope::Storage { path, .. } => Some(effective_path(path)),
        }
    }

    /// What makes two scopes the same grant: a bare capability and the
    /// same capability on `/` are one scope written two ways.
    fn key(&self) -> (&str, &str) {
        match self {
            Scope::Plain(s) => (s, ""),
            Scope::Storage { capability, path } => (capability, effective_path(path)),
        }
    }
}

/// The canonical string, which [`parse_scope`] reads back to the same
/// value: plain scopes as they are, storage scopes as
/// `capability:path`, or the bare capability when given without a path.
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Plain(s) => f.write_str(s),
            Scope::Storage { capability, path } if path.is_empty() => f.write_str(capability),
            Scope::Storage { capability, path } => write!(f, "{capability}:{path}"),
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_scope(s)
    }
}

/// Parses one scope (no spaces). Storage scopes are recognised by their
/// capability, case-sensitively as all scopes are (RFC 6749 §3.3);
/// anything else well-formed is plain.
pub fn parse_scope(s: &str) -> Result<Scope, ScopeError> {
    if s.is_empty() {
        return Err(invalid(s, "empty"));
    }
    if s.len() > MAX_SCOPE_BYTES {
        return Err(invalid(s, "longer than 1100 bytes"));
    }
    // RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), which
    // also keeps out spaces, control characters and `\`.
    if !s.bytes().all(is_scope_byte) {
        return Err(invalid(
            s,
            "not an RFC 6749 scope-token (printable ASCII, no space, '\"' or '\\')",
        ));
    }
    match s.split_once(':') {
        Some((capability, path)) if is_capability(capability) => {
            check_path(path).map_err(|why| invalid(s, why))?;
            Ok(Scope::Storage {
                capability: capability.to_owned(),
                path: path.to_owned(),
            })
        }
        None if is_capability(s) => Ok(Scope::Storage {
            capability: s.to_owned(),
            path: String::new(),
        }),
        _ => Ok(Scope::Plain(s.to_owned())),
    }
}

/// Parses a space-separated scope string (RFC 6749 §3.3). Runs of spaces
/// separate like one; an empty string gives no scopes.
pub fn parse_scopes(s: &str) -> Result<Vec<Scope>, ScopeError> {
    tokens(s).map(parse_scope).collect()
}

/// Whether `granted` covers `requested`: the same plain scope, or the
/// same storage capability on the same path or one of its ancestors,
/// compared whole segment by whole segment (`/a` covers `/a/b`, not
/// `/a/bc`). Values built by hand rather than by [`parse_scope`] are
/// checked too: a storage scope with an unknown capability or an
/// unnormalised path covers nothing and is covered by nothing.
pub fn covers(granted: &Scope, requested: &Scope) -> bool {
    match (granted, requested) {
        (Scope::Plain(g), Scope::Plain(r)) => g == r,
        (
            Scope::Storage {
                capability: gc,
                path: gp,
            },
            Scope::Storage {
                capability: rc,
                path: rp,
            },
        ) => {
            gc == rc
                && is_capability(gc)
                && storage_path_ok(gp)
                && storage_path_ok(rp)
                && path_within(effective_path(rp), effective_path(gp))
        }
        _ => false,
    }
}

/// Whether some scope of `granted` covers `requested`.
pub fn covered_by_any(requested: &Scope, granted: &[Scope]) -> bool {
    granted.iter().any(|g| covers(g, requested))
}

/// The scope of a delegated token, as a space-separated string.
///
/// `parent` is the parent token's scope; `allowed` the scopes the person
/// approved for this delegatee, one scope per element.
///
/// - `requested = None`: whatever the parent and the approval have in
///   common, in the parent's order. A parent scope covered by an allowed
///   one is kept as the parent wrote it; otherwise the allowed scopes it
///   covers are taken instead (parent `storage.read:/data`, allowed
///   `storage.read:/data/cmip6` gives `storage.read:/data/cmip6`).
/// - `requested = Some(..)`: every requested scope must be covered by
///   some parent scope and by some allowed scope, or the exchange is
///   refused with [`ScopeError::NotCovered`] naming it: never widened,
///   and never silently dropped either (RFC 6749 §3.3, ATTACKS TX-01).
///   An empty request is [`ScopeError::Invalid`].
///
/// Duplicates (also `storage.read` next to `storage.read:/`) are removed,
/// keeping the first. The result is never empty: nothing in common is
/// [`ScopeError::NotCovered`]. A parent or allowed scope that does not
/// parse is an error rather than skipped: both come from this service's
/// own records, and refusing is the safe side of a corrupt one.
pub fn narrow(
    requested: Option<&str>,
    parent: &str,
    allowed: &[&str],
) -> Result<String, ScopeError> {
    let parent_scopes = parse_scopes(parent)?;
    let allowed_scopes = allowed
        .iter()
        .map(|s| parse_scope(s))
        .collect::<Result<Vec<_>, _>>()?;
    let narrowed = match requested {
        None => {
            let mut picked: Vec<&Scope> = Vec::new();
            for p in &parent_scopes {
                if covered_by_any(p, &allowed_scopes) {
                    picked.push(p);
                } else {
                    // Storage paths form a tree: what `p` shares with an
                    // allowed scope it does not fall under is that scope
                    // itself, when `p` covers it, and nothing otherwise.
                    picked.extend(allowed_scopes.iter().filter(|a| covers(p, a)));
                }
            }
            join_unique(picked)
        }
        Some(requested) => {
            let mut picked: Vec<Scope> = Vec::new();
            for token in tokens(requested) {
                let scope = parse_scope(token)?;
                if !covered_by_any(&scope, &parent_scopes)
                    || !covered_by_any(&scope, &allowed_scopes)
                {
                    return Err(ScopeError::NotCovered(echo(token)));
                }
                picked.push(scope);
            }
            if picked.is_empty() {
                return Err(invalid(requested, "the requested scope is empty"));
            }
            join_unique(&picked)
        }
    };
    if narrowed.is_empty() {
        return Err(ScopeError::NotCovered(echo(parent)));
    }
    Ok(narrowed)
}

/// The scopes of a space-separated string.
fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split(' ').filter(|t| !t.is_empty())
}

/// `scopes` joined by spaces, each grant once, first occurrence kept.
fn join_unique<'a>(scopes: impl IntoIterator<Item = &'a Scope>) -> String {
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut out = String::new();
    for scope in scopes {
        if seen.insert(scope.key()) {
            if !out.is_empty() {
                out.push(' ');
            }
            // Writing to a `String` cannot fail.
            let _ = write!(out, "{scope}");
        }
    }
    out
}

fn is_scope_byte(b: u8) -> bool {
    b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b)
}

fn is_capability(s: &str) -> bool {
    STORAGE_CAPABILITIES.contains(&s)
}

fn effective_path(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// A stored path is fine when empty (bare capability) or normalised.
fn storage_path_ok(path: &str) -> bool {
    path.is_empty() || check_path(path).is_ok()
}

/// Whether `path` is absolute and already normalised; the reason if not.
fn check_path(path: &str) -> Result<(), &'static str> {
    if path.len() > MAX_PATH_BYTES {
        return Err("path longer than 1024 bytes");
    }
    // Also checked for the whole scope by `parse_scope`, but `covers`
    // sees hand-built values, and `%` is refused only in paths: an
    // escape is a second spelling of a path.
    if !path.bytes().all(|b| is_scope_byte(b) && b != b'%') {
        return Err("path has a character other than printable ASCII without '%', '\"' or '\\'");
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err("path is not absolute (must start with '/')");
    };
    if rest.is_empty() {
        return Ok(());
    }
    if rest.ends_with('/') {
        return Err("path ends with '/'");
    }
    for segment in rest.split('/') {
        match segment {
            "" => return Err("path has '//'"),
            "." | ".." => return Err("path has a '.' or '..' segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Whether `child` is `parent` or below it, whole segments only. Both are
/// normalised absolute paths.
fn path_within(child: &str, parent: &str) -> bool {
    parent == "/"
        || child
            .strip_prefix(parent)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

fn invalid(scope: &str, why: &str) -> ScopeError {
    ScopeError::Invalid(format!("\"{}\": {why}", echo(scope)))
}

/// At most [`ECHO_CHARS`] characters of `s`, anything but printable ASCII
/// replaced, so an error message cannot carry control or bidi characters
/// into a log or a page.
fn echo(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(ECHO_CHARS)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '\u{FFFD}'
            }
        })
        .collect();
    if s.chars().nth(ECHO_CHARS).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn scope(s: &str) -> Scope {
        parse_scope(s).unwrap()
    }

    fn covers_str(granted: &str, requested: &str) -> bool {
        covers(&scope(granted), &scope(requested))
    }

    fn is_invalid(s: &str) -> bool {
        matches!(parse_scope(s), Err(ScopeError::Invalid(_)))
    }

    #[test]
    fn storage_paths_cover_by_whole_segments() {
        assert!(covers_str("storage.read:/a", "storage.read:/a/b"));
        assert!(covers_str("storage.read:/", "storage.read:/a/b"));
        assert!(covers_str("storage.read", "storage.read:/a/b"));
        assert!(covers_str("storage.read:/a/b", "storage.read:/a/b"));
        assert!(!covers_str("storage.read:/a/bc", "storage.read:/a/b"));
        assert!(!covers_str("storage.read:/a/b", "storage.read:/a/bc"));
        assert!(!covers_str("storage.read:/a/b/c", "storage.read:/a/b"));
        assert!(!covers_str("storage.read:/a/b", "storage.read:/a"));
        assert!(!covers_str("storage.read:/a", "storage.read:/"));
        assert!(!covers_str("storage.read:/a", "storage.read"));
    }

    #[test]
    fn capabilities_are_independent() {
        assert!(!covers_str("storage.create:/a", "storage.read:/a/b"));
        // The profile's "modify implies create" and "stage implies read"
        // are deliberately not honoured.
        assert!(!covers_str("storage.modify:/", "storage.create:/a"));
        assert!(!covers_str("storage.stage", "storage.read"));
    }

    #[test]
    fn a_bare_capability_covers_everything_of_that_capability() {
        for path in ["/", "/a", "/a/b/c/d", "/data/cmip6"] {
            assert!(covers_str(
                "storage.create",
                &format!("storage.create:{path}")
            ));
        }
        assert!(covers_str("storage.create", "storage.create"));
        assert!(covers_str("storage.create:/", "storage.create"));
        assert!(!covers_str("storage.create", "storage.modify"));
        assert!(!covers_str("storage.create", "storage.create-x"));
    }

    #[test]
    fn plain_scopes_cover_only_themselves() {
        assert!(covers_str("openid", "openid"));
        assert!(covers_str("opendap:read", "opendap:read"));
        assert!(!covers_str("opendap:read", "opendap:read/x"));
        assert!(!covers_str("opendap", "opendap:read"));
        assert!(!covers_str("slcs:certificate", "slcs:certificate2"));
        assert!(!covers_str("OpenID", "openid"));
        // A look-alike with an unknown capability is plain, matched whole.
        assert_eq!(
            scope("storage.write:/a"),
            Scope::Plain("storage.write:/a".into())
        );
        assert!(!covers_str("storage.write:/a", "storage.write:/a/b"));
        // Plain and storage never cover one another.
        assert!(!covers(
            &Scope::Plain("storage.read".into()),
            &scope("storage.read")
        ));
        assert!(!covers(
            &scope("storage.read"),
            &Scope::Plain("storage.read".into())
        ));
        // `:` is an ordinary path character: `/a:b` is a sibling of `/a`.
        assert!(!covers_str("storage.read:/a", "storage.read:/a:b"));
    }

    #[test]
    fn hostile_paths_are_refused() {
        for s in [
            "storage.read:/a/../b",
            "storage.read:/..",
            "storage.read:/a/..",
            "storage.read:/./a",
            "storage.read:/a/.",
            "storage.read://a",
            "storage.read:/a//b",
            "storage.read:/a/",
            "storage.read://",
            "storage.read:/a%2Fb",
            "storage.read:/a%2e%2e",
            "storage.read:/a\\b",
            "storage.read:/a\u{0}b",
            "storage.read:/a\tb",
            "storage.read:/a\nb",
            "storage.read:/a b",
            "storage.read:/caf\u{e9}",
            "storage.read:/a\u{202e}b",
            "storage.read:",
            "storage.read:a/b",
            "storage.read:~/a",
            "",
            "open\u{7f}id",
            "\"openid\"",
        ] {
            assert!(is_invalid(s), "{s:?} was accepted");
        }
        // `..` inside a segment name is just a name.
        assert!(!is_invalid("storage.read:/a..b/c.d/.e"));
    }

    #[test]
    fn length_limits() {
        let path = format!("/{}", "a".repeat(MAX_PATH_BYTES - 1));
        assert!(!is_invalid(&format!("storage.read:{path}")));
        assert!(is_invalid(&format!("storage.read:{path}a")));
        assert!(!is_invalid(&"x".repeat(MAX_SCOPE_BYTES)));
        let long = "x".repeat(MAX_SCOPE_BYTES + 1);
        let Err(ScopeError::Invalid(message)) = parse_scope(&long) else {
            panic!("a scope longer than {MAX_SCOPE_BYTES} bytes was accepted");
        };
        assert!(message.len() < 200, "{message}");
        assert!(message.contains(&"x".repeat(ECHO_CHARS)));
    }

    #[test]
    fn display_gives_back_the_canonical_form() {
        for s in [
            "openid",
            "slcs:certificate",
            "storage.read",
            "storage.read:/",
            "storage.stage:/tape/subdir",
            "compute.create",
        ] {
            let parsed = scope(s);
            assert_eq!(parsed.to_string(), s);
            assert_eq!(scope(&parsed.to_string()), parsed);
        }
        assert_eq!(scope("storage.read").storage_path(), Some("/"));
        assert_eq!(scope("storage.read:/a").storage_path(), Some("/a"));
        assert_eq!(scope("openid").storage_path(), None);
        assert_eq!(
            "storage.read:/a".parse::<Scope>(),
            Ok(scope("storage.read:/a"))
        );
    }

    #[test]
    fn hand_built_unnormalised_scopes_cover_nothing() {
        let sneaky = Scope::Storage {
            capability: "storage.read".into(),
            path: "/a/../etc".into(),
        };
        assert!(!covers(&scope("storage.read:/a"), &sneaky));
        let sneaky_child = Scope::Storage {
            capability: "storage.read".into(),
            path: "/a/../etc/x".into(),
        };
        assert!(!covers(&sneaky, &sneaky_child));
        assert!(!covers(&scope("storage.read"), &sneaky_child));
        let unknown = Scope::Storage {
            capability: "storage.everything".into(),
            path: "/".into(),
        };
        assert!(!covers(&unknown, &unknown));
        assert!(covered_by_any(
            &scope("storage.read:/a/b"),
            &[sneaky, scope("storage.read:/a")]
        ));
    }

    #[test]
    fn narrow_by_default_keeps_what_parent_and_approval_share() {
        let parent = "openid slcs:certificate storage.read:/data opendap:read";
        assert_eq!(
            narrow(
                None,
                parent,
                &["storage.read:/data/cmip6", "slcs:certificate"]
            )
            .unwrap(),
            "slcs:certificate storage.read:/data/cmip6"
        );
        // A wider approval keeps the parent's scope, as the parent wrote it.
        assert_eq!(
            narrow(
                None,
                "storage.read:/data storage.create:/out",
                &["storage.read"]
            )
            .unwrap(),
            "storage.read:/data"
        );
        assert_eq!(
            narrow(None, "storage.read", &["storage.read:/"]).unwrap(),
            "storage.read"
        );
        // Several narrower approvals under one parent scope are all taken.
        assert_eq!(
            narrow(
                None,
                "storage.read:/data",
                &[
                    "storage.read:/data/a",
                    "storage.read:/other",
                    "storage.read:/data/b"
                ]
            )
            .unwrap(),
            "storage.read:/data/a storage.read:/data/b"
        );
        // Duplicates, also written two ways, appear once.
        assert_eq!(
            narrow(
                None,
                "opendap:read storage.read storage.read:/ opendap:read",
                &["opendap:read", "storage.read:/"]
            )
            .unwrap(),
            "opendap:read storage.read"
        );
    }

    #[test]
    fn narrow_with_nothing_in_common_is_refused() {
        assert_eq!(
            narrow(
                None,
                "openid storage.read:/a",
                &["storage.read:/b", "email"]
            ),
            Err(ScopeError::NotCovered("openid storage.read:/a".into()))
        );
        assert!(matches!(
            narrow(None, "", &["openid"]),
            Err(ScopeError::NotCovered(_))
        ));
        assert!(matches!(
            narrow(None, "openid", &[]),
            Err(ScopeError::NotCovered(_))
        ));
    }

    #[test]
    fn narrow_grants_an_explicit_request_within_both() {
        let parent = "slcs:certificate storage.read:/data storage.create:/out";
        let allowed = [
            "slcs:certificate",
            "storage.read:/data/cmip6",
            "storage.create",
        ];
        assert_eq!(
            narrow(
                Some("storage.read:/data/cmip6/tas  slcs:certificate storage.read:/data/cmip6/tas"),
                parent,
                &allowed
            )
            .unwrap(),
            "storage.read:/data/cmip6/tas slcs:certificate"
        );
        assert_eq!(
            narrow(Some("storage.create:/out/run1"), parent, &allowed).unwrap(),
            "storage.create:/out/run1"
        );
    }

    #[test]
    fn narrow_refuses_widening_and_names_the_scope() {
        let parent = "opendap:read storage.read:/data/cmip6";
        let allowed = [
            "opendap:read",
            "opendap:write",
            "slcs:admin",
            "storage.read",
        ];
        // ATTACKS TX-01: more than the parent carried.
        let refused = narrow(
            Some("opendap:read opendap:write slcs:admin"),
            parent,
            &allowed,
        );
        assert_eq!(refused, Err(ScopeError::NotCovered("opendap:write".into())));
        assert!(
            refused
                .unwrap_err()
                .to_string()
                .contains("\"opendap:write\"")
        );
        // A wider path, a sibling sharing a prefix, another capability.
        for wider in [
            "storage.read:/data",
            "storage.read",
            "storage.read:/",
            "storage.read:/data/cmip6x",
            "storage.stage:/data/cmip6",
        ] {
            assert_eq!(
                narrow(Some(wider), parent, &allowed),
                Err(ScopeError::NotCovered(wider.into())),
                "{wider}"
            );
        }
        // Within the parent but not approved for this delegatee.
        assert_eq!(
            narrow(Some("opendap:read"), parent, &["storage.read"]),
            Err(ScopeError::NotCovered("opendap:read".into()))
        );
        // A hostile path is invalid, not merely uncovered.
        assert!(matches!(
            narrow(Some("storage.read:/data/cmip6/../secret"), parent, &allowed),
            Err(ScopeError::Invalid(_))
        ));
    }

    #[test]
    fn narrow_refuses_an_empty_request_and_corrupt_records() {
        for empty in ["", " ", "   "] {
            assert!(matches!(
                narrow(Some(empty), "openid", &["openid"]),
                Err(ScopeError::Invalid(_))
            ));
        }
        assert!(matches!(
            narrow(None, "openid storage.read:/a/", &["openid"]),
            Err(ScopeError::Invalid(_))
        ));
        assert!(matches!(
            narrow(None, "openid", &["openid email"]),
            Err(ScopeError::Invalid(_))
        ));
    }

    #[test]
    fn error_messages_are_bounded_and_printable() {
        let hostile = format!("{}\u{202e}\n{}", "a".repeat(50), "b".repeat(5000));
        let message = narrow(Some(&hostile), "openid", &["openid"])
            .unwrap_err()
            .to_string();
        assert!(message.chars().count() < 250, "{message}");
        assert!(!message.contains('\n') && !message.contains('\u{202e}'));
        let message = narrow(Some(&"c".repeat(1000)), "openid", &["openid"])
            .unwrap_err()
            .to_string();
        assert!(message.chars().count() < 250, "{message}");
    }

    // -- property tests ----------------------------------------------------

    const PLAIN: &[&str] = &[
        "openid",
        "slcs:certificate",
        "opendap:read",
        "opendap:write",
        "compute.create",
    ];
    const SEGMENTS: &[&str] = &["a", "b", "bc", "data", "x"];

    fn plain() -> impl Strategy<Value = String> {
        prop::sample::select(PLAIN).prop_map(str::to_owned)
    }

    fn segments() -> impl Strategy<Value = Vec<&'static str>> {
        prop::collection::vec(prop::sample::select(SEGMENTS), 0..=4)
    }

    /// A storage scope on a random path of 0 to 4 segments; the root is
    /// written bare or as `:/`.
    fn storage() -> impl Strategy<Value = String> {
        (
            prop::sample::select(STORAGE_CAPABILITIES),
            segments(),
            any::<bool>(),
        )
            .prop_map(|(capability, segments, bare)| {
                if segments.is_empty() && bare {
                    capability.to_owned()
                } else {
                    format!("{capability}:/{}", segments.join("/"))
                }
            })
    }

    fn any_scope() -> impl Strategy<Value = String> {
        prop_oneof![plain(), storage()]
    }

    /// A scope derived from the current parent: a random parent scope,
    /// for storage with random segments appended (so usually covered), or
    /// now and then an unrelated random scope (usually not).
    #[derive(Clone, Debug)]
    enum Pick {
        FromParent(prop::sample::Index, Vec<&'static str>),
        Random(String),
    }

    /// Half the time none, so that requests and approvals often match
    /// the parent exactly and chains run several steps.
    fn extra_segments() -> impl Strategy<Value = Vec<&'static str>> {
        prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(prop::sample::select(SEGMENTS), 1..=2),
        ]
    }

    fn pick() -> impl Strategy<Value = Pick> {
        prop_oneof![
            5 => (any::<prop::sample::Index>(), extra_segments())
                .prop_map(|(i, s)| Pick::FromParent(i, s)),
            1 => any_scope().prop_map(Pick::Random),
        ]
    }

    fn resolve(pick: &Pick, parent: &[&str]) -> String {
        match pick {
            Pick::Random(s) => s.clone(),
            Pick::FromParent(_, _) if parent.is_empty() => "openid".into(),
            Pick::FromParent(index, extra) => {
                let base = *index.get(parent);
                match scope(base) {
                    Scope::Storage { capability, path } if !extra.is_empty() => {
                        let path = if path.len() > 1 { path.as_str() } else { "" };
                        format!("{capability}:{path}/{}", extra.join("/"))
                    }
                    _ => base.to_owned(),
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    struct Step {
        requested: Option<Vec<Pick>>,
        allowed: Vec<Pick>,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            prop::option::of(prop::collection::vec(pick(), 1..=3)),
            prop::collection::vec(pick(), 0..=6),
        )
            .prop_map(|(requested, allowed)| Step { requested, allowed })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn prop_exchanged_scope_is_always_covered_by_its_parent(
            root in prop::collection::vec(any_scope(), 1..=6),
            steps in prop::collection::vec(step(), 1..=5),
        ) {
            let root_scope = root.join(" ");
            let root_parsed = parse_scopes(&root_scope).unwrap();
            let mut parent = root_scope;
            for step in &steps {
                let parent_tokens: Vec<&str> = tokens(&parent).collect();
                let parent_parsed = parse_scopes(&parent).unwrap();
                let allowed: Vec<String> =
                    step.allowed.iter().map(|p| resolve(p, &parent_tokens)).collect();
                let allowed_refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
                let allowed_parsed = parse_scopes(&allowed.join(" ")).unwrap();
                let requested: Option<String> = step.requested.as_ref().map(|picks| {
                    picks
                        .iter()
                        .map(|p| resolve(p, &parent_tokens))
                        .collect::<Vec<_>>()
                        .join(" ")
                });
                let result = narrow(requested.as_deref(), &parent, &allowed_refs);
                if let Some(requested) = &requested {
                    // Refused exactly when something asked for is not
                    // within both the parent and the approval.
                    let all_covered = parse_scopes(requested).unwrap().iter().all(|r| {
                        covered_by_any(r, &parent_parsed) && covered_by_any(r, &allowed_parsed)
                    });
                    prop_assert_eq!(result.is_ok(), all_covered, "{:?}", result);
                }
                let Ok(child) = result else { break };
                let child_parsed = parse_scopes(&child).unwrap();
                prop_assert!(!child_parsed.is_empty());
                for scope in &child_parsed {
                    prop_assert!(
                        covered_by_any(scope, &parent_parsed),
                        "{} in {:?} is not covered by the parent {:?}", scope, child, parent
                    );
                    prop_assert!(
                        covered_by_any(scope, &allowed_parsed),
                        "{} in {:?} is not covered by the approval {:?}", scope, child, allowed
                    );
                    prop_assert!(
                        covered_by_any(scope, &root_parsed),
                        "{} in {:?} is not covered by the root {:?}", scope, child, root
                    );
                }
                // No grant twice.
                let keys: BTreeSet<(&str, &str)> = child_parsed.iter().map(Scope::key).collect();
                prop_assert_eq!(keys.len(), child_parsed.len());
                parent = child;
            }
        }

        #[test]
        fn prop_display_parse_is_idempotent(s in any_scope()) {
            let parsed = scope(&s);
            prop_assert_eq!(parsed.to_string(), s.clone());
            prop_assert_eq!(scope(&parsed.to_string()), parsed);
        }

        #[test]
        fn prop_arbitrary_input_never_panics(
            requested in prop::option::of("\\PC{0,40}|[ -~]{0,40}|(storage\\.read:/[./a%]{0,12} ?){0,4}"),
            parent in "\\PC{0,40}|[ -~]{0,40}|(storage\\.read:/[./a%]{0,12} ?){0,4}",
            allowed in prop::collection::vec("\\PC{0,20}|[ -~]{0,20}|storage\\.read:/[./a%]{0,12}", 0..4),
        ) {
            let allowed_refs: Vec<&str> = allowed.iter().map(String::as_str).collect();
            if let Ok(child) = narrow(requested.as_deref(), &parent, &allowed_refs) {
                let parent_parsed = parse_scopes(&parent).unwrap();
                for scope in parse_scopes(&child).unwrap() {
                    prop_assert!(covered_by_any(&scope, &parent_parsed));
                }
            }
            if let Ok(parsed) = parse_scope(&parent) {
                prop_assert_eq!(scope(&parsed.to_string()), parsed);
            }
        }
    }
}
