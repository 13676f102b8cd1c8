//! A subset of Go templates with Helm's functions, enough to render `charts/etcd-operator` as
//! `helm template` would: no helm binary can be installed from the registries this project
//! reaches. It knows `if`/`else if`/`else`/`end`, `define`, comments, trim markers, fields of
//! `.`, and the functions in [`Templates::call`]; anything else panics, so a template that
//! outgrows the subset fails the test loudly instead of rendering wrongly.
//!
//! Helm semantics kept: a missing value prints as nothing, numbers print as Go prints the
//! float64 Helm reads them as (so a large number that Helm would print as `1e+06` panics),
//! `toYaml` drops its trailing newline, truthiness is Go's (empty is false).

use std::collections::BTreeMap;

use serde_json::Value;

/// Parsed templates: the named ones (`define`) and the files to render.
pub struct Templates {
    defines: BTreeMap<String, Vec<Node>>,
}

#[derive(Debug)]
enum Node {
    Text(String),
    Print(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
}

type Pipeline = Vec<Vec<Word>>;

#[derive(Debug)]
enum Word {
    Func(String),
    /// `.` is the empty path.
    Field(Vec<String>),
    Str(String),
    Int(i64),
    Bool(bool),
}

#[derive(Debug)]
enum Token {
    Text(String),
    Action(String),
}

/// Splits a template into text and actions, applying `{{- ` and ` -}}` trims and dropping
/// comments.
fn lex(src: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        if trim_next {
            text = text.trim_start();
        }
        let mut body = &rest[open + 2..];
        if body.starts_with("- ") || body.starts_with("-\n") || body.starts_with("-\t") {
            text = text.trim_end();
            body = &body[1..];
        }
        tokens.push(Token::Text(text.to_string()));
        let close = if body.trim_start().starts_with("/*") {
            let end = body
                .find("*/")
                .unwrap_or_else(|| panic!("unclosed comment in {body:.40}"));
            end + body[end..].find("}}").expect("comment closes with }}")
        } else {
            find_close(body)
        };
        let mut inner = &body[..close];
        trim_next = false;
        if inner.ends_with(" -") || inner.ends_with("\n-") || inner.ends_with("\t-") {
            inner = &inner[..inner.len() - 1];
            trim_next = true;
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            tokens.push(Token::Action(inner.to_string()));
        }
        rest = &body[close + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    tokens.push(Token::Text(text.to_string()));
    tokens
}

/// Where the action starting at `body` ends (`}}` outside a string literal).
fn find_close(body: &str) -> usize {
    let bytes = body.as_bytes();
    let mut in_str = false;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'\\' if in_str => i += 1,
            b'"' => in_str = !in_str,
            b'}' if !in_str && bytes[i + 1] == b'}' => return i,
            _ => {}
        }
        i += 1;
    }
    panic!("unclosed action: {body:.40}")
}

/// What ended a list of nodes.
enum Terminator {
    Eof,
    End,
    Else,
    ElseIf(Pipeline),
}

struct Parser {
    tokens: std::vec::IntoIter<Token>,
    defines: BTreeMap<String, Vec<Node>>,
}

impl Parser {
    fn nodes(&mut self) -> (Vec<Node>, Terminator) {
        let mut nodes = Vec::new();
        while let Some(token) = self.tokens.next() {
            let action = match token {
                Token::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t));
                    }
                    continue;
                }
                Token::Action(a) => a,
            };
            let (keyword, rest) = action
                .split_once(char::is_whitespace)
                .map_or((action.as_str(), ""), |(k, r)| (k, r.trim()));
            match keyword {
                "end" => return (nodes, Terminator::End),
                "else" if rest.is_empty() => return (nodes, Terminator::Else),
                "else" if rest.starts_with("if ") => {
                    return (nodes, Terminator::ElseIf(pipeline(&rest[3..])));
                }
                "if" => nodes.push(self.if_node(pipeline(rest))),
                "define" => {
                    let name = string_literal(rest);
                    let (body, end) = self.nodes();
                    assert!(
                        matches!(end, Terminator::End),
                        "define {name:?} needs an end"
                    );
                    self.defines.insert(name, body);
                }
                "range" | "with" | "template" | "block" | "break" | "continue" | "else" => {
                    panic!(
                        "unsupported template construct `{{{{ {action} }}}}`; extend gotemplate.rs"
                    )
                }
                _ => nodes.push(Node::Print(pipeline(&action))),
            }
        }
        (nodes, Terminator::Eof)
    }

    fn if_node(&mut self, condition: Pipeline) -> Node {
        let mut branches = Vec::new();
        let mut condition = condition;
        loop {
            let (body, end) = self.nodes();
            branches.push((condition, body));
            match end {
                Terminator::End => {
                    return Node::If {
                        branches,
                        otherwise: Vec::new(),
                    };
                }
                Terminator::Else => {
                    let (otherwise, end) = self.nodes();
                    assert!(matches!(end, Terminator::End), "if/else needs an end");
                    return Node::If {
                        branches,
                        otherwise,
                    };
                }
                Terminator::ElseIf(next) => condition = next,
                Terminator::Eof => panic!("if without end"),
            }
        }
    }
}

fn string_literal(s: &str) -> String {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not a string literal {s:?}: {e}"))
}

/// `a | f x | g` -> commands of words.
fn pipeline(src: &str) -> Pipeline {
    let mut commands = vec![Vec::new()];
    let mut chars = src.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '|' => commands.push(Vec::new()),
            '"' => {
                let mut end = i + 1;
                let mut escaped = false;
                for (j, d) in chars.by_ref() {
                    end = j;
                    match d {
                        '\\' if !escaped => escaped = true,
                        '"' if !escaped => break,
                        _ => escaped = false,
                    }
                }
                let word = Word::Str(string_literal(&src[i..=end]));
                commands.last_mut().unwrap().push(word);
            }
            '(' | ')' | '$' => {
                panic!("unsupported template syntax in `{src}`; extend gotemplate.rs")
            }
            _ => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_whitespace() || d == '|' {
                        break;
                    }
                    end = j + d.len_utf8();
                    chars.next();
                }
                commands.last_mut().unwrap().push(word(&src[i..end]));
            }
        }
    }
    assert!(
        commands.iter().all(|c| !c.is_empty()),
        "empty command in `{src}`"
    );
    commands
}

fn word(w: &str) -> Word {
    if w == "." {
        return Word::Field(Vec::new());
    }
    if let Some(path) = w.strip_prefix('.') {
        return Word::Field(path.split('.').map(str::to_string).collect());
    }
    if let Ok(n) = w.parse() {
        return Word::Int(n);
    }
    match w {
        "true" => Word::Bool(true),
        "false" => Word::Bool(false),
        _ if w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => Word::Func(w.to_string()),
        _ => panic!("unsupported word `{w}`; extend gotemplate.rs"),
    }
}

/// Go template truth: false, 0, nil and empty strings, lists and maps are false.
pub fn is_true(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// A value as `{{ }}` prints it.
fn print(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => {
            // Helm reads values as float64; Go prints those of 1e6 and more as `1e+06`.
            let f = n.as_f64().expect("a finite number");
            assert!(
                f.abs() < 1e6,
                "helm prints {n} in exponent form; quote it in values.yaml"
            );
            n.to_string()
        }
        Value::Array(_) | Value::Object(_) => {
            panic!("printing a list or map prints Go syntax; use toYaml: {v}")
        }
    }
}

fn int(v: &Value) -> usize {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected a non-negative integer, got {v}")) as usize
}

impl Templates {
    /// Parses the named templates of every file (`_helpers.tpl` and the manifests alike).
    pub fn parse<'a>(sources: impl IntoIterator<Item = &'a str>) -> Self {
        let mut defines = BTreeMap::new();
        for src in sources {
            let mut parser = Parser {
                tokens: lex(src).into_iter(),
                defines: BTreeMap::new(),
            };
            let (_, end) = parser.nodes();
            assert!(matches!(end, Terminator::Eof), "unbalanced end or else");
            defines.append(&mut parser.defines);
        }
        Templates { defines }
    }

    /// Renders one template file with `.` set to `dot` (`{Values, Release, Chart}`).
    pub fn render(&self, src: &str, dot: &Value) -> String {
        let mut parser = Parser {
            tokens: lex(src).into_iter(),
            defines: BTreeMap::new(),
        };
        let (nodes, end) = parser.nodes();
        assert!(matches!(end, Terminator::Eof), "unbalanced end or else");
        let mut out = String::new();
        self.render_nodes(&nodes, dot, &mut out);
        out
    }

    fn render_nodes(&self, nodes: &[Node], dot: &Value, out: &mut String) {
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Print(p) => out.push_str(&print(&self.eval(p, dot))),
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let body = branches
                        .iter()
                        .find(|(condition, _)| is_true(&self.eval(condition, dot)))
                        .map_or(otherwise, |(_, body)| body);
                    self.render_nodes(body, dot, out);
                }
            }
        }
    }

    fn eval(&self, pipeline: &Pipeline, dot: &Value) -> Value {
        let mut piped = None;
        for command in pipeline {
            let value = match &command[0] {
                Word::Func(name) => {
                    let mut args: Vec<Value> =
                        command[1..].iter().map(|w| self.operand(w, dot)).collect();
                    args.extend(piped.take());
                    self.call(name, args)
                }
                w => {
                    assert!(
                        command.len() == 1 && piped.is_none(),
                        "an operand takes no arguments: {command:?}"
                    );
                    self.operand(w, dot)
                }
            };
            piped = Some(value);
        }
        piped.expect("a pipeline has a command")
    }

    fn operand(&self, word: &Word, dot: &Value) -> Value {
        match word {
            Word::Field(path) => path
                .iter()
                .try_fold(dot, |v, key| v.get(key))
                .cloned()
                .unwrap_or(Value::Null),
            Word::Str(s) => Value::String(s.clone()),
            Word::Int(n) => Value::from(*n),
            Word::Bool(b) => Value::Bool(*b),
            Word::Func(name) => self.call(name, Vec::new()),
        }
    }

    /// Helm's and sprig's functions, with Go's argument order (the piped value comes last).
    fn call(&self, name: &str, args: Vec<Value>) -> Value {
        let arity = |n: usize| {
            assert_eq!(args.len(), n, "{name} takes {n} arguments, got {args:?}");
        };
        match name {
            "include" => {
                arity(2);
                let template = print(&args[0]);
                let body = self
                    .defines
                    .get(&template)
                    .unwrap_or_else(|| panic!("no template named {template:?}"));
                let mut out = String::new();
                self.render_nodes(body, &args[1], &mut out);
                Value::String(out)
            }
            "indent" | "nindent" => {
                arity(2);
                let pad = " ".repeat(int(&args[0]));
                let indented = format!(
                    "{pad}{}",
                    print(&args[1]).replace('\n', &format!("\n{pad}"))
                );
                Value::String(if name == "nindent" {
                    format!("\n{indented}")
                } else {
                    indented
                })
            }
            "toYaml" => {
                arity(1);
                let yaml = serde_norway::to_string(&args[0]).expect("values serialize to YAML");
                Value::String(yaml.strip_suffix('\n').unwrap_or(&yaml).to_string())
            }
            "quote" => {
                arity(1);
                Value::String(serde_json::to_string(&print(&args[0])).unwrap())
            }
            "default" => {
                arity(2);
                let [fallback, given] = <[Value; 2]>::try_from(args).unwrap();
                if is_true(&given) { given } else { fallback }
            }
            "trunc" => {
                arity(2);
                Value::String(print(&args[1]).chars().take(int(&args[0])).collect())
            }
            "trimSuffix" => {
                arity(2);
                let s = print(&args[1]);
                let suffix = print(&args[0]);
                Value::String(s.strip_suffix(&suffix).unwrap_or(&s).to_string())
            }
            "contains" => {
                arity(2);
                Value::Bool(print(&args[1]).contains(&print(&args[0])))
            }
            "printf" => {
                let format = print(&args[0]);
                let mut parts = format.split("%s");
                let mut out = parts.next().unwrap_or_default().to_string();
                let mut values = args[1..].iter();
                for part in parts {
                    out.push_str(&print(
                        values.next().expect("printf needs an argument per %s"),
                    ));
                    out.push_str(part);
                }
                assert!(!out.contains('%'), "printf supports only %s: {format:?}");
                assert!(values.next().is_none(), "printf got extra arguments");
                Value::String(out)
            }
            "not" => {
                arity(1);
                Value::Bool(!is_true(&args[0]))
            }
            // Go's and/or return the deciding argument, not a bool.
            "and" => args
                .iter()
                .find(|v| !is_true(v))
                .or(args.last())
                .cloned()
                .expect("and takes arguments"),
            "or" => args
                .iter()
                .find(|v| is_true(v))
                .or(args.last())
                .cloned()
                .expect("or takes arguments"),
            "eq" => {
                arity(2);
                Value::Bool(args[0] == args[1])
            }
            _ => panic!("unsupported function `{name}`; extend gotemplate.rs"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(helpers: &str, src: &str, dot: Value) -> String {
        Templates::parse([helpers, src]).render(src, &dot)
    }

    #[test]
    fn trim_markers_eat_whitespace_on_their_side_only() {
        let out = render("", "a  \n  {{- \"b\" }}  \n  {{ \"c\" -}}  \n d", json!({}));
        assert_eq!(out, "ab  \n  cd");
    }

    #[test]
    fn include_nindent_and_missing_values_render_like_helm() {
        let helpers = r#"{{- define "x" -}}
k: {{ .Values.v | quote }}
m: {{ .Values.missing }}
{{- end }}"#;
        let out = render(
            helpers,
            "a:\n  {{- include \"x\" . | nindent 2 }}",
            json!({"Values": {"v": 1}}),
        );
        assert_eq!(out, "a:\n  k: \"1\"\n  m: ");
    }

    #[test]
    fn else_if_chains_pick_the_first_true_branch() {
        let src = "{{ if .a }}A{{ else if and .b .c }}BC{{ else }}none{{ end }}";
        assert_eq!(render("", src, json!({"b": 1, "c": "x"})), "BC");
        assert_eq!(render("", src, json!({"b": 1, "c": ""})), "none");
        assert_eq!(render("", src, json!({"a": [1]})), "A");
    }

    #[test]
    #[should_panic(expected = "unsupported template construct")]
    fn constructs_outside_the_subset_panic() {
        render("", "{{ range .Values.xs }}{{ . }}{{ end }}", json!({}));
    }
}
