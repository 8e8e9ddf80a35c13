//! The subset of Cosmos DB SQL that converge answers.
//!
//! [`Prepared::new`] parses a query into a typed syntax tree ([`ast`]) and checks it;
//! [`Prepared::page`] runs it over any [`Items`] source one page at a time, with a
//! continuation token for the next. Evaluation follows Cosmos DB's rules: a missing
//! property is *undefined*, comparing values of different types is undefined, and
//! `WHERE` keeps the rows whose condition is exactly `true`. docs/queries.md lists the
//! grammar and the functions.
//!
//! ```
//! use converge_query::{Items, Parsed, Prepared, Visit};
//! use serde_json::{Value, json};
//! use std::ops::ControlFlow;
//!
//! // A source: items in key order.
//! struct Vec1(Vec<(Vec<u8>, Value)>);
//! impl Items for Vec1 {
//!     type Error = std::convert::Infallible;
//!     fn scan(
//!         &mut self,
//!         from: Option<&[u8]>,
//!         visit: &mut Visit<'_>,
//!     ) -> Result<(), Self::Error> {
//!         for (k, v) in &self.0 {
//!             if from.is_some_and(|f| k.as_slice() < f) {
//!                 continue;
//!             }
//!             if visit(k, &mut Parsed(v)).is_break() {
//!                 break;
//!             }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! let mut items = Vec1(vec![
//!     (b"a".to_vec(), json!({"id": "a", "n": 3})),
//!     (b"b".to_vec(), json!({"id": "b", "n": "3"})),
//!     (b"c".to_vec(), json!({"id": "c", "n": 5})),
//! ]);
//! let params = [("@min".to_owned(), json!(2))];
//! let q = Prepared::new("SELECT VALUE c.id FROM c WHERE c.n > @min ORDER BY c.n DESC", &params, "demo")?;
//! let page = q.page(&mut items, None, 10).expect("runs");
//! // "3" is a string: comparing it with a number is undefined, so it is filtered out.
//! assert_eq!(page.documents, vec![json!("c"), json!("a")]);
//! assert!(page.continuation.is_none());
//! # Ok::<(), converge_query::QueryError>(())
//! ```

pub mod ast;
mod eval;
mod exec;
mod lexer;
mod parser;
mod pick;
mod value;

pub use exec::{Item, Items, Limits, Page, Parsed, Prepared, RunError, Visit};
pub use pick::pick;

/// A query that cannot be run: what is wrong, and where in the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at offset {offset})")]
pub struct QueryError {
    /// Byte offset into the query text of the offending token (0 for errors about the
    /// continuation token).
    pub offset: usize,
    /// What is wrong, in words.
    pub message: String,
}

impl QueryError {
    pub(crate) fn at(offset: usize, message: impl Into<String>) -> QueryError {
        QueryError {
            offset,
            message: message.into(),
        }
    }
}
