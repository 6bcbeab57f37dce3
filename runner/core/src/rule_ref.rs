//! Which rule of a plan admitted a connection. Decisions, the proxy and the audit name a
//! rule by this value; it serialises to the audit's text form (`allow[N]`,
//! `binding:NAME`, `clone:repo`), so chains written before it still verify.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A rule of the plan, by identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RuleRef {
    /// The explicit allow rule at this index of the spec's `egress.allow`.
    Allow(usize),
    /// The service binding of this name (its host, on the binding port).
    Binding(String),
    /// The clone step's repository host.
    CloneRepo,
}

impl RuleRef {
    /// The binding's name, for a binding rule.
    pub fn binding(&self) -> Option<&str> {
        match self {
            RuleRef::Binding(name) => Some(name),
            RuleRef::Allow(_) | RuleRef::CloneRepo => None,
        }
    }
}

impl fmt::Display for RuleRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Allow(index) => write!(f, "allow[{index}]"),
            RuleRef::Binding(name) => write!(f, "binding:{name}"),
            RuleRef::CloneRepo => f.write_str("clone:repo"),
        }
    }
}

/// A rule id that is none of the three forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a rule id (`allow[N]`, `binding:NAME` or `clone:repo`)")]
pub struct InvalidRuleRef(String);

impl FromStr for RuleRef {
    type Err = InvalidRuleRef;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidRuleRef(s.to_owned());
        if s == "clone:repo" {
            return Ok(RuleRef::CloneRepo);
        }
        if let Some(name) = s.strip_prefix("binding:") {
            return if name.is_empty() { Err(invalid()) } else { Ok(RuleRef::Binding(name.to_owned())) };
        }
        let index = s.strip_prefix("allow[").and_then(|rest| rest.strip_suffix(']')).ok_or_else(invalid)?;
        // Digits only, written the one way the planner writes them.
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) || (index.len() > 1 && index.starts_with('0'))
        {
            return Err(invalid());
        }
        index.parse().map(RuleRef::Allow).map_err(|_| invalid())
    }
}

impl Serialize for RuleRef {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RuleRef {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for RuleRef {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("RuleRef")
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests")]
mod tests {
    use super::*;

    #[test]
    fn every_form_reads_back_as_written() {
        for rule in [RuleRef::Allow(0), RuleRef::Allow(12), RuleRef::Binding("gh".into()), RuleRef::CloneRepo] {
            let text = rule.to_string();
            assert_eq!(text.parse::<RuleRef>().unwrap(), rule);
            let json = serde_json::to_string(&rule).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<RuleRef>(&json).unwrap(), rule);
        }
    }

    #[test]
    fn the_audit_text_forms_are_unchanged() {
        assert_eq!(RuleRef::Allow(3).to_string(), "allow[3]");
        assert_eq!(RuleRef::Binding("api".into()).to_string(), "binding:api");
        assert_eq!(RuleRef::CloneRepo.to_string(), "clone:repo");
    }

    #[test]
    fn other_spellings_are_refused() {
        for text in ["", "allow[]", "allow[01]", "allow[-1]", "allow[1", "allow[x]", "binding:", "clone", "host:a.test"]
        {
            assert!(text.parse::<RuleRef>().is_err(), "{text:?} was read as a rule");
        }
    }
}
