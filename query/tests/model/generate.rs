//! Random valid queries over the items of [`super::items`], with their parameters.
//!
//! Expressions are generated with a hint of the type they should have (most of the time),
//! so that comparisons, arithmetic and functions see values of the right type often
//! enough to compute something, and of the wrong type often enough to be undefined.

use super::Rng;
use super::ast::{AggK, Count, Ex, From, Fun, Op, Q, Root, Sel, is_ident};
use super::items::{NUMBERS, STRINGS, any, num_value};
use super::reference::projection_names;
use serde_json::{Value, json};

/// A query and the parameters it is run with.
#[derive(Clone, Debug)]
pub struct Case {
    /// The query.
    pub q: Q,
    /// Its parameters, `(name with @, value)`.
    pub params: Vec<(String, Value)>,
}

/// What a source's values look like, to pick paths that often exist.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape {
    /// A whole item.
    Item,
    /// `c.o`: `{a, b: {c}}` (or not an object).
    Obj,
    /// An element of `c.lines`: `{q, p, t: [...]}`.
    Line,
    /// `c.lines` itself: an array of lines.
    Lines,
    /// An element of `c.arr`: a number, mostly.
    NumEl,
    /// An element of `c.tags`, or a string.
    StrEl,
    /// Anything.
    AnyEl,
}

/// The type an expression should have.
#[derive(Clone, Copy, Debug, PartialEq)]
enum H {
    Num,
    Str,
    Bool,
    Arr,
    Any,
}

/// Where an expression is: what its leaves may be.
#[derive(Clone, Debug)]
enum Mode {
    /// Over a row: paths of the sources, literals, parameters.
    Row,
    /// A projection with aggregates and no GROUP BY: aggregates, literals, parameters.
    Aggregated,
    /// Over a group: the GROUP BY expressions, aggregates (when allowed), literals.
    Grouped { keys: Vec<Ex>, aggs: bool },
}

struct Gen<'r> {
    rng: &'r mut Rng,
    sources: Vec<(String, Shape)>,
    mode: Mode,
    /// Expressions are at most this deep (1 for the simple queries that give long results).
    max_depth: u32,
}

fn b(e: Ex) -> Box<Ex> {
    Box::new(e)
}

/// A parameter set shared by every query: `@num`, `@str`, `@any`, `@prop`, `@idx`,
/// `@flag`, and the counts `@top`, `@off`, `@lim`.
fn params(rng: &mut Rng) -> Vec<(String, Value)> {
    let count = |rng: &mut Rng| {
        let n = rng.range(0, 5);
        if rng.chance(15) {
            json!(n as f64)
        } else {
            json!(n)
        }
    };
    let mut p = vec![
        ("@num".to_owned(), num_value(*rng.pick(NUMBERS))),
        ("@str".to_owned(), json!(*rng.pick(STRINGS))),
        ("@any".to_owned(), any(rng, 1)),
        (
            "@prop".to_owned(),
            json!(*rng.pick(&["n", "s", "k", "id", "nope", "a b", "a"])),
        ),
        (
            "@idx".to_owned(),
            if rng.chance(20) {
                json!(1.0)
            } else {
                json!(rng.below(3))
            },
        ),
        ("@flag".to_owned(), json!(rng.chance(50))),
    ];
    for name in ["@top", "@off", "@lim"] {
        p.push((name.to_owned(), count(rng)));
    }
    p
}

impl Gen<'_> {
    fn chance(&mut self, p: usize) -> bool {
        self.rng.chance(p)
    }

    /// `base.name`, written `.name` or `["name"]`.
    fn prop(&mut self, base: Ex, name: &str) -> Ex {
        if is_ident(name) && self.chance(75) {
            Ex::Dot(b(base), name.to_owned())
        } else {
            Ex::Brk(b(base), name.to_owned())
        }
    }

    fn index(&mut self, base: Ex) -> Ex {
        let i = match self.rng.below(10) {
            0 => Ex::Param("@idx".into()),
            1 => Ex::Lit(json!(5)),
            _ => Ex::Lit(json!(self.rng.below(3))),
        };
        Ex::Idx(b(base), b(i))
    }

    fn literal(&mut self, h: H) -> Ex {
        match h {
            H::Num => {
                let n = *self.rng.pick(NUMBERS);
                let n = match self.rng.below(20) {
                    0 | 1 => n * 7.0,
                    // Exponents, and products that are not finite (undefined).
                    2 => *self
                        .rng
                        .pick(&[1e-7, 1.5e300, -2.5e-3, 123456789.125, 1e21]),
                    _ => n,
                };
                Ex::Lit(num_value(n))
            }
            H::Str => {
                if self.chance(20) {
                    Ex::Lit(json!(*self.rng.pick(&["red", "blue", "x", "y", "i03"])))
                } else {
                    Ex::Lit(json!(*self.rng.pick(STRINGS)))
                }
            }
            H::Bool => Ex::Lit(json!(self.chance(50))),
            H::Arr => {
                let n = self.rng.below(3);
                Ex::Arr((0..n).map(|_| self.literal(H::Num)).collect())
            }
            H::Any => match self.rng.below(10) {
                0..=2 => self.literal(H::Num),
                3..=4 => self.literal(H::Str),
                5 => self.literal(H::Bool),
                6 => Ex::Lit(Value::Null),
                7 => Ex::Undef,
                8 => self.literal(H::Arr),
                _ => {
                    let v = self.literal(H::Num);
                    Ex::Obj(vec![("a".into(), v)])
                }
            },
        }
    }

    fn param(&mut self, h: H) -> Ex {
        let name = match h {
            H::Num => *self.rng.pick(&["@num", "@idx"]),
            H::Str => *self.rng.pick(&["@str", "@prop"]),
            H::Bool => "@flag",
            H::Arr | H::Any => *self.rng.pick(&["@any", "@num", "@str"]),
        };
        Ex::Param(name.to_owned())
    }

    /// A path into one of the sources that often has type `h`.
    fn path(&mut self, h: H) -> Ex {
        let (name, shape) = self.rng.pick(&self.sources).clone();
        let me = Ex::Name(name);
        match shape {
            Shape::Item => {
                let field = |g: &mut Self, f: &str| g.prop(me.clone(), f);
                match h {
                    H::Num => match self.rng.below(9) {
                        0 | 1 => field(self, "n"),
                        2 => field(self, "k"),
                        3 => field(self, "a b"),
                        4 => {
                            let o = field(self, "o");
                            self.prop(o, "a")
                        }
                        5 => {
                            let a = field(self, "arr");
                            self.index(a)
                        }
                        6 => {
                            let l = field(self, "lines");
                            let l = Ex::Idx(b(l), b(Ex::Lit(json!(0))));
                            self.prop(l, "q")
                        }
                        7 => field(self, "m"),
                        _ => field(self, "nope"),
                    },
                    H::Str => match self.rng.below(9) {
                        0 | 1 => field(self, "s"),
                        2 => field(self, "id"),
                        3 => field(self, "k"),
                        4 => field(self, "value"),
                        5 => {
                            let t = field(self, "tags");
                            self.index(t)
                        }
                        6 => {
                            let o = field(self, "o");
                            self.prop(o, "a")
                        }
                        7 => field(self, "pk"),
                        _ => field(self, "m"),
                    },
                    H::Bool => match self.rng.below(5) {
                        0 | 1 => field(self, "b"),
                        2 => {
                            let o = field(self, "o");
                            let ob = self.prop(o, "b");
                            self.prop(ob, "c")
                        }
                        3 => field(self, "z"),
                        _ => field(self, "m"),
                    },
                    H::Arr => match self.rng.below(6) {
                        0 | 1 => field(self, "arr"),
                        2 => field(self, "tags"),
                        3 => field(self, "lines"),
                        4 => field(self, "m"),
                        _ => {
                            let l = field(self, "lines");
                            let l = Ex::Idx(b(l), b(Ex::Lit(json!(0))));
                            self.prop(l, "t")
                        }
                    },
                    H::Any => match self.rng.below(12) {
                        0 => me,
                        1 => field(self, "o"),
                        2 => {
                            let o = field(self, "o");
                            self.prop(o, "b")
                        }
                        3 => field(self, "z"),
                        4 => Ex::Idx(b(me), b(Ex::Param("@prop".into()))),
                        5 => self.path(H::Arr),
                        6 => self.path(H::Bool),
                        7 | 8 => self.path(H::Str),
                        _ => self.path(H::Num),
                    },
                }
            }
            Shape::Obj => match (h, self.rng.below(4)) {
                (_, 0) => me,
                (H::Bool, _) => {
                    let ob = self.prop(me, "b");
                    self.prop(ob, "c")
                }
                (H::Any, 1) => self.prop(me, "b"),
                (_, 1) => self.prop(me, "nope"),
                _ => self.prop(me, "a"),
            },
            Shape::Line => match (h, self.rng.below(5)) {
                (_, 0) => me,
                (H::Num, _) => self.prop(me, "q"),
                (H::Str, _) => self.prop(me, "p"),
                (H::Arr, _) => self.prop(me, "t"),
                (_, 1) => {
                    let t = self.prop(me, "t");
                    self.index(t)
                }
                (_, 2) => self.prop(me, "nope"),
                (_, 3) => self.prop(me, "q"),
                _ => self.prop(me, "p"),
            },
            Shape::Lines => match self.rng.below(4) {
                0 => me,
                1 => self.index(me),
                2 => {
                    let l = self.index(me);
                    self.prop(l, "q")
                }
                _ => {
                    let l = self.index(me);
                    self.prop(l, "p")
                }
            },
            Shape::NumEl | Shape::StrEl | Shape::AnyEl => match self.rng.below(14) {
                0 => self.prop(me, "a"),
                1 => self.index(me),
                _ => me,
            },
        }
    }

    /// A leaf: what it may be depends on the mode.
    fn leaf(&mut self, h: H) -> Ex {
        match self.mode.clone() {
            Mode::Row => {
                let r = self.rng.below(100);
                if self.sources.is_empty() || r < 22 {
                    self.literal(h)
                } else if r < 30 {
                    self.param(h)
                } else {
                    self.path(h)
                }
            }
            Mode::Aggregated => match self.rng.below(10) {
                0..=5 => self.aggregate(h),
                6 => self.param(h),
                _ => self.literal(h),
            },
            Mode::Grouped { keys, aggs } => match self.rng.below(10) {
                0..=3 => {
                    let k = self.rng.pick(&keys).clone();
                    if self.chance(15) {
                        self.prop(k, "a")
                    } else {
                        k
                    }
                }
                4..=6 if aggs => self.aggregate(h),
                4..=6 => self.rng.pick(&keys).clone(),
                7 => self.param(h),
                _ => self.literal(h),
            },
        }
    }

    /// An aggregate whose argument is a row expression.
    fn aggregate(&mut self, h: H) -> Ex {
        let k = match h {
            H::Num => *self
                .rng
                .pick(&[AggK::Count, AggK::Sum, AggK::Avg, AggK::Min, AggK::Max]),
            H::Str => *self.rng.pick(&[AggK::Min, AggK::Max]),
            _ => *self.rng.pick(&AggK::ALL),
        };
        let saved = std::mem::replace(&mut self.mode, Mode::Row);
        let arg = if k == AggK::Count && self.chance(40) {
            Ex::Lit(json!(1))
        } else {
            let h = match k {
                AggK::Sum | AggK::Avg if self.chance(85) => H::Num,
                AggK::Min | AggK::Max => *self.rng.pick(&[H::Num, H::Str, H::Any]),
                _ => H::Any,
            };
            self.expr(2, h)
        };
        self.mode = saved;
        Ex::Agg(k, b(arg))
    }

    fn args(&mut self, d: u32, hs: &[H]) -> Vec<Ex> {
        hs.iter().map(|h| self.expr(d, *h)).collect()
    }

    fn call(&mut self, f: Fun, d: u32, hs: &[H]) -> Ex {
        Ex::Call(f, self.args(d, hs))
    }

    /// A LIKE pattern: a literal with `%`, `_` and escapes, or (rarely) any string.
    fn pattern(&mut self) -> (Ex, Option<char>) {
        if self.chance(15) {
            let esc = if self.chance(20) { Some('!') } else { None };
            return (self.expr(1, H::Str), esc);
        }
        let base: Vec<char> = self.rng.pick(STRINGS).chars().collect();
        let escape = if self.chance(30) {
            Some(*self.rng.pick(&['!', '\\', '#', '~']))
        } else {
            None
        };
        let mut p = String::new();
        for c in base {
            match self.rng.below(10) {
                0 => p.push('%'),
                1 => {
                    p.push('_');
                    continue;
                }
                _ => {}
            }
            match (c, escape) {
                ('%' | '_', Some(e)) if self.chance(70) => p.push(e),
                (c, Some(e)) if c == e => p.push(e),
                _ => {}
            }
            p.push(c);
        }
        if self.chance(30) {
            p.push('%');
        }
        if let Some(e) = escape
            && self.chance(30)
        {
            // An escaped metacharacter, or the escape character itself.
            p.push(e);
            p.push(*self.rng.pick(&['%', '_', e]));
        }
        (Ex::Lit(json!(p)), escape)
    }

    fn object(&mut self, d: u32) -> Ex {
        let keys = ["a", "b", "n", "x y", "value", "_k"];
        let n = self.rng.range(0, 3);
        let mut fields: Vec<(String, Ex)> = Vec::new();
        for _ in 0..n {
            let k = *self.rng.pick(&keys);
            if fields.iter().all(|(f, _)| f != k) {
                let v = self.expr(d, H::Any);
                fields.push((k.to_owned(), v));
            }
        }
        Ex::Obj(fields)
    }

    /// An expression of (mostly) type `h`, at most `d` levels deep.
    fn expr(&mut self, d: u32, h: H) -> Ex {
        let d = d.min(self.max_depth);
        if d == 0 || self.chance(30) {
            return self.leaf(h);
        }
        let d = d - 1;
        match h {
            H::Num => match self.rng.below(14) {
                0..=2 => {
                    let op = *self
                        .rng
                        .pick(&[Op::Add, Op::Sub, Op::Mul, Op::Div, Op::Rem]);
                    Ex::Bin(op, b(self.expr(d, H::Num)), b(self.expr(d, H::Num)))
                }
                3 => Ex::Neg(b(self.expr(d, H::Num))),
                4 => Ex::Pos(b(self.expr(d, H::Num))),
                5 => {
                    let f = *self
                        .rng
                        .pick(&[Fun::Abs, Fun::Floor, Fun::Ceiling, Fun::Round]);
                    self.call(f, d, &[H::Num])
                }
                6 => self.call(Fun::Length, d, &[H::Str]),
                7 => self.call(Fun::ArrayLength, d, &[H::Arr]),
                8 if self.chance(50) => self.call(Fun::IndexOf, d, &[H::Str, H::Str]),
                8 => self.call(Fun::IndexOf, d, &[H::Str, H::Str, H::Num]),
                9 => Ex::Cond(
                    b(self.expr(d, H::Bool)),
                    b(self.expr(d, H::Num)),
                    b(self.expr(d, H::Num)),
                ),
                10 => Ex::Coalesce(b(self.expr(d, H::Num)), b(self.expr(d, H::Num))),
                11 => Ex::Idx(b(self.expr(d, H::Arr)), b(self.expr(d, H::Num))),
                12 => Ex::Paren(b(self.expr(d, H::Num))),
                _ => self.leaf(H::Num),
            },
            H::Str => match self.rng.below(11) {
                0 | 1 => Ex::Bin(Op::Cat, b(self.expr(d, H::Str)), b(self.expr(d, H::Str))),
                2 => {
                    let f = *self.rng.pick(&[Fun::Lower, Fun::Upper, Fun::Trim]);
                    self.call(f, d, &[H::Str])
                }
                3 => self.call(Fun::Substring, d, &[H::Str, H::Num, H::Num]),
                4 => {
                    let n = self.rng.range(2, 4);
                    self.call(Fun::Concat, d, &vec![H::Str; n])
                }
                5 => self.call(Fun::ToString, d, &[H::Any]),
                6 => Ex::Cond(
                    b(self.expr(d, H::Bool)),
                    b(self.expr(d, H::Str)),
                    b(self.expr(d, H::Str)),
                ),
                7 => Ex::Coalesce(b(self.expr(d, H::Str)), b(self.expr(d, H::Str))),
                8 => Ex::Idx(b(self.expr(d, H::Any)), b(self.expr(d, H::Str))),
                _ => self.leaf(H::Str),
            },
            H::Bool => match self.rng.below(20) {
                0..=3 => {
                    let op =
                        *self
                            .rng
                            .pick(&[Op::Eq, Op::Ne, Op::Ne2, Op::Lt, Op::Le, Op::Gt, Op::Ge]);
                    let t = *self.rng.pick(&[H::Num, H::Num, H::Str, H::Bool, H::Any]);
                    Ex::Bin(op, b(self.expr(d, t)), b(self.expr(d, t)))
                }
                4 | 5 => {
                    let op = if self.chance(50) { Op::And } else { Op::Or };
                    Ex::Bin(op, b(self.expr(d, H::Bool)), b(self.expr(d, H::Bool)))
                }
                6 => Ex::Not(b(self.expr(d, H::Bool))),
                7 => {
                    let t = *self.rng.pick(&[H::Num, H::Str, H::Any]);
                    let n = self.rng.range(1, 4);
                    let x = self.expr(d, t);
                    let list = (0..n).map(|_| self.expr(d, t)).collect();
                    Ex::In(b(x), list, self.chance(30))
                }
                8 => {
                    let t = if self.chance(75) { H::Num } else { H::Str };
                    Ex::Between(
                        b(self.expr(d, t)),
                        b(self.expr(d, t)),
                        b(self.expr(d, t)),
                        self.chance(30),
                    )
                }
                9 | 10 => {
                    let x = self.expr(d, H::Str);
                    let (p, esc) = self.pattern();
                    Ex::Like(b(x), b(p), esc, self.chance(30))
                }
                11 => {
                    let f = *self.rng.pick(&[
                        Fun::IsDefined,
                        Fun::IsNull,
                        Fun::IsNumber,
                        Fun::IsString,
                        Fun::IsBool,
                        Fun::IsArray,
                        Fun::IsObject,
                    ]);
                    self.call(f, d, &[H::Any])
                }
                12 => {
                    let arr = self.expr(d, H::Arr);
                    match self.rng.below(4) {
                        0 => {
                            let x = self.object(d);
                            Ex::Call(Fun::ArrayContains, vec![arr, x, Ex::Lit(json!(true))])
                        }
                        1 => {
                            let x = self.expr(d, H::Any);
                            let p = self.expr(d, H::Bool);
                            Ex::Call(Fun::ArrayContains, vec![arr, x, p])
                        }
                        _ => {
                            let x = self.expr(d, H::Any);
                            Ex::Call(Fun::ArrayContains, vec![arr, x])
                        }
                    }
                }
                13 | 14 => {
                    let f = *self
                        .rng
                        .pick(&[Fun::StartsWith, Fun::EndsWith, Fun::Contains]);
                    if self.chance(40) {
                        self.call(f, d, &[H::Str, H::Str, H::Bool])
                    } else {
                        self.call(f, d, &[H::Str, H::Str])
                    }
                }
                15 => Ex::Cond(
                    b(self.expr(d, H::Bool)),
                    b(self.expr(d, H::Bool)),
                    b(self.expr(d, H::Bool)),
                ),
                16 => Ex::Coalesce(b(self.expr(d, H::Bool)), b(self.expr(d, H::Bool))),
                17 => Ex::Paren(b(self.expr(d, H::Bool))),
                _ => self.leaf(H::Bool),
            },
            H::Arr => match self.rng.below(6) {
                0 | 1 => {
                    let n = self.rng.range(0, 3);
                    Ex::Arr((0..n).map(|_| self.expr(d, H::Any)).collect())
                }
                2 if self.chance(50) => self.call(Fun::ArraySlice, d, &[H::Arr, H::Num]),
                2 => self.call(Fun::ArraySlice, d, &[H::Arr, H::Num, H::Num]),
                3 => Ex::Coalesce(b(self.expr(d, H::Arr)), b(self.expr(d, H::Arr))),
                4 => Ex::Cond(
                    b(self.expr(d, H::Bool)),
                    b(self.expr(d, H::Arr)),
                    b(self.expr(d, H::Arr)),
                ),
                _ => self.leaf(H::Arr),
            },
            H::Any => match self.rng.below(12) {
                0 | 1 => self.expr(d + 1, H::Num),
                2 | 3 => self.expr(d + 1, H::Str),
                4 => self.expr(d + 1, H::Bool),
                5 => self.expr(d + 1, H::Arr),
                6 => self.object(d),
                7 => {
                    let base = self.expr(d, H::Any);
                    let name = *self.rng.pick(&["a", "q", "n", "b"]);
                    self.prop(base, name)
                }
                8 => Ex::Coalesce(b(self.expr(d, H::Any)), b(self.expr(d, H::Any))),
                9 => Ex::Cond(
                    b(self.expr(d, H::Bool)),
                    b(self.expr(d, H::Any)),
                    b(self.expr(d, H::Any)),
                ),
                _ => self.leaf(H::Any),
            },
        }
    }

    /// A condition that is often true: a path compared with a literal, a type test, IN,
    /// or two of those with AND / OR / NOT.
    fn filter(&mut self, d: u32) -> Ex {
        if d > 0 && self.chance(25) {
            let a = self.filter(d - 1);
            let b2 = self.filter(d - 1);
            return match self.rng.below(3) {
                0 => Ex::Bin(Op::And, b(a), b(b2)),
                1 => Ex::Bin(Op::Or, b(a), b(b2)),
                _ => Ex::Not(b(a)),
            };
        }
        let h = *self.rng.pick(&[H::Num, H::Num, H::Str, H::Bool, H::Any]);
        let x = self.leaf(h);
        match self.rng.below(8) {
            0..=2 => {
                let op = *self
                    .rng
                    .pick(&[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge]);
                Ex::Bin(op, b(x), b(self.literal(h)))
            }
            3 => {
                let f =
                    *self
                        .rng
                        .pick(&[Fun::IsDefined, Fun::IsNumber, Fun::IsString, Fun::IsNull]);
                Ex::Call(f, vec![x])
            }
            4 => {
                let n = self.rng.range(1, 4);
                let list = (0..n).map(|_| self.literal(h)).collect();
                Ex::In(b(x), list, self.chance(30))
            }
            5 => Ex::Between(
                b(x),
                b(self.literal(H::Num)),
                b(self.literal(H::Num)),
                self.chance(30),
            ),
            _ => self.expr(2, H::Bool),
        }
    }

    fn count(&mut self, param: &str) -> Count {
        if self.chance(25) {
            Count::Param(param.to_owned())
        } else {
            Count::Lit(*self.rng.pick(&[0, 1, 1, 2, 2, 3, 4, 6]))
        }
    }

    /// A projection list of 1 to `most` entries, names made unique with aliases.
    fn list(&mut self, most: usize) -> Sel {
        let n = self.rng.range(1, most);
        let mut list: Vec<(Ex, Option<(String, bool)>)> = Vec::new();
        for _ in 0..n {
            let h = *self.rng.pick(&[H::Any, H::Num, H::Str, H::Bool]);
            let d = self.rng.range(0, 2) as u32;
            let e = self.expr(d, h);
            let alias = if self.chance(35) {
                let a = *self
                    .rng
                    .pick(&["a", "b", "k", "n", "total", "Num", "v2", "_x"]);
                Some((a.to_owned(), self.chance(60)))
            } else {
                None
            };
            list.push((e, alias));
        }
        // Two entries with one name are a 400: rename the later ones.
        loop {
            let names = projection_names(&list);
            let dup = (0..names.len()).find(|&i| names[..i].contains(&names[i]));
            let Some(i) = dup else { break };
            let fresh = format!("f{i}");
            list[i].1 = Some((fresh, self.chance(50)));
        }
        Sel::List(list)
    }
}

/// The container names and element aliases queries use.
const CONTAINERS: &[&str] = &["c", "r", "root", "Doc", "_c", "item"];
const ALIASES: &[&str] = &["x", "y", "t", "l", "e", "el", "Line"];

/// A random valid query over the items of [`super::items::items`].
pub fn case(rng: &mut Rng) -> Case {
    let params = params(rng);
    // A third of the queries are simple: shallow expressions over arrays that exist, so
    // that sorting, DISTINCT, grouping and paging see long results.
    let simple = rng.chance(35);
    let container = rng.pick(CONTAINERS).to_string();
    let mut aliases: Vec<&str> = ALIASES.to_vec();
    let mut alias = |rng: &mut Rng| {
        let i = rng.below(aliases.len());
        aliases.remove(i).to_owned()
    };
    let c = Ex::Name(container.clone());
    let field = |name: &str| {
        if is_ident(name) {
            Ex::Dot(b(c.clone()), name.to_owned())
        } else {
            Ex::Brk(b(c.clone()), name.to_owned())
        }
    };
    let mut sources: Vec<(String, Shape)> = Vec::new();
    let from = match rng.below(100) {
        0..=4 => None,
        5..=54 => {
            sources.push((container.clone(), Shape::Item));
            Some(Root::Items(container.clone()))
        }
        55..=69 => {
            let (p, shape) = match rng.below(8) {
                0 | 1 => (field("o"), Shape::Obj),
                2 => (field("lines"), Shape::Lines),
                3 => (field("m"), Shape::AnyEl),
                4 => (field("a b"), Shape::NumEl),
                5 => (
                    Ex::Idx(b(field("lines")), b(Ex::Lit(json!(0)))),
                    Shape::Line,
                ),
                6 => (Ex::Brk(b(field("o")), "b".into()), Shape::Obj),
                _ => (
                    Ex::Idx(b(field("tags")), b(Ex::Lit(json!(1)))),
                    Shape::StrEl,
                ),
            };
            let a = alias(rng);
            sources.push((a.clone(), shape));
            Some(Root::Path(container.clone(), p, a, rng.chance(50)))
        }
        _ => {
            let (p, shape) = match rng.below(if simple { 5 } else { 7 }) {
                0 | 1 => (field("arr"), Shape::NumEl),
                2 => (field("tags"), Shape::StrEl),
                3 | 4 => (field("lines"), Shape::Line),
                5 => (field("m"), Shape::AnyEl),
                _ => {
                    let l = Ex::Idx(b(field("lines")), b(Ex::Lit(json!(0))));
                    (Ex::Dot(b(l), "t".into()), Shape::AnyEl)
                }
            };
            let a = alias(rng);
            sources.push((a.clone(), shape));
            Some(Root::Each(a, p))
        }
    };
    let mut joins: Vec<(String, Ex)> = Vec::new();
    if from.is_some() {
        let n = match rng.below(10) {
            0..=5 => 0,
            6..=8 => 1,
            _ => 2,
        };
        for _ in 0..n {
            // Arrays inside the sources so far.
            let mut choices: Vec<(Ex, Shape)> = Vec::new();
            for (name, shape) in &sources {
                let me = Ex::Name(name.clone());
                let at = |f: &str| Ex::Dot(b(me.clone()), f.to_owned());
                match shape {
                    Shape::Item => {
                        choices.push((at("arr"), Shape::NumEl));
                        choices.push((at("tags"), Shape::StrEl));
                        choices.push((at("lines"), Shape::Line));
                        if !simple {
                            choices.push((at("m"), Shape::AnyEl));
                        }
                    }
                    Shape::Line => choices.push((at("t"), Shape::AnyEl)),
                    Shape::Lines => choices.push((me.clone(), Shape::Line)),
                    Shape::AnyEl => choices.push((me.clone(), Shape::AnyEl)),
                    _ => {}
                }
            }
            if choices.is_empty() {
                break;
            }
            let (p, shape) = rng.pick(&choices).clone();
            let a = alias(rng);
            sources.push((a.clone(), shape));
            joins.push((a, p));
        }
    }
    let from = from.map(|root| From { root, joins });
    let single = from.as_ref().is_some_and(|f| f.joins.is_empty());

    let mut g = Gen {
        rng,
        sources,
        mode: Mode::Row,
        max_depth: if simple { 1 } else { 3 },
    };
    let mut q = Q {
        distinct: false,
        top: None,
        select: Sel::Star,
        from,
        filter: None,
        group: Vec::new(),
        order: Vec::new(),
        offset_limit: None,
    };
    if g.chance(if simple { 30 } else { 50 }) {
        q.filter = Some(if simple || g.chance(60) {
            g.filter(2)
        } else {
            g.expr(3, H::Bool)
        });
    }
    let kind = g.rng.below(100);
    if kind < 55 {
        // Filters and projections, maybe sorted.
        q.select = match g.rng.below(100) {
            0..=19 if single => Sel::Star,
            0..=54 => {
                let h = *g.rng.pick(&[H::Any, H::Num, H::Str, H::Bool]);
                let d = g.rng.range(0, 3) as u32;
                Sel::Value(g.expr(d, h))
            }
            _ => g.list(4),
        };
        let root = g.sources.first().cloned();
        if simple && g.chance(25) {
            // Sort keys past a kilobyte: the continuation names the row to read again.
            if let Some((name, shape)) = root {
                let key = if shape == Shape::Item && g.chance(60) {
                    g.prop(Ex::Name(name), "big")
                } else {
                    Ex::Name(name)
                };
                let dir = *g.rng.pick(&[None, Some(false), Some(true)]);
                q.order.push((key, dir));
            }
        }
        if g.chance(50) {
            let n = g.rng.range(1, 3);
            for _ in 0..n {
                let h = *g.rng.pick(&[H::Any, H::Num, H::Num, H::Str]);
                let d = g.rng.range(0, 2) as u32;
                let e = match (g.rng.below(10), g.sources.first().cloned()) {
                    // A whole source value as a key (objects, arrays, big ones).
                    (0, Some((name, _))) => Ex::Name(name),
                    _ => g.expr(d, h),
                };
                let dir = *g.rng.pick(&[None, Some(false), Some(true), Some(true)]);
                q.order.push((e, dir));
            }
        }
        q.distinct = g.chance(20);
    } else if kind < 75 {
        // Aggregates without GROUP BY: one result.
        g.mode = Mode::Aggregated;
        q.select = if g.chance(50) {
            let h = *g.rng.pick(&[H::Any, H::Num, H::Num, H::Str]);
            Sel::Value(g.expr(2, h))
        } else {
            g.list(3)
        };
        q.distinct = g.chance(10);
    } else {
        // GROUP BY.
        let n = if g.chance(75) { 1 } else { 2 };
        for _ in 0..n {
            let h = *g.rng.pick(&[H::Any, H::Num, H::Str, H::Bool]);
            let e = if g.chance(70) {
                g.leaf(h)
            } else {
                g.expr(1, h)
            };
            q.group.push(e);
        }
        g.mode = Mode::Grouped {
            keys: q.group.clone(),
            aggs: true,
        };
        q.select = if g.chance(40) {
            Sel::Value(g.expr(2, H::Any))
        } else {
            g.list(4)
        };
        if g.chance(40) {
            g.mode = Mode::Grouped {
                keys: q.group.clone(),
                aggs: false,
            };
            let n = g.rng.range(1, 2);
            for _ in 0..n {
                let e = g.expr(1, H::Any);
                let dir = *g.rng.pick(&[None, Some(false), Some(true)]);
                q.order.push((e, dir));
            }
        }
        q.distinct = g.chance(15);
    }
    if g.chance(20) {
        q.offset_limit = Some((g.count("@off"), g.count("@lim")));
    }
    if g.chance(20) {
        q.top = Some(g.count("@top"));
    }
    Case { q, params }
}
