//! A recursive-descent parser from query text to [`Query`].
//!
//! Cosmos DB SQL has constructs no general SQL grammar crate parses (`SELECT VALUE`,
//! `FROM x IN c.lines`, `??`, JSON literals, `c["a b"]`), so the grammar is written out here,
//! one function per precedence level. Parameters are bound while parsing: the tree holds
//! their values as constants.

use crate::QueryError;
use crate::ast::*;
use crate::lexer::{Tok, Token, lex};
use serde_json::Value;
use std::collections::HashMap;

/// Words that cannot name a source or start an identifier expression.
const RESERVED: &[&str] = &[
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

/// Constructs of Cosmos DB SQL outside converge's subset, named in the error.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("EXISTS", "EXISTS subqueries are not supported"),
    ("ARRAY", "ARRAY subqueries are not supported"),
    (
        "HAVING",
        "HAVING is not supported (filter groups in the application)",
    ),
    ("UNION", "UNION is not supported"),
    ("UDF", "user-defined functions (udf.…) are not supported"),
];

/// Parses `text` with `params` (names with their `@`) bound.
pub fn parse(text: &str, params: &HashMap<String, Value>) -> Result<Query, QueryError> {
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        params,
        names: Vec::new(),
        depth: 0,
        nesting: 0,
    };
    p.query()
}

struct Parser<'a> {
    tokens: Vec<Token>,
    pos: usize,
    params: &'a HashMap<String, Value>,
    /// Every name an expression used, with where, in the order read.
    names: Vec<(String, usize)>,
    /// The depth of the expression the last parsing function returned (a leaf is 1).
    depth: usize,
    /// Expressions being parsed inside one another (parentheses, arguments, lists).
    nesting: usize,
}

/// The deepest expression tree a query may hold: evaluating and dropping a tree recurse
/// through it, so its depth is bounded (and with it the stack they use).
pub const MAX_DEPTH: usize = 256;

/// The most expressions parsed inside one another (parentheses, arguments, `NOT`, signs):
/// each costs the parser a dozen stack frames.
pub const MAX_NESTING: usize = 64;

impl Parser<'_> {
    /// Records that the expression just built is `depth` deep; an error past [`MAX_DEPTH`].
    fn deep(&mut self, depth: usize) -> Result<(), QueryError> {
        if depth > MAX_DEPTH {
            return Err(QueryError::at(
                self.at(),
                format!("the expression nests deeper than {MAX_DEPTH} operators"),
            ));
        }
        self.depth = depth;
        Ok(())
    }

    /// Enters one more expression inside another; an error past [`MAX_NESTING`].
    fn nest(&mut self) -> Result<(), QueryError> {
        self.nesting += 1;
        if self.nesting > MAX_NESTING {
            return Err(QueryError::at(
                self.at(),
                format!("the query nests expressions deeper than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    fn peek(&self) -> &Tok {
        &self.tokens[self.pos].tok
    }

    fn at(&self) -> usize {
        self.tokens[self.pos].at
    }

    fn bump(&mut self) -> Token {
        let t = self.tokens[self.pos].clone();
        if self.pos + 1 < self.tokens.len() {
            self.pos += 1;
        }
        t
    }

    fn is_word(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Word(w) if w.eq_ignore_ascii_case(kw))
    }

    fn eat_word(&mut self, kw: &str) -> bool {
        let yes = self.is_word(kw);
        if yes {
            self.bump();
        }
        yes
    }

    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Tok::Sym(x) if *x == s)
    }

    fn eat_sym(&mut self, s: &str) -> bool {
        let yes = self.is_sym(s);
        if yes {
            self.bump();
        }
        yes
    }

    fn expect_word(&mut self, kw: &str) -> Result<(), QueryError> {
        if self.eat_word(kw) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{kw}`")))
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), QueryError> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{s}`")))
        }
    }

    /// An error at the current token: what was expected, and what is there.
    fn unexpected(&self, expected: &str) -> QueryError {
        let found = match self.peek() {
            Tok::End => "the end of the query".to_owned(),
            Tok::Word(w) => {
                if let Some((_, what)) = UNSUPPORTED.iter().find(|(k, _)| k.eq_ignore_ascii_case(w))
                {
                    return QueryError::at(self.at(), (*what).to_owned());
                }
                format!("`{w}`")
            }
            Tok::Param(p) => format!("`{p}`"),
            Tok::Number(n) => format!("the number {n}"),
            Tok::Str(s) => format!("the string {s:?}"),
            Tok::Sym(s) => format!("`{s}`"),
        };
        QueryError::at(self.at(), format!("expected {expected}, found {found}"))
    }

    /// An identifier (not a reserved word), with where it is.
    fn ident(&mut self, what: &str) -> Result<(String, usize), QueryError> {
        match self.peek().clone() {
            Tok::Word(w) if !is_reserved(&w) => {
                let at = self.at();
                self.bump();
                Ok((w, at))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    fn query(&mut self) -> Result<Query, QueryError> {
        self.expect_word("SELECT")?;
        let distinct = self.eat_word("DISTINCT");
        let top = if self.is_word("TOP") {
            self.bump();
            Some(self.count_operand("TOP")?)
        } else {
            None
        };
        let select_at = self.at();
        let select = self.select()?;
        let select_names = std::mem::take(&mut self.names);
        let from = if self.eat_word("FROM") {
            Some(self.from()?)
        } else {
            None
        };
        let mut rest = Vec::new();
        let filter = if self.eat_word("WHERE") {
            let at = self.at();
            let e = self.expr()?;
            if e.has_aggregate() {
                return Err(QueryError::at(at, "aggregates are not allowed in WHERE"));
            }
            Some(e)
        } else {
            None
        };
        let mut group_by = Vec::new();
        if self.is_word("GROUP") {
            self.bump();
            self.expect_word("BY")?;
            loop {
                let at = self.at();
                let e = self.expr()?;
                if e.has_aggregate() {
                    return Err(QueryError::at(at, "aggregates are not allowed in GROUP BY"));
                }
                group_by.push(e);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let mut order_by = Vec::new();
        let mut order_at = Vec::new();
        if self.is_word("ORDER") {
            self.bump();
            self.expect_word("BY")?;
            loop {
                order_at.push(self.at());
                let expr = self.expr()?;
                let descending = if self.eat_word("DESC") {
                    true
                } else {
                    self.eat_word("ASC");
                    false
                };
                order_by.push(OrderItem { expr, descending });
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let offset_limit = if self.eat_word("OFFSET") {
            let offset = self.count_operand("OFFSET")?;
            self.expect_word("LIMIT")?;
            let limit = self.count_operand("LIMIT")?;
            Some((offset, limit))
        } else {
            None
        };
        if !matches!(self.peek(), Tok::End) {
            return Err(self.unexpected("the end of the query"));
        }
        rest.append(&mut self.names);
        let mut query = Query {
            distinct,
            top,
            select,
            from,
            filter,
            group_by,
            order_by,
            offset_limit,
        };
        self.resolve(&mut query, select_names, rest)?;
        check_shape(&query, select_at, &order_at)?;
        Ok(query)
    }

    /// `TOP`, `OFFSET` and `LIMIT` take a non-negative integer or a parameter bound to one.
    fn count_operand(&mut self, clause: &str) -> Result<Expr, QueryError> {
        let at = self.at();
        let value = match self.bump().tok {
            Tok::Number(n) => Value::from(n),
            Tok::Param(p) => self.param(&p, at)?,
            _ => {
                self.pos -= 1;
                return Err(self.unexpected(&format!("a number after {clause}")));
            }
        };
        match value.as_f64() {
            Some(n) if n >= 0.0 && n.fract() == 0.0 && n <= u32::MAX as f64 => {
                Ok(Expr::Const(Value::from(n as u64)))
            }
            _ => Err(QueryError::at(
                at,
                format!("{clause} takes a non-negative whole number, not {value}"),
            )),
        }
    }

    fn param(&self, name: &str, at: usize) -> Result<Value, QueryError> {
        self.params
            .get(name)
            .cloned()
            .ok_or_else(|| QueryError::at(at, format!("the parameter {name} is not given")))
    }

    fn select(&mut self) -> Result<Select, QueryError> {
        if self.eat_sym("*") {
            return Ok(Select::Star);
        }
        if self.eat_word("VALUE") {
            return Ok(Select::Value(self.expr()?));
        }
        let mut list: Vec<Projection> = Vec::new();
        let mut unnamed = 0;
        loop {
            let at = self.at();
            let expr = self.expr()?;
            let name = if self.eat_word("AS") {
                self.ident("a name after AS")?.0
            } else if let Tok::Word(w) = self.peek().clone()
                && !is_reserved(&w)
            {
                self.bump();
                w
            } else {
                match &expr {
                    Expr::Prop(_, name) => name.clone(),
                    Expr::Alias { name, .. } => name.clone(),
                    _ => {
                        unnamed += 1;
                        format!("${unnamed}")
                    }
                }
            };
            if list.iter().any(|p| p.name == name) {
                return Err(QueryError::at(
                    at,
                    format!("the projection names {name:?} twice; give one an alias with AS"),
                ));
            }
            list.push(Projection { expr, name });
            if !self.eat_sym(",") {
                break;
            }
        }
        Ok(Select::List(list))
    }

    fn from(&mut self) -> Result<From, QueryError> {
        let (root, names) = self.source(true)?;
        let container = &names[0].0;
        if let Some((other, at)) = names.iter().find(|(n, _)| n != container) {
            return Err(QueryError::at(
                *at,
                format!("{other:?} is not the container: the FROM clause calls it {container:?}"),
            ));
        }
        let mut aliases = vec![root.alias.clone()];
        let mut joins = Vec::new();
        while self.eat_word("JOIN") {
            let (join, names) = self.source(false)?;
            if let Some((unknown, at)) = names.iter().find(|(n, _)| !aliases.contains(n)) {
                return Err(QueryError::at(
                    *at,
                    format!(
                        "{unknown:?} names no earlier source (the sources so far are {})",
                        aliases.join(", ")
                    ),
                ));
            }
            if aliases.contains(&join.alias) {
                return Err(QueryError::at(
                    0,
                    format!("the source name {:?} is used twice", join.alias),
                ));
            }
            aliases.push(join.alias.clone());
            joins.push(join);
        }
        Ok(From { root, joins })
    }

    /// `alias IN expr` or `path [[AS] alias]`, with the names its expression uses. The root
    /// source's expression names the container (any name); a join's names earlier sources.
    fn source(&mut self, root: bool) -> Result<(Source, Vec<(String, usize)>), QueryError> {
        if self.is_sym("(") {
            return Err(QueryError::at(
                self.at(),
                "subqueries in FROM or JOIN are not supported",
            ));
        }
        let outer = std::mem::take(&mut self.names);
        let (first, at) = self.ident("a source name")?;
        let source = if self.eat_word("IN") {
            let expr = self.postfix_path()?;
            Source {
                alias: first,
                kind: SourceKind::Each(expr),
            }
        } else {
            if !root {
                return Err(QueryError::at(
                    at,
                    "JOIN takes `alias IN path` (an array inside an earlier source)",
                ));
            }
            self.pos -= 1;
            let expr = self.postfix_path()?;
            let alias = if self.eat_word("AS") {
                self.ident("a name after AS")?.0
            } else if let Tok::Word(w) = self.peek().clone()
                && !is_reserved(&w)
            {
                self.bump();
                w
            } else if matches!(expr, Expr::Alias { .. }) {
                first.clone()
            } else {
                return Err(self.unexpected("a name for the source (`FROM c.path AS p`)"));
            };
            Source {
                alias,
                kind: SourceKind::Items(expr),
            }
        };
        let names = std::mem::replace(&mut self.names, outer);
        Ok((source, names))
    }

    /// A name followed by `.prop` / `[…]` accesses (a source's expression).
    fn postfix_path(&mut self) -> Result<Expr, QueryError> {
        let (name, at) = self.ident("a source name")?;
        if self.is_sym("(") {
            return Err(QueryError::at(
                at,
                format!(
                    "a source ranges over a path of an earlier source (`x IN c.lines`), not over {name}(…)"
                ),
            ));
        }
        self.names.push((name.clone(), at));
        self.depth = 1;
        self.postfix_tail(Expr::Alias { name, slot: 0 })
    }

    fn expr(&mut self) -> Result<Expr, QueryError> {
        self.nest()?;
        let cond = self.coalesce()?;
        let e = if self.eat_sym("?") {
            let dc = self.depth;
            let a = self.expr()?;
            let da = self.depth;
            self.expect_sym(":")?;
            let b = self.expr()?;
            self.deep(dc.max(da).max(self.depth) + 1)?;
            Expr::Ternary(Box::new(cond), Box::new(a), Box::new(b))
        } else {
            cond
        };
        self.nesting -= 1;
        Ok(e)
    }

    fn coalesce(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.or()?;
        while self.eat_sym("??") {
            let d = self.depth;
            let right = self.or()?;
            self.deep(d.max(self.depth) + 1)?;
            left = Expr::Coalesce(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and()?;
        while self.eat_word("OR") {
            let d = self.depth;
            let right = self.and()?;
            self.deep(d.max(self.depth) + 1)?;
            left = Expr::Binary(BinOp::Or, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.not()?;
        while self.eat_word("AND") {
            let d = self.depth;
            let right = self.not()?;
            self.deep(d.max(self.depth) + 1)?;
            left = Expr::Binary(BinOp::And, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, QueryError> {
        if self.eat_word("NOT") {
            self.nest()?;
            let e = self.not()?;
            self.nesting -= 1;
            self.deep(self.depth + 1)?;
            return Ok(Expr::Unary(UnOp::Not, Box::new(e)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.concat()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("=") => BinOp::Eq,
                Tok::Sym("!=") | Tok::Sym("<>") => BinOp::Ne,
                Tok::Sym("<") => BinOp::Lt,
                Tok::Sym("<=") => BinOp::Le,
                Tok::Sym(">") => BinOp::Gt,
                Tok::Sym(">=") => BinOp::Ge,
                _ => {
                    let negated = if self.is_word("NOT") {
                        let next = &self.tokens[(self.pos + 1).min(self.tokens.len() - 1)].tok;
                        if matches!(next, Tok::Word(w) if ["IN", "BETWEEN", "LIKE"].iter().any(|k| w.eq_ignore_ascii_case(k)))
                        {
                            self.bump();
                            true
                        } else {
                            return Ok(left);
                        }
                    } else {
                        false
                    };
                    if self.eat_word("IN") {
                        let mut d = self.depth;
                        self.expect_sym("(")?;
                        let mut list = vec![self.expr()?];
                        d = d.max(self.depth);
                        while self.eat_sym(",") {
                            list.push(self.expr()?);
                            d = d.max(self.depth);
                        }
                        self.expect_sym(")")?;
                        self.deep(d + 1)?;
                        left = Expr::In {
                            expr: Box::new(left),
                            list,
                            negated,
                        };
                        continue;
                    }
                    if self.eat_word("BETWEEN") {
                        let d = self.depth;
                        let low = self.concat()?;
                        let dl = self.depth;
                        self.expect_word("AND")?;
                        let high = self.concat()?;
                        self.deep(d.max(dl).max(self.depth) + 1)?;
                        left = Expr::Between {
                            expr: Box::new(left),
                            low: Box::new(low),
                            high: Box::new(high),
                            negated,
                        };
                        continue;
                    }
                    if self.eat_word("LIKE") {
                        let d = self.depth;
                        let pattern = self.concat()?;
                        self.deep(d.max(self.depth) + 1)?;
                        let escape = if self.eat_word("ESCAPE") {
                            let at = self.at();
                            match self.bump().tok {
                                Tok::Str(s) if s.chars().count() == 1 => s.chars().next(),
                                _ => {
                                    return Err(QueryError::at(
                                        at,
                                        "ESCAPE takes a string of one character",
                                    ));
                                }
                            }
                        } else {
                            None
                        };
                        left = Expr::Like {
                            expr: Box::new(left),
                            pattern: Box::new(pattern),
                            escape,
                            negated,
                        };
                        continue;
                    }
                    if negated {
                        return Err(self.unexpected("IN, BETWEEN or LIKE after NOT"));
                    }
                    return Ok(left);
                }
            };
            self.bump();
            let d = self.depth;
            let right = self.concat()?;
            self.deep(d.max(self.depth) + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn concat(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.additive()?;
        while self.eat_sym("||") {
            let d = self.depth;
            let right = self.additive()?;
            self.deep(d.max(self.depth) + 1)?;
            left = Expr::Binary(BinOp::Concat, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn additive(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.multiplicative()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                _ => return Ok(left),
            };
            self.bump();
            let d = self.depth;
            let right = self.multiplicative()?;
            self.deep(d.max(self.depth) + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.unary()?;
        loop {
            let op = match self.peek() {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("%") => BinOp::Rem,
                _ => return Ok(left),
            };
            self.bump();
            let d = self.depth;
            let right = self.unary()?;
            self.deep(d.max(self.depth) + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        for (sym, op) in [("-", UnOp::Neg), ("+", UnOp::Plus)] {
            if self.eat_sym(sym) {
                // Each sign is an expression level: `- - - x` nests like parentheses.
                self.nest()?;
                let e = self.unary()?;
                self.nesting -= 1;
                self.deep(self.depth + 1)?;
                return Ok(Expr::Unary(op, Box::new(e)));
            }
        }
        let primary = self.primary()?;
        self.postfix_tail(primary)
    }

    fn postfix_tail(&mut self, mut e: Expr) -> Result<Expr, QueryError> {
        loop {
            if self.eat_sym(".") {
                let at = self.at();
                match self.bump().tok {
                    Tok::Word(w) => {
                        self.deep(self.depth + 1)?;
                        e = Expr::Prop(Box::new(e), w)
                    }
                    _ => {
                        return Err(QueryError::at(at, "expected a property name after `.`"));
                    }
                }
            } else if self.eat_sym("[") {
                // Only a string literal, `e["prop"]`, is a path step (that names a
                // projection); `e[@p]` with a string parameter reads the same property
                // but is an index, so a parameter's value never names a result property.
                let literal = matches!(self.peek(), Tok::Str(_))
                    && matches!(
                        self.tokens.get(self.pos + 1).map(|t| &t.tok),
                        Some(Tok::Sym("]"))
                    );
                let d = self.depth;
                let index = self.expr()?;
                self.expect_sym("]")?;
                self.deep(d.max(self.depth) + 1)?;
                e = match index {
                    Expr::Const(Value::String(s)) if literal => Expr::Prop(Box::new(e), s),
                    other => Expr::Index(Box::new(e), Box::new(other)),
                };
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, QueryError> {
        let at = self.at();
        match self.peek().clone() {
            Tok::Number(n) => {
                self.bump();
                self.depth = 1;
                Ok(Expr::Const(crate::value::number(n)))
            }
            Tok::Str(s) => {
                self.bump();
                self.depth = 1;
                Ok(Expr::Const(Value::String(s)))
            }
            Tok::Param(p) => {
                self.bump();
                self.depth = 1;
                Ok(Expr::Const(self.param(&p, at)?))
            }
            Tok::Sym("(") => {
                self.bump();
                if self.is_word("SELECT") {
                    return Err(QueryError::at(self.at(), "subqueries are not supported"));
                }
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Sym("[") => {
                self.bump();
                let mut items = Vec::new();
                let mut d = 0;
                if !self.eat_sym("]") {
                    loop {
                        items.push(self.expr()?);
                        d = d.max(self.depth);
                        if !self.eat_sym(",") {
                            break;
                        }
                    }
                    self.expect_sym("]")?;
                }
                self.deep(d + 1)?;
                Ok(Expr::Array(items))
            }
            Tok::Sym("{") => {
                self.bump();
                let mut fields: Vec<(String, Expr)> = Vec::new();
                let mut d = 0;
                if !self.eat_sym("}") {
                    loop {
                        let key_at = self.at();
                        let key = match self.bump().tok {
                            Tok::Word(w) => w,
                            Tok::Str(s) => s,
                            _ => {
                                return Err(QueryError::at(
                                    key_at,
                                    "expected a property name in an object",
                                ));
                            }
                        };
                        if fields.iter().any(|(k, _)| *k == key) {
                            return Err(QueryError::at(
                                key_at,
                                format!("the object names {key:?} twice"),
                            ));
                        }
                        self.expect_sym(":")?;
                        fields.push((key, self.expr()?));
                        d = d.max(self.depth);
                        if !self.eat_sym(",") {
                            break;
                        }
                    }
                    self.expect_sym("}")?;
                }
                self.deep(d + 1)?;
                Ok(Expr::Object(fields))
            }
            Tok::Word(w) => {
                let upper = w.to_ascii_uppercase();
                match upper.as_str() {
                    "TRUE" => {
                        self.bump();
                        self.depth = 1;
                        return Ok(Expr::Const(Value::Bool(true)));
                    }
                    "FALSE" => {
                        self.bump();
                        self.depth = 1;
                        return Ok(Expr::Const(Value::Bool(false)));
                    }
                    "NULL" => {
                        self.bump();
                        self.depth = 1;
                        return Ok(Expr::Const(Value::Null));
                    }
                    "UNDEFINED" => {
                        self.bump();
                        self.depth = 1;
                        return Ok(Expr::Undefined);
                    }
                    _ => {}
                }
                let next_is_call = matches!(
                    self.tokens.get(self.pos + 1).map(|t| &t.tok),
                    Some(Tok::Sym("("))
                );
                if next_is_call {
                    if let Some((_, what)) =
                        UNSUPPORTED.iter().find(|(k, _)| k.eq_ignore_ascii_case(&w))
                    {
                        return Err(QueryError::at(at, (*what).to_owned()));
                    }
                    self.bump();
                    self.bump();
                    return self.call(&w, at);
                }
                if is_reserved(&w) {
                    return Err(self.unexpected("an expression"));
                }
                self.bump();
                self.names.push((w.clone(), at));
                self.depth = 1;
                Ok(Expr::Alias { name: w, slot: 0 })
            }
            _ => Err(self.unexpected("an expression")),
        }
    }

    /// A call; `(` has been read.
    fn call(&mut self, name: &str, at: usize) -> Result<Expr, QueryError> {
        let agg = match name.to_ascii_uppercase().as_str() {
            "COUNT" => Some(Agg::Count),
            "SUM" => Some(Agg::Sum),
            "MIN" => Some(Agg::Min),
            "MAX" => Some(Agg::Max),
            "AVG" => Some(Agg::Avg),
            _ => None,
        };
        let func = Func::lookup(name);
        if agg.is_none() && func.is_none() {
            return Err(QueryError::at(
                at,
                format!(
                    "the function {name} is not supported (docs/queries.md lists those that are)"
                ),
            ));
        }
        let mut args = Vec::new();
        let mut deepest = 0;
        if !self.eat_sym(")") {
            loop {
                if agg.is_some() && self.is_sym("*") {
                    return Err(QueryError::at(
                        self.at(),
                        format!("{name}(*) is not Cosmos DB SQL: write {name}(1)"),
                    ));
                }
                args.push(self.expr()?);
                deepest = deepest.max(self.depth);
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_sym(")")?;
        }
        if let Some(agg) = agg {
            let [arg] = <[Expr; 1]>::try_from(args).map_err(|a| {
                QueryError::at(at, format!("{name} takes one argument, not {}", a.len()))
            })?;
            if arg.has_aggregate() {
                return Err(QueryError::at(at, "aggregates cannot be nested"));
            }
            self.deep(deepest + 1)?;
            return Ok(Expr::Aggregate(agg, Box::new(arg)));
        }
        let (func, doc_name, least, most) = func.expect("looked up above");
        if args.len() < least || args.len() > most {
            let takes = if least == most {
                format!("{least}")
            } else if most == usize::MAX {
                format!("at least {least}")
            } else {
                format!("{least} to {most}")
            };
            return Err(QueryError::at(
                at,
                format!("{doc_name} takes {takes} arguments, not {}", args.len()),
            ));
        }
        self.deep(deepest + 1)?;
        Ok(Expr::Call(func, args))
    }

    /// Binds every name to its source's slot; a name no source has is an error at its first use.
    fn resolve(
        &self,
        q: &mut Query,
        select_names: Vec<(String, usize)>,
        rest: Vec<(String, usize)>,
    ) -> Result<(), QueryError> {
        let aliases: Vec<String> = q.from.as_ref().map_or_else(Vec::new, |from| {
            std::iter::once(&from.root)
                .chain(&from.joins)
                .map(|s| s.alias.clone())
                .collect()
        });
        for (name, at) in select_names.iter().chain(&rest) {
            if !aliases.iter().any(|a| a == name) {
                let hint = if aliases.is_empty() {
                    " (the query has no FROM clause)".to_owned()
                } else {
                    format!(" (the sources are {})", aliases.join(", "))
                };
                return Err(QueryError::at(
                    *at,
                    format!("{name:?} is not a source name{hint}"),
                ));
            }
        }
        let slot_of = |name: &str| aliases.iter().position(|a| a == name).unwrap_or(0);
        let mut bind = |e: &mut Expr| bind_slots(e, &slot_of);
        match &mut q.select {
            Select::Star => {}
            Select::Value(e) => bind(e),
            Select::List(list) => list.iter_mut().for_each(|p| bind(&mut p.expr)),
        }
        if let Some(from) = &mut q.from {
            for j in &mut from.joins {
                match &mut j.kind {
                    SourceKind::Items(e) | SourceKind::Each(e) => bind(e),
                }
            }
        }
        q.filter.iter_mut().for_each(&mut bind);
        q.group_by.iter_mut().for_each(&mut bind);
        q.order_by.iter_mut().for_each(|o| bind(&mut o.expr));
        Ok(())
    }
}

fn bind_slots(e: &mut Expr, slot_of: &dyn Fn(&str) -> usize) {
    match e {
        Expr::Const(_) | Expr::Undefined => {}
        Expr::Alias { name, slot } => *slot = slot_of(name),
        Expr::Prop(e, _) | Expr::Unary(_, e) | Expr::Aggregate(_, e) => bind_slots(e, slot_of),
        Expr::Index(a, b) | Expr::Binary(_, a, b) | Expr::Coalesce(a, b) => {
            bind_slots(a, slot_of);
            bind_slots(b, slot_of);
        }
        Expr::Between {
            expr, low, high, ..
        } => {
            bind_slots(expr, slot_of);
            bind_slots(low, slot_of);
            bind_slots(high, slot_of);
        }
        Expr::In { expr, list, .. } => {
            bind_slots(expr, slot_of);
            list.iter_mut().for_each(|e| bind_slots(e, slot_of));
        }
        Expr::Like { expr, pattern, .. } => {
            bind_slots(expr, slot_of);
            bind_slots(pattern, slot_of);
        }
        Expr::Ternary(a, b, c) => {
            bind_slots(a, slot_of);
            bind_slots(b, slot_of);
            bind_slots(c, slot_of);
        }
        Expr::Call(_, args) | Expr::Array(args) => {
            args.iter_mut().for_each(|e| bind_slots(e, slot_of))
        }
        Expr::Object(fields) => fields.iter_mut().for_each(|(_, e)| bind_slots(e, slot_of)),
    }
}

fn is_reserved(w: &str) -> bool {
    RESERVED.iter().any(|k| k.eq_ignore_ascii_case(w))
}

/// Checks the clauses fit together: what `SELECT *` needs, where aggregates may be, and
/// that with GROUP BY every value shown is grouped or aggregated.
fn check_shape(q: &Query, select_at: usize, order_at: &[usize]) -> Result<(), QueryError> {
    let joins = q.from.as_ref().map_or(0, |f| f.joins.len());
    if matches!(q.select, Select::Star) {
        if q.from.is_none() {
            return Err(QueryError::at(select_at, "SELECT * needs a FROM clause"));
        }
        if joins > 0 {
            return Err(QueryError::at(
                select_at,
                "SELECT * is not allowed with JOIN: name the values to select",
            ));
        }
        if !q.group_by.is_empty() {
            return Err(QueryError::at(
                select_at,
                "SELECT * is not allowed with GROUP BY",
            ));
        }
    }
    for (o, at) in q.order_by.iter().zip(order_at) {
        if o.expr.has_aggregate() {
            return Err(QueryError::at(
                *at,
                "ORDER BY an aggregate is not supported",
            ));
        }
    }
    let projected: Vec<&Expr> = match &q.select {
        Select::Star => Vec::new(),
        Select::Value(e) => vec![e],
        Select::List(list) => list.iter().map(|p| &p.expr).collect(),
    };
    let aggregated = projected.iter().any(|e| e.has_aggregate());
    if q.group_by.is_empty() {
        if aggregated {
            if let Some(bare) = projected.iter().find(|e| !grouped(e, &[])) {
                let _ = bare;
                return Err(QueryError::at(
                    select_at,
                    "a projection mixes aggregates with values that are not aggregated; add GROUP BY or aggregate them",
                ));
            }
            if !q.order_by.is_empty() {
                return Err(QueryError::at(
                    order_at[0],
                    "ORDER BY is not allowed with an aggregate and no GROUP BY",
                ));
            }
        }
        return Ok(());
    }
    if projected.iter().any(|e| !grouped(e, &q.group_by)) {
        return Err(QueryError::at(
            select_at,
            "with GROUP BY, every projected value must be a GROUP BY expression, an aggregate, or built from them",
        ));
    }
    for (o, at) in q.order_by.iter().zip(order_at) {
        if !grouped(&o.expr, &q.group_by) {
            return Err(QueryError::at(
                *at,
                "with GROUP BY, ORDER BY must sort by a GROUP BY expression",
            ));
        }
    }
    Ok(())
}

/// Whether `e` is computed from group keys, aggregates and constants alone.
fn grouped(e: &Expr, keys: &[Expr]) -> bool {
    if keys.contains(e) {
        return true;
    }
    match e {
        Expr::Const(_) | Expr::Undefined | Expr::Aggregate(..) => true,
        Expr::Alias { .. } => false,
        Expr::Prop(a, _) | Expr::Unary(_, a) => grouped(a, keys),
        Expr::Index(a, b) | Expr::Binary(_, a, b) | Expr::Coalesce(a, b) => {
            grouped(a, keys) && grouped(b, keys)
        }
        Expr::Between {
            expr, low, high, ..
        } => grouped(expr, keys) && grouped(low, keys) && grouped(high, keys),
        Expr::In { expr, list, .. } => grouped(expr, keys) && list.iter().all(|x| grouped(x, keys)),
        Expr::Like { expr, pattern, .. } => grouped(expr, keys) && grouped(pattern, keys),
        Expr::Ternary(a, b, c) => grouped(a, keys) && grouped(b, keys) && grouped(c, keys),
        Expr::Call(_, args) | Expr::Array(args) => args.iter().all(|x| grouped(x, keys)),
        Expr::Object(fields) => fields.iter().all(|(_, x)| grouped(x, keys)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Query, QueryError> {
        parse(text, &HashMap::new())
    }

    /// Each of these would build a tree (or a recursion) as deep as it is long: they are
    /// refused by depth, and nothing on the way runs out of stack.
    #[test]
    fn deep_expressions_are_refused_not_overflowed() {
        let n = 200_000;
        for text in [
            format!("SELECT VALUE {}1{} FROM c", "(".repeat(n), ")".repeat(n)),
            format!("SELECT VALUE 1{} FROM c", " + 1".repeat(n)),
            format!("SELECT VALUE c{} FROM c", ".a".repeat(n)),
            format!("SELECT * FROM c WHERE {}true", "NOT ".repeat(n)),
            format!("SELECT VALUE {}1 FROM c", "- ".repeat(n)),
            format!("SELECT VALUE {}1{} FROM c", "[".repeat(n), "]".repeat(n)),
            format!("SELECT VALUE {}1{} FROM c", "ABS(".repeat(n), ")".repeat(n)),
            format!("SELECT * FROM c WHERE c.a = 1{}", " OR c.a = 1".repeat(n)),
        ] {
            let e = parse_text(&text).expect_err("too deep");
            assert!(e.message.contains("deeper than"), "{}", e.message);
        }
        // Wide is fine: a long IN list, many conditions at a moderate depth.
        let list: Vec<String> = (0..10_000).map(|i| i.to_string()).collect();
        parse_text(&format!(
            "SELECT * FROM c WHERE c.n IN ({})",
            list.join(", ")
        ))
        .expect("wide");
        let ors: Vec<String> = (0..200).map(|i| format!("c.n = {i}")).collect();
        parse_text(&format!("SELECT * FROM c WHERE {}", ors.join(" OR "))).expect("200 ORs");
    }
}
