//! The model's own syntax tree of a query, and its rendering to query text.
//!
//! Rendering puts parentheses only where the precedence of docs/queries.md needs them (plus
//! a few random extra ones), and varies keyword case, quotes, string escapes, number
//! spellings, whitespace and comments, so that the engine's lexer and parser see the
//! variety the grammar allows.

use super::Rng;
use serde_json::Value;

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Ex {
    /// A scalar literal: a number, a string, `true`, `false` or `null`.
    Lit(Value),
    /// `undefined`.
    Undef,
    /// `@name`.
    Param(String),
    /// A source's name.
    Name(String),
    /// `e.prop`.
    Dot(Box<Ex>, String),
    /// `e["prop"]`.
    Brk(Box<Ex>, String),
    /// `e[expr]`.
    Idx(Box<Ex>, Box<Ex>),
    /// `-e`.
    Neg(Box<Ex>),
    /// `+e`.
    Pos(Box<Ex>),
    /// `NOT e`.
    Not(Box<Ex>),
    /// A binary operator.
    Bin(Op, Box<Ex>, Box<Ex>),
    /// `e [NOT] BETWEEN lo AND hi` (the flag: NOT).
    Between(Box<Ex>, Box<Ex>, Box<Ex>, bool),
    /// `e [NOT] IN (list)`.
    In(Box<Ex>, Vec<Ex>, bool),
    /// `e [NOT] LIKE pattern [ESCAPE 'c']`.
    Like(Box<Ex>, Box<Ex>, Option<char>, bool),
    /// `c ? a : b`.
    Cond(Box<Ex>, Box<Ex>, Box<Ex>),
    /// `a ?? b`.
    Coalesce(Box<Ex>, Box<Ex>),
    /// A scalar function.
    Call(Fun, Vec<Ex>),
    /// An aggregate.
    Agg(AggK, Box<Ex>),
    /// `{k: e, ...}`.
    Obj(Vec<(String, Ex)>),
    /// `[e, ...]`.
    Arr(Vec<Ex>),
    /// `(e)`, written out (the value is `e`'s).
    Paren(Box<Ex>),
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `OR`.
    Or,
    /// `AND`.
    And,
    /// `=`.
    Eq,
    /// `!=`.
    Ne,
    /// `<>` (the same as `!=`).
    Ne2,
    /// `<`.
    Lt,
    /// `<=`.
    Le,
    /// `>`.
    Gt,
    /// `>=`.
    Ge,
    /// `+`.
    Add,
    /// `-`.
    Sub,
    /// `*`.
    Mul,
    /// `/`.
    Div,
    /// `%`.
    Rem,
    /// `||`.
    Cat,
}

/// Aggregates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggK {
    /// `COUNT`.
    Count,
    /// `SUM`.
    Sum,
    /// `MIN`.
    Min,
    /// `MAX`.
    Max,
    /// `AVG`.
    Avg,
}

impl AggK {
    /// Every aggregate.
    pub const ALL: [AggK; 5] = [AggK::Count, AggK::Sum, AggK::Min, AggK::Max, AggK::Avg];

    fn name(self) -> &'static str {
        match self {
            AggK::Count => "COUNT",
            AggK::Sum => "SUM",
            AggK::Min => "MIN",
            AggK::Max => "MAX",
            AggK::Avg => "AVG",
        }
    }
}

/// The functions of docs/queries.md's table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Fun {
    IsDefined,
    IsNull,
    IsNumber,
    IsString,
    IsBool,
    IsArray,
    IsObject,
    ArrayContains,
    ArrayLength,
    ArraySlice,
    StartsWith,
    EndsWith,
    Contains,
    Lower,
    Upper,
    Length,
    Substring,
    Concat,
    IndexOf,
    Trim,
    Abs,
    Floor,
    Ceiling,
    Round,
    ToString,
}

impl Fun {
    /// The name as the table writes it.
    pub fn name(self) -> &'static str {
        match self {
            Fun::IsDefined => "IS_DEFINED",
            Fun::IsNull => "IS_NULL",
            Fun::IsNumber => "IS_NUMBER",
            Fun::IsString => "IS_STRING",
            Fun::IsBool => "IS_BOOL",
            Fun::IsArray => "IS_ARRAY",
            Fun::IsObject => "IS_OBJECT",
            Fun::ArrayContains => "ARRAY_CONTAINS",
            Fun::ArrayLength => "ARRAY_LENGTH",
            Fun::ArraySlice => "ARRAY_SLICE",
            Fun::StartsWith => "STARTSWITH",
            Fun::EndsWith => "ENDSWITH",
            Fun::Contains => "CONTAINS",
            Fun::Lower => "LOWER",
            Fun::Upper => "UPPER",
            Fun::Length => "LENGTH",
            Fun::Substring => "SUBSTRING",
            Fun::Concat => "CONCAT",
            Fun::IndexOf => "INDEX_OF",
            Fun::Trim => "TRIM",
            Fun::Abs => "ABS",
            Fun::Floor => "FLOOR",
            Fun::Ceiling => "CEILING",
            Fun::Round => "ROUND",
            Fun::ToString => "ToString",
        }
    }
}

/// `TOP`, `OFFSET` or `LIMIT`'s operand: a literal, or a parameter (its value in the
/// query's parameters).
#[derive(Clone, Debug, PartialEq)]
pub enum Count {
    /// A literal whole number.
    Lit(u64),
    /// A parameter bound to a whole number.
    Param(String),
}

/// The projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Sel {
    /// `SELECT *`.
    Star,
    /// `SELECT VALUE e`.
    Value(Ex),
    /// `SELECT e [[AS] alias], ...`: the alias and whether `AS` is written.
    List(Vec<(Ex, Option<(String, bool)>)>),
}

/// The first source of `FROM`.
#[derive(Clone, Debug, PartialEq)]
pub enum Root {
    /// `FROM c`.
    Items(String),
    /// `FROM c.path [AS] alias`: the container's name, the path (rooted at it), the alias,
    /// whether `AS` is written.
    Path(String, Ex, String, bool),
    /// `FROM alias IN c.path`.
    Each(String, Ex),
}

impl Root {
    /// The name the rest of the query uses for this source.
    pub fn alias(&self) -> &str {
        match self {
            Root::Items(n) | Root::Path(_, _, n, _) | Root::Each(n, _) => n,
        }
    }
}

/// `FROM`: the root, then `JOIN alias IN path` entries.
#[derive(Clone, Debug, PartialEq)]
pub struct From {
    /// The first source.
    pub root: Root,
    /// The joins, in order: alias and path.
    pub joins: Vec<(String, Ex)>,
}

impl From {
    /// Every source name, in row order.
    pub fn names(&self) -> Vec<String> {
        std::iter::once(self.root.alias().to_owned())
            .chain(self.joins.iter().map(|(n, _)| n.clone()))
            .collect()
    }
}

/// A query.
#[derive(Clone, Debug, PartialEq)]
pub struct Q {
    /// `DISTINCT`.
    pub distinct: bool,
    /// `TOP n`.
    pub top: Option<Count>,
    /// The projection.
    pub select: Sel,
    /// `FROM`.
    pub from: Option<From>,
    /// `WHERE`.
    pub filter: Option<Ex>,
    /// `GROUP BY`.
    pub group: Vec<Ex>,
    /// `ORDER BY`: the key and `None` (no keyword), `Some(false)` (ASC), `Some(true)` (DESC).
    pub order: Vec<(Ex, Option<bool>)>,
    /// `OFFSET o LIMIT l`.
    pub offset_limit: Option<(Count, Count)>,
}

/// Binding strength, loosest first, as docs/queries.md lists it.
const TERN: u8 = 0;
const COAL: u8 = 1;
const OR: u8 = 2;
const AND: u8 = 3;
const NOT: u8 = 4;
const CMP: u8 = 5;
const CAT: u8 = 6;
const ADD: u8 = 7;
const MUL: u8 = 8;
const UNARY: u8 = 9;
const POSTFIX: u8 = 10;
const PRIMARY: u8 = 11;

/// Words the grammar reserves: never written as a bare name.
pub const RESERVED: &[&str] = &[
    "SELECT",
    "FROM",
    "WHERE",
    "ORDER",
    "BY",
    "GROUP",
    "ASC",
    "DESC",
    "AND",
    "OR",
    "NOT",
    "IN",
    "BETWEEN",
    "LIKE",
    "ESCAPE",
    "TOP",
    "DISTINCT",
    "VALUE",
    "AS",
    "JOIN",
    "OFFSET",
    "LIMIT",
    "TRUE",
    "FALSE",
    "NULL",
    "UNDEFINED",
    "EXISTS",
    "ARRAY",
    "HAVING",
    "UNION",
    "UDF",
];

/// Whether `s` can be written as a bare identifier (`c.s`, `{s: 1}`).
pub fn is_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
}

/// Renders queries with random but meaning-preserving spelling.
pub struct Renderer<'r> {
    rng: &'r mut Rng,
}

impl<'r> Renderer<'r> {
    /// A renderer drawing its choices from `rng`.
    pub fn new(rng: &'r mut Rng) -> Self {
        Renderer { rng }
    }

    /// A keyword in upper, lower or mixed case.
    fn kw(&mut self, k: &str) -> String {
        match self.rng.below(10) {
            0..=5 => k.to_owned(),
            6..=8 => k.to_lowercase(),
            _ => k
                .chars()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect(),
        }
    }

    /// Whitespace between clauses: a space, a newline, or a comment.
    fn sep(&mut self) -> &'static str {
        match self.rng.below(12) {
            0 => "\n",
            1 => "  ",
            2 => " -- a comment; SELECT ' \" \n",
            3 => "\t",
            _ => " ",
        }
    }

    /// A string literal in single or double quotes, with some characters escaped.
    pub fn string(&mut self, s: &str) -> String {
        let quote = if self.rng.chance(50) { '\'' } else { '"' };
        let mut out = String::new();
        out.push(quote);
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                c if c == quote => {
                    out.push('\\');
                    out.push(c);
                }
                '\'' | '"' if self.rng.chance(30) => {
                    out.push('\\');
                    out.push(c);
                }
                '/' if self.rng.chance(50) => out.push_str("\\/"),
                '\n' => out.push_str(if self.rng.chance(50) {
                    "\\n"
                } else {
                    "\\u000a"
                }),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
                // `\uXXXX`, a pair of them (UTF-16 surrogates) above U+FFFF.
                c if self.rng.chance(10) => {
                    let upper = self.rng.chance(50);
                    let mut units = [0u16; 2];
                    for u in c.encode_utf16(&mut units) {
                        if upper {
                            out.push_str(&format!("\\u{u:04X}"));
                        } else {
                            out.push_str(&format!("\\u{u:04x}"));
                        }
                    }
                }
                c => out.push(c),
            }
        }
        out.push(quote);
        out
    }

    /// A non-negative number's literal: whole numbers as `3`, `3.0` or `3e0`.
    fn number(&mut self, n: f64) -> String {
        debug_assert!(n >= 0.0);
        if n.fract() == 0.0 && n < 1e15 {
            match self.rng.below(8) {
                0 => format!("{}.0", n as u64),
                1 => format!("{}e0", n as u64),
                _ => format!("{}", n as u64),
            }
        } else {
            let text = serde_json::Number::from_f64(n)
                .map(|x| x.to_string())
                .unwrap_or_else(|| "0".to_owned());
            match text.strip_prefix("0.") {
                Some(rest) if self.rng.chance(30) => format!(".{rest}"),
                _ => text,
            }
        }
    }

    /// A literal's text and its binding strength (a negative number is a unary minus).
    fn literal(&mut self, v: &Value) -> (String, u8) {
        match v {
            Value::Null => (self.kw("null"), PRIMARY),
            Value::Bool(b) => (self.kw(if *b { "true" } else { "false" }), PRIMARY),
            Value::String(s) => (self.string(s), PRIMARY),
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(0.0);
                if f < 0.0 || (f == 0.0 && f.is_sign_negative()) {
                    (format!("-{}", self.number(-f)), UNARY)
                } else {
                    (self.number(f), PRIMARY)
                }
            }
            // The generator makes arrays and objects with Ex::Arr / Ex::Obj.
            other => (other.to_string(), PRIMARY),
        }
    }

    /// `e`, parenthesized when it binds more loosely than `min`.
    pub fn expr_at(&mut self, e: &Ex, min: u8) -> String {
        let (text, prec) = self.inner(e);
        if prec < min || (prec > min && self.rng.chance(3)) {
            format!("({text})")
        } else {
            text
        }
    }

    /// `e` as a whole expression.
    pub fn expr(&mut self, e: &Ex) -> String {
        self.expr_at(e, TERN)
    }

    /// A postfix base: like `expr_at(POSTFIX)`, but a number literal is always
    /// parenthesized (`1.a` would lex as the number `1.`).
    fn base(&mut self, e: &Ex) -> String {
        if matches!(e, Ex::Lit(Value::Number(_))) {
            let (t, _) = self.inner(e);
            return format!("({t})");
        }
        self.expr_at(e, POSTFIX)
    }

    fn inner(&mut self, e: &Ex) -> (String, u8) {
        match e {
            Ex::Lit(v) => self.literal(v),
            Ex::Undef => (self.kw("undefined"), PRIMARY),
            Ex::Param(p) => (p.clone(), PRIMARY),
            Ex::Name(n) => (n.clone(), PRIMARY),
            Ex::Dot(b, p) => (format!("{}.{p}", self.base(b)), POSTFIX),
            Ex::Brk(b, p) => {
                let b = self.base(b);
                (format!("{b}[{}]", self.string(p)), POSTFIX)
            }
            Ex::Idx(b, i) => {
                let b = self.base(b);
                // A string literal index is the path step `["prop"]`: no parentheses.
                let i = match &**i {
                    Ex::Lit(Value::String(s)) => self.string(s),
                    other => self.expr(other),
                };
                (format!("{b}[{i}]"), POSTFIX)
            }
            Ex::Neg(a) | Ex::Pos(a) => {
                let sign = if matches!(e, Ex::Neg(_)) { "-" } else { "+" };
                let a = self.expr_at(a, UNARY);
                // `--` starts a comment: keep a space between two signs.
                let gap = if a.starts_with('-') || a.starts_with('+') || self.rng.chance(10) {
                    " "
                } else {
                    ""
                };
                (format!("{sign}{gap}{a}"), UNARY)
            }
            Ex::Not(a) => {
                let k = self.kw("NOT");
                (format!("{k} {}", self.expr_at(a, NOT)), NOT)
            }
            Ex::Bin(op, a, b) => {
                let (prec, sym) = match op {
                    Op::Or => (OR, self.kw("OR")),
                    Op::And => (AND, self.kw("AND")),
                    Op::Eq => (CMP, "=".to_owned()),
                    Op::Ne => (CMP, "!=".to_owned()),
                    Op::Ne2 => (CMP, "<>".to_owned()),
                    Op::Lt => (CMP, "<".to_owned()),
                    Op::Le => (CMP, "<=".to_owned()),
                    Op::Gt => (CMP, ">".to_owned()),
                    Op::Ge => (CMP, ">=".to_owned()),
                    Op::Add => (ADD, "+".to_owned()),
                    Op::Sub => (ADD, "-".to_owned()),
                    Op::Mul => (MUL, "*".to_owned()),
                    Op::Div => (MUL, "/".to_owned()),
                    Op::Rem => (MUL, "%".to_owned()),
                    Op::Cat => (CAT, "||".to_owned()),
                };
                // Left-associative: the right operand binds one level tighter.
                let right_min = match prec {
                    OR => AND,
                    AND => NOT,
                    CMP => CAT,
                    p => p + 1,
                };
                let a = self.expr_at(a, prec);
                let b = self.expr_at(b, right_min);
                (format!("{a} {sym} {b}"), prec)
            }
            Ex::Between(x, lo, hi, neg) => {
                let x = self.expr_at(x, CMP);
                let not = self.not(*neg);
                let kw = self.kw("BETWEEN");
                let lo = self.expr_at(lo, CAT);
                let and = self.kw("AND");
                let hi = self.expr_at(hi, CAT);
                (format!("{x} {not}{kw} {lo} {and} {hi}"), CMP)
            }
            Ex::In(x, list, neg) => {
                let x = self.expr_at(x, CMP);
                let not = self.not(*neg);
                let kw = self.kw("IN");
                let items: Vec<String> = list.iter().map(|i| self.expr(i)).collect();
                (format!("{x} {not}{kw} ({})", items.join(", ")), CMP)
            }
            Ex::Like(x, p, esc, neg) => {
                let x = self.expr_at(x, CMP);
                let not = self.not(*neg);
                let kw = self.kw("LIKE");
                let p = self.expr_at(p, CAT);
                let esc = match esc {
                    Some(c) => format!(" {} {}", self.kw("ESCAPE"), self.string(&c.to_string())),
                    None => String::new(),
                };
                (format!("{x} {not}{kw} {p}{esc}"), CMP)
            }
            Ex::Cond(c, a, b) => {
                let c = self.expr_at(c, COAL);
                let a = self.expr(a);
                let b = self.expr(b);
                (format!("{c} ? {a} : {b}"), TERN)
            }
            Ex::Coalesce(a, b) => {
                let a = self.expr_at(a, COAL);
                let b = self.expr_at(b, OR);
                (format!("{a} ?? {b}"), COAL)
            }
            Ex::Call(f, args) => {
                let name = self.kw(f.name());
                let args: Vec<String> = args.iter().map(|a| self.expr(a)).collect();
                (format!("{name}({})", args.join(", ")), PRIMARY)
            }
            Ex::Agg(k, a) => {
                let name = self.kw(k.name());
                (format!("{name}({})", self.expr(a)), PRIMARY)
            }
            Ex::Obj(fields) => {
                let fields: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| {
                        let key = if is_ident(k) && self.rng.chance(60) {
                            k.clone()
                        } else {
                            self.string(k)
                        };
                        format!("{key}: {}", self.expr(v))
                    })
                    .collect();
                (format!("{{{}}}", fields.join(", ")), PRIMARY)
            }
            Ex::Arr(items) => {
                let items: Vec<String> = items.iter().map(|i| self.expr(i)).collect();
                (format!("[{}]", items.join(", ")), PRIMARY)
            }
            Ex::Paren(a) => (format!("({})", self.expr(a)), PRIMARY),
        }
    }

    fn not(&mut self, neg: bool) -> String {
        if neg {
            format!("{} ", self.kw("NOT"))
        } else {
            String::new()
        }
    }

    fn count(&mut self, c: &Count) -> String {
        match c {
            Count::Lit(n) => n.to_string(),
            Count::Param(p) => p.clone(),
        }
    }

    fn path(&mut self, e: &Ex) -> String {
        // A FROM / JOIN path: a name, then `.prop`, `["prop"]` or `[n]` steps.
        match e {
            Ex::Name(n) => n.clone(),
            Ex::Dot(b, p) => format!("{}.{p}", self.path(b)),
            Ex::Brk(b, p) => {
                let b = self.path(b);
                format!("{b}[{}]", self.string(p))
            }
            Ex::Idx(b, i) => {
                let b = self.path(b);
                format!("{b}[{}]", self.expr(i))
            }
            other => self.expr(other),
        }
    }

    /// The query's text.
    pub fn query(&mut self, q: &Q) -> String {
        let mut s = self.kw("SELECT");
        if q.distinct {
            s += self.sep();
            s += &self.kw("DISTINCT");
        }
        if let Some(t) = &q.top {
            s += self.sep();
            s += &self.kw("TOP");
            s += " ";
            s += &self.count(t);
        }
        s += self.sep();
        match &q.select {
            Sel::Star => s += "*",
            Sel::Value(e) => {
                s += &self.kw("VALUE");
                s += " ";
                s += &self.expr(e);
            }
            Sel::List(list) => {
                let parts: Vec<String> = list
                    .iter()
                    .map(|(e, alias)| {
                        let e = self.expr(e);
                        match alias {
                            Some((a, true)) => format!("{e} {} {a}", self.kw("AS")),
                            Some((a, false)) => format!("{e} {a}"),
                            None => e,
                        }
                    })
                    .collect();
                s += &parts.join(", ");
            }
        }
        if let Some(from) = &q.from {
            s += self.sep();
            s += &self.kw("FROM");
            s += " ";
            match &from.root {
                Root::Items(n) => s += n,
                Root::Path(_, p, alias, as_kw) => {
                    s += &self.path(p);
                    if *as_kw {
                        s += " ";
                        s += &self.kw("AS");
                    }
                    s += " ";
                    s += alias;
                }
                Root::Each(alias, p) => {
                    s += alias;
                    s += " ";
                    s += &self.kw("IN");
                    s += " ";
                    s += &self.path(p);
                }
            }
            for (alias, p) in &from.joins {
                s += self.sep();
                s += &self.kw("JOIN");
                s += " ";
                s += alias;
                s += " ";
                s += &self.kw("IN");
                s += " ";
                s += &self.path(p);
            }
        }
        if let Some(w) = &q.filter {
            s += self.sep();
            s += &self.kw("WHERE");
            s += " ";
            s += &self.expr(w);
        }
        if !q.group.is_empty() {
            s += self.sep();
            s += &self.kw("GROUP");
            s += " ";
            s += &self.kw("BY");
            s += " ";
            let parts: Vec<String> = q.group.iter().map(|g| self.expr(g)).collect();
            s += &parts.join(", ");
        }
        if !q.order.is_empty() {
            s += self.sep();
            s += &self.kw("ORDER");
            s += " ";
            s += &self.kw("BY");
            s += " ";
            let parts: Vec<String> = q
                .order
                .iter()
                .map(|(e, dir)| {
                    let e = self.expr(e);
                    match dir {
                        None => e,
                        Some(false) => format!("{e} {}", self.kw("ASC")),
                        Some(true) => format!("{e} {}", self.kw("DESC")),
                    }
                })
                .collect();
            s += &parts.join(", ");
        }
        if let Some((o, l)) = &q.offset_limit {
            s += self.sep();
            s += &self.kw("OFFSET");
            s += " ";
            s += &self.count(o);
            s += " ";
            s += &self.kw("LIMIT");
            s += " ";
            s += &self.count(l);
        }
        if self.rng.chance(5) {
            s += " -- trailing comment";
        }
        s
    }
}
