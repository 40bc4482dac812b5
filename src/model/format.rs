//! Content formats of a configuration (json, yaml, toml, properties, text): their names and media types,
//! and real parsing of stored bytes into a JSON tree, with errors that point at the line and column to fix.

use serde::Deserialize as _;
use serde_json::Value;
// serde_norway over serde_yaml_ng: both are forks of serde_yaml with the same API and error locations, but
// serde_yaml_ng still sits on the archived `unsafe-libyaml`, while serde_norway uses `unsafe-libyaml-norway`,
// a maintained fork of the libyaml port that receives fixes.
use serde_norway::Value as Yaml;

/// The deepest nesting of arrays and objects (tables, mappings) structured content may have; the
/// root container is level 1. Deeper content is refused, so no consumer that walks a config
/// recursively can run out of stack on one.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Yaml,
    Toml,
    Properties,
    Text,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: use one of json, yaml, toml, properties, text")]
pub struct UnknownFormat(pub String);

/// Content that does not parse as its format. `line` and `column` are 1-based; the column counts characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}{}", location_suffix(.line, .column))]
pub struct ContentError {
    pub format: Format,
    pub message: String,
    pub line: Option<usize>,
    pub column: Option<usize>,
}

/// " at line L, column C" (or " at line L"), or nothing when the line is unknown.
pub(super) fn location_suffix(line: &Option<usize>, column: &Option<usize>) -> String {
    match (*line, *column) {
        (Some(line), Some(column)) => format!(" at line {line}, column {column}"),
        (Some(line), None) => format!(" at line {line}"),
        _ => String::new(),
    }
}

impl Format {
    pub const ALL: [Format; 5] = [Format::Json, Format::Yaml, Format::Toml, Format::Properties, Format::Text];

    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Yaml => "yaml",
            Format::Toml => "toml",
            Format::Properties => "properties",
            Format::Text => "text",
        }
    }

    /// Case-insensitive inverse of [`Format::name`].
    pub fn parse(name: &str) -> Result<Format, UnknownFormat> {
        Format::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name)).ok_or_else(|| UnknownFormat(name.into()))
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Yaml => "application/yaml",
            Format::Toml => "application/toml",
            Format::Properties => "text/x-java-properties",
            Format::Text => "text/plain; charset=utf-8",
        }
    }

    /// The format of a media type; parameters after `;` are ignored.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        let essence = ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
        match essence.as_str() {
            "application/json" => Some(Format::Json),
            "application/yaml" | "application/x-yaml" | "text/yaml" => Some(Format::Yaml),
            "application/toml" => Some(Format::Toml),
            "text/x-java-properties" => Some(Format::Properties),
            "text/plain" => Some(Format::Text),
            _ => None,
        }
    }

    /// Whether the content has a tree (all but text).
    pub fn is_structured(self) -> bool {
        self != Format::Text
    }

    /// Parses content with a real parser for the format. Ok(Some(tree)) = the content as a JSON tree
    /// for structured formats; Ok(None) for text (which only has to be UTF-8).
    pub fn parse_tree(self, content: &[u8]) -> Result<Option<Value>, ContentError> {
        let text = std::str::from_utf8(content).map_err(|e| {
            let valid = content.get(..e.valid_up_to()).and_then(|p| std::str::from_utf8(p).ok()).unwrap_or_default();
            let (line, column) = line_column(valid, valid.len());
            self.error("content is not valid UTF-8: re-encode it as UTF-8".into(), Some(line), Some(column))
        })?;
        // Editors on Windows may save a byte order mark; it is invisible, so columns are counted without it.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        // Every parser bounds its own recursion (serde_json and serde_norway at 128 levels, toml
        // at 80 per value), so parsing is safe at any input depth; the tree is then held to
        // MAX_DEPTH, and JSON is measured before parsing, where the position is known.
        let tree = match self {
            Format::Json => parse_json(text)?,
            Format::Yaml => parse_yaml(text)?,
            Format::Toml => parse_toml(text)?,
            Format::Properties => parse_properties(text)?,
            Format::Text => return Ok(None),
        };
        match too_deep(&tree) {
            Some(pointer) => Err(self.error(format!("{} (at {pointer})", depth_message()), None, None)),
            None => Ok(Some(tree)),
        }
    }

    fn error(self, message: String, line: Option<usize>, column: Option<usize>) -> ContentError {
        ContentError { format: self, message, line, column }
    }
}

/// 1-based line and character column of byte `offset` in `text` (clamped to the text).
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let last_line = before.rsplit('\n').next().unwrap_or_default();
    (before.matches('\n').count() + 1, last_line.chars().count() + 1)
}

fn depth_message() -> String {
    format!("content nests deeper than {MAX_DEPTH} levels of arrays and objects: flatten it")
}

fn too_deep_error(format: Format, line: Option<usize>, column: Option<usize>) -> ContentError {
    format.error(depth_message(), line, column)
}

/// Whether a parser's error is its recursion limit.
fn is_recursion_limit(message: &str) -> bool {
    message.contains("recursion limit") || message.contains("max recursion depth")
}

/// The pointer of the first container nested deeper than [`MAX_DEPTH`], found without recursion.
fn too_deep(tree: &Value) -> Option<String> {
    fn children(value: &Value) -> Vec<&Value> {
        match value {
            Value::Array(items) => items.iter().collect(),
            Value::Object(map) => map.values().collect(),
            _ => Vec::new(),
        }
    }
    // A first pass without building pointers: nearly all content is well within the limit.
    let mut level: Vec<&Value> = vec![tree];
    let mut depth = 0;
    while !level.is_empty() && depth <= MAX_DEPTH {
        level.retain(|v| v.is_array() || v.is_object());
        depth += usize::from(!level.is_empty());
        level = level.into_iter().flat_map(children).collect();
    }
    if depth <= MAX_DEPTH {
        return None;
    }
    let mut stack: Vec<(&Value, usize, String)> = vec![(tree, 1, String::new())];
    while let Some((value, depth, pointer)) = stack.pop() {
        let children: Vec<(&Value, String)> = match value {
            Value::Array(items) => items.iter().enumerate().map(|(i, v)| (v, format!("{pointer}/{i}"))).collect(),
            Value::Object(map) => map.iter().map(|(k, v)| (v, pointer_push(&pointer, k))).collect(),
            _ => continue,
        };
        if depth > MAX_DEPTH {
            return Some(if pointer.is_empty() { "the root".to_string() } else { pointer });
        }
        stack.extend(children.into_iter().map(|(child, pointer)| (child, depth + 1, pointer)));
    }
    None
}

/// The line and column of the first `[` or `{` of JSON text nested deeper than [`MAX_DEPTH`].
fn json_too_deep(text: &str) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for c in text.chars() {
        column += 1;
        match c {
            '\n' => (line, column) = (line + 1, 0),
            _ if in_string && escaped => escaped = false,
            '\\' if in_string => escaped = true,
            '"' => in_string = !in_string,
            '[' | '{' if !in_string => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some((line, column));
                }
            }
            ']' | '}' if !in_string => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

fn pointer_push(pointer: &str, token: &str) -> String {
    format!("{pointer}/{}", token.replace('~', "~0").replace('/', "~1"))
}

type Tree = Result<Value, ContentError>;

fn array<T>(items: Vec<T>, pointer: &str, each: fn(T, &str) -> Tree) -> Tree {
    let items = items.into_iter().enumerate().map(|(i, item)| each(item, &format!("{pointer}/{i}")));
    Ok(Value::Array(items.collect::<Result<_, _>>()?))
}

fn non_finite(format: Format, number: &dyn std::fmt::Display, pointer: &str) -> ContentError {
    let (number, at) = (number.to_string().to_lowercase(), if pointer.is_empty() { "the root" } else { pointer });
    format.error(format!("{number} at {at} is not representable in JSON: use a finite number or quote it"), None, None)
}

fn parse_json(text: &str) -> Tree {
    if let Some((line, column)) = json_too_deep(text) {
        return Err(too_deep_error(Format::Json, Some(line), Some(column)));
    }
    serde_json::from_str(text).map_err(|e| {
        let message = e.to_string().replace(&format!(" at line {} column {}", e.line(), e.column()), "");
        // serde_json says column 0 for the very start of a line (empty input, EOF after a newline);
        // ours are 1-based.
        let (line, column) = (e.line() > 0).then(|| (e.line(), e.column().max(1))).unzip();
        Format::Json.error(format!("invalid JSON: {message}"), line, column)
    })
}

fn yaml_error(e: &serde_norway::Error) -> ContentError {
    let message = e.to_string();
    if is_recursion_limit(&message) {
        let at = e.location();
        return too_deep_error(Format::Yaml, at.as_ref().map(|l| l.line()), at.as_ref().map(|l| l.column()));
    }
    let Some(at) = e.location() else { return Format::Yaml.error(format!("invalid YAML: {message}"), None, None) };
    let mut message = message.replacen(&format!(" at line {} column {}", at.line(), at.column()), "", 1);
    // libyaml adds its (fixed-text) context as ", while parsing X at line L column C": say what that position is.
    if let Some((problem, context)) = message.split_once(", while ") {
        let context = context.replacen(" at line ", " that started at line ", 1).replacen(" column ", ", column ", 1);
        message = format!("{problem}, while {context}");
    }
    Format::Yaml.error(format!("invalid YAML: {message}"), Some(at.line()), Some(at.column()))
}

/// Accepts nothing, so the error it causes carries the position where a document's first node starts.
struct Locate;
impl serde::de::Visitor<'_> for Locate {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("nothing")
    }
}

/// The line and column of the first YAML collection nested deeper than [`MAX_DEPTH`], read from
/// libyaml's event stream, which stops there. serde_norway loads a document's every event before
/// it checks its own recursion limit, and libyaml's scanner takes time quadratic in flow nesting
/// (a mebibyte of `{a: ` takes minutes), so deep YAML must be caught before serde_norway sees it.
/// Errors are left to serde_norway, which reports them with their position.
fn yaml_too_deep(text: &str) -> Option<(usize, usize)> {
    use std::mem::MaybeUninit;
    use unsafe_libyaml_norway as unsafe_yaml;
    // SAFETY: the parser lives in a Box that does not move while libyaml holds pointers into it;
    // it reads `text`, which outlives it; every event it produced is deleted once read, and the
    // parser is deleted before returning, on every path after a successful initialization.
    unsafe {
        let mut parser = Box::new(MaybeUninit::<unsafe_yaml::yaml_parser_t>::uninit());
        let parser = parser.as_mut_ptr();
        if unsafe_yaml::yaml_parser_initialize(parser).fail {
            return None;
        }
        unsafe_yaml::yaml_parser_set_encoding(parser, unsafe_yaml::YAML_UTF8_ENCODING);
        unsafe_yaml::yaml_parser_set_input_string(parser, text.as_ptr(), text.len() as _);
        let mut depth = 0usize;
        let mut found = None;
        loop {
            let mut event = MaybeUninit::<unsafe_yaml::yaml_event_t>::uninit();
            if unsafe_yaml::yaml_parser_parse(parser, event.as_mut_ptr()).fail {
                break;
            }
            let (kind, mark) = ((*event.as_ptr()).type_, (*event.as_ptr()).start_mark);
            unsafe_yaml::yaml_event_delete(event.as_mut_ptr());
            match kind {
                unsafe_yaml::YAML_SEQUENCE_START_EVENT | unsafe_yaml::YAML_MAPPING_START_EVENT => {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        found = Some((mark.line as usize + 1, mark.column as usize + 1));
                        break;
                    }
                }
                unsafe_yaml::YAML_SEQUENCE_END_EVENT | unsafe_yaml::YAML_MAPPING_END_EVENT => {
                    depth = depth.saturating_sub(1)
                }
                unsafe_yaml::YAML_STREAM_END_EVENT => break,
                _ => {}
            }
        }
        unsafe_yaml::yaml_parser_delete(parser);
        found
    }
}

fn parse_yaml(text: &str) -> Tree {
    if let Some((line, column)) = yaml_too_deep(text) {
        return Err(too_deep_error(Format::Yaml, Some(line), Some(column)));
    }
    let mut documents = serde_norway::Deserializer::from_str(text);
    let Some(first) = documents.next() else { return Ok(Value::Null) };
    let mut yaml = Yaml::deserialize(first).map_err(|e| yaml_error(&e))?;
    if let Some(second) = documents.next() {
        let at = serde::Deserializer::deserialize_any(second, Locate).err().and_then(|e| e.location());
        let message = "content has more than one YAML document: keep exactly one, remove the second `---` document";
        return Err(Format::Yaml.error(message.into(), at.as_ref().map(|l| l.line()), at.map(|l| l.column())));
    }
    yaml.apply_merge().map_err(|e| yaml_error(&e))?;
    yaml_to_json(yaml, "")
}

fn yaml_to_json(yaml: Yaml, pointer: &str) -> Tree {
    Ok(match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) if n.is_nan() || n.is_infinite() => return Err(non_finite(Format::Yaml, &n, pointer)),
        Yaml::Number(n) => serde_json::to_value(n).unwrap_or_default(),
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => array(items, pointer, yaml_to_json)?,
        Yaml::Mapping(mapping) => {
            let entries = mapping.into_iter().map(|(key, value)| {
                let key = yaml_key(key, pointer)?;
                yaml_to_json(value, &pointer_push(pointer, &key)).map(|value| (key, value))
            });
            Value::Object(entries.collect::<Result<_, _>>()?)
        }
        Yaml::Tagged(tagged) => yaml_to_json(tagged.value, pointer)?,
    })
}

/// The string form of a mapping key: a string as it is, anything else as compact JSON (`1`, `true`, `null`, `[1]`).
fn yaml_key(key: Yaml, pointer: &str) -> Result<String, ContentError> {
    Ok(match yaml_to_json(key, pointer)? {
        Value::String(s) => s,
        other => other.to_string(),
    })
}

fn parse_toml(text: &str) -> Tree {
    let table = text.parse::<toml::Table>().map_err(|e| {
        let (line, column) = e.span().map(|span| line_column(text, span.start)).unzip();
        if is_recursion_limit(e.message()) {
            return too_deep_error(Format::Toml, line, column);
        }
        Format::Toml.error(format!("invalid TOML: {}", e.message().trim().replace('\n', "; ")), line, column)
    })?;
    toml_to_json(toml::Value::Table(table), "")
}

fn toml_to_json(toml: toml::Value, pointer: &str) -> Tree {
    Ok(match toml {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => i.into(),
        toml::Value::Float(f) if !f.is_finite() => return Err(non_finite(Format::Toml, &f, pointer)),
        toml::Value::Float(f) => f.into(),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(items) => array(items, pointer, toml_to_json)?,
        toml::Value::Table(table) => {
            let entries = table.into_iter().map(|(k, v)| toml_to_json(v, &pointer_push(pointer, &k)).map(|v| (k, v)));
            Value::Object(entries.collect::<Result<_, _>>()?)
        }
    })
}

fn parse_properties(text: &str) -> Tree {
    let mut object = serde_json::Map::new();
    java_properties::PropertiesIter::new_with_encoding(text.as_bytes(), encoding_rs::UTF_8)
        .read_into(|key, value| {
            object.insert(key, Value::String(value));
        })
        .map_err(|e| {
            // Reading a byte slice only fails on a malformed \uXXXX escape. The crate's Display appends
            // " (line_number = N)"; keep what precedes it.
            let shown = e.to_string();
            let what = shown.split(" (line_number").next().unwrap_or_default().trim_end_matches('.').to_lowercase();
            let message = format!("invalid properties: {what}: write \\u followed by exactly four hex digits");
            Format::Properties.error(message, e.line_number(), None)
        })?;
    Ok(Value::Object(object))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tree(format: Format, content: &str) -> Value {
        format.parse_tree(content.as_bytes()).unwrap().unwrap()
    }

    fn error(format: Format, content: &[u8]) -> ContentError {
        format.parse_tree(content).unwrap_err()
    }

    #[test]
    fn json_errors_at_the_start_of_a_line_are_at_column_one() {
        // Found by the fuzz target content_format: serde_json reports column 0 there.
        for (content, line) in [("", 1), ("{\"a\": 1,\n", 2), ("[1,\n\n", 3)] {
            let err = error(Format::Json, content.as_bytes());
            assert_eq!((err.line, err.column), (Some(line), Some(1)), "{content:?}");
        }
    }

    #[test]
    fn names_content_types_and_parse_round_trip_for_every_format() {
        for format in Format::ALL {
            assert_eq!(Format::parse(&format.name().to_uppercase()), Ok(format));
            assert_eq!(Format::from_content_type(format.content_type()), Some(format));
            assert_eq!(format.is_structured(), format != Format::Text);
        }
        let err = Format::parse("xml").unwrap_err();
        assert_eq!(err.to_string(), "unknown format \"xml\": use one of json, yaml, toml, properties, text");
        assert_eq!(Format::from_content_type(" Application/X-YAML ; charset=utf-8"), Some(Format::Yaml));
        assert_eq!(Format::from_content_type("text/yaml"), Some(Format::Yaml));
        assert_eq!(Format::from_content_type("application/xml"), None);
        assert_eq!(serde_json::to_string(&Format::Properties).unwrap(), "\"properties\"");
    }

    #[test]
    fn content_must_be_utf8_in_every_format_and_errors_point_at_the_first_bad_byte() {
        for format in Format::ALL {
            let err = error(format, b"a: 1\nb: \"\xc3\xa9\xff\"");
            assert_eq!((err.format, err.line, err.column), (format, Some(2), Some(6)), "{format:?}");
            assert_eq!(err.to_string(), "content is not valid UTF-8: re-encode it as UTF-8 at line 2, column 6");
        }
        assert_eq!(Format::Text.parse_tree("{not json".as_bytes()), Ok(None));
        // A leading byte order mark is ignored, and not counted in columns.
        assert_eq!(tree(Format::Toml, "\u{feff}a = 1"), json!({"a": 1}));
        assert_eq!(error(Format::Json, "\u{feff}{,}".as_bytes()).column, Some(2));
    }

    /// `[` nested `depth` deep, around `1`, in each structured format's syntax.
    fn nested(format: Format, depth: usize) -> String {
        let arrays = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        match format {
            Format::Toml => format!("a = {}1{}", "[".repeat(depth - 1), "]".repeat(depth - 1)),
            _ => arrays,
        }
    }

    #[test]
    fn content_nested_deeper_than_the_limit_is_refused_and_the_limit_itself_is_accepted() {
        for format in [Format::Json, Format::Yaml, Format::Toml] {
            assert!(format.parse_tree(nested(format, MAX_DEPTH).as_bytes()).is_ok(), "{format:?}");
            let err = error(format, nested(format, MAX_DEPTH + 1).as_bytes());
            assert!(err.message.contains("deeper than 64 levels"), "{format:?}: {err}");
        }
        // JSON says where: the first bracket past the limit.
        let err = error(Format::Json, format!("{{\"a\":\n{}", "[".repeat(80)).as_bytes());
        assert_eq!((err.line, err.column), (Some(2), Some(MAX_DEPTH)), "{err}");
        // Brackets inside strings do not count.
        let quoted = format!("[\"{}\\\"{}\"]", "[".repeat(100), "{".repeat(100));
        assert!(Format::Json.parse_tree(quoted.as_bytes()).is_ok());
        // Block YAML, TOML tables and dotted keys nest too.
        let block: String = (0..MAX_DEPTH + 1).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        assert!(error(Format::Yaml, block.as_bytes()).message.contains("64 levels"));
        let dotted = format!("[{}]\nx = 1\n", vec!["t"; MAX_DEPTH].join("."));
        assert!(error(Format::Toml, dotted.as_bytes()).message.contains("64 levels"), "{dotted}");
        // YAML aliases expand into the tree, and count.
        let mut aliases = format!("a0: &a0 {}1{}\n", "[".repeat(10), "]".repeat(10));
        for i in 1..7 {
            aliases.push_str(&format!("a{i}: &a{i} {}*a{}{}\n", "[".repeat(10), i - 1, "]".repeat(10)));
        }
        assert!(error(Format::Yaml, aliases.as_bytes()).message.contains("64 levels"));
    }

    #[test]
    fn content_a_mebibyte_deep_is_refused_on_a_normal_thread_stack_in_well_under_a_second() {
        let half = 512 * 1024;
        let inputs = [
            (Format::Json, format!("{}{}", "[".repeat(half), "]".repeat(half))),
            (Format::Json, "{\"a\":".repeat(half / 3)),
            (Format::Yaml, format!("{}{}", "[".repeat(half), "]".repeat(half))),
            (Format::Yaml, "- ".repeat(half)),
            (Format::Yaml, "{a: ".repeat(half / 2)),
            (Format::Yaml, format!("{}1{}", "{a: ".repeat(half / 5), "}".repeat(half / 5))),
            (Format::Toml, format!("a = {}{}", "[".repeat(half), "]".repeat(half))),
            (Format::Toml, format!("a = {}", "{b=".repeat(half / 2))),
            (Format::Toml, format!("[{}]\n", vec!["a"; half].join("."))),
            (Format::Toml, format!("{} = 1\n", vec!["a"; half].join("."))),
        ];
        for (format, content) in inputs {
            let started = std::time::Instant::now();
            let parsed = std::thread::Builder::new()
                .stack_size(2 * 1024 * 1024)
                .spawn(move || format.parse_tree(content.as_bytes()))
                .unwrap()
                .join()
                .expect("parsing must not overflow the stack");
            let err = parsed.unwrap_err();
            assert!(err.message.contains("deeper than 64 levels"), "{format:?}: {err}");
            let took = started.elapsed();
            assert!(took < std::time::Duration::from_secs(2), "{format:?} took {took:?}");
        }
    }

    #[test]
    fn json_parses_to_its_tree_and_errors_carry_serde_json_positions() {
        assert_eq!(tree(Format::Json, r#"{"a": [1, 2.5, null]}"#), json!({"a": [1, 2.5, null]}));
        let err = error(Format::Json, b"{\n  \"a\": 1,\n  \"b\" 2\n}");
        assert_eq!((err.line, err.column), (Some(3), Some(7)));
        assert_eq!(err.to_string(), "invalid JSON: expected `:` at line 3, column 7");
    }

    #[test]
    fn yaml_converts_keys_tags_anchors_and_merges_into_a_json_tree() {
        let yaml =
            "base: &b {host: db, port: 5432}\nprod:\n  <<: *b\n  port: 6432\n1: one\ntrue: yes\n~: nothing\n2.5: f\n\
                    tagged: !secret hunter2\nlist: [1, -2, 2.5]\n? [a, 1]\n: x\n";
        let expected = json!({
            "base": {"host": "db", "port": 5432}, "prod": {"host": "db", "port": 6432}, "1": "one",
            "true": "yes", "null": "nothing", "2.5": "f", "tagged": "hunter2", "list": [1, -2, 2.5], "[\"a\",1]": "x",
        });
        assert_eq!(tree(Format::Yaml, yaml), expected);
    }

    #[test]
    fn yaml_must_be_one_document_where_an_empty_one_is_null_and_a_second_is_refused_naming_its_line() {
        assert_eq!(tree(Format::Yaml, ""), Value::Null);
        assert_eq!(tree(Format::Yaml, "# only a comment\n"), Value::Null);
        assert_eq!(tree(Format::Yaml, "---\na: 1\n...\n"), json!({"a": 1}));
        let err = error(Format::Yaml, b"a: 1\nb: 2\n---\nc: 3\n");
        assert_eq!((err.line, err.message.contains("more than one YAML document")), (Some(4), true), "{err}");
        assert_eq!(error(Format::Yaml, b"a: 1\n--- x\n").line, Some(2));
    }

    #[test]
    fn yaml_syntax_errors_and_duplicate_keys_carry_their_position() {
        let err = error(Format::Yaml, b"a: 1\nb: [1, 2\nc: 3\n").to_string();
        let expected = "invalid YAML: did not find expected ',' or ']', while parsing a flow sequence that started at \
                        line 2, column 4 at line 3, column 2";
        assert_eq!(err, expected);
        // serde_norway points a duplicate key at the start of its mapping, not at the second key.
        let err = error(Format::Yaml, b"x: 0\nm:\n  a: 1\n  a: 2\n");
        assert_eq!(err.to_string(), "invalid YAML: m: duplicate entry with key \"a\" at line 3, column 3");
    }

    #[test]
    fn yaml_and_toml_non_finite_floats_are_refused_naming_them() {
        let err = error(Format::Yaml, b"limits:\n  max: .inf\n").message;
        assert_eq!(err, ".inf at /limits/max is not representable in JSON: use a finite number or quote it");
        assert!(error(Format::Yaml, b"- .nan\n").message.starts_with(".nan at /0 "));
        assert_eq!(tree(Format::Yaml, "max: '.inf'\n"), json!({"max": ".inf"}));
        assert!(error(Format::Toml, b"[a]\nb = -inf\n").message.starts_with("-inf at /a/b "));
        assert!(error(Format::Toml, b"x = nan\n").message.starts_with("nan at /x "));
    }

    #[test]
    fn toml_parses_tables_arrays_and_datetimes_as_rfc3339_strings_and_errors_carry_their_position() {
        let toml = "title = \"x\"\n[db]\npool = 5\nratio = 0.5\non = true\nat = 1979-05-27 07:32:00-08:00\n\
                    day = 1979-05-27\n[[servers]]\nport = 80\n[[servers]]\nport = 81\n";
        let expected = json!({
            "title": "x",
            "db": {"pool": 5, "ratio": 0.5, "on": true, "at": "1979-05-27T07:32:00-08:00", "day": "1979-05-27"},
            "servers": [{"port": 80}, {"port": 81}],
        });
        assert_eq!(tree(Format::Toml, toml), expected);
        assert_eq!(tree(Format::Toml, ""), json!({}));
        // Errors carry the line and column of the start of the error's byte span.
        let err = error(Format::Toml, "a = 1\n# é\nb = \"é\" x\n".as_bytes());
        assert_eq!((err.line, err.column), (Some(3), Some(9)), "{err}");
        assert!(err.message.starts_with("invalid TOML: "), "{err}");
        assert_eq!(error(Format::Toml, b"a = 1\na = 2\n").line, Some(2));
    }

    #[test]
    fn properties_parse_flat_with_verbatim_keys_and_later_duplicates_winning_and_bad_escapes_name_their_line() {
        let props = "# c\ndb.pool = 5\ndb.pool=6\nname: caf\\u00e9 \\\n    au lait\nurl https://x/y\nutf8=é\nempty\n";
        let expected = json!({"db.pool": "6", "name": "café au lait", "url": "https://x/y", "utf8": "é", "empty": ""});
        assert_eq!(tree(Format::Properties, props), expected);
        assert_eq!(tree(Format::Properties, ""), json!({}));
        // A malformed escape is refused at the line the parser reports.
        let err = error(Format::Properties, b"a=1\n\nb=\\uZZZZ\n");
        assert_eq!((err.line, err.column), (Some(3), None));
        let expected =
            "invalid properties: malformed \\uxxxx encoding: not hex: write \\u followed by exactly four hex \
                        digits at line 3";
        assert_eq!(err.to_string(), expected);
    }
}
