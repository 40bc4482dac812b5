//! Diffs between two versions of a configuration: a unified text diff of the raw content, and a path-level
//! diff of the parsed JSON trees (JSON pointers with add / remove / replace).

use std::collections::BTreeSet;

use serde_json::Value;

/// Unified diff (3 lines of context) of two texts, with `--- {old_label}` / `+++ {new_label}` headers;
/// empty string when equal.
pub fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    similar::TextDiff::from_lines(old, new).unified_diff().context_radius(3).header(old_label, new_label).to_string()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Add,
    Remove,
    Replace,
}

impl ChangeOp {
    pub fn name(self) -> &'static str {
        match self {
            ChangeOp::Add => "add",
            ChangeOp::Remove => "remove",
            ChangeOp::Replace => "replace",
        }
    }
}

/// One changed path. `old` is set for remove and replace, `new` for add and replace.
#[derive(Debug, Clone, PartialEq)]
pub struct PathChange {
    pub op: ChangeOp,
    /// JSON pointer (RFC 6901: `~` is written `~0`, `/` is written `~1`), "" for the root.
    pub path: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// Path-level diff of two JSON trees: objects compared key by key (sorted keys, deterministic),
/// arrays index by index (extra elements are add/remove at their index), anything else replaced whole.
/// A type change at a path is one Replace at that path.
///
/// Trailing array removals are listed from the highest index down, so the changes also apply in order
/// as a JSON Patch.
pub fn paths(old: &Value, new: &Value) -> Vec<PathChange> {
    let mut changes = Vec::new();
    walk(old, new, "", &mut changes);
    changes
}

fn walk(old: &Value, new: &Value, path: &str, changes: &mut Vec<PathChange>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            // Sorted explicitly: serde_json's map keeps insertion order when `preserve_order` is enabled.
            let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let child = format!("{path}/{}", escape(key));
                match (a.get(key), b.get(key)) {
                    (Some(o), Some(n)) => walk(o, n, &child, changes),
                    (Some(o), None) => changes.push(change(ChangeOp::Remove, child, Some(o), None)),
                    (None, Some(n)) => changes.push(change(ChangeOp::Add, child, None, Some(n))),
                    (None, None) => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (o, n)) in a.iter().zip(b).enumerate() {
                walk(o, n, &format!("{path}/{i}"), changes);
            }
            for (i, n) in b.iter().enumerate().skip(a.len()) {
                changes.push(change(ChangeOp::Add, format!("{path}/{i}"), None, Some(n)));
            }
            for (i, o) in a.iter().enumerate().skip(b.len()).rev() {
                changes.push(change(ChangeOp::Remove, format!("{path}/{i}"), Some(o), None));
            }
        }
        _ if old == new => {}
        _ => changes.push(change(ChangeOp::Replace, path.to_owned(), Some(old), Some(new))),
    }
}

fn change(op: ChangeOp, path: String, old: Option<&Value>, new: Option<&Value>) -> PathChange {
    PathChange { op, path, old: old.cloned(), new: new.cloned() }
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn summary(changes: &[PathChange]) -> Vec<(&'static str, &str)> {
        changes.iter().map(|c| (c.op.name(), c.path.as_str())).collect()
    }

    #[test]
    fn equal_trees_give_no_changes() {
        let tree = json!({"a": [1, {"b": null}], "c": "x"});
        assert_eq!(paths(&tree, &tree.clone()), vec![]);
        assert_eq!(paths(&json!(null), &json!(null)), vec![]);
    }

    #[test]
    fn nested_adds_removes_and_replaces_come_in_sorted_key_order() {
        let old = json!({"db": {"host": "a", "pool": 5, "tls": true}, "name": "svc", "zeta": 1});
        let new = json!({"db": {"host": "b", "pool": 5, "timeout": 30}, "name": "svc", "alpha": 2});
        let changes = paths(&old, &new);
        assert_eq!(
            summary(&changes),
            vec![
                ("add", "/alpha"),
                ("replace", "/db/host"),
                ("add", "/db/timeout"),
                ("remove", "/db/tls"),
                ("remove", "/zeta"),
            ]
        );
        assert_eq!(
            changes[1],
            PathChange { op: ChangeOp::Replace, path: "/db/host".into(), old: Some(json!("a")), new: Some(json!("b")) }
        );
        assert_eq!((changes[0].old.clone(), changes[0].new.clone()), (None, Some(json!(2))));
        assert_eq!((changes[3].old.clone(), changes[3].new.clone()), (Some(json!(true)), None));
    }

    #[test]
    fn a_type_change_is_one_replace_at_that_path() {
        let changes = paths(&json!({"a": {"b": 1}}), &json!({"a": [1]}));
        assert_eq!(
            changes,
            vec![PathChange {
                op: ChangeOp::Replace,
                path: "/a".into(),
                old: Some(json!({"b": 1})),
                new: Some(json!([1]))
            }]
        );
        assert_eq!(summary(&paths(&json!(1), &json!("1"))), vec![("replace", "")]);
        assert_eq!(summary(&paths(&json!(1), &json!(1.0))), vec![("replace", "")]);
    }

    #[test]
    fn arrays_growing_add_at_the_new_indices() {
        let changes = paths(&json!({"xs": [1, 2]}), &json!({"xs": [1, 3, 4, 5]}));
        assert_eq!(summary(&changes), vec![("replace", "/xs/1"), ("add", "/xs/2"), ("add", "/xs/3")]);
        assert_eq!(changes[2].new, Some(json!(5)));
    }

    #[test]
    fn arrays_shrinking_remove_from_the_highest_index_down() {
        let changes = paths(&json!([{"a": 1}, 2, 3, 4]), &json!([{"a": 2}]));
        assert_eq!(summary(&changes), vec![("replace", "/0/a"), ("remove", "/3"), ("remove", "/2"), ("remove", "/1")]);
        assert_eq!(changes[1].old, Some(json!(4)));
    }

    #[test]
    fn keys_with_tilde_and_slash_are_escaped_per_rfc_6901() {
        let changes = paths(&json!({"a/b": 1, "m~n": {"": 1}}), &json!({"a/b": 2, "m~n": {"": 2}, "~/": 0}));
        assert_eq!(summary(&changes), vec![("replace", "/a~1b"), ("replace", "/m~0n/"), ("add", "/~0~1")]);
    }

    #[test]
    fn change_op_names_are_lowercase_words() {
        let names: Vec<_> = [ChangeOp::Add, ChangeOp::Remove, ChangeOp::Replace].map(ChangeOp::name).into();
        assert_eq!(names, vec!["add", "remove", "replace"]);
    }

    #[test]
    fn unified_diff_shows_the_changed_line_with_minus_and_plus() {
        let old = "a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf = 6\ng = 7\nh = 8\n";
        let new = old.replace("e = 5", "e = 50");
        let diff = unified(old, &new, "v1", "v2");
        let expected =
            "--- v1\n+++ v2\n@@ -2,7 +2,7 @@\n b = 2\n c = 3\n d = 4\n-e = 5\n+e = 50\n f = 6\n g = 7\n h = 8\n";
        assert_eq!(diff, expected);
    }

    #[test]
    fn unified_diff_of_equal_texts_is_empty_and_missing_final_newlines_are_marked() {
        assert_eq!(unified("same\n", "same\n", "v1", "v2"), "");
        let diff = unified("x\n", "x\ny", "old", "new");
        assert!(diff.starts_with("--- old\n+++ new\n"), "{diff}");
        assert!(diff.contains("+y\n\\ No newline at end of file"), "{diff}");
    }
}
