//! Capability versions and ranges in npm's semver grammar: what `npm install` and the `semver`
//! package accept, because Orrery's users write ranges in TypeScript and expect them to mean
//! what they mean in `package.json`.
//!
//! Ranges: a bare version is exact (`1.2.0`); comparators (`<`, `<=`, `>`, `>=`, `=`) separated
//! by spaces must all hold; `||` joins alternatives; `1.2.0 - 1.9.0` is inclusive; `1.x`, `1.2.*`
//! and partial versions (`1.2`) are x-ranges; `~1.2.3` allows patch updates, `^1.2.3` updates
//! that keep the left-most non-zero part. A prerelease version (`1.2.0-rc.1`) satisfies a set of
//! comparators only if one of them names a prerelease of the same major.minor.patch, so `^1.0.0`
//! never picks up `1.3.0-beta` by accident.
//!
//! Why a parser of our own rather than a crate: `semver` (the one used before) implements
//! Cargo's grammar, where a bare version is a caret and `||` does not exist. Of the crates
//! implementing npm's grammar, `node-semver` has not been released since February 2025 and pulls
//! `nom` 7 and `miette` 5; its maintained fork `nodejs-semver` (7.x) pulls `miette` 7 (with a
//! proc-macro), `winnow`, `bytecount` and `smallvec`, and says it "does its best" to stay
//! compatible. The grammar is small (this file), the core ships to browsers where every
//! dependency shows up in the wasm size, and discovery matches a range against every provider
//! of a capability (100,000 in the benchmarks), so owning the representation keeps that loop
//! free of allocation. The desugaring below follows npm's documented rules; the model test
//! (`test/registry-model.test.ts`) checks it against npm's own `semver` package.

use std::cmp::Ordering;
use std::fmt;

/// JavaScript's `Number.MAX_SAFE_INTEGER`: npm refuses version numbers above it.
const MAX_SAFE: u64 = (1 << 53) - 1;
/// npm refuses version strings longer than this.
const MAX_VERSION_LEN: usize = 256;
/// The longest range accepted: a range is matched against every provider of a capability.
const MAX_RANGE_LEN: usize = 1024;

/// One dot-separated prerelease identifier.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// Digits only: compared as a number, and below every alphanumeric identifier.
    Numeric(u64),
    /// Anything else: compared as ASCII.
    Alphanumeric(Box<str>),
}

impl Ord for Identifier {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Self::Numeric(a), Self::Numeric(b)) => a.cmp(b),
            (Self::Numeric(_), Self::Alphanumeric(_)) => Ordering::Less,
            (Self::Alphanumeric(_), Self::Numeric(_)) => Ordering::Greater,
            (Self::Alphanumeric(a), Self::Alphanumeric(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Identifier {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A version: `major.minor.patch`, perhaps a prerelease. Build metadata (`+build.5`) is accepted
/// and dropped, since it never takes part in comparisons.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    /// The major version.
    pub major: u64,
    /// The minor version.
    pub minor: u64,
    /// The patch version.
    pub patch: u64,
    /// Prerelease identifiers (`rc.1`); empty for a release.
    pub pre: Vec<Identifier>,
}

impl Version {
    /// A release version.
    #[must_use]
    pub fn new(major: u64, minor: u64, patch: u64) -> Self {
        Self { major, minor, patch, pre: Vec::new() }
    }

    /// `major.minor.patch-0`: the lowest prerelease of a version, the exclusive upper bound npm
    /// gives ranges so that they take no prerelease of the next version.
    fn floor(major: u64, minor: u64, patch: u64) -> Self {
        Self { major, minor, patch, pre: vec![Identifier::Numeric(0)] }
    }

    /// Parses a version as npm does without its `loose` option: `1.2.3`, `v1.2.3`,
    /// `1.2.3-rc.1+build.5`.
    ///
    /// # Errors
    /// Why the text is not a version.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_VERSION_LEN {
            return Err(format!("is longer than {MAX_VERSION_LEN} characters"));
        }
        // npm trims a version before reading it.
        let plain = Plain::parse(text.trim())?;
        match plain.full() {
            Some(version) if plain.strict_prefix => Ok(version),
            _ => Err("is not a version: major.minor.patch, each a number, as in 1.2.0".to_owned()),
        }
    }

    fn triple(&self) -> (u64, u64, u64) {
        (self.major, self.minor, self.patch)
    }
}

impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.triple().cmp(&other.triple()).then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
            (true, true) => Ordering::Equal,
            // A release ranks above its prereleases.
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            // Identifier by identifier; a longer list wins a tie (`rc.1` > `rc`).
            (false, false) => self.pre.cmp(&other.pre),
        })
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        for (i, id) in self.pre.iter().enumerate() {
            f.write_str(if i == 0 { "-" } else { "." })?;
            match id {
                Identifier::Numeric(n) => write!(f, "{n}")?,
                Identifier::Alphanumeric(s) => f.write_str(s)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
}

/// One comparison a version must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Comparator {
    op: Op,
    version: Version,
}

impl Comparator {
    fn test(&self, version: &Version) -> bool {
        let order = version.cmp(&self.version);
        match self.op {
            Op::Lt => order == Ordering::Less,
            Op::Le => order != Ordering::Greater,
            Op::Gt => order == Ordering::Greater,
            Op::Ge => order != Ordering::Less,
            Op::Eq => order == Ordering::Equal,
        }
    }
}

/// A version range: sets of comparators joined by `||`; a version matches if it passes every
/// comparator of some set (and, if it is a prerelease, that set allows its prereleases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// Never empty. An empty set matches every release (`*`).
    sets: Vec<Vec<Comparator>>,
}

impl Range {
    /// Parses a range as npm does without its `loose` and `includePrerelease` options.
    ///
    /// # Errors
    /// Why the text is not a range: a phrase about the whole text (`is longer than ...`), or
    /// one that starts by quoting the part at fault (`"^1" has a part that is not a number or x`).
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.len() > MAX_RANGE_LEN {
            return Err(format!("is longer than {MAX_RANGE_LEN} characters"));
        }
        // Whitespace of any kind and length separates comparators.
        let normal = text.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut sets =
            normal.split("||").map(|part| parse_set(&strip_build(part.trim()))).collect::<Result<Vec<_>, _>>()?;
        // As npm does: an alternative matching every release makes the whole range `*`, which
        // matters for prereleases (`* || 1.0.0-rc.1` takes no prerelease at all).
        if sets.len() > 1 && sets.iter().any(Vec::is_empty) {
            sets = vec![Vec::new()];
        }
        Ok(Self { sets })
    }

    /// Whether `version` is in the range.
    #[must_use]
    pub fn matches(&self, version: &Version) -> bool {
        self.sets.iter().any(|set| {
            set.iter().all(|c| c.test(version))
                // npm's prerelease rule: only a comparator naming a prerelease of the same
                // major.minor.patch lets a prerelease in.
                && (version.pre.is_empty()
                    || set.iter().any(|c| !c.version.pre.is_empty() && c.version.triple() == version.triple()))
        })
    }
}

/// A version as ranges write it: parts may be missing or wildcards (`x`, `X`, `*`), shown here
/// as `None`.
#[derive(Debug)]
struct Plain {
    major: Option<u64>,
    minor: Option<u64>,
    patch: Option<u64>,
    /// Kept only when all three parts are numbers: npm ignores it on a partial version.
    pre: Vec<Identifier>,
    /// Whether the prefix was at most one `v`, as a full version must have outside `^`, `~` and
    /// x-ranges (npm lets those be preceded by any run of `v` and `=`).
    strict_prefix: bool,
    /// Whether no number follows a wildcard (`x.1`, `1.x.2`), which npm refuses in a plain
    /// comparator, though not after `^`, `~` or in a hyphen range.
    wildcards_last: bool,
}

impl Plain {
    /// # Errors
    /// What is wrong with `text`, as a phrase that does not name it (`has more than three
    /// parts`): the caller names what it is about.
    fn parse(text: &str) -> Result<Self, String> {
        let body = text.trim_start_matches(['v', '=']);
        let prefix = &text[..text.len() - body.len()];
        let (main, rest) = body.find(['-', '+']).map_or((body, ""), |at| body.split_at(at));
        let parts = main
            .split('.')
            .map(|p| Part::parse(p).ok_or_else(|| "has a part that is not a number or x".to_owned()))
            .collect::<Result<Vec<Part>, String>>()?;
        if parts.len() > 3 {
            return Err("has more than three parts".to_owned());
        }
        let (major, minor, patch) = (parts[0], parts.get(1).copied(), parts.get(2).copied());
        let pre = if rest.is_empty() {
            Vec::new()
        } else {
            if patch.is_none() {
                return Err("has a prerelease or build without major.minor.patch".to_owned());
            }
            let (pre, build) = rest.split_once('+').map_or((rest, None), |(p, b)| (p, Some(b)));
            if let Some(build) = build {
                if !build
                    .split('.')
                    .all(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
                {
                    return Err("has invalid build metadata".to_owned());
                }
            }
            match pre.strip_prefix('-') {
                None => Vec::new(),
                Some(pre) => pre
                    .split('.')
                    .map(|id| identifier(id).ok_or_else(|| format!("has an invalid prerelease identifier {id:?}")))
                    .collect::<Result<_, _>>()?,
            }
        };
        let wildcards_last = !(major == Part::Wildcard && matches!(minor, Some(Part::Number(_)))
            || minor == Some(Part::Wildcard) && matches!(patch, Some(Part::Number(_))));
        let (major, minor, patch) = (major.number(), minor.and_then(Part::number), patch.and_then(Part::number));
        let exact = major.is_some() && minor.is_some() && patch.is_some();
        let strict_prefix = prefix.is_empty() || prefix == "v";
        Ok(Self { major, minor, patch, pre: if exact { pre } else { Vec::new() }, strict_prefix, wildcards_last })
    }

    /// The version, if no part is missing or a wildcard.
    fn full(&self) -> Option<Version> {
        Some(Version { major: self.major?, minor: self.minor?, patch: self.patch?, pre: self.pre.clone() })
    }
}

/// One dot-separated part of a version in a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Number(u64),
    /// `x`, `X` or `*`.
    Wildcard,
}

impl Part {
    /// The part, if npm accepts it (an empty part is not one: `1..2`, or nothing at all).
    fn parse(text: &str) -> Option<Self> {
        match text {
            "x" | "X" | "*" => Some(Self::Wildcard),
            _ => number(text).map(Self::Number),
        }
    }

    fn number(self) -> Option<u64> {
        match self {
            Self::Number(n) => Some(n),
            Self::Wildcard => None,
        }
    }
}

/// A number as npm writes one: no leading zero, at most `MAX_SAFE_INTEGER`.
fn number(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok().filter(|&n| n <= MAX_SAFE)
}

fn identifier(id: &str) -> Option<Identifier> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return None;
    }
    if id.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: a number, without a leading zero.
        return number(id).map(Identifier::Numeric);
    }
    Some(Identifier::Alphanumeric(id.into()))
}

fn plus_one(n: u64) -> Result<u64, String> {
    Some(n + 1).filter(|&n| n <= MAX_SAFE).ok_or_else(|| "has a version part past 2^53 - 1".to_owned())
}

/// `text` without its build metadata (`+` and dot-separated runs of letters, digits and `-`),
/// wherever it stands, as npm strips it from a range before reading it (`1.2.3+b7` is `1.2.3`,
/// and a lone `+b7` is nothing).
fn strip_build(text: &str) -> String {
    let id = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'+' && bytes.get(i + 1).copied().is_some_and(id) {
            let mut end = i + 1;
            loop {
                while end < bytes.len() && id(bytes[end]) {
                    end += 1;
                }
                // A dot continues the metadata only if an identifier follows it.
                if bytes.get(end) == Some(&b'.') && bytes.get(end + 1).copied().is_some_and(id) {
                    end += 1;
                } else {
                    break;
                }
            }
            i = end;
        } else {
            let next = text[i..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&text[i..i + next]);
            i += next;
        }
    }
    out
}

/// One alternative of a range: space-separated comparators, or a hyphen range. Empty: `*`.
///
/// Spaces count one by one, as in npm: whitespace was collapsed before build metadata was
/// stripped, so a space left doubled by the strip (`1 +b - 2`) separates what a single one joins.
fn parse_set(text: &str) -> Result<Vec<Comparator>, String> {
    let tokens: Vec<&str> = text.split(' ').collect();
    let mut set = Vec::new();
    let mut push = |op: Op, version: Version| {
        // npm reads `>=0.0.0` as `*`, which the prerelease rule and `||` treat as no comparator.
        if !(op == Op::Ge && version == Version::new(0, 0, 0)) {
            set.push(Comparator { op, version });
        }
    };
    // `from - to`, with at most one space before and after.
    let inner = text.strip_prefix(' ').unwrap_or(text);
    let span = inner.strip_suffix(' ').unwrap_or(inner);
    if let Some((from, to)) = span.split_once(" - ") {
        if !from.contains(' ') && !to.contains(' ') {
            if let (Ok(from), Ok(to)) = (Plain::parse(from), Plain::parse(to)) {
                hyphen(&from, &to, &mut push).map_err(|reason| format!("{span:?} {reason}"))?;
                return Ok(set);
            }
        }
    }
    // An operator, `~` or `^` may stand apart from its version (`>= 1.2.0`, `^= 1`).
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        if token.is_empty() {
            // Between two spaces: npm reads nothing there as `*`, which changes nothing.
            i += 1;
            continue;
        }
        let mut joined;
        let token = if operator_apart(token) && tokens.get(i + 1).is_some_and(|next| !next.is_empty()) {
            i += 1;
            // npm reads a lone `~>` before a space as `~` (`~> >1.2` is `~>1.2`, `~> 1` is `~1`).
            let lone = token.strip_suffix('>').filter(|t| t.ends_with('~')).unwrap_or(token);
            joined = format!("{lone}{}", tokens[i]);
            // npm joins an operator to its version before it joins a lone `~` or `^` to what
            // follows: after one, an operator standing apart takes its version too (`~ >= 1.2`
            // is `~>=1.2`); after anything else it does not (`> = 1` stays refused).
            // (A `~>` only before `<` or `>`: before `=`, npm's operator join takes the `>` of
            // `~>` for the operator, and `~> = 1.2` is refused.)
            let lone_tilde_or_caret =
                token.ends_with(['~', '^']) || (token.ends_with("~>") && tokens[i].starts_with(['<', '>']));
            if lone_tilde_or_caret
                && operator_apart(tokens[i])
                && tokens.get(i + 1).is_some_and(|next| !next.is_empty())
            {
                i += 1;
                joined.push_str(tokens[i]);
            }
            joined.as_str()
        } else {
            token
        };
        comparator(token, &mut push)?;
        i += 1;
    }
    Ok(set)
}

/// Whether `token` ends with an operator that npm joins to the token after it. `~` and `^` always
/// are; `<`, `>`, `<=`, `>=` and `=` are when they end the token's trailing run of `<>=v`
/// characters, read from its first place where one fits: there npm's pattern takes the operator,
/// then reads any further `=` and `v` as the version's own prefix, and a space inside that
/// prefix stays (so `>= 1` joins, `== 1` and `v= 1` do not, and are refused). A token ending so
/// is no comparator on its own.
fn operator_apart(token: &str) -> bool {
    if token.ends_with(['~', '^']) {
        return true;
    }
    let bytes = token.as_bytes();
    let run = &bytes[bytes.len() - bytes.iter().rev().take_while(|b| matches!(b, b'<' | b'>' | b'=' | b'v')).count()..];
    for at in 0..run.len() {
        let mut end = at + usize::from(matches!(run[at], b'<' | b'>'));
        end += usize::from(run.get(end) == Some(&b'='));
        if run[end..].iter().all(|b| matches!(b, b'=' | b'v')) {
            return end == run.len();
        }
    }
    false
}

fn hyphen(from: &Plain, to: &Plain, push: &mut impl FnMut(Op, Version)) -> Result<(), String> {
    // A full start, and a full end without a prerelease, must be written as a version (`v` at
    // most): npm keeps them as written, so `=1.2.3` becomes `<==1.2.3`, which it refuses. An end
    // with a prerelease npm rebuilds from its parts, so any `v`/`=` prefix passes (`1 - =1.2.3-rc`).
    match (from.full(), from.major, from.minor) {
        (Some(_), ..) if !from.strict_prefix => return Err("starts with a malformed version".to_owned()),
        (Some(low), ..) => push(Op::Ge, low),
        (None, None, _) => {}
        (None, Some(major), minor) => push(Op::Ge, Version::new(major, minor.unwrap_or(0), 0)),
    }
    match (to.full(), to.major, to.minor) {
        (Some(_), ..) if !to.strict_prefix && to.pre.is_empty() => {
            return Err("ends with a malformed version".to_owned())
        }
        (Some(high), ..) => push(Op::Le, high),
        (None, None, _) => {}
        (None, Some(major), None) => push(Op::Lt, Version::floor(plus_one(major)?, 0, 0)),
        (None, Some(major), Some(minor)) => push(Op::Lt, Version::floor(major, plus_one(minor)?, 0)),
    }
    Ok(())
}

/// One comparator token, desugared into plain comparisons as npm does.
///
/// # Errors
/// What is wrong, naming what it is about once: the version after the operator when that does
/// not parse (`"^1"` in `^^1`), else the whole token.
fn comparator(token: &str, push: &mut impl FnMut(Op, Version)) -> Result<(), String> {
    let version = |text: &str| {
        Plain::parse(text).map_err(|reason| {
            if text.is_empty() {
                format!("{token:?} has no version after its operator")
            } else {
                format!("{text:?} {reason}")
            }
        })
    };
    let about_token = |reason: String| format!("{token:?} {reason}");
    if let Some(rest) = token.strip_prefix('^') {
        return caret(&version(rest)?, push).map_err(about_token);
    }
    if let Some(rest) = token.strip_prefix("~>").or_else(|| token.strip_prefix('~')) {
        return tilde(&version(rest)?, push).map_err(about_token);
    }
    let (op, rest) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt), ("=", Op::Eq)]
        .iter()
        .find_map(|&(text, op)| token.strip_prefix(text).map(|rest| (op, rest)))
        .unwrap_or((Op::Eq, token));
    operator(op, version(rest)?, push).map_err(about_token)
}

/// An operator (`=` when none is written) and the version after it, desugared.
fn operator(op: Op, plain: Plain, push: &mut impl FnMut(Op, Version)) -> Result<(), String> {
    if !plain.wildcards_last {
        return Err("has a number after a wildcard".to_owned());
    }
    let Some(major) = plain.major else {
        // `*`: everything, except that `<*` and `>*` match nothing.
        if matches!(op, Op::Lt | Op::Gt) {
            push(Op::Lt, Version::floor(0, 0, 0));
        }
        return Ok(());
    };
    let minor = match (plain.minor, plain.patch) {
        (Some(_), Some(_)) if !plain.strict_prefix => {
            return Err("is not a comparator: an operator, then a version".to_owned());
        }
        (Some(minor), Some(patch)) => {
            push(op, Version { major, minor, patch, pre: plain.pre });
            return Ok(());
        }
        (minor, _) => minor,
    };
    // A partial version: the operator applies to the whole span it covers.
    match (op, minor) {
        (Op::Eq, None) => {
            push(Op::Ge, Version::new(major, 0, 0));
            push(Op::Lt, Version::floor(plus_one(major)?, 0, 0));
        }
        (Op::Eq, Some(minor)) => {
            push(Op::Ge, Version::new(major, minor, 0));
            push(Op::Lt, Version::floor(major, plus_one(minor)?, 0));
        }
        (Op::Ge, minor) => push(Op::Ge, Version::new(major, minor.unwrap_or(0), 0)),
        (Op::Lt, minor) => push(Op::Lt, Version::floor(major, minor.unwrap_or(0), 0)),
        // Above the span: from the next major (or minor) on.
        (Op::Gt, None) => push(Op::Ge, Version::new(plus_one(major)?, 0, 0)),
        (Op::Gt, Some(minor)) => push(Op::Ge, Version::new(major, plus_one(minor)?, 0)),
        // Up to the end of the span.
        (Op::Le, None) => push(Op::Lt, Version::floor(plus_one(major)?, 0, 0)),
        (Op::Le, Some(minor)) => push(Op::Lt, Version::floor(major, plus_one(minor)?, 0)),
    }
    Ok(())
}

/// `~1.2.3`: patch updates (`>=1.2.3 <1.3.0-0`); `~1.2` the same; `~1`: minor updates.
fn tilde(plain: &Plain, push: &mut impl FnMut(Op, Version)) -> Result<(), String> {
    let Some(major) = plain.major else { return Ok(()) };
    match (plain.minor, plain.patch) {
        (None, _) => {
            push(Op::Ge, Version::new(major, 0, 0));
            push(Op::Lt, Version::floor(plus_one(major)?, 0, 0));
        }
        (Some(minor), patch) => {
            let mut low = Version::new(major, minor, patch.unwrap_or(0));
            if patch.is_some() {
                low.pre.clone_from(&plain.pre);
            }
            push(Op::Ge, low);
            push(Op::Lt, Version::floor(major, plus_one(minor)?, 0));
        }
    }
    Ok(())
}

/// `^1.2.3`: updates that keep the left-most non-zero part (`<2.0.0-0`; `^0.2.3`: `<0.3.0-0`;
/// `^0.0.3`: `<0.0.4-0`). Missing parts count as zero, but do not pin (`^0.0` is `<0.1.0-0`).
fn caret(plain: &Plain, push: &mut impl FnMut(Op, Version)) -> Result<(), String> {
    let Some(major) = plain.major else { return Ok(()) };
    let Some(minor) = plain.minor else {
        push(Op::Ge, Version::new(major, 0, 0));
        push(Op::Lt, Version::floor(plus_one(major)?, 0, 0));
        return Ok(());
    };
    let Some(patch) = plain.patch else {
        push(Op::Ge, Version::new(major, minor, 0));
        let high =
            if major == 0 { Version::floor(0, plus_one(minor)?, 0) } else { Version::floor(plus_one(major)?, 0, 0) };
        push(Op::Lt, high);
        return Ok(());
    };
    let high = match (major, minor) {
        (0, 0) => Version::floor(0, 0, plus_one(patch)?),
        (0, _) => Version::floor(0, plus_one(minor)?, 0),
        _ => Version::floor(plus_one(major)?, 0, 0),
    };
    push(Op::Ge, Version { major, minor, patch, pre: plain.pre.clone() });
    push(Op::Lt, high);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    fn yes(range: &str, versions: &[&str]) {
        let r = Range::parse(range).unwrap_or_else(|e| panic!("{range:?}: {e}"));
        for version in versions {
            assert!(r.matches(&v(version)), "{version} should satisfy {range:?}");
        }
    }

    fn no(range: &str, versions: &[&str]) {
        let r = Range::parse(range).unwrap_or_else(|e| panic!("{range:?}: {e}"));
        for version in versions {
            assert!(!r.matches(&v(version)), "{version} should not satisfy {range:?}");
        }
    }

    #[test]
    fn parses_versions_as_npm_does() {
        assert_eq!(v("1.2.3"), Version::new(1, 2, 3));
        assert_eq!(v("v1.2.3"), Version::new(1, 2, 3));
        assert_eq!(v("1.2.3+build.7"), Version::new(1, 2, 3), "build metadata is dropped");
        assert_eq!(v(" 1.2.3 "), Version::new(1, 2, 3));
        assert_eq!(v("1.2.3-rc.1").to_string(), "1.2.3-rc.1");
        assert_eq!(
            v("1.2.3-0.a-b.7").pre,
            vec![Identifier::Numeric(0), Identifier::Alphanumeric("a-b".into()), Identifier::Numeric(7)]
        );
        for bad in [
            "",
            "1",
            "1.2",
            "1.2.x",
            "01.2.3",
            "1.2.3.4",
            "=1.2.3",
            "vv1.2.3",
            "1.2.3-",
            "1.2.3-01",
            "1.2.3-a..b",
            "1.2.3+",
            "1.2 .3",
            "9007199254740992.0.0",
            "a.b.c",
        ] {
            assert!(Version::parse(bad).is_err(), "{bad:?} is not a version");
        }
        assert!(Version::parse(&"1".repeat(300)).is_err());
    }

    #[test]
    fn orders_versions_by_precedence() {
        let order = [
            "1.0.0-0",
            "1.0.0-1",
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
        ];
        for pair in order.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn a_bare_version_is_exact() {
        yes("1.2.0", &["1.2.0", "1.2.0+build"]);
        no("1.2.0", &["1.2.1", "1.3.0", "1.2.0-rc.1"]);
        yes("=1.2.0", &["1.2.0"]);
        yes("v1.2.0", &["1.2.0"]);
        yes("1.2.0-rc.1", &["1.2.0-rc.1"]);
        no("1.2.0-rc.1", &["1.2.0", "1.2.0-rc.2"]);
    }

    #[test]
    fn comparators_separated_by_spaces_must_all_hold() {
        yes(">=1.2.0-rc.0 <1.2.1", &["1.2.0-rc.0", "1.2.0-rc.5", "1.2.0"]);
        no(">=1.2.0-rc.0 <1.2.1", &["1.2.1", "1.1.9", "1.2.1-rc.0"]);
        yes(">= 1.2.0  < 2", &["1.2.0", "1.9.9"]);
        no(">= 1.2.0  < 2", &["2.0.0", "2.0.0-0", "1.1.0"]);
        yes(">1.2.3 <=1.3.0", &["1.2.4", "1.3.0"]);
        no(">1.2.3 <=1.3.0", &["1.2.3", "1.3.1"]);
    }

    #[test]
    fn alternatives_join_with_double_bars() {
        yes("1.2.0 || >=2.1.0 <3 || 4.x", &["1.2.0", "2.1.0", "2.9.9", "4.0.0", "4.9.0"]);
        no("1.2.0 || >=2.1.0 <3 || 4.x", &["1.2.1", "2.0.0", "3.0.0", "5.0.0"]);
        yes("1.2.0||2.0.0", &["2.0.0"]);
        // An alternative matching every release makes the whole range `*`, as in npm.
        no("* || 1.0.0-rc.1", &["1.0.0-rc.1"]);
        yes("1.0.0 ||", &["7.0.0"]);
        // Build metadata is stripped wherever it stands.
        yes("1.2.3+b7.x", &["1.2.3"]);
        yes("+b7", &["4.0.0"]);
        yes("^1.2+5", &["1.9.0"]);
    }

    #[test]
    fn hyphen_ranges_are_inclusive_and_partial_ends_cover_their_span() {
        yes("1.2.0 - 1.9.0", &["1.2.0", "1.5.3", "1.9.0"]);
        no("1.2.0 - 1.9.0", &["1.1.9", "1.9.1", "1.5.0-rc.1"]);
        yes("1.2 - 2.3", &["1.2.0", "2.3.9"]);
        no("1.2 - 2.3", &["2.4.0", "1.1.0"]);
        yes("1.2.3 - 2", &["2.9.9"]);
        no("1.2.3 - 2", &["3.0.0"]);
        yes("* - 2.0.0", &["0.0.0", "2.0.0"]);
        yes("1.2.3-rc.1 - 1.2.3", &["1.2.3-rc.1", "1.2.3-rc.2", "1.2.3"]);
        // An end with a prerelease may have any `v`/`=` prefix, as npm reads it; a start may not.
        yes("1.2 - =1.2.3-rc", &["1.2.0", "1.2.3-rc"]);
        no("1.2 - =1.2.3-rc", &["1.2.3"]);
        yes("1 - v=v1.2.3-rc.1", &["1.2.3-rc.1"]);
        assert!(Range::parse("1.2 - =1.2.3").is_err());
        assert!(Range::parse("=1.2.3-rc - 2").is_err());
    }

    #[test]
    fn a_lone_tilde_takes_the_next_token_as_npm_does() {
        // `~>` before a space is `~`: its `>` goes, and the next token joins it.
        yes("~> >1.2", &["1.2.0", "1.2.9"]);
        no("~> >1.2", &["1.3.0", "1.1.9"]);
        yes("~> 1.2", &["1.2.5"]);
        no("~> 1.2", &["1.3.0"]);
        assert!(Range::parse("~> <1.2").is_err());
        assert!(Range::parse("~>>1.2").is_err());
        // An operator standing apart after it joins too: all four are `~1.2`.
        for text in ["~> > 1.2", "~> >= 1.2", "~ > 1.2", "~ >= 1.2"] {
            yes(text, &["1.2.0", "1.2.9"]);
            no(text, &["1.3.0"]);
        }
        assert!(Range::parse("> > 1").is_err());
        assert!(Range::parse("> = 1.2.3").is_err());
        assert!(Range::parse("~> = 1.2").is_err());
        assert!(Range::parse("1 || ~> = 1.2").is_err());
        yes("~ = 1.2", &["1.2.5"]);
        assert!(Range::parse("~ ~ 1").is_err());
    }

    #[test]
    fn x_ranges_and_partial_versions() {
        yes("*", &["0.0.0", "3.4.5"]);
        yes("", &["1.0.0"]);
        no("*", &["1.0.0-rc.1"]);
        yes("1.x", &["1.0.0", "1.9.9"]);
        no("1.x", &["2.0.0", "0.9.0", "2.0.0-0"]);
        yes("1.2.*", &["1.2.0", "1.2.9"]);
        no("1.2.*", &["1.3.0"]);
        yes("1", &["1.5.0"]);
        yes("1.2", &["1.2.7"]);
        no("1.2", &["1.3.0"]);
        yes(">1.2", &["1.3.0"]);
        no(">1.2", &["1.2.9"]);
        yes("<=1.2", &["1.2.9"]);
        no("<=1.2", &["1.3.0"]);
        yes(">=1", &["1.0.0"]);
        no("<1", &["1.0.0", "1.0.0-0"]);
        yes("<1", &["0.9.9"]);
        no("<*", &["0.0.0"]);
        no(">*", &["9.9.9"]);
        yes(">=*", &["0.1.0"]);
        // A number after a wildcard is refused in a comparator, not after `^`, `~` or in a hyphen range.
        yes("^x.1", &["3.0.0"]);
        yes("x.1 - 2", &["2.9.0"]);
    }

    #[test]
    fn tilde_allows_patch_updates() {
        yes("~1.2.3", &["1.2.3", "1.2.9"]);
        no("~1.2.3", &["1.3.0", "1.2.2", "1.3.0-0"]);
        yes("~1.2", &["1.2.0", "1.2.9"]);
        yes("~1", &["1.0.0", "1.9.0"]);
        no("~1", &["2.0.0"]);
        yes("~0.2.3", &["0.2.5"]);
        no("~0.2.3", &["0.3.0"]);
        yes("~1.2.3-beta.2", &["1.2.3-beta.2", "1.2.3-beta.4", "1.2.4"]);
        no("~1.2.3-beta.2", &["1.2.3-beta.1", "1.2.4-beta.2"]);
        yes("~>1.2", &["1.2.5"]);
        yes("~ 1.2", &["1.2.5"]);
        yes("^= 1", &["1.5.0"]);
        // Build metadata is stripped after spaces were collapsed: a doubled space separates.
        yes("+b 1 - 2", &["1.5.0"]);
    }

    #[test]
    fn caret_keeps_the_left_most_non_zero_part() {
        yes("^1.2.3", &["1.2.3", "1.9.9"]);
        no("^1.2.3", &["2.0.0", "1.2.2", "2.0.0-0", "1.5.0-rc.1"]);
        yes("^0.2.3", &["0.2.3", "0.2.9"]);
        no("^0.2.3", &["0.3.0"]);
        yes("^0.0.3", &["0.0.3"]);
        no("^0.0.3", &["0.0.4"]);
        yes("^1.2.3-beta.2", &["1.2.3-beta.2", "1.2.3-beta.4", "1.9.0"]);
        no("^1.2.3-beta.2", &["1.2.4-beta.2"]);
        yes("^0.0", &["0.0.9"]);
        no("^0.0", &["0.1.0"]);
        yes("^0.x", &["0.9.0"]);
        no("^0.x", &["1.0.0"]);
        yes("^1.x", &["1.9.0"]);
        yes("^1.2.x", &["1.9.0"]);
        no("^1.2.x", &["1.1.0", "2.0.0"]);
        yes("^0.1", &["0.1.5"]);
        no("^0.1", &["0.2.0"]);
    }

    #[test]
    fn a_prerelease_matches_only_a_comparator_with_a_prerelease_on_its_version() {
        yes(">=1.2.0-rc.0", &["1.2.0-rc.0", "1.2.0-rc.9", "1.2.0", "3.0.0"]);
        no(">=1.2.0-rc.0", &["1.2.1-rc.0", "1.3.0-alpha"]);
        no(">1.0.0", &["1.0.1-rc.1"]);
        no("<=1.0.0", &["1.0.0-rc.1"]);
        yes("<=1.0.0-rc.2", &["1.0.0-rc.1"]);
        // `>=0.0.0` reads as `*`: it does not let 0.0.0's prereleases in on its own…
        no(">=0.0.0", &["0.0.0-rc.1"]);
        // …nor block them when another comparator does.
        yes(">=0.0.0 <=0.0.0-rc.2", &["0.0.0-rc.1"]);
    }

    #[test]
    fn refuses_what_npm_refuses() {
        for bad in [
            "1.2.3,",
            ">=1.0.0, <2.0.0",
            ">>1",
            "~",
            "^",
            ">=",
            "a",
            "1.2.3.4",
            "01.2",
            "1.2.3 - ",
            "- 1.2.3",
            ">=1.2.3 - 2",
            "==1.2.3",
            "v=1.2.3",
            "1.2-rc.1",
            "1.2.3-",
            "1.2.3 |",
            "1.2.3+",
            "x.1",
            "1.x.2",
            ">=*.1",
            "== 1",
            ">== 1",
            "0 +b - 0",
            ">= +b 1",
            "v= 0",
            "=v 1",
        ] {
            assert!(Range::parse(bad).is_err(), "{bad:?} is not a range");
        }
        assert!(Range::parse(&"1.2.3 ".repeat(300)).is_err(), "too long");
        assert!(Range::parse("9007199254740991.x").is_err(), "its end is past 2^53 - 1");
    }
}
