//! IAM-shaped identity policies: parsed and checked once, evaluated per
//! request the way IAM evaluates identity policies — an explicit `Deny`
//! wins, otherwise an `Allow` grants, otherwise the request is denied.
//!
//! Supported: `Version` 2012-10-17 / 2008-10-17; `Statement` as an object or
//! an array; `Sid`, `Effect`, `Action`/`NotAction`, `Resource`/`NotResource`
//! (string or array, `*` and `?` wildcards; actions match without regard to
//! case, resources with); `Condition` with the string, ARN, `Null` and
//! `Bool` operators, the `…IfExists` suffix and the `ForAnyValue:` /
//! `ForAllValues:` qualifiers. Values of one operator and key are ORed,
//! operators and keys ANDed. Not supported, and refused rather than
//! silently ignored: `Principal`/`NotPrincipal` (these are identity
//! policies), numeric and date operators, policy variables (`${…}`).

use std::collections::HashMap;

use serde_json::Value;

/// Why a policy document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not a JSON object, or not JSON at all.
    #[error("the policy is not a JSON object: {0}")]
    NotJson(String),
    /// A top-level or statement field is wrong.
    #[error("{0}")]
    Invalid(String),
}

fn invalid(at: &str, message: impl std::fmt::Display) -> PolicyError {
    PolicyError::Invalid(format!("{at}: {message}"))
}

/// The actions Cloud Map defines (one per operation), for refusing
/// misspelt ones.
use crate::api::OPERATIONS as ACTIONS;

/// A `*`/`?` wildcard pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    text: String,
    wild: bool,
}

impl Pattern {
    fn new(text: &str, fold_case: bool) -> Self {
        let text = if fold_case {
            text.to_ascii_lowercase()
        } else {
            text.to_string()
        };
        let wild = text.contains(['*', '?']);
        Self { text, wild }
    }

    fn matches(&self, value: &str) -> bool {
        if !self.wild {
            return self.text == value;
        }
        // The common shapes without the general matcher: `*` (everything)
        // and `prefix*` (a family of names, `servicediscovery:Get*`).
        match self.text.strip_suffix('*') {
            Some("") => true,
            Some(prefix) if !prefix.contains(['*', '?']) => value.starts_with(prefix),
            _ => glob(self.text.as_bytes(), value.as_bytes()),
        }
    }
}

/// `*` matches any run of characters, `?` one character.
fn glob(pattern: &[u8], value: &[u8]) -> bool {
    let (mut p, mut v) = (0, 0);
    // Where the last `*` was, and the value position it has taken up to.
    let mut star: Option<(usize, usize)> = None;
    while v < value.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, v));
                p += 1;
            }
            Some(&c) if c == b'?' || c == value[v] => {
                p += 1;
                v += 1;
            }
            _ => match star {
                Some((sp, sv)) => {
                    p = sp + 1;
                    v = sv + 1;
                    star = Some((sp, sv + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `Action`/`NotAction` or `Resource`/`NotResource`.
#[derive(Debug, Clone)]
struct Patterns {
    negated: bool,
    patterns: Vec<Pattern>,
}

impl Patterns {
    fn matches(&self, value: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(value)) != self.negated
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    ArnEquals,
    ArnNotEquals,
    ArnLike,
    ArnNotLike,
    Null,
    Bool,
}

impl Op {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "StringEquals" => Self::StringEquals,
            "StringNotEquals" => Self::StringNotEquals,
            "StringEqualsIgnoreCase" => Self::StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => Self::StringNotEqualsIgnoreCase,
            "StringLike" => Self::StringLike,
            "StringNotLike" => Self::StringNotLike,
            "ArnEquals" => Self::ArnEquals,
            "ArnNotEquals" => Self::ArnNotEquals,
            "ArnLike" => Self::ArnLike,
            "ArnNotLike" => Self::ArnNotLike,
            "Null" => Self::Null,
            "Bool" => Self::Bool,
            _ => return None,
        })
    }

    /// Negated operators hold when no value matches (and for a missing key).
    fn negated(self) -> bool {
        matches!(
            self,
            Self::StringNotEquals
                | Self::StringNotEqualsIgnoreCase
                | Self::StringNotLike
                | Self::ArnNotEquals
                | Self::ArnNotLike
        )
    }

    /// Whether `value` matches `wanted` (before negation).
    fn test(self, wanted: &Pattern, value: &str) -> bool {
        match self {
            Self::StringEquals | Self::StringNotEquals | Self::ArnEquals | Self::ArnNotEquals => {
                wanted.text == value
            }
            Self::StringEqualsIgnoreCase | Self::StringNotEqualsIgnoreCase => {
                wanted.text.eq_ignore_ascii_case(value)
            }
            Self::StringLike | Self::StringNotLike | Self::ArnLike | Self::ArnNotLike => {
                wanted.matches(value)
            }
            Self::Bool => wanted.text.eq_ignore_ascii_case(value),
            Self::Null => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qualifier {
    Single,
    AnyValue,
    AllValues,
}

#[derive(Debug, Clone)]
struct Condition {
    op: Op,
    qualifier: Qualifier,
    if_exists: bool,
    /// Lower-case: condition keys are case-insensitive.
    key: String,
    /// Where the set keeps this key's value during one decision (each
    /// distinct key is looked up in the request once, not per statement).
    slot: usize,
    values: Vec<Pattern>,
}

impl Condition {
    /// Whether the condition holds for the request's values of its key.
    fn holds(&self, present: Option<&Vec<String>>) -> bool {
        if self.op == Op::Null {
            let absent = present.is_none_or(|v| v.is_empty());
            return self.values.iter().any(|v| {
                v.text
                    .eq_ignore_ascii_case(if absent { "true" } else { "false" })
            });
        }
        let values = match present {
            Some(v) if !v.is_empty() => v,
            // A missing key: `…IfExists` and negated operators hold, and
            // `ForAllValues` holds vacuously.
            _ => {
                return self.if_exists
                    || self.op.negated()
                    || self.qualifier == Qualifier::AllValues;
            }
        };
        let one = |value: &str| {
            let hit = self.values.iter().any(|w| self.op.test(w, value));
            hit != self.op.negated()
        };
        match self.qualifier {
            Qualifier::AllValues => values.iter().all(|v| one(v)),
            Qualifier::Single | Qualifier::AnyValue => values.iter().any(|v| one(v)),
        }
    }
}

#[derive(Debug, Clone)]
struct Statement {
    sid: Option<String>,
    allow: bool,
    actions: Patterns,
    resources: Patterns,
    conditions: Vec<Condition>,
}

/// A request's condition keys (lower-case) and their values.
pub type Context = HashMap<String, Vec<String>>;

/// One request to decide on.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// `servicediscovery:<Operation>`.
    pub action: &'a str,
    /// The ARNs the action is on, or `*` for actions without resource-level
    /// permissions. Allowed only if allowed on every one.
    pub resources: &'a [String],
    /// Condition keys (lower-case) and values.
    pub context: &'a Context,
}

/// The outcome of evaluating policies for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An `Allow` statement grants it and no `Deny` refuses it.
    Allow,
    /// A `Deny` statement matches (its `Sid`, if it has one).
    ExplicitDeny(Option<String>),
    /// No statement allows it.
    ImplicitDeny,
}

/// Statements compiled for evaluation: looked up by action, so a request
/// meets only the statements that can apply to it.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    statements: Vec<Statement>,
    /// Statements naming exact actions (lower-case action → indexes).
    by_action: HashMap<String, Vec<usize>>,
    /// Statements with wildcard actions or `NotAction`.
    general: Vec<usize>,
    /// The distinct condition keys (each condition's `slot` indexes this).
    keys: Vec<String>,
}

impl PolicySet {
    /// Parses and checks policy documents into one set.
    pub fn parse<'a>(documents: impl IntoIterator<Item = &'a Value>) -> Result<Self, PolicyError> {
        let mut set = Self::default();
        for doc in documents {
            for st in parse_document(doc)? {
                set.add(st);
            }
        }
        Ok(set)
    }

    fn add(&mut self, mut st: Statement) {
        let i = self.statements.len();
        for c in &mut st.conditions {
            c.slot = match self.keys.iter().position(|k| *k == c.key) {
                Some(slot) => slot,
                None => {
                    self.keys.push(c.key.clone());
                    self.keys.len() - 1
                }
            };
        }
        let exact = !st.actions.negated && st.actions.patterns.iter().all(|p| !p.wild);
        if exact {
            for p in &st.actions.patterns {
                let list = self.by_action.entry(p.text.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
        } else {
            self.general.push(i);
        }
        self.statements.push(st);
    }

    /// The number of statements.
    pub fn len(&self) -> usize {
        self.statements.len()
    }

    /// Whether there are no statements (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Whether any statement has a condition (so decisions need the
    /// request's condition keys).
    pub fn has_conditions(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Decides on `request`.
    pub fn evaluate(&self, request: &Request<'_>) -> Decision {
        let action = request.action.to_ascii_lowercase();
        let candidates = self
            .by_action
            .get(&action)
            .into_iter()
            .flatten()
            .chain(&self.general);
        let mut allowed = vec![false; request.resources.len()];
        let values: Vec<Option<&Vec<String>>> =
            self.keys.iter().map(|k| request.context.get(k)).collect();
        for &i in candidates {
            let st = &self.statements[i];
            if !st.actions.matches(&action) {
                continue;
            }
            // No allocation per statement: with 1,000 statements this loop
            // is the whole cost of a decision.
            if !request.resources.iter().any(|r| st.resources.matches(r))
                || !st.conditions.iter().all(|c| c.holds(values[c.slot]))
            {
                continue;
            }
            if !st.allow {
                return Decision::ExplicitDeny(st.sid.clone());
            }
            for (a, r) in allowed.iter_mut().zip(request.resources) {
                *a = *a || st.resources.matches(r);
            }
        }
        if !allowed.is_empty() && allowed.iter().all(|&a| a) {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

fn strings(at: &str, v: &Value) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(invalid(at, format!("expected a string, got {other}"))),
    };
    let out = match v {
        Value::Array(items) => items.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        other => vec![one(other)?],
    };
    if out.is_empty() {
        return Err(invalid(at, "must not be empty"));
    }
    if out.iter().any(|s| s.contains("${")) {
        return Err(invalid(at, "policy variables (${...}) are not supported"));
    }
    Ok(out)
}

fn parse_document(doc: &Value) -> Result<Vec<Statement>, PolicyError> {
    let Value::Object(doc) = doc else {
        return Err(PolicyError::NotJson(format!("got {doc}")));
    };
    for key in doc.keys() {
        if !matches!(key.as_str(), "Version" | "Id" | "Statement") {
            return Err(invalid("policy", format!("unknown element {key:?}")));
        }
    }
    match doc.get("Version").and_then(Value::as_str) {
        Some("2012-10-17" | "2008-10-17") => {}
        Some(v) => {
            return Err(invalid(
                "Version",
                format!("{v:?} is not 2012-10-17 or 2008-10-17"),
            ));
        }
        None => return Err(invalid("policy", "Version \"2012-10-17\" is required")),
    }
    let statements = match doc.get("Statement") {
        Some(Value::Array(s)) if !s.is_empty() => s.iter().collect::<Vec<_>>(),
        Some(Value::Object(_)) => vec![&doc["Statement"]],
        _ => {
            return Err(invalid(
                "policy",
                "Statement must be a statement or a non-empty array",
            ));
        }
    };
    statements
        .into_iter()
        .enumerate()
        .map(|(i, s)| parse_statement(i, s))
        .collect()
}

fn parse_statement(i: usize, st: &Value) -> Result<Statement, PolicyError> {
    let Value::Object(st) = st else {
        return Err(invalid(&format!("Statement[{i}]"), "must be an object"));
    };
    let sid = st.get("Sid").and_then(Value::as_str).map(str::to_string);
    let at = match &sid {
        Some(s) => format!("Statement[{i}] ({s})"),
        None => format!("Statement[{i}]"),
    };
    for key in st.keys() {
        match key.as_str() {
            "Sid" | "Effect" | "Action" | "NotAction" | "Resource" | "NotResource"
            | "Condition" => {}
            "Principal" | "NotPrincipal" => {
                return Err(invalid(
                    &at,
                    format!(
                        "{key} is for resource policies; these are identity policies, attached to the principal"
                    ),
                ));
            }
            other => return Err(invalid(&at, format!("unknown element {other:?}"))),
        }
    }
    let allow = match st.get("Effect").and_then(Value::as_str) {
        Some("Allow") => true,
        Some("Deny") => false,
        Some(other) => {
            return Err(invalid(
                &at,
                format!("Effect {other:?} is not Allow or Deny"),
            ));
        }
        None => return Err(invalid(&at, "Effect is required")),
    };
    let pick = |plain: &str, not: &str| -> Result<(bool, &Value), PolicyError> {
        match (st.get(plain), st.get(not)) {
            (Some(v), None) => Ok((false, v)),
            (None, Some(v)) => Ok((true, v)),
            (Some(_), Some(_)) => Err(invalid(
                &at,
                format!("{plain} and {not} cannot both be given"),
            )),
            (None, None) => Err(invalid(&at, format!("{plain} (or {not}) is required"))),
        }
    };
    let (negated, actions) = pick("Action", "NotAction")?;
    let actions = strings(&format!("{at} Action"), actions)?
        .iter()
        .map(|a| check_action(&at, a).map(|()| Pattern::new(a, true)))
        .collect::<Result<Vec<_>, _>>()?;
    let actions = Patterns {
        negated,
        patterns: actions,
    };
    let (negated, resources) = pick("Resource", "NotResource")?;
    let resources = Patterns {
        negated,
        patterns: strings(&format!("{at} Resource"), resources)?
            .iter()
            .map(|r| Pattern::new(r, false))
            .collect(),
    };
    let conditions = match st.get("Condition") {
        None => Vec::new(),
        Some(c) => parse_conditions(&at, c)?,
    };
    Ok(Statement {
        sid,
        allow,
        actions,
        resources,
        conditions,
    })
}

/// `servicediscovery:<Action>` must name an action Cloud Map has (wildcards
/// aside); other services' actions are valid IAM and simply never match.
fn check_action(at: &str, action: &str) -> Result<(), PolicyError> {
    if action == "*" {
        return Ok(());
    }
    let Some((service, name)) = action.split_once(':') else {
        return Err(invalid(
            at,
            format!("action {action:?} is not service:Action"),
        ));
    };
    if service.eq_ignore_ascii_case("servicediscovery")
        && !name.contains(['*', '?'])
        && !ACTIONS.iter().any(|a| a.eq_ignore_ascii_case(name))
    {
        return Err(invalid(
            at,
            format!("servicediscovery has no action {name:?}"),
        ));
    }
    Ok(())
}

fn parse_conditions(at: &str, c: &Value) -> Result<Vec<Condition>, PolicyError> {
    let Value::Object(ops) = c else {
        return Err(invalid(at, "Condition must be an object of operators"));
    };
    let mut out = Vec::new();
    for (name, keys) in ops {
        let (qualifier, rest) = if let Some(r) = name.strip_prefix("ForAnyValue:") {
            (Qualifier::AnyValue, r)
        } else if let Some(r) = name.strip_prefix("ForAllValues:") {
            (Qualifier::AllValues, r)
        } else {
            (Qualifier::Single, name.as_str())
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(b) => (b, true),
            None => (rest, false),
        };
        let op = Op::parse(base).ok_or_else(|| {
            invalid(
                at,
                format!("condition operator {name:?} is not supported (string, ARN, Null and Bool operators are)"),
            )
        })?;
        let Value::Object(keys) = keys else {
            return Err(invalid(
                at,
                format!("{name} must map condition keys to values"),
            ));
        };
        for (key, values) in keys {
            let values = match values {
                Value::Bool(b) => vec![b.to_string()],
                Value::Array(items) if items.iter().all(Value::is_boolean) && !items.is_empty() => {
                    items.iter().map(|b| b.to_string()).collect()
                }
                other => strings(&format!("{at} {name} {key}"), other)?,
            };
            let fold = matches!(
                op,
                Op::StringEqualsIgnoreCase | Op::StringNotEqualsIgnoreCase
            );
            out.push(Condition {
                op,
                qualifier,
                if_exists,
                key: key.to_ascii_lowercase(),
                slot: 0,
                values: values.iter().map(|v| Pattern::new(v, fold)).collect(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
