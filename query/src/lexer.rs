//! Tokens of the query text, each with the byte offset where it starts.

use crate::QueryError;

/// A token's kind.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    /// A word: a keyword or an identifier (keywords are matched case-insensitively).
    Word(String),
    /// `@name`.
    Param(String),
    /// A number literal.
    Number(f64),
    /// A string literal, escapes decoded.
    Str(String),
    /// Punctuation or an operator.
    Sym(&'static str),
    /// The end of the text.
    End,
}

/// A token and where it starts (a byte offset into the query text).
#[derive(Clone, Debug)]
pub(crate) struct Token {
    pub tok: Tok,
    pub at: usize,
}

/// Operators and punctuation, longest first so that `<=` is not read as `<`.
const SYMBOLS: [&str; 24] = [
    "??", "||", "<=", ">=", "!=", "<>", "(", ")", "[", "]", "{", "}", ",", ".", ":", "?", "*", "+",
    "-", "/", "%", "=", "<", ">",
];

/// Splits `text` into tokens, ending with [`Tok::End`].
pub(crate) fn lex(text: &str) -> Result<Vec<Token>, QueryError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if text[i..].starts_with("--") {
            // A comment runs to the end of the line.
            i = text[i..].find('\n').map_or(bytes.len(), |n| i + n);
            continue;
        }
        let at = i;
        if c.is_ascii_alphabetic() || c == b'_' {
            let end = word_end(bytes, i);
            out.push(Token {
                tok: Tok::Word(text[i..end].to_owned()),
                at,
            });
            i = end;
        } else if c == b'@' {
            let end = word_end(bytes, i + 1);
            if end == i + 1 {
                return Err(QueryError::at(
                    at,
                    "`@` must be followed by a parameter name",
                ));
            }
            out.push(Token {
                tok: Tok::Param(text[i..end].to_owned()),
                at,
            });
            i = end;
        } else if c.is_ascii_digit()
            || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let (n, end) = number(text, i)?;
            out.push(Token {
                tok: Tok::Number(n),
                at,
            });
            i = end;
        } else if c == b'\'' || c == b'"' {
            let (s, end) = string(text, i)?;
            out.push(Token {
                tok: Tok::Str(s),
                at,
            });
            i = end;
        } else if let Some(sym) = SYMBOLS.iter().find(|s| text[i..].starts_with(**s)) {
            out.push(Token {
                tok: Tok::Sym(sym),
                at,
            });
            i += sym.len();
        } else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(QueryError::at(at, format!("unexpected character {ch:?}")));
        }
    }
    out.push(Token {
        tok: Tok::End,
        at: text.len(),
    });
    Ok(out)
}

fn word_end(bytes: &[u8], mut i: usize) -> usize {
    while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
        i += 1;
    }
    i
}

fn number(text: &str, start: usize) -> Result<(f64, usize), QueryError> {
    let bytes = text.as_bytes();
    let mut i = start;
    let digits = |i: &mut usize| {
        while *i < bytes.len() && bytes[*i].is_ascii_digit() {
            *i += 1;
        }
    };
    digits(&mut i);
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        digits(&mut i);
    }
    if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
        let mut j = i + 1;
        if j < bytes.len() && (bytes[j] == b'+' || bytes[j] == b'-') {
            j += 1;
        }
        if j < bytes.len() && bytes[j].is_ascii_digit() {
            i = j;
            digits(&mut i);
        }
    }
    if i < bytes.len() && (bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') {
        return Err(QueryError::at(
            start,
            format!("{:?} is not a number", &text[start..word_end(bytes, i)]),
        ));
    }
    match text[start..i].parse::<f64>() {
        Ok(n) if n.is_finite() => Ok((n, i)),
        _ => Err(QueryError::at(
            start,
            format!("{:?} is not a finite number", &text[start..i]),
        )),
    }
}

fn string(text: &str, start: usize) -> Result<(String, usize), QueryError> {
    let quote = text.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        let at = start + 1 + off;
        match c {
            c if c == quote => return Ok((out, at + 1)),
            '\\' => {
                let Some((_, e)) = chars.next() else { break };
                match e {
                    '\\' | '\'' | '"' | '/' => out.push(e),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let code = hex4(&mut chars).ok_or_else(|| {
                            QueryError::at(at, "`\\u` must be followed by four hex digits")
                        })?;
                        let lone = || {
                            QueryError::at(
                                at,
                                format!("\\u{code:04X} is not a character on its own"),
                            )
                        };
                        // Above U+FFFF, a character is a pair of escapes (UTF-16 surrogates),
                        // as in JSON.
                        let code = if (0xD800..0xDC00).contains(&code) {
                            let low = (chars.next().map(|(_, c)| c) == Some('\\')
                                && chars.next().map(|(_, c)| c) == Some('u'))
                            .then(|| hex4(&mut chars))
                            .flatten()
                            .filter(|low| (0xDC00..0xE000).contains(low))
                            .ok_or_else(lone)?;
                            0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                        } else {
                            code
                        };
                        out.push(char::from_u32(code).ok_or_else(lone)?);
                    }
                    other => {
                        return Err(QueryError::at(
                            at,
                            format!("unknown escape `\\{other}` in a string"),
                        ));
                    }
                }
            }
            c => out.push(c),
        }
    }
    Err(QueryError::at(start, "a string is not closed"))
}

/// Four hex digits (and nothing else: no sign) as a number.
fn hex4(chars: &mut std::str::CharIndices<'_>) -> Option<u32> {
    let hex: String = chars.by_ref().take(4).map(|(_, h)| h).collect();
    (hex.len() == 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| u32::from_str_radix(&hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Tok> {
        lex(text)
            .expect("lexes")
            .into_iter()
            .map(|t| t.tok)
            .collect()
    }

    #[test]
    fn splits_words_symbols_numbers_and_strings() {
        assert_eq!(
            kinds("c.a<=1.5e1 ?? 'it''s'"),
            vec![
                Tok::Word("c".into()),
                Tok::Sym("."),
                Tok::Word("a".into()),
                Tok::Sym("<="),
                Tok::Number(15.0),
                Tok::Sym("??"),
                Tok::Str("it".into()),
                Tok::Str("s".into()),
                Tok::End
            ]
        );
        assert_eq!(
            kinds(r#""a\"b\u0041""#),
            vec![Tok::Str("a\"bA".into()), Tok::End]
        );
        assert_eq!(
            kinds("@id -- note\n ."),
            vec![Tok::Param("@id".into()), Tok::Sym("."), Tok::End]
        );
    }

    #[test]
    fn errors_point_at_the_offending_text() {
        assert_eq!(lex("c.a = 'open").expect_err("refused").offset, 6);
        assert_eq!(lex("c.a # 1").expect_err("refused").offset, 4);
        assert_eq!(lex("12abc").expect_err("refused").offset, 0);
        assert_eq!(lex("'\\q'").expect_err("refused").offset, 1);
    }
}
