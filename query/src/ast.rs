//! The typed syntax tree of a query.

use serde_json::Value;

/// A parsed query.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// `SELECT DISTINCT`.
    pub distinct: bool,
    /// `TOP n`.
    pub top: Option<Expr>,
    /// What each result is.
    pub select: Select,
    /// `FROM`, if any (a query without one evaluates its projection once).
    pub from: Option<From>,
    /// `WHERE`.
    pub filter: Option<Expr>,
    /// `GROUP BY` expressions.
    pub group_by: Vec<Expr>,
    /// `ORDER BY` expressions.
    pub order_by: Vec<OrderItem>,
    /// `OFFSET … LIMIT …`.
    pub offset_limit: Option<(Expr, Expr)>,
}

/// The projection.
#[derive(Clone, Debug, PartialEq)]
pub enum Select {
    /// `SELECT *`: the one source's value.
    Star,
    /// `SELECT VALUE e`: the value itself, not wrapped in an object.
    Value(Expr),
    /// `SELECT e1 [AS a1], …`: an object of the named values.
    List(Vec<Projection>),
}

/// One entry of a projection list.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// The value.
    pub expr: Expr,
    /// The property name in the result: the alias, or the last property of a path, or `$n`.
    pub name: String,
}

/// The `FROM` clause: the first source, then each `JOIN`.
#[derive(Clone, Debug, PartialEq)]
pub struct From {
    /// The container source.
    pub root: Source,
    /// `JOIN x IN …` sources, each iterating over an array of an earlier one.
    pub joins: Vec<Source>,
}

/// One source of rows: a name bound to each value it produces.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The name the rest of the query uses for it.
    pub alias: String,
    /// What it ranges over.
    pub kind: SourceKind,
}

/// What a source ranges over.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceKind {
    /// `FROM c` or `FROM c.path p`: each item (or the value at a path inside it, items
    /// where it is undefined skipped).
    Items(Expr),
    /// `x IN expr`: each element of an array (items where it is not an array give none).
    Each(Expr),
}

/// One `ORDER BY` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderItem {
    /// The sort key.
    pub expr: Expr,
    /// `DESC`.
    pub descending: bool,
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// A constant: `1`, `'a'`, `true`, `null`, or a bound parameter.
    Const(Value),
    /// `undefined`.
    Undefined,
    /// A source's name; `slot` is its position in the row (its order in `FROM`).
    Alias {
        /// The name as written.
        name: String,
        /// Its index in the row.
        slot: usize,
    },
    /// `e.name` or `e["name"]`.
    Prop(Box<Expr>, String),
    /// `e[i]` with a computed index (a number indexes an array, a string an object).
    Index(Box<Expr>, Box<Expr>),
    /// A unary operator.
    Unary(UnOp, Box<Expr>),
    /// A binary operator.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `e [NOT] BETWEEN lo AND hi`.
    Between {
        /// The value tested.
        expr: Box<Expr>,
        /// Lower bound (inclusive).
        low: Box<Expr>,
        /// Upper bound (inclusive).
        high: Box<Expr>,
        /// `NOT BETWEEN`.
        negated: bool,
    },
    /// `e [NOT] IN (a, b, …)`.
    In {
        /// The value tested.
        expr: Box<Expr>,
        /// The candidates.
        list: Vec<Expr>,
        /// `NOT IN`.
        negated: bool,
    },
    /// `e [NOT] LIKE pattern [ESCAPE 'c']`.
    Like {
        /// The value tested.
        expr: Box<Expr>,
        /// The pattern: `%` any run, `_` any one character.
        pattern: Box<Expr>,
        /// The escape character, if any.
        escape: Option<char>,
        /// `NOT LIKE`.
        negated: bool,
    },
    /// `cond ? a : b`.
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
    /// `a ?? b`.
    Coalesce(Box<Expr>, Box<Expr>),
    /// A built-in function.
    Call(Func, Vec<Expr>),
    /// An aggregate over the rows (or a group's rows).
    Aggregate(Agg, Box<Expr>),
    /// `{name: e, …}`.
    Object(Vec<(String, Expr)>),
    /// `[e, …]`.
    Array(Vec<Expr>),
}

/// Unary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    /// `NOT`.
    Not,
    /// `-`.
    Neg,
    /// `+`.
    Plus,
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    /// `OR`.
    Or,
    /// `AND`.
    And,
    /// `=`.
    Eq,
    /// `!=` or `<>`.
    Ne,
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
    /// `||`: string concatenation.
    Concat,
}

/// Aggregate functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Agg {
    /// `COUNT(e)`: rows where `e` is defined.
    Count,
    /// `SUM(e)`.
    Sum,
    /// `MIN(e)`.
    Min,
    /// `MAX(e)`.
    Max,
    /// `AVG(e)`.
    Avg,
}

/// Built-in scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Func {
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

impl Func {
    /// Every function, with its name as the docs write it and its arity (least, most).
    pub const ALL: [(Func, &'static str, usize, usize); 25] = [
        (Func::IsDefined, "IS_DEFINED", 1, 1),
        (Func::IsNull, "IS_NULL", 1, 1),
        (Func::IsNumber, "IS_NUMBER", 1, 1),
        (Func::IsString, "IS_STRING", 1, 1),
        (Func::IsBool, "IS_BOOL", 1, 1),
        (Func::IsArray, "IS_ARRAY", 1, 1),
        (Func::IsObject, "IS_OBJECT", 1, 1),
        (Func::ArrayContains, "ARRAY_CONTAINS", 2, 3),
        (Func::ArrayLength, "ARRAY_LENGTH", 1, 1),
        (Func::ArraySlice, "ARRAY_SLICE", 2, 3),
        (Func::StartsWith, "STARTSWITH", 2, 3),
        (Func::EndsWith, "ENDSWITH", 2, 3),
        (Func::Contains, "CONTAINS", 2, 3),
        (Func::Lower, "LOWER", 1, 1),
        (Func::Upper, "UPPER", 1, 1),
        (Func::Length, "LENGTH", 1, 1),
        (Func::Substring, "SUBSTRING", 3, 3),
        (Func::Concat, "CONCAT", 2, usize::MAX),
        (Func::IndexOf, "INDEX_OF", 2, 3),
        (Func::Trim, "TRIM", 1, 1),
        (Func::Abs, "ABS", 1, 1),
        (Func::Floor, "FLOOR", 1, 1),
        (Func::Ceiling, "CEILING", 1, 1),
        (Func::Round, "ROUND", 1, 1),
        (Func::ToString, "ToString", 1, 1),
    ];

    /// The function named `name` (case-insensitively), with its arity.
    pub fn lookup(name: &str) -> Option<(Func, &'static str, usize, usize)> {
        Func::ALL
            .iter()
            .copied()
            .find(|(_, n, _, _)| n.eq_ignore_ascii_case(name))
    }
}

impl Expr {
    /// Whether an aggregate occurs anywhere in this expression.
    pub fn has_aggregate(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| found |= matches!(e, Expr::Aggregate(..)));
        found
    }

    /// Calls `f` on this expression and every expression inside it, outermost first.
    pub fn walk<'q>(&'q self, f: &mut dyn FnMut(&'q Expr)) {
        f(self);
        for c in self.children() {
            c.walk(f);
        }
    }

    /// The expressions directly inside this one.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Const(_) | Expr::Undefined | Expr::Alias { .. } => Vec::new(),
            Expr::Prop(e, _) | Expr::Unary(_, e) | Expr::Aggregate(_, e) => vec![e],
            Expr::Index(a, b) | Expr::Binary(_, a, b) | Expr::Coalesce(a, b) => vec![a, b],
            Expr::Between {
                expr, low, high, ..
            } => vec![expr, low, high],
            Expr::In { expr, list, .. } => std::iter::once(&**expr).chain(list).collect(),
            Expr::Like { expr, pattern, .. } => vec![expr, pattern],
            Expr::Ternary(a, b, c) => vec![a, b, c],
            Expr::Call(_, args) | Expr::Array(args) => args.iter().collect(),
            Expr::Object(fields) => fields.iter().map(|(_, e)| e).collect(),
        }
    }
}
