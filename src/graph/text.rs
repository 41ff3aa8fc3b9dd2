//! The text IR: printer and parser, kept together so they change together.
//!
//! A model in the text IR reads like this:
//!
//! ```text
//! # comments run to the end of a line
//! graph tiny(input: f32[N,3,32,32]) -> (logits: f32[N,10]) {
//!   const w: f32[8,3,3,3] = normal(seed=1, std=0.27)
//!   const shape: i64[2] = [0, -1]
//!   conv: f32[N,8,30,30] = conv(input, w, _) {kernel_shape=[3, 3]}
//!   relu: f32[N,8,30,30] = relu(conv) @"/block/Relu"
//!   ...
//! }
//! ```
//!
//! - The header names the graph, its inputs (`name: type`) and its outputs (`name: type`,
//!   the type checked against the value's type).
//! - Types are `dtype[dims]`: `f32[1,3,224,224]`, `i64[2]`, `f32[]` (a scalar); a dim is a
//!   size, a symbol (`N`) or `?` (known only at run time).
//! - `const NAME: TYPE = INIT` defines a constant; INIT is `zeros`, `ones`, `fill(V)`,
//!   `normal(seed=S, std=X)`, `normal(seed=S, mean=M, std=X)`, `uniform(seed=S, low=A,
//!   high=B)` or a literal (a scalar, or a flat row-major list). Literal constants of more
//!   than [`MAX_PRINTED_LITERAL`] elements print elided as `data(N values)`, which does not
//!   parse back.
//! - A node is `OUT: TYPE, ... = op(IN, ..., _) {attr=value, ...} @NODE_NAME`: `_` is an
//!   absent optional input; the attribute block is left out when empty; `@NODE_NAME` only
//!   when the node's name differs from its first output's. Output types are optional when
//!   parsing (shape inference supplies them) and must equal the inferred type when given.
//! - Names are bare when they read back as one identifier: a letter or `_`, then letters,
//!   digits, `_ . / -` and `::` (`conv1.weight`, `onnx::Conv_12`, `layer1/relu`); others
//!   are quoted with Rust-style escapes (`"123"`, `"/layer1/Relu"`, `"a b"`). `_` alone
//!   marks an absent input, so a value named `_` is quoted too.
//!
//! Invariants: `print` writes a canonical form (inputs, constants in definition order, nodes
//! in [`Graph::node_order`], one statement a line, two-space indent) and
//! `print(parse(print(g))) == print(g)`; floats read back bit-exactly. `parse` never panics:
//! every problem is an [`Error::Parse`] with a line and column. Nodes may use values defined
//! on later lines; they are added in dependency order (source order where possible), and a
//! cycle is an error naming its nodes.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;

use crate::error::{Error, Result, SourceLocation};
use crate::graph::op::{Attr, FloatRepr, Op};
use crate::graph::types::{Dim, TensorType};
use crate::graph::{ConstInit, Constant, Graph, ValueDef, ValueId};
use crate::tensor::{DType, Tensor, TensorData, element_count};
use crate::tensor_gen;

/// Literal constants with at most this many elements print their data; larger ones print
/// elided as `data(N values)`.
pub const MAX_PRINTED_LITERAL: usize = 64;

/// The most elements a constant written in the text IR may have (1 GiB of `f32`), so a
/// typo in a shape is an error rather than an out-of-memory abort.
pub const MAX_CONST_ELEMENTS: usize = 1 << 28;

/// Words that start statements or the file; values with these names print quoted.
const KEYWORDS: &[&str] = &["graph", "const"];

// ---------------------------------------------------------------------------------------
// Printer
// ---------------------------------------------------------------------------------------

/// Prints a graph in the text IR's canonical form.
pub fn print(graph: &Graph) -> String {
    let mut out = String::new();
    let io = |ids: &[ValueId]| -> String {
        ids.iter()
            .map(|&id| {
                let v = graph.value(id);
                format!("{}: {}", format_name(&v.name), format_type(&v.ty))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "graph {}({}) -> ({}) {{",
        format_name(&graph.name),
        io(graph.inputs()),
        io(graph.outputs())
    );
    for (_, value) in graph.values() {
        if let ValueDef::Const(c) = &value.def {
            let _ = writeln!(
                out,
                "  const {}: {} = {}",
                format_name(&value.name),
                format_type(&value.ty),
                format_const_init(c)
            );
        }
    }
    for &node_id in graph.node_order() {
        let node = graph.node(node_id);
        let outputs: Vec<String> = node
            .outputs
            .iter()
            .map(|&id| {
                let v = graph.value(id);
                format!("{}: {}", format_name(&v.name), format_type(&v.ty))
            })
            .collect();
        let inputs: Vec<String> = node
            .inputs
            .iter()
            .map(|input| match input {
                Some(id) => format_name(&graph.value(*id).name),
                None => "_".to_string(),
            })
            .collect();
        let _ = write!(
            out,
            "  {} = {}({})",
            outputs.join(", "),
            node.op.name(),
            inputs.join(", ")
        );
        let attrs = node.op.attributes();
        if !attrs.is_empty() {
            let attrs: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let _ = write!(out, " {{{}}}", attrs.join(", "));
        }
        let first_output = node
            .outputs
            .first()
            .map(|&id| graph.value(id).name.as_str());
        if first_output != Some(node.name.as_str()) {
            let _ = write!(out, " @{}", format_name(&node.name));
        }
        out.push('\n');
    }
    out.push_str("}\n");
    out
}

/// A name as the text IR prints it: bare if it reads back as one identifier, else quoted.
pub fn format_name(name: &str) -> String {
    if is_bare_name(name) {
        name.to_string()
    } else {
        format!("{name:?}")
    }
}

/// Whether `name` prints without quotes: it lexes as exactly one identifier and is not `_`
/// or a keyword.
fn is_bare_name(name: &str) -> bool {
    let chars: Vec<char> = name.chars().collect();
    match chars.first() {
        Some(&c) if is_ident_start(c) => {}
        _ => return false,
    }
    scan_ident(&chars, 0) == chars.len() && name != "_" && !KEYWORDS.contains(&name)
}

/// A type as the text IR prints it, quoting symbolic dims that are not plain identifiers.
pub fn format_type(ty: &TensorType) -> String {
    let dims: Vec<String> = ty
        .shape
        .iter()
        .map(|d| match d {
            Dim::Known(n) => n.to_string(),
            Dim::Sym(s) => format_name(s),
            Dim::Unknown => "?".to_string(),
        })
        .collect();
    format!("{}[{}]", ty.dtype, dims.join(","))
}

/// An `f64` that reads back bit-exactly: `0.5`, `1e-5`, `inf`, `nan`.
fn format_f64(v: f64) -> String {
    if v.is_nan() {
        "nan".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_string()
    } else {
        format!("{v:?}")
    }
}

/// The single value of a literal whose elements are all bitwise equal (and not `-0.0`,
/// which `zeros` would lose), so it can print as `zeros`, `ones` or `fill(v)`.
fn uniform_literal(c: &Constant) -> Option<f64> {
    let value = match c.tensor.data() {
        TensorData::F32(v) => {
            let first = *v.first()?;
            if !v.iter().all(|x| x.to_bits() == first.to_bits())
                || first.to_bits() == (-0.0f32).to_bits()
                || first.is_nan()
            {
                return None;
            }
            f64::from(first)
        }
        TensorData::I64(v) => {
            let first = *v.first()?;
            // Only integers that an f64 holds exactly.
            if !v.iter().all(|&x| x == first) || first.unsigned_abs() > (1 << 53) {
                return None;
            }
            first as f64
        }
    };
    Some(value)
}

fn format_const_init(c: &Constant) -> String {
    let dtype = c.tensor.dtype();
    if c.init == ConstInit::Literal
        && c.tensor.len() > 1
        && let Some(value) = uniform_literal(c)
    {
        let fill = Constant {
            tensor: c.tensor.clone(),
            init: ConstInit::Fill { value },
        };
        return format_const_init(&fill);
    }
    match &c.init {
        ConstInit::Fill { value } => {
            if value.to_bits() == 0.0f64.to_bits() {
                "zeros".to_string()
            } else if *value == 1.0 {
                "ones".to_string()
            } else if dtype == DType::I64 && value.fract() == 0.0 && value.abs() < 9.0e15 {
                format!("fill({})", *value as i64)
            } else {
                format!("fill({})", format_f64(*value))
            }
        }
        ConstInit::Normal { seed, mean, std } => {
            if mean.to_bits() == 0.0f64.to_bits() {
                format!("normal(seed={seed}, std={})", format_f64(*std))
            } else {
                format!(
                    "normal(seed={seed}, mean={}, std={})",
                    format_f64(*mean),
                    format_f64(*std)
                )
            }
        }
        ConstInit::Uniform { seed, low, high } => format!(
            "uniform(seed={seed}, low={}, high={})",
            format_f64(*low),
            format_f64(*high)
        ),
        ConstInit::Literal => {
            let n = c.tensor.len();
            if n > MAX_PRINTED_LITERAL {
                return format!("data({n} values)");
            }
            let items: Vec<String> = match c.tensor.data() {
                TensorData::F32(v) => v.iter().map(|&x| FloatRepr(x).to_string()).collect(),
                TensorData::I64(v) => v.iter().map(|x| x.to_string()).collect(),
            };
            match items.as_slice() {
                [one] if c.tensor.rank() == 0 => one.clone(),
                _ => format!("[{}]", items.join(", ")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------

/// A 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pos {
    line: usize,
    column: usize,
}

fn parse_error(pos: Pos, message: impl Into<String>) -> Error {
    Error::Parse {
        location: SourceLocation {
            line: pos.line,
            column: pos.column,
        },
        message: message.into(),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    /// A bare name or keyword.
    Ident(String),
    /// A quoted string (a name or a string attribute), unescaped.
    Str(String),
    /// A number, as written (parsed later, as the context's type).
    Num(String),
    /// One of `( ) [ ] { } , : = @ ?`.
    Punct(char),
    /// `->`.
    Arrow,
    /// The end of a line (statements end here).
    Newline,
    /// The end of the source.
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Num(s) => format!("`{s}`"),
            Tok::Str(s) => format!("string {s:?}"),
            Tok::Punct(c) => format!("`{c}`"),
            Tok::Arrow => "`->`".to_string(),
            Tok::Newline => "end of line".to_string(),
            Tok::Eof => "end of file".to_string(),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    pos: Pos,
}

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_'
}

fn is_ident_continue(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')
}

/// The end of the identifier starting at `start`: letters, digits, `_ . / -`, and `::` when
/// an identifier character follows (so `onnx::Conv_1` is one name but `x: f32` is three
/// tokens).
fn scan_ident(chars: &[char], start: usize) -> usize {
    let mut i = start + 1;
    loop {
        match chars.get(i) {
            Some(&c) if is_ident_continue(c) => i += 1,
            Some(':')
                if chars.get(i + 1) == Some(&':')
                    && chars.get(i + 2).is_some_and(|&c| is_ident_continue(c)) =>
            {
                i += 3;
            }
            _ => return i,
        }
    }
}

struct Lexer {
    chars: Vec<char>,
    i: usize,
    line: usize,
    column: usize,
}

impl Lexer {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.i).copied()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn bump_n(&mut self, n: usize) -> String {
        (0..n).filter_map(|_| self.bump()).collect()
    }

    /// Whether the text at the cursor is `word` not followed by an identifier character.
    fn at_word(&self, ahead: usize, word: &str) -> bool {
        let n = word.chars().count();
        word.chars()
            .enumerate()
            .all(|(k, c)| self.peek(ahead + k) == Some(c))
            && !self.peek(ahead + n).is_some_and(is_ident_continue)
    }

    fn number(&mut self, pos: Pos) -> Result<Tok> {
        let start = self.i;
        if matches!(self.peek(0), Some('-' | '+')) {
            self.bump();
        }
        let digits = |lx: &mut Lexer| {
            let mut n = 0;
            while lx.peek(0).is_some_and(|c| c.is_ascii_digit()) {
                lx.bump();
                n += 1;
            }
            n
        };
        if digits(self) == 0 {
            return Err(parse_error(pos, "malformed number"));
        }
        if self.peek(0) == Some('.') {
            self.bump();
            digits(self);
        }
        if matches!(self.peek(0), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(0), Some('-' | '+')) {
                self.bump();
            }
            if digits(self) == 0 {
                return Err(parse_error(
                    pos,
                    "malformed number: the exponent has no digits",
                ));
            }
        }
        if self.peek(0).is_some_and(is_ident_continue) {
            return Err(parse_error(
                pos,
                "malformed number: a name must start with a letter or `_`",
            ));
        }
        Ok(Tok::Num(self.chars[start..self.i].iter().collect()))
    }

    fn string(&mut self, pos: Pos) -> Result<Tok> {
        self.bump();
        let mut s = String::new();
        loop {
            let escape_pos = self.pos();
            match self.bump() {
                None => return Err(parse_error(pos, "unterminated string")),
                Some('"') => return Ok(Tok::Str(s)),
                Some('\\') => {
                    let c = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('\'') => '\'',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('0') => '\0',
                        Some('u') => self.unicode_escape(escape_pos)?,
                        _ => return Err(parse_error(escape_pos, "unknown escape in string")),
                    };
                    s.push(c);
                }
                Some(c) => s.push(c),
            }
        }
    }

    /// The rest of a `\u{HEX}` escape, after the `u`.
    fn unicode_escape(&mut self, pos: Pos) -> Result<char> {
        let bad = || parse_error(pos, "malformed \\u{...} escape in string");
        if self.bump() != Some('{') {
            return Err(bad());
        }
        let mut hex = String::new();
        loop {
            match self.bump() {
                Some('}') => break,
                Some(c) if c.is_ascii_hexdigit() && hex.len() < 6 => hex.push(c),
                _ => return Err(bad()),
            }
        }
        u32::from_str_radix(&hex, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(bad)
    }

    fn next_token(&mut self) -> Result<Option<Token>> {
        loop {
            match self.peek(0) {
                Some(' ' | '\t' | '\r') => {
                    self.bump();
                }
                Some('#') => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                _ => break,
            }
        }
        let pos = self.pos();
        let Some(c) = self.peek(0) else {
            return Ok(None);
        };
        let tok = match c {
            '\n' => {
                self.bump();
                Tok::Newline
            }
            '(' | ')' | '[' | ']' | '{' | '}' | ',' | ':' | '=' | '@' | '?' => {
                self.bump();
                Tok::Punct(c)
            }
            '-' if self.peek(1) == Some('>') => {
                self.bump_n(2);
                Tok::Arrow
            }
            '-' if self.at_word(1, "inf") => Tok::Num(self.bump_n(4)),
            '-' | '+' | '0'..='9' => self.number(pos)?,
            '"' => self.string(pos)?,
            c if is_ident_start(c) => {
                let end = scan_ident(&self.chars, self.i);
                Tok::Ident(self.bump_n(end - self.i))
            }
            c => {
                return Err(parse_error(pos, format!("unexpected character {c:?}")));
            }
        };
        Ok(Some(Token { tok, pos }))
    }
}

/// Splits a source into tokens. The final `Eof` sits at the end of the last line (not on
/// an empty line after it), so errors about a missing end point at a line that exists.
fn lex(source: &str) -> Result<Vec<Token>> {
    // A byte-order mark some editors write is not part of the text.
    let source = source.strip_prefix('\u{feff}').unwrap_or(source);
    let mut lexer = Lexer {
        chars: source.chars().collect(),
        i: 0,
        line: 1,
        column: 1,
    };
    let mut tokens = Vec::new();
    let mut last_end = Pos { line: 1, column: 1 };
    while let Some(token) = lexer.next_token()? {
        if token.tok != Tok::Newline {
            last_end = lexer.pos();
        }
        tokens.push(token);
    }
    // Point at the end of the last token: past trailing newlines and comments.
    tokens.push(Token {
        tok: Tok::Eof,
        pos: last_end,
    });
    Ok(tokens)
}

// ---------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------

/// A declared output (of the graph or of a node): name, position, and the type with its
/// position if written.
type OutputDecl = (String, Pos, Option<(TensorType, Pos)>);

/// A node statement, collected before any node is added so values may be used before the
/// line that defines them.
struct NodeStmt {
    /// Output names, with their positions and their types if written.
    outputs: Vec<OutputDecl>,
    op: Op,
    op_pos: Pos,
    /// Input names with positions; `None` for `_`.
    inputs: Vec<Option<(String, Pos)>>,
    /// The node's name (its first output's unless given with `@`).
    name: String,
}

/// Where a name is defined.
#[derive(Clone, Copy)]
enum Def {
    /// A graph input or a constant, already in the graph.
    Value,
    /// Output of the node statement with this index.
    Node(usize),
}

struct Parser {
    tokens: Vec<Token>,
    i: usize,
    graph: Graph,
    /// Every defined name, with where it was defined.
    defs: HashMap<String, (Def, Pos)>,
    nodes: Vec<NodeStmt>,
}

/// Parses the text IR into a graph (see the module doc for the format).
pub fn parse(source: &str) -> Result<Graph> {
    let mut parser = Parser {
        tokens: lex(source)?,
        i: 0,
        graph: Graph::new(""),
        defs: HashMap::new(),
        nodes: Vec::new(),
    };
    let outputs = parser.file()?;
    parser.add_nodes()?;
    parser.set_outputs(outputs)?;
    Ok(parser.graph)
}

impl Parser {
    fn peek(&self) -> &Token {
        // `lex` always ends the tokens with `Eof` and `bump` never moves past it.
        &self.tokens[self.i.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let token = self.peek().clone();
        if token.tok != Tok::Eof {
            self.i += 1;
        }
        token
    }

    fn pos(&self) -> Pos {
        self.peek().pos
    }

    fn at_punct(&self, c: char) -> bool {
        self.peek().tok == Tok::Punct(c)
    }

    fn eat_punct(&mut self, c: char) -> bool {
        let at = self.at_punct(c);
        if at {
            self.bump();
        }
        at
    }

    fn unexpected(&self, expected: &str) -> Error {
        let token = self.peek();
        parse_error(
            token.pos,
            format!("expected {expected}, found {}", token.tok.describe()),
        )
    }

    fn expect_punct(&mut self, c: char, context: &str) -> Result<Pos> {
        if self.at_punct(c) {
            Ok(self.bump().pos)
        } else {
            Err(self.unexpected(&format!("`{c}` {context}")))
        }
    }

    fn skip_newlines(&mut self) {
        while self.peek().tok == Tok::Newline {
            self.bump();
        }
    }

    /// A name: bare or quoted. `what` describes it for errors. Quoted names may be empty
    /// only where `allow_empty` (node names).
    fn name(&mut self, what: &str, allow_empty: bool) -> Result<(String, Pos)> {
        let token = self.peek().clone();
        match token.tok {
            Tok::Ident(s) if s != "_" => {
                self.bump();
                Ok((s, token.pos))
            }
            Tok::Str(s) => {
                if s.is_empty() && !allow_empty {
                    return Err(parse_error(token.pos, format!("{what} must not be empty")));
                }
                self.bump();
                Ok((s, token.pos))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// Comma-separated items up to `close`, newlines allowed between them, trailing comma
    /// allowed. The opening bracket is already consumed.
    fn list(
        &mut self,
        close: char,
        context: &str,
        mut item: impl FnMut(&mut Parser) -> Result<()>,
    ) -> Result<()> {
        loop {
            self.skip_newlines();
            if self.eat_punct(close) {
                return Ok(());
            }
            item(self)?;
            self.skip_newlines();
            if !self.eat_punct(',') {
                self.skip_newlines();
                self.expect_punct(close, context)?;
                return Ok(());
            }
        }
    }

    fn define(&mut self, name: &str, pos: Pos, def: Def) -> Result<()> {
        if let Some((_, first)) = self.defs.get(name) {
            return Err(parse_error(
                pos,
                format!(
                    "value {} is defined twice (first on line {})",
                    format_name(name),
                    first.line
                ),
            ));
        }
        self.defs.insert(name.to_string(), (def, pos));
        Ok(())
    }

    /// The whole file; returns the declared outputs, resolved once every node is added.
    fn file(&mut self) -> Result<Vec<OutputDecl>> {
        self.skip_newlines();
        if self.peek().tok != Tok::Ident("graph".to_string()) {
            return Err(self.unexpected("`graph` to start the file"));
        }
        self.bump();
        let (name, _) = self.name("the graph's name", true)?;
        self.graph.name = name;
        self.expect_punct('(', "to open the graph's inputs")?;
        self.list(')', "to close the graph's inputs", |p| {
            let (name, pos) = p.name("an input name", false)?;
            p.expect_punct(':', "and a type after the input name")?;
            let (ty, _) = p.tensor_type()?;
            p.define(&name, pos, Def::Value)?;
            p.graph
                .add_input(name, ty)
                .map_err(|e| parse_error(pos, e.to_string()))?;
            Ok(())
        })?;
        if self.peek().tok != Tok::Arrow {
            return Err(self.unexpected("`->` and the graph's outputs"));
        }
        self.bump();
        self.expect_punct('(', "to open the graph's outputs")?;
        let mut outputs = Vec::new();
        self.list(')', "to close the graph's outputs", |p| {
            let (name, pos) = p.name("an output name", false)?;
            let ty = if p.eat_punct(':') {
                Some(p.tensor_type()?)
            } else {
                None
            };
            outputs.push((name, pos, ty));
            Ok(())
        })?;
        self.expect_punct('{', "to open the graph's body")?;
        loop {
            self.skip_newlines();
            match &self.peek().tok {
                Tok::Punct('}') => {
                    self.bump();
                    break;
                }
                Tok::Eof => {
                    return Err(self.unexpected(&format!(
                        "`}}` to close graph {}",
                        format_name(&self.graph.name)
                    )));
                }
                Tok::Ident(k) if k == "const" => self.constant()?,
                _ => self.node()?,
            }
            match self.peek().tok {
                Tok::Newline | Tok::Punct('}') | Tok::Eof => {}
                _ => return Err(self.unexpected("the end of the line after a statement")),
            }
        }
        self.skip_newlines();
        if self.peek().tok != Tok::Eof {
            return Err(self.unexpected("nothing after the graph's closing `}`"));
        }
        Ok(outputs)
    }

    /// `dtype[dim, ...]`.
    fn tensor_type(&mut self) -> Result<(TensorType, Pos)> {
        let token = self.peek().clone();
        let dtype = match &token.tok {
            Tok::Ident(s) => DType::from_name(s).ok_or_else(|| {
                parse_error(
                    token.pos,
                    format!("unknown dtype {s} (expected f32 or i64)"),
                )
            })?,
            _ => return Err(self.unexpected("a type such as f32[1,3,224,224]")),
        };
        self.bump();
        self.expect_punct('[', "to open the type's dimensions")?;
        let mut shape = Vec::new();
        loop {
            let token = self.peek().clone();
            let dim = match token.tok {
                Tok::Punct(']') if shape.is_empty() => {
                    self.bump();
                    break;
                }
                Tok::Num(s) => match s.parse::<usize>() {
                    Ok(n) => Dim::Known(n),
                    Err(_) => {
                        return Err(parse_error(
                            token.pos,
                            format!("bad dimension {s}: expected a size, a symbol or `?`"),
                        ));
                    }
                },
                Tok::Punct('?') => Dim::Unknown,
                Tok::Ident(s) if s != "_" => Dim::Sym(s),
                Tok::Str(s) if !s.is_empty() => Dim::Sym(s),
                _ => return Err(self.unexpected("a dimension (a size, a symbol or `?`)")),
            };
            self.bump();
            shape.push(dim);
            if !self.eat_punct(',') {
                self.expect_punct(']', "to close the type's dimensions")?;
                break;
            }
        }
        let ty = TensorType::new(dtype, shape);
        let product = ty
            .shape
            .iter()
            .filter_map(Dim::known)
            .try_fold(1usize, |acc, d| acc.checked_mul(d));
        if product.is_none() {
            return Err(parse_error(
                token.pos,
                format!("the dimensions of {} overflow", format_type(&ty)),
            ));
        }
        Ok((ty, token.pos))
    }

    /// `const NAME: TYPE = INIT`.
    fn constant(&mut self) -> Result<()> {
        self.bump();
        let (name, pos) = self.name("a constant name", false)?;
        self.expect_punct(':', "and a type after the constant name")?;
        let (ty, ty_pos) = self.tensor_type()?;
        let shown = format_name(&name);
        let shape = ty.known_shape().ok_or_else(|| {
            parse_error(
                ty_pos,
                format!(
                    "constant {shown} must have a concrete shape, got {}",
                    format_type(&ty)
                ),
            )
        })?;
        let n = element_count(&shape).map_err(|e| parse_error(ty_pos, e.to_string()))?;
        if n > MAX_CONST_ELEMENTS {
            return Err(parse_error(
                ty_pos,
                format!(
                    "constant {shown} has {n} elements; at most {MAX_CONST_ELEMENTS} are supported"
                ),
            ));
        }
        self.expect_punct('=', "and the constant's value")?;
        let (tensor, init) = self.const_init(&shown, ty.dtype, shape, n)?;
        self.define(&name, pos, Def::Value)?;
        self.graph
            .add_const(name, tensor, init)
            .map_err(|e| parse_error(pos, e.to_string()))?;
        Ok(())
    }

    fn const_init(
        &mut self,
        shown: &str,
        dtype: DType,
        shape: Vec<usize>,
        n: usize,
    ) -> Result<(Tensor, ConstInit)> {
        let token = self.peek().clone();
        let err = |message: String| parse_error(token.pos, message);
        let word = match &token.tok {
            Tok::Ident(s) if !matches!(s.as_str(), "inf" | "nan") => s.clone(),
            Tok::Punct('[') | Tok::Num(_) | Tok::Ident(_) => {
                return self.literal(shown, dtype, shape, n);
            }
            _ => return Err(self.unexpected("a constant initializer")),
        };
        self.bump();
        let fill = |value: f64| -> Result<(Tensor, ConstInit)> {
            let data = match dtype {
                DType::F32 => TensorData::F32(vec![value as f32; n]),
                DType::I64 => TensorData::I64(vec![value as i64; n]),
            };
            let tensor = Tensor::new(shape.clone(), data).map_err(|e| err(e.to_string()))?;
            Ok((tensor, ConstInit::Fill { value }))
        };
        match word.as_str() {
            "zeros" => fill(0.0),
            "ones" => fill(1.0),
            "fill" => {
                self.expect_punct('(', "after fill")?;
                let token = self.peek().clone();
                let Some(text) = number_text(&token.tok) else {
                    return Err(self.unexpected("the fill value"));
                };
                self.bump();
                self.expect_punct(')', "to close fill")?;
                let value = match dtype {
                    DType::F32 => parse_f64(text),
                    DType::I64 => text.parse::<i64>().ok().map(|v| v as f64),
                }
                .ok_or_else(|| {
                    parse_error(
                        token.pos,
                        format!("bad fill value {text} for constant {shown} of dtype {dtype}"),
                    )
                })?;
                fill(value)
            }
            "normal" | "uniform" => {
                if dtype != DType::F32 {
                    return Err(err(format!(
                        "bad generator for constant {shown}: {word} makes f32 data, the \
                         constant is {dtype}"
                    )));
                }
                let params = self.generator_params(&word, shown)?;
                let init = generator_init(&word, &params)
                    .map_err(|m| err(format!("bad generator for constant {shown}: {m}")))?;
                let tensor = match init {
                    ConstInit::Normal { seed, mean, std } => {
                        tensor_gen::normal(shape, seed, mean, std)
                    }
                    ConstInit::Uniform { seed, low, high } => {
                        tensor_gen::uniform(shape, seed, low, high)
                    }
                    _ => Err(Error::internal("generator_init returned a non-generator")),
                }
                .map_err(|e| err(e.to_string()))?;
                Ok((tensor, init))
            }
            "data" => Err(err(format!(
                "constant {shown}: its data was elided when printing; write the values as a \
                 list or use a generator such as zeros or normal(seed=1, std=0.1)"
            ))),
            _ => Err(err(format!(
                "bad initializer {word} for constant {shown}: expected zeros, ones, fill(v), \
                 normal(...), uniform(...) or a literal"
            ))),
        }
    }

    /// `(key=number, ...)` after a generator's name.
    fn generator_params(&mut self, word: &str, shown: &str) -> Result<Vec<(String, String)>> {
        self.expect_punct('(', &format!("after {word}"))?;
        let mut params: Vec<(String, String)> = Vec::new();
        self.list(')', &format!("to close {word}"), |p| {
            let (key, pos) = p.name("a generator parameter", false)?;
            p.expect_punct('=', "after the parameter name")?;
            let Some(value) = number_text(&p.peek().tok).map(str::to_string) else {
                return Err(p.unexpected("a number"));
            };
            p.bump();
            if params.iter().any(|(k, _)| *k == key) {
                return Err(parse_error(
                    pos,
                    format!("bad generator for constant {shown}: parameter {key} is given twice"),
                ));
            }
            params.push((key, value));
            Ok(())
        })?;
        Ok(params)
    }

    /// A literal constant: a scalar or a flat row-major list.
    fn literal(
        &mut self,
        shown: &str,
        dtype: DType,
        shape: Vec<usize>,
        n: usize,
    ) -> Result<(Tensor, ConstInit)> {
        let start = self.pos();
        let mut items: Vec<(String, Pos)> = Vec::new();
        let number = |p: &mut Parser, items: &mut Vec<(String, Pos)>| -> Result<()> {
            let token = p.peek();
            let Some(text) = number_text(&token.tok) else {
                return Err(p.unexpected("a number"));
            };
            items.push((text.to_string(), token.pos));
            p.bump();
            Ok(())
        };
        if self.eat_punct('[') {
            self.list(']', "to close the list", |p| number(p, &mut items))?;
        } else {
            number(self, &mut items)?;
        }
        if items.len() != n {
            return Err(parse_error(
                start,
                format!(
                    "constant {shown} has {n} elements but its literal has {}",
                    items.len()
                ),
            ));
        }
        let data = match dtype {
            DType::F32 => {
                let mut values = Vec::with_capacity(n);
                for (text, pos) in &items {
                    values.push(
                        parse_f32(text)
                            .ok_or_else(|| parse_error(*pos, format!("bad f32 value {text}")))?,
                    );
                }
                TensorData::F32(values)
            }
            DType::I64 => {
                let mut values = Vec::with_capacity(n);
                for (text, pos) in &items {
                    values.push(text.parse::<i64>().map_err(|_| {
                        parse_error(*pos, format!("bad i64 value {text} (an integer expected)"))
                    })?);
                }
                TensorData::I64(values)
            }
        };
        let tensor = Tensor::new(shape, data).map_err(|e| parse_error(start, e.to_string()))?;
        Ok((tensor, ConstInit::Literal))
    }

    /// `OUT[: TYPE], ... = op(IN, ...) {attrs} @NAME`.
    fn node(&mut self) -> Result<()> {
        let mut outputs = Vec::new();
        loop {
            let (name, pos) = self.name("an output name or `const`", false)?;
            let ty = if self.eat_punct(':') {
                Some(self.tensor_type()?)
            } else {
                None
            };
            outputs.push((name, pos, ty));
            if !self.eat_punct(',') {
                break;
            }
        }
        self.expect_punct('=', "after the node's outputs")?;
        let token = self.peek().clone();
        let op_name = match &token.tok {
            Tok::Ident(s) => s.clone(),
            _ => return Err(self.unexpected("an op name")),
        };
        self.bump();
        self.expect_punct('(', "to open the op's inputs")?;
        let mut inputs = Vec::new();
        self.list(')', "to close the op's inputs", |p| {
            if p.peek().tok == Tok::Ident("_".to_string()) {
                p.bump();
                inputs.push(None);
            } else {
                inputs.push(Some(p.name("an input name or `_`", false)?));
            }
            Ok(())
        })?;
        let attrs = if self.eat_punct('{') {
            self.attributes()?
        } else {
            Vec::new()
        };
        let name = if self.eat_punct('@') {
            self.name("a node name", true)?.0
        } else {
            outputs[0].0.clone()
        };
        let op = Op::from_parts(&op_name, &attrs, &name)
            .map_err(|e| parse_error(token.pos, e.to_string()))?;
        let arity = op.output_arity();
        if !arity.contains(&outputs.len()) {
            return Err(parse_error(
                token.pos,
                format!(
                    "node {} ({op_name}) has {} outputs; the op produces {}",
                    format_name(&name),
                    outputs.len(),
                    describe_range(arity.start(), arity.end())
                ),
            ));
        }
        let arity = op.input_arity();
        if !arity.contains(&inputs.len()) {
            return Err(parse_error(
                token.pos,
                format!(
                    "node {} ({op_name}) has {} inputs; the op takes {}",
                    format_name(&name),
                    inputs.len(),
                    describe_range(arity.start(), arity.end())
                ),
            ));
        }
        let index = self.nodes.len();
        for (out, pos, _) in &outputs {
            self.define(out, *pos, Def::Node(index))?;
        }
        self.nodes.push(NodeStmt {
            outputs,
            op,
            op_pos: token.pos,
            inputs,
            name,
        });
        Ok(())
    }

    /// `{name=value, ...}`, after the `{`.
    fn attributes(&mut self) -> Result<Vec<(String, Attr)>> {
        let mut attrs: Vec<(String, Attr)> = Vec::new();
        self.list('}', "to close the attributes", |p| {
            let (key, pos) = p.name("an attribute name", false)?;
            p.expect_punct('=', "after the attribute name")?;
            let value = p.attr_value()?;
            if attrs.iter().any(|(k, _)| *k == key) {
                return Err(parse_error(pos, format!("attribute {key} is given twice")));
            }
            attrs.push((key, value));
            Ok(())
        })?;
        Ok(attrs)
    }

    fn attr_value(&mut self) -> Result<Attr> {
        let token = self.peek().clone();
        let value = match token.tok {
            Tok::Str(s) => Attr::Str(s),
            Tok::Num(_) | Tok::Ident(_) => match scalar_attr(&token)? {
                Some(v) => v,
                None => return Err(self.unexpected("an attribute value")),
            },
            Tok::Punct('[') => {
                self.bump();
                let mut items = Vec::new();
                self.list(']', "to close the list", |p| {
                    let token = p.peek().clone();
                    match scalar_attr(&token)? {
                        Some(v) => items.push(v),
                        None => return Err(p.unexpected("a number")),
                    }
                    p.bump();
                    Ok(())
                })?;
                return Ok(if items.iter().any(|v| matches!(v, Attr::Float(_))) {
                    Attr::Floats(
                        items
                            .iter()
                            .map(|v| match v {
                                Attr::Int(i) => *i as f32,
                                Attr::Float(f) => *f,
                                _ => 0.0,
                            })
                            .collect(),
                    )
                } else {
                    Attr::Ints(
                        items
                            .iter()
                            .filter_map(|v| match v {
                                Attr::Int(i) => Some(*i),
                                _ => None,
                            })
                            .collect(),
                    )
                });
            }
            _ => return Err(self.unexpected("an attribute value")),
        };
        self.bump();
        Ok(value)
    }

    /// Resolves every node's inputs, orders the nodes by their dependencies (source order
    /// where the dependencies allow) and adds them, checking written types against
    /// inferred ones.
    fn add_nodes(&mut self) -> Result<()> {
        let n_nodes = self.nodes.len();
        let mut deps: Vec<HashSet<usize>> = vec![HashSet::new(); n_nodes];
        for (index, stmt) in self.nodes.iter().enumerate() {
            for (name, pos) in stmt.inputs.iter().flatten() {
                match self.defs.get(name) {
                    None => {
                        return Err(parse_error(
                            *pos,
                            format!("undefined value {}", format_name(name)),
                        ));
                    }
                    Some((Def::Node(producer), _)) => {
                        deps[index].insert(*producer);
                    }
                    Some((Def::Value, _)) => {}
                }
            }
        }
        let order = topological_order(&deps).map_err(|cycle| {
            let names: Vec<String> = cycle
                .iter()
                .filter_map(|&i| self.nodes.get(i))
                .map(|stmt| format_name(&stmt.name))
                .collect();
            let pos = cycle
                .first()
                .and_then(|&i| self.nodes.get(i))
                .map_or(Pos { line: 1, column: 1 }, |stmt| stmt.outputs[0].1);
            let first = names.first().cloned().unwrap_or_default();
            parse_error(
                pos,
                format!(
                    "cycle: {} -> {first} (each node reads the previous one's output)",
                    names.join(" -> ")
                ),
            )
        })?;
        let nodes = std::mem::take(&mut self.nodes);
        for index in order {
            if let Some(stmt) = nodes.get(index) {
                self.add_node(stmt)?;
            }
        }
        Ok(())
    }

    fn add_node(&mut self, stmt: &NodeStmt) -> Result<()> {
        let mut inputs = Vec::with_capacity(stmt.inputs.len());
        for input in &stmt.inputs {
            inputs.push(match input {
                None => None,
                Some((name, pos)) => Some(self.graph.value_by_name(name).ok_or_else(|| {
                    parse_error(*pos, format!("undefined value {}", format_name(name)))
                })?),
            });
        }
        let inferred = self
            .graph
            .infer_node(&stmt.name, &stmt.op, &inputs, stmt.outputs.len())
            .map_err(|e| parse_error(stmt.op_pos, e.to_string()))?;
        if inferred.len() != stmt.outputs.len() {
            return Err(Error::internal(format!(
                "shape inference gave {} types for the {} outputs of node {} ({})",
                inferred.len(),
                stmt.outputs.len(),
                stmt.name,
                stmt.op.name()
            )));
        }
        let mut outputs = Vec::with_capacity(inferred.len());
        for ((name, _, written), ty) in stmt.outputs.iter().zip(inferred) {
            if let Some((written, pos)) = written
                && *written != ty
            {
                return Err(parse_error(
                    *pos,
                    format!(
                        "type mismatch: output {} of node {} ({}) is written {} but shape \
                         inference gives {}",
                        format_name(name),
                        format_name(&stmt.name),
                        stmt.op.name(),
                        format_type(written),
                        format_type(&ty)
                    ),
                ));
            }
            outputs.push((name.clone(), ty));
        }
        self.graph
            .add_node_typed(stmt.name.clone(), stmt.op.clone(), inputs, outputs)
            .map_err(|e| parse_error(stmt.op_pos, e.to_string()))?;
        Ok(())
    }

    fn set_outputs(&mut self, outputs: Vec<OutputDecl>) -> Result<()> {
        let mut ids = Vec::with_capacity(outputs.len());
        for (name, pos, written) in outputs {
            let id = self.graph.value_by_name(&name).ok_or_else(|| {
                parse_error(
                    pos,
                    format!(
                        "undefined value {} in the graph's outputs",
                        format_name(&name)
                    ),
                )
            })?;
            let ty = &self.graph.value(id).ty;
            if let Some((written, ty_pos)) = written
                && written != *ty
            {
                return Err(parse_error(
                    ty_pos,
                    format!(
                        "type mismatch: graph output {} is written {} but is {}",
                        format_name(&name),
                        format_type(&written),
                        format_type(ty)
                    ),
                ));
            }
            ids.push(id);
        }
        self.graph.set_outputs(ids);
        Ok(())
    }
}

/// Kahn's algorithm, taking the lowest ready index first so an already ordered source keeps
/// its order. On a cycle, returns the indices of one cycle, starting with its lowest index.
fn topological_order(deps: &[HashSet<usize>]) -> std::result::Result<Vec<usize>, Vec<usize>> {
    let n = deps.len();
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = vec![0; n];
    for (index, ds) in deps.iter().enumerate() {
        for &d in ds {
            if d < n {
                users[d].push(index);
                waiting[index] += 1;
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| waiting[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(index)) = ready.pop() {
        order.push(index);
        for &user in &users[index] {
            waiting[user] -= 1;
            if waiting[user] == 0 {
                ready.push(Reverse(user));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every node left waits on another node left, so walking back along dependencies from
    // any of them must come round to a node already seen: that loop is a cycle.
    let left: Vec<bool> = (0..n).map(|i| waiting[i] > 0).collect();
    let Some(start) = (0..n).find(|&i| left[i]) else {
        return Err(Vec::new());
    };
    let mut path = vec![start];
    let mut seen_at: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut current = start;
    loop {
        let Some(next) = deps[current]
            .iter()
            .copied()
            .filter(|&d| d < n && left[d])
            .min()
        else {
            return Err(path);
        };
        if let Some(&at) = seen_at.get(&next) {
            // The walk went against the data flow; reverse it so each node feeds the next.
            let mut cycle = path.split_off(at);
            cycle.reverse();
            let lowest = cycle
                .iter()
                .enumerate()
                .min_by_key(|&(_, v)| *v)
                .map_or(0, |(k, _)| k);
            cycle.rotate_left(lowest);
            return Err(cycle);
        }
        seen_at.insert(next, path.len());
        path.push(next);
        current = next;
    }
}

fn describe_range(start: &usize, end: &usize) -> String {
    if start == end {
        start.to_string()
    } else if *end == usize::MAX {
        format!("at least {start}")
    } else {
        format!("{start} to {end}")
    }
}

/// Whether a number token's text is a float (has a `.` or an exponent, or is inf/nan).
fn is_float_text(text: &str) -> bool {
    text.contains(['.', 'e', 'E']) || text.ends_with("inf") || text == "nan"
}

/// The text of a number: a number token, or `inf` / `nan` (which lex as names).
fn number_text(tok: &Tok) -> Option<&str> {
    match tok {
        Tok::Num(s) => Some(s),
        Tok::Ident(s) if matches!(s.as_str(), "inf" | "nan") => Some(s),
        _ => None,
    }
}

fn parse_f32(text: &str) -> Option<f32> {
    text.parse::<f32>().ok()
}

fn parse_f64(text: &str) -> Option<f64> {
    text.parse::<f64>().ok()
}

/// A scalar attribute from a number token or `inf`/`nan`; `None` for other tokens.
fn scalar_attr(token: &Token) -> Result<Option<Attr>> {
    let Some(text) = number_text(&token.tok) else {
        return Ok(None);
    };
    if is_float_text(text) {
        parse_f32(text)
            .map(|v| Some(Attr::Float(v)))
            .ok_or_else(|| parse_error(token.pos, format!("bad float {text}")))
    } else {
        text.parse::<i64>()
            .map(|v| Some(Attr::Int(v)))
            .map_err(|_| parse_error(token.pos, format!("integer {text} is out of range")))
    }
}

/// The generator described by `word` and its parameters, or a message saying what is wrong.
fn generator_init(
    word: &str,
    params: &[(String, String)],
) -> std::result::Result<ConstInit, String> {
    let allowed: &[&str] = if word == "normal" {
        &["seed", "mean", "std"]
    } else {
        &["seed", "low", "high"]
    };
    if let Some((key, _)) = params.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "{word} has no parameter {key} (it takes {})",
            allowed.join(", ")
        ));
    }
    let get = |key: &str| {
        params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    let seed_text = get("seed").ok_or_else(|| format!("{word} needs a seed"))?;
    let seed = seed_text
        .parse::<u64>()
        .map_err(|_| format!("seed must be a non-negative integer, got {seed_text}"))?;
    let float = |key: &str, default: Option<f64>| -> std::result::Result<f64, String> {
        match get(key) {
            None => default.ok_or_else(|| format!("{word} needs {key}")),
            Some(text) => parse_f64(text)
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{key} must be a finite number, got {text}")),
        }
    };
    if word == "normal" {
        let mean = float("mean", Some(0.0))?;
        let std = float("std", None)?;
        if std < 0.0 {
            return Err(format!("std must not be negative, got {}", format_f64(std)));
        }
        Ok(ConstInit::Normal { seed, mean, std })
    } else {
        let low = float("low", None)?;
        let high = float("high", None)?;
        if low > high {
            return Err(format!(
                "low ({}) must not exceed high ({})",
                format_f64(low),
                format_f64(high)
            ));
        }
        Ok(ConstInit::Uniform { seed, low, high })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::op::{Pool, Window};

    fn f32_type(shape: &[usize]) -> TensorType {
        TensorType::known(DType::F32, shape)
    }

    fn parse_err(source: &str) -> (usize, usize, String) {
        match parse(source) {
            Err(Error::Parse { location, message }) => (location.line, location.column, message),
            other => panic!("expected a parse error, got {other:?}"),
        }
    }

    #[test]
    fn names_quote_only_when_needed() {
        for bare in [
            "x",
            "conv1.weight",
            "onnx::Conv_123",
            "a-b/c",
            "_x",
            "N",
            "inf",
        ] {
            assert_eq!(format_name(bare), bare);
        }
        for (name, quoted) in [
            ("/layer1/Relu", r#""/layer1/Relu""#),
            ("123", r#""123""#),
            ("_", r#""_""#),
            ("const", r#""const""#),
            ("a b", r#""a b""#),
            ("a:b", r#""a:b""#),
            ("a::", r#""a::""#),
            ("q\"\\", r#""q\"\\""#),
            ("", r#""""#),
            ("line\nbreak", r#""line\nbreak""#),
        ] {
            assert_eq!(format_name(name), quoted);
        }
    }

    #[test]
    fn lexer_splits_colons_after_names_but_not_inside_them() {
        let tokens: Vec<Tok> = lex("onnx::Conv_1: f32[N,?] -inf -> \"a\\u{e9}\" # note\n")
            .unwrap()
            .into_iter()
            .map(|t| t.tok)
            .collect();
        assert_eq!(
            tokens,
            vec![
                Tok::Ident("onnx::Conv_1".into()),
                Tok::Punct(':'),
                Tok::Ident("f32".into()),
                Tok::Punct('['),
                Tok::Ident("N".into()),
                Tok::Punct(','),
                Tok::Punct('?'),
                Tok::Punct(']'),
                Tok::Num("-inf".into()),
                Tok::Arrow,
                Tok::Str("a\u{e9}".into()),
                Tok::Newline,
                Tok::Eof,
            ]
        );
    }

    #[test]
    fn prints_nodes_with_types_attributes_absent_inputs_and_names() {
        let mut g = Graph::new("demo");
        let x = g.add_input("input", f32_type(&[1, 3, 8, 8])).unwrap();
        let w = g
            .add_const(
                "w",
                tensor_gen::normal(vec![4, 3, 3, 3], 1, 0.0, 0.25).unwrap(),
                ConstInit::Normal {
                    seed: 1,
                    mean: 0.0,
                    std: 0.25,
                },
            )
            .unwrap();
        let op = Op::from_parts(
            "conv",
            &[("pads".into(), Attr::Ints(vec![1, 1, 1, 1]))],
            "conv",
        )
        .unwrap();
        let conv = g
            .add_node_typed(
                "conv",
                op,
                vec![Some(x), Some(w), None],
                vec![("conv".into(), f32_type(&[1, 4, 8, 8]))],
            )
            .unwrap();
        let pool = Op::MaxPool(Pool {
            window: Window {
                kernel_shape: vec![2, 2],
                strides: vec![2, 2],
                ..Window::default()
            },
            ceil_mode: false,
            count_include_pad: false,
            storage_order: 0,
        });
        let outs = g
            .add_node_typed(
                "/pool/MaxPool",
                pool,
                vec![Some(conv[0])],
                vec![
                    ("pool".into(), f32_type(&[1, 4, 4, 4])),
                    (
                        "pool.indices".into(),
                        TensorType::known(DType::I64, &[1, 4, 4, 4]),
                    ),
                ],
            )
            .unwrap();
        g.set_outputs(outs);
        assert_eq!(
            print(&g),
            "graph demo(input: f32[1,3,8,8]) -> (pool: f32[1,4,4,4], pool.indices: i64[1,4,4,4]) {\n\
             \x20 const w: f32[4,3,3,3] = normal(seed=1, std=0.25)\n\
             \x20 conv: f32[1,4,8,8] = conv(input, w, _) {pads=[1, 1, 1, 1]}\n\
             \x20 pool: f32[1,4,4,4], pool.indices: i64[1,4,4,4] = max_pool(conv) \
             {kernel_shape=[2, 2], strides=[2, 2]} @\"/pool/MaxPool\"\n\
             }\n"
        );
    }

    #[test]
    fn every_const_init_round_trips() {
        let source = "graph \"odd name\"(\"123\": f32[N,?,\"a b\"]) -> (\"123\": f32[N,?,\"a b\"]) {\n\
            \x20 const z: f32[2,2] = zeros\n\
            \x20 const o: i64[3] = ones\n\
            \x20 const six: f32[] = fill(6.0)\n\
            \x20 const neg: i64[2] = fill(-7)\n\
            \x20 const nz: f32[1] = fill(-0.0)\n\
            \x20 const n1: f32[3,3] = normal(seed=1, std=0.0577)\n\
            \x20 const n2: f32[5] = normal(seed=18446744073709551615, mean=-0.5, std=1e-5)\n\
            \x20 const u: f32[7] = uniform(seed=4, low=0.5, high=1.5)\n\
            \x20 const s: f32[] = 0.1\n\
            \x20 const l: i64[2] = [1, -1]\n\
            \x20 const e: i64[0] = []\n\
            \x20 const f: f32[2,3] = [1.0, -0.0, 1e-45, 3.4028235e38, inf, -inf]\n\
            }\n";
        let g = parse(source).unwrap();
        assert_eq!(print(&g), source);
        let n2 = g.constant(g.value_by_name("n2").unwrap()).unwrap();
        assert_eq!(
            n2.tensor.as_ref(),
            &tensor_gen::normal(vec![5], u64::MAX, -0.5, 1e-5).unwrap()
        );
        let f = g.constant(g.value_by_name("f").unwrap()).unwrap();
        let bits: Vec<u32> = f
            .tensor
            .as_f32()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect();
        let want: Vec<u32> = [
            1.0f32,
            -0.0,
            1e-45,
            f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ]
        .iter()
        .map(|v| v.to_bits())
        .collect();
        assert_eq!(bits, want);
        let nz = g.constant(g.value_by_name("nz").unwrap()).unwrap();
        assert_eq!(
            nz.tensor.as_f32().unwrap()[0].to_bits(),
            (-0.0f32).to_bits()
        );
    }

    #[test]
    fn nan_literals_and_awkward_floats_read_back_bit_exactly() {
        let values = [
            f32::NAN,
            0.1,
            1.0 / 3.0,
            16777217.0,
            f32::MIN_POSITIVE,
            -1.5e-40,
        ];
        let mut g = Graph::new("floats");
        let t = Tensor::from_f32(vec![values.len()], values.to_vec()).unwrap();
        let c = g.add_const("c", t, ConstInit::Literal).unwrap();
        g.set_outputs(vec![c]);
        let text = print(&g);
        let back = parse(&text).unwrap();
        assert_eq!(print(&back), text);
        let got = back.constant(c).unwrap().tensor.as_f32().unwrap().to_vec();
        assert!(got[0].is_nan());
        for (a, b) in got.iter().zip(&values).skip(1) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn uniform_literals_print_as_fills() {
        let mut g = Graph::new("fills");
        let zeros = Tensor::from_f32(vec![100], vec![0.0; 100]).unwrap();
        let halves = Tensor::from_f32(vec![3], vec![0.5; 3]).unwrap();
        let negative_zeros = Tensor::from_f32(vec![2], vec![-0.0; 2]).unwrap();
        let sevens = Tensor::from_i64(vec![2], vec![7, 7]).unwrap();
        let ids: Vec<_> = [
            ("z", zeros),
            ("h", halves),
            ("nz", negative_zeros),
            ("s", sevens),
        ]
        .into_iter()
        .map(|(name, t)| g.add_const(name, t, ConstInit::Literal).unwrap())
        .collect();
        g.set_outputs(ids);
        let text = print(&g);
        assert!(text.contains("const z: f32[100] = zeros"), "{text}");
        assert!(text.contains("const h: f32[3] = fill(0.5)"), "{text}");
        assert!(text.contains("const nz: f32[2] = [-0.0, -0.0]"), "{text}");
        assert!(text.contains("const s: i64[2] = fill(7)"), "{text}");
        assert_eq!(print(&parse(&text).unwrap()), text);
    }

    #[test]
    fn large_literals_print_elided_and_do_not_parse_back() {
        let mut g = Graph::new("big");
        let t = Tensor::from_f32(vec![65], (0..65).map(|i| i as f32).collect()).unwrap();
        let c = g.add_const("w", t, ConstInit::Literal).unwrap();
        g.set_outputs(vec![c]);
        let text = print(&g);
        assert!(
            text.contains("const w: f32[65] = data(65 values)"),
            "{text}"
        );
        let (line, column, message) = parse_err(&text);
        assert_eq!((line, column), (2, 22));
        assert!(message.contains("its data was elided"), "{message}");
    }

    #[test]
    fn values_may_be_used_before_their_line_but_cycles_are_errors() {
        let (line, _, message) = parse_err(
            "graph g(x: f32[1]) -> (c) {\n  a = relu(x)\n  b = relu(c)\n  c = relu(b)\n}\n",
        );
        assert_eq!(line, 3);
        assert!(message.contains("cycle: b -> c -> b"), "{message}");
        let (line, _, message) = parse_err("graph g(x: f32[1]) -> (a) {\n  a = relu(a)\n}\n");
        assert_eq!(line, 2);
        assert!(message.contains("cycle: a -> a"), "{message}");
    }

    #[test]
    fn topological_order_keeps_source_order_when_it_can() {
        let deps: Vec<HashSet<usize>> = vec![
            HashSet::from([2]),
            HashSet::new(),
            HashSet::from([1]),
            HashSet::new(),
        ];
        assert_eq!(topological_order(&deps), Ok(vec![1, 2, 0, 3]));
        let cyclic: Vec<HashSet<usize>> = vec![
            HashSet::new(),
            HashSet::from([3]),
            HashSet::from([1]),
            HashSet::from([2]),
        ];
        assert_eq!(topological_order(&cyclic), Err(vec![1, 2, 3]));
    }

    #[test]
    fn syntax_errors_point_at_the_offending_token() {
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("", (1, 1), "expected `graph`"),
            ("graph g(x f32[1]) -> () {\n}\n", (1, 11), "expected `:`"),
            (
                "graph g(x: f16[1]) -> () {\n}\n",
                (1, 12),
                "unknown dtype f16",
            ),
            (
                "graph g(x: f32[1]) -> () {\n  const c: f32[2] = [1.0]\n}\n",
                (2, 21),
                "has 2 elements",
            ),
            (
                "graph g() -> () {\n  const c: i64[1] = [1.5]\n}\n",
                (2, 22),
                "bad i64 value",
            ),
            (
                "graph g() -> () {\n  const c: f32[1] = zeros\n",
                (2, 26),
                "expected `}`",
            ),
            ("graph g() -> () {\n}\nmore\n", (3, 1), "nothing after"),
            (
                "graph g() -> () {\n  const c: f32[N] = zeros\n}\n",
                (2, 12),
                "concrete shape",
            ),
            (
                "graph g() -> () {\n  const c: f32[99999999999,99999999999] = zeros\n}\n",
                (2, 12),
                "overflow",
            ),
            (
                "graph g() -> () {\n  const c: f32[1] = normal(seed=1)\n}\n",
                (2, 21),
                "needs std",
            ),
            (
                "graph g() -> () {\n  const c: f32[1] = gauss\n}\n",
                (2, 21),
                "bad initializer",
            ),
            ("graph g() -> (y) {\n}\n", (1, 15), "undefined value y"),
            (
                "graph g(x: f32[1]) -> (x: f32[2]) {\n}\n",
                (1, 27),
                "type mismatch",
            ),
            (
                "graph g(x: f32[1], x: f32[1]) -> () {\n}\n",
                (1, 20),
                "defined twice",
            ),
            (
                "graph g() -> () {\n  a = relu(nope)\n}\n",
                (2, 12),
                "undefined value nope",
            ),
            (
                "graph g() -> () {\n  a = frob(x)\n}\n",
                (2, 7),
                "unsupported op frob",
            ),
            (
                "graph g() -> () {\n  a = relu(x) {alpha=1.0}\n}\n",
                (2, 7),
                "unknown attribute",
            ),
            (
                "graph g() -> () {\n  a = concat(x) {axis=\"one\"}\n}\n",
                (2, 7),
                "must be an int",
            ),
            (
                "graph g() -> () {\n  a = relu(x) b = relu(x)\n}\n",
                (2, 15),
                "end of the line",
            ),
            (
                "graph g() -> () {\n  a = relu(x, y)\n}\n",
                (2, 7),
                "takes 1",
            ),
            ("graph \"g\\q\"() -> () {\n}\n", (1, 9), "unknown escape"),
            ("graph \"g() -> () {\n}\n", (1, 7), "unterminated string"),
            (
                "graph g() -> () {\n  a = relu(x) $\n}\n",
                (2, 15),
                "unexpected character",
            ),
            (
                "graph g() -> () {\n  const c: f32[] = 1x\n}\n",
                (2, 20),
                "malformed number",
            ),
        ];
        for (source, at, needle) in cases {
            let (line, column, message) = parse_err(source);
            assert!(message.contains(needle), "{source:?}: {message}");
            assert_eq!((line, column), *at, "{source:?}: {message}");
        }
    }

    /// Parses `source`; if it parses, its print must parse back and print the same.
    fn check_stable(source: &str) {
        if let Ok(graph) = parse(source) {
            let printed = print(&graph);
            let again = parse(&printed).unwrap_or_else(|e| panic!("{printed}: {e}"));
            assert_eq!(print(&again), printed);
        }
    }

    #[test]
    fn parser_never_panics_on_truncated_or_mutated_files() {
        let source = "graph g(\"x\": f32[N,3]) -> (y: f32[N,3]) {\n  const c: f32[2] = [0.5, \
                      -inf]\n  const k: f32[3] = uniform(seed=2, low=-1.0, high=1.0)\n  y: \
                      f32[N,3] = add(x, k) {} @\"n\\u{1F600}\"\n}\n";
        check_stable(source);
        assert!(parse(&format!("\u{feff}{source}")).is_ok());
        for (i, _) in source.char_indices() {
            check_stable(&source[..i]);
            for insert in [
                "(", "]", "\"", "\\", "\n", "#", "-", "9", "_", ":", "::", "@", "?",
            ] {
                check_stable(&format!("{}{insert}{}", &source[..i], &source[i..]));
            }
        }
    }
}
