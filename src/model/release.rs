//! Release rules: which immutable version of a config each client receives.
//!
//! Owns the rule model ([`Rule`], [`Percent`], [`Labels`]), rule-list validation ([`validate`]), the
//! syntax of client labels and client ids ([`check_label`], [`parse_labels`], [`check_client_id`]),
//! sticky percent buckets ([`bucket`]) and rule evaluation ([`evaluate`]). Pure: no IO, no clock.
//!
//! The bucket hash is part of the wire contract (changing it moves clients between versions):
//! `sha256(config_id 0x00 rule_seed 0x00 client_id)`, first 8 bytes as a big-endian u64, `% 10_000`,
//! where `rule_seed` is `"{priority}:{k1=v1,k2=v2}"` (decimal priority, labels in key order). The
//! percent is not in the seed, so raising a rule's percent keeps every client that was inside.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub const MAX_RULES: usize = 64;
pub const MAX_LABELS: usize = 32;
const MAX_LABEL_LEN: usize = 63;
const MAX_CLIENT_ID_LEN: usize = 128;
const BUCKETS: u16 = 10_000;

/// Basis points of a percentage: 1..=10_000 (0.01% .. 100%).
///
/// Serialized as the bare basis-point number; deserializing rejects values outside 1..=10_000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16")]
pub struct Percent(u16);

impl Percent {
    /// From a percentage in (0, 100] with at most two decimals (10, 12.5, 0.01). Else RuleError::BadPercent.
    pub fn from_percent(p: f64) -> Result<Percent, RuleError> {
        let scaled = p * 100.0;
        let bp = scaled.round();
        if p.is_finite() && p > 0.0 && p <= 100.0 && (scaled - bp).abs() < 1e-6 && bp >= 1.0 {
            // 1.0 <= bp <= 10_000.0 here, so the cast is exact.
            Ok(Percent(bp as u16))
        } else {
            Err(RuleError::BadPercent { rule: None, value: format!("{p:?}") })
        }
    }

    pub fn basis_points(self) -> u16 {
        self.0
    }

    pub fn as_percent(self) -> f64 {
        f64::from(self.0) / 100.0
    }
}

impl TryFrom<u16> for Percent {
    type Error = RuleError;

    fn try_from(bp: u16) -> Result<Self, RuleError> {
        Percent::from_percent(f64::from(bp) / 100.0)
    }
}

pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub labels: Labels,
    pub version: u64,
    pub priority: u32,
    pub percent: Option<Percent>,
}

impl Rule {
    /// The catch-all rule: no labels and no percent.
    pub fn is_default(&self) -> bool {
        self.labels.is_empty() && self.percent.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("release has no rules; add a default rule (no labels, no percent)")]
    Empty,
    #[error("release has {count} rules; remove rules to keep at most {max}", max = MAX_RULES)]
    TooMany { count: usize },
    #[error("release has no default rule; add one rule with no labels and no percent at the lowest priority")]
    NoDefault,
    #[error(
        "rule {second}: another default rule (no labels, no percent) besides rule {first}; \
             add labels or a percent to it, or remove it"
    )]
    SeveralDefaults { first: usize, second: usize },
    #[error(
        "rule {default}: the default rule must have the strictly lowest priority but rule {other} is lower; \
             lower the default's priority"
    )]
    DefaultNotLowest { default: usize, other: usize },
    #[error("rule {second}: priority {priority} is already used by rule {first}; give every rule a distinct priority")]
    DuplicatePriority { first: usize, second: usize, priority: u32 },
    #[error("rule {rule}: version {version} does not exist for this config; point the rule at an existing version")]
    UnknownVersion { rule: usize, version: u64 },
    #[error("{}percent {value} is invalid; use a percentage in (0, 100] with at most two decimals", at(.rule))]
    BadPercent { rule: Option<usize>, value: String },
    #[error("{}{detail}", at(.rule))]
    BadLabel { rule: Option<usize>, detail: String },
    #[error("{}{count} labels given; use at most {max}", at(.rule), max = MAX_LABELS)]
    TooManyLabels { rule: Option<usize>, count: usize },
    #[error("label key {key:?} is given more than once; give each key once")]
    DuplicateLabel { key: String },
    #[error("rule {rule}: version 0 does not exist (versions start at 1); point the rule at an existing version")]
    ZeroVersion { rule: usize },
    #[error("{detail}")]
    BadClientId { detail: String },
}

fn at(rule: &Option<usize>) -> String {
    rule.map(|i| format!("rule {i}: ")).unwrap_or_default()
}

/// Quotes (and shortens) input for an error message, escaping control characters.
fn shown(text: &str) -> String {
    let head: String = text.chars().take(40).collect();
    format!("{head:?}{}", if head.len() < text.len() { "..." } else { "" })
}

/// `what` must be `min..=max` characters, each an ASCII letter, digit or one of `extra`.
fn check_text(what: &str, text: &str, extra: &str, min: usize, max: usize) -> Result<(), String> {
    if let Some(c) = text.chars().find(|c| !c.is_ascii_alphanumeric() && !extra.contains(*c)) {
        return Err(format!("{what} {} contains {c:?}; use only letters, digits and `{extra}`", shown(text)));
    }
    // Only ASCII is left, so bytes are characters.
    if !(min..=max).contains(&text.len()) {
        return Err(format!("{what} {} has {} characters; use {min} to {max}", shown(text), text.len()));
    }
    Ok(())
}

fn label_detail(key: &str, value: &str) -> Result<(), String> {
    check_text("label key", key, "._/-", 1, MAX_LABEL_LEN)?;
    if !key.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("label key {} starts with a symbol; start it with a letter or digit", shown(key)));
    }
    check_text(&format!("label {key:?} value"), value, "._-", 0, MAX_LABEL_LEN)
}

/// Checks one label key/value. Keys: 1..=63 chars of [A-Za-z0-9._/-], starting with a letter or digit.
/// Values: 0..=63 chars of [A-Za-z0-9._-].
pub fn check_label(key: &str, value: &str) -> Result<(), RuleError> {
    label_detail(key, value).map_err(|detail| RuleError::BadLabel { rule: None, detail })
}

/// Parses client labels "k=v,k2=v2" (empty string = no labels; at most MAX_LABELS; duplicate key is an error).
/// No whitespace is trimmed: a space is an invalid character.
pub fn parse_labels(text: &str) -> Result<Labels, RuleError> {
    let mut labels = Labels::new();
    if text.is_empty() {
        return Ok(labels);
    }
    let count = text.split(',').count();
    if count > MAX_LABELS {
        return Err(RuleError::TooManyLabels { rule: None, count });
    }
    for pair in text.split(',') {
        let Some((key, value)) = pair.split_once('=') else {
            let detail = format!("label {} has no `=`; write labels as k=v,k2=v2", shown(pair));
            return Err(RuleError::BadLabel { rule: None, detail });
        };
        check_label(key, value)?;
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(RuleError::DuplicateLabel { key: key.to_owned() });
        }
    }
    Ok(labels)
}

/// Checks a client id: 1..=128 chars of [A-Za-z0-9._:@-].
pub fn check_client_id(id: &str) -> Result<(), RuleError> {
    check_text("client id", id, "._:@-", 1, MAX_CLIENT_ID_LEN).map_err(|detail| RuleError::BadClientId { detail })
}

/// Checks a rule list; `version_exists` says whether a version number exists for this config.
pub fn validate(rules: &[Rule], version_exists: impl Fn(u64) -> bool) -> Result<(), RuleError> {
    if rules.is_empty() {
        return Err(RuleError::Empty);
    }
    if rules.len() > MAX_RULES {
        return Err(RuleError::TooMany { count: rules.len() });
    }
    for (i, rule) in rules.iter().enumerate() {
        if rule.labels.len() > MAX_LABELS {
            return Err(RuleError::TooManyLabels { rule: Some(i), count: rule.labels.len() });
        }
        for (key, value) in &rule.labels {
            label_detail(key, value).map_err(|detail| RuleError::BadLabel { rule: Some(i), detail })?;
        }
        if let Some(p) = rule.percent.filter(|p| !(1..=BUCKETS).contains(&p.0)) {
            return Err(RuleError::BadPercent { rule: Some(i), value: format!("{:?}", p.as_percent()) });
        }
        if rule.version == 0 {
            return Err(RuleError::ZeroVersion { rule: i });
        }
        if !version_exists(rule.version) {
            return Err(RuleError::UnknownVersion { rule: i, version: rule.version });
        }
    }
    let mut defaults = rules.iter().enumerate().filter(|(_, rule)| rule.is_default());
    let Some((default, floor)) = defaults.next() else {
        return Err(RuleError::NoDefault);
    };
    if let Some((second, _)) = defaults.next() {
        return Err(RuleError::SeveralDefaults { first: default, second });
    }
    let mut seen = BTreeMap::new();
    for (i, rule) in rules.iter().enumerate() {
        if let Some(first) = seen.insert(rule.priority, i) {
            return Err(RuleError::DuplicatePriority { first, second: i, priority: rule.priority });
        }
    }
    if let Some(other) = rules.iter().enumerate().position(|(i, r)| i != default && r.priority <= floor.priority) {
        return Err(RuleError::DefaultNotLowest { default, other });
    }
    Ok(())
}

/// The client's bucket for a rule, 0..10_000.
pub fn bucket(config_id: &str, rule: &Rule, client_id: &str) -> u16 {
    let labels: Vec<String> = rule.labels.iter().map(|(key, value)| format!("{key}={value}")).collect();
    let input = format!("{config_id}\0{}:{}\0{client_id}", rule.priority, labels.join(","));
    let head = Sha256::digest(input).iter().take(8).fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
    // The remainder is below 10_000, so the cast is exact.
    (head % u64::from(BUCKETS)) as u16
}

/// The winning rule (index into `rules`) for this client; None only if no rule matches (never, for a valid list).
/// Among equal priorities (an invalid list) the first rule wins.
pub fn evaluate(rules: &[Rule], config_id: &str, labels: &Labels, client_id: Option<&str>) -> Option<usize> {
    let mut best: Option<(usize, u32)> = None;
    for (i, rule) in rules.iter().enumerate() {
        if best.is_some_and(|(_, priority)| priority >= rule.priority) {
            continue;
        }
        let matches = rule.labels.iter().all(|(key, value)| labels.get(key) == Some(value))
            && rule.percent.is_none_or(|p| client_id.is_some_and(|id| bucket(config_id, rule, id) < p.0));
        if matches {
            best = Some((i, rule.priority));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::Index;

    fn to_labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn rule(labels: &[(&str, &str)], version: u64, priority: u32, percent: Option<f64>) -> Rule {
        Rule {
            labels: to_labels(labels),
            version,
            priority,
            percent: percent.map(|p| Percent::from_percent(p).unwrap()),
        }
    }

    fn fallback(priority: u32) -> Rule {
        rule(&[], 1, priority, None)
    }

    fn exists(version: u64) -> bool {
        (1..=3).contains(&version)
    }

    /// Lowercase, says what to fix after "; ", and starts with `prefix` ("rule N: ") exactly when it concerns a rule.
    fn assert_helpful(error: &RuleError, prefix: &str) {
        let message = error.to_string();
        assert!(message.starts_with(|c: char| !c.is_uppercase()) && message.contains("; "), "{message}");
        assert!(message.starts_with(prefix) && message.starts_with("rule ") != prefix.is_empty(), "{message}");
    }

    #[test]
    fn validate_reports_every_rule_error_naming_the_offending_rule() {
        use RuleError::*;
        let many: Labels = (0..=MAX_LABELS).map(|n| (format!("k{n}"), "v".to_string())).collect();
        let bad_label = |k, v| BadLabel { rule: Some(1), detail: label_detail(k, v).unwrap_err() };
        let cases: Vec<(Vec<Rule>, RuleError)> = vec![
            (vec![], Empty),
            (vec![fallback(0); MAX_RULES + 1], TooMany { count: 65 }),
            (vec![fallback(0), Rule { labels: many, ..fallback(1) }], TooManyLabels { rule: Some(1), count: 33 }),
            (vec![fallback(0), rule(&[("-x", "y")], 1, 1, None)], bad_label("-x", "y")),
            (vec![fallback(0), rule(&[("a", "b c")], 1, 1, None)], bad_label("a", "b c")),
            (
                vec![fallback(0), Rule { percent: Some(Percent(0)), ..fallback(1) }],
                BadPercent { rule: Some(1), value: "0.0".into() },
            ),
            (vec![fallback(0), rule(&[], 0, 1, Some(5.0))], ZeroVersion { rule: 1 }),
            (vec![fallback(0), rule(&[], 9, 1, Some(5.0))], UnknownVersion { rule: 1, version: 9 }),
            (vec![rule(&[("a", "b")], 1, 1, None)], NoDefault),
            (vec![fallback(0), fallback(2), rule(&[], 1, 1, Some(9.0))], SeveralDefaults { first: 0, second: 1 }),
            (
                vec![rule(&[("a", "b")], 1, 3, None), rule(&[], 2, 3, Some(1.0)), fallback(0)],
                DuplicatePriority { first: 0, second: 1, priority: 3 },
            ),
            (vec![rule(&[("a", "b")], 1, 1, None), fallback(5)], DefaultNotLowest { default: 1, other: 0 }),
        ];
        for (rules, expected) in cases {
            assert_eq!(validate(&rules, exists), Err(expected.clone()));
            let prefix = if matches!(expected, Empty | TooMany { .. } | NoDefault) { "" } else { "rule 1: " };
            assert_helpful(&expected, prefix);
        }
        let good = vec![rule(&[("env", "prod")], 2, 10, Some(12.5)), fallback(0), rule(&[], 3, 4, Some(1.0))];
        assert_eq!(validate(&good, exists), Ok(()));
    }

    #[test]
    fn label_client_id_and_percent_checks_reject_bad_input_with_helpful_messages() {
        let (long, long_id) = ("a".repeat(64), "c".repeat(129));
        let labels =
            [("", "v"), (&long[..], "v"), ("_a", "v"), ("a b", "v"), ("a", "x/y"), ("a", &long[..]), ("ключ", "v")];
        let percents = [0.0, -1.0, 100.01, 12.345, f64::NAN, f64::INFINITY, 1e-9];
        let errors = labels
            .iter()
            .map(|(k, v)| check_label(k, v))
            .chain(["", &long_id[..], "client\n1"].map(check_client_id))
            .chain(percents.map(|p| Percent::from_percent(p).map(|_| ())))
            .chain([0u16, 10_001].map(|bp| Percent::try_from(bp).map(|_| ())));
        for result in errors {
            assert_helpful(&result.unwrap_err(), "");
        }
        assert_eq!(check_label(&"a".repeat(63), ""), Ok(()));
        assert_eq!(check_label("app.kubernetes.io/name", "my-app_1.2"), Ok(()));
        assert_eq!(check_client_id("user@host:1.2_3-x"), Ok(()));
        for (p, bp) in [(10.0, 1000), (12.5, 1250), (0.01, 1), (0.29, 29), (100.0, 10_000)] {
            let percent = Percent::from_percent(p).unwrap();
            assert_eq!((percent.basis_points(), percent.as_percent()), (bp, p));
        }
    }

    #[test]
    fn parse_labels_reads_pairs_and_rejects_malformed_text() {
        assert_eq!(parse_labels(""), Ok(Labels::new()));
        let expected = to_labels(&[("canary", ""), ("env", "prod"), ("region", "eu-1")]);
        assert_eq!(parse_labels("env=prod,region=eu-1,canary="), Ok(expected));
        let too_many = (0..=MAX_LABELS).map(|n| format!("k{n}=v")).collect::<Vec<_>>().join(",");
        let duplicate = RuleError::DuplicateLabel { key: "a".into() };
        for (text, error) in
            [(&too_many[..], RuleError::TooManyLabels { rule: None, count: 33 }), ("a=1,a=2", duplicate)]
        {
            assert_eq!(parse_labels(text), Err(error.clone()));
            assert_helpful(&error, "");
        }
        for bad in ["env", "a=1,", ",a=1", "a=1,,b=2", " a=1", "a=b=c", "=v"] {
            let error = parse_labels(bad).unwrap_err();
            assert!(matches!(error, RuleError::BadLabel { rule: None, .. }), "{bad}: {error:?}");
            assert_helpful(&error, "");
        }
    }

    #[test]
    fn evaluation_picks_the_highest_priority_rule_whose_labels_the_client_carries() {
        let rules = vec![
            rule(&[("env", "prod"), ("region", "eu")], 3, 20, None),
            fallback(0),
            rule(&[("env", "prod")], 2, 10, None),
        ];
        let eval = |text: &str| evaluate(&rules, "orders", &parse_labels(text).unwrap(), Some("c1"));
        assert_eq!(eval("env=prod,region=eu,zone=a"), Some(0));
        assert_eq!(eval("env=prod,region=us"), Some(2));
        assert_eq!(eval("region=eu"), Some(1));
        assert_eq!(eval("env=dev"), Some(1));
        assert_eq!(eval(""), Some(1));
        assert_eq!(evaluate(&[], "orders", &Labels::new(), Some("c1")), None);
    }

    #[test]
    fn a_client_without_an_id_skips_percent_rules_and_falls_through() {
        let rules = vec![fallback(0), rule(&[("env", "prod")], 2, 5, None), rule(&[], 3, 9, Some(100.0))];
        let prod = parse_labels("env=prod").unwrap();
        assert_eq!(evaluate(&rules, "orders", &prod, Some("c1")), Some(2));
        assert_eq!(evaluate(&rules, "orders", &prod, None), Some(1));
        assert_eq!(evaluate(&rules, "orders", &Labels::new(), None), Some(0));
    }

    #[test]
    fn buckets_match_the_documented_hash() {
        // Computed independently: sha256(b"orders\x007:env=prod,region=eu\x00client-42") etc.
        assert_eq!(bucket("orders", &rule(&[("region", "eu"), ("env", "prod")], 1, 7, Some(10.0)), "client-42"), 4247);
        assert_eq!(bucket("orders", &fallback(7), "client-42"), 139);
        assert_eq!(bucket("orders", &rule(&[("env", "prod")], 2, 3, None), "client-7"), 2935);
    }

    #[test]
    fn the_share_of_ten_thousand_clients_inside_a_percent_rule_is_close_to_its_percent() {
        for (percent, low, high) in [(10.0, 850, 1150), (50.0, 4850, 5150)] {
            let rules = vec![fallback(0), rule(&[], 2, 5, Some(percent))];
            let inside = (0..10_000)
                .filter(|n| evaluate(&rules, "orders", &Labels::new(), Some(&format!("client-{n}"))) == Some(1))
                .count();
            assert!((low..=high).contains(&inside), "{percent}%: {inside} of 10000");
        }
    }

    fn arb_labels(max: usize) -> impl Strategy<Value = Labels> {
        prop::collection::btree_map("[a-c]", "[x-z]", 0..max)
    }

    fn arb_rule() -> impl Strategy<Value = Rule> {
        (arb_labels(3), 1u64..4, any::<u32>(), prop::option::of(1u16..=BUCKETS))
            .prop_map(|(labels, version, priority, bp)| Rule { labels, version, priority, percent: bp.map(Percent) })
    }

    /// Valid lists: distinct priorities, the lowest one on the only default rule, in any order.
    fn arb_valid_rules() -> impl Strategy<Value = Vec<Rule>> {
        (prop::collection::btree_set(any::<u32>(), 1..9), prop::collection::vec(arb_rule(), 8))
            .prop_map(|(priorities, templates)| {
                let mut priorities = priorities.into_iter();
                let mut rules = vec![fallback(priorities.next().unwrap_or(0))];
                for (priority, mut rule) in priorities.zip(templates) {
                    if rule.is_default() {
                        rule.labels.insert("a".into(), "x".into());
                    }
                    rules.push(Rule { priority, ..rule });
                }
                rules
            })
            .prop_shuffle()
    }

    proptest! {
        #[test]
        fn evaluation_is_deterministic(
            rules in prop::collection::vec(arb_rule(), 0..8), config in "[a-z]{0,8}", labels in arb_labels(4),
            client in prop::option::of("[a-z0-9-]{1,16}"),
        ) {
            let first = evaluate(&rules, &config, &labels, client.as_deref());
            prop_assert_eq!(first, evaluate(&rules, &config, &labels, client.as_deref()));
            let id = client.as_deref().unwrap_or("");
            prop_assert!(rules.iter().all(|rule| bucket(&config, rule, id) == bucket(&config, rule, id)));
        }

        #[test]
        fn a_client_inside_a_percent_rule_stays_inside_when_the_percent_grows(
            mut rules in arb_valid_rules(), pick in any::<Index>(), config in "[a-z]{1,8}",
            client in "client-[0-9]{1,5}", (a, b) in (1u16..=BUCKETS, 1u16..=BUCKETS),
        ) {
            let (low, high, i) = (a.min(b), a.max(b), pick.index(rules.len()));
            let labels = rules[i].labels.clone();
            rules[i].percent = Some(Percent(low));
            let before = (evaluate(&rules, &config, &labels, Some(&client)), bucket(&config, &rules[i], &client));
            rules[i].percent = Some(Percent(high));
            prop_assert_eq!(before.1, bucket(&config, &rules[i], &client));
            if before.0 == Some(i) {
                prop_assert_eq!(evaluate(&rules, &config, &labels, Some(&client)), Some(i));
            }
        }

        #[test]
        fn the_default_rule_always_matches_a_valid_list(
            rules in arb_valid_rules(), config in "[a-z]{0,8}", labels in arb_labels(4),
            client in prop::option::of("[a-z0-9-]{1,16}"),
        ) {
            prop_assert_eq!(validate(&rules, exists), Ok(()));
            prop_assert!(evaluate(&rules, &config, &labels, client.as_deref()).is_some());
        }
    }
}
