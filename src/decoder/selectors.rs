//! Parsing and matching of the list-valued options: table patterns
//! (`add-tables`, `filter-tables`), plain lists (message prefixes, origins)
//! and identifier lists (`publication_names`). Pure code, tested without a
//! server.
//!
//! Table patterns follow wal2json (`schema.table`, `*` for "any", `\` escapes
//! in unquoted names, no case folding) and add double-quoted identifiers and
//! `*` wildcards inside unquoted names.

/// One side (schema or table) of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    Any,
    Exact(String),
    /// Literal pieces between `*` wildcards; never a single piece.
    Glob(Vec<String>),
}

impl NamePattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Exact(s) => s == name,
            NamePattern::Glob(pieces) => glob_match(pieces, name),
        }
    }
}

/// `pieces` are the literal parts around the `*`s: the first must be a prefix,
/// the last a suffix, and the middle ones must appear in order.
fn glob_match(pieces: &[String], name: &str) -> bool {
    let (first, rest) = pieces.split_first().expect("glob has pieces");
    let (last, middle) = rest.split_last().expect("glob has two pieces");
    if name.len() < first.len() + last.len() || !name.starts_with(first.as_str()) || !name.ends_with(last.as_str()) {
        return false;
    }
    let mut hay = &name[first.len()..name.len() - last.len()];
    for piece in middle {
        match hay.find(piece.as_str()) {
            Some(at) => hay = &hay[at + piece.len()..],
            None => return false,
        }
    }
    true
}

/// A `schema.table` pattern of `add-tables` / `filter-tables`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TablePattern {
    schema: NamePattern,
    table: NamePattern,
}

impl TablePattern {
    pub(crate) fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema.matches(schema) && self.table.matches(table)
    }
}

/// A scanned name: its text and whether it contained an unescaped, unquoted `*`.
struct Part {
    text: String,
    globs: Vec<String>,
    quoted: bool,
}

impl Part {
    fn into_pattern(self) -> NamePattern {
        if self.quoted {
            NamePattern::Exact(self.text)
        } else if self.globs.len() == 2 && self.globs.iter().all(String::is_empty) {
            NamePattern::Any
        } else if self.globs.len() > 1 {
            NamePattern::Glob(self.globs)
        } else {
            NamePattern::Exact(self.text)
        }
    }
}

struct Scanner<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

impl Scanner<'_> {
    fn skip_ws(&mut self) {
        while self.chars.next_if(|c| c.is_whitespace()).is_some() {}
    }

    /// A double-quoted identifier (`""` is a quote) or an unquoted name ended
    /// by one of `stops`, whitespace or the end.
    fn part(&mut self, stops: &[char]) -> Result<Part, String> {
        if self.chars.next_if_eq(&'"').is_some() {
            let mut text = String::new();
            loop {
                match self.chars.next() {
                    None => return Err("unterminated quoted identifier".into()),
                    Some('"') if self.chars.next_if_eq(&'"').is_some() => text.push('"'),
                    Some('"') => break,
                    Some(c) => text.push(c),
                }
            }
            if text.is_empty() {
                return Err("zero-length quoted identifier".into());
            }
            return Ok(Part { text, globs: vec![], quoted: true });
        }
        let mut text = String::new();
        let mut globs = vec![String::new()];
        while let Some(&c) = self.chars.peek() {
            if stops.contains(&c) || c.is_whitespace() {
                break;
            }
            self.chars.next();
            match c {
                '\\' => {
                    let e = self.chars.next().ok_or("trailing backslash")?;
                    text.push(e);
                    globs.last_mut().expect("non-empty").push(e);
                }
                '*' => {
                    text.push('*');
                    globs.push(String::new());
                }
                '"' => return Err("unexpected double quote inside a name".into()),
                c => {
                    text.push(c);
                    globs.last_mut().expect("non-empty").push(c);
                }
            }
        }
        if text.is_empty() {
            return Err("empty name".into());
        }
        Ok(Part { text, globs, quoted: false })
    }

    /// After an item: the end (`Ok(true)`), or a comma and more (`Ok(false)`).
    fn end_of_item(&mut self) -> Result<bool, String> {
        self.skip_ws();
        match self.chars.next() {
            None => Ok(true),
            Some(',') => {
                self.skip_ws();
                if self.chars.peek().is_none() {
                    return Err("trailing comma".into());
                }
                Ok(false)
            }
            Some(c) => Err(format!("unexpected character \"{c}\"")),
        }
    }
}

/// Parse a comma-separated list, each item read by `item`. An empty (or
/// all-blank) value is an empty list when `allow_empty`.
fn parse_items<T>(
    value: &str,
    allow_empty: bool,
    mut item: impl FnMut(&mut Scanner<'_>) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut sc = Scanner { chars: value.chars().peekable() };
    let mut out = Vec::new();
    sc.skip_ws();
    if allow_empty && sc.chars.peek().is_none() {
        return Ok(out);
    }
    loop {
        out.push(item(&mut sc)?);
        if sc.end_of_item()? {
            return Ok(out);
        }
    }
}

/// Parse `add-tables` / `filter-tables`: comma-separated `schema.table` items.
pub(crate) fn parse_table_patterns(value: &str) -> Result<Vec<TablePattern>, String> {
    parse_items(value, true, |sc| {
        let schema = sc.part(&['.', ','])?;
        if sc.chars.next_if_eq(&'.').is_none() {
            return Err(format!("\"{}\" is not of the form schema.table", schema.text));
        }
        let table = sc.part(&[','])?;
        Ok(TablePattern { schema: schema.into_pattern(), table: table.into_pattern() })
    })
}

/// Parse a comma-separated list of strings; an item may be double-quoted to
/// hold commas or spaces. Used for message prefixes and origins.
pub(crate) fn parse_list(value: &str) -> Result<Vec<String>, String> {
    parse_items(value, true, |sc| Ok(sc.part(&[','])?.text))
}

/// Parse a list of identifiers as PostgreSQL's `SplitIdentifierString` does
/// (and so pgoutput's `publication_names`): unquoted names are folded to lower
/// case, quoted ones are kept as written.
pub(crate) fn parse_identifier_list(value: &str) -> Result<Vec<String>, String> {
    parse_items(value, false, |sc| {
        let part = sc.part(&[','])?;
        if !part.quoted && part.text.contains('*') {
            return Err(format!("\"{}\" is not a valid name", part.text));
        }
        Ok(if part.quoted { part.text } else { part.text.to_lowercase() })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str, t: &str) -> bool {
        parse_table_patterns(p).unwrap().iter().any(|x| x.matches(s, t))
    }

    #[test]
    fn wal2json_patterns() {
        assert!(m("public.foo", "public", "foo"));
        assert!(!m("public.foo", "public", "Foo"));
        assert!(m("*.foo", "s", "foo"));
        assert!(m("public.*", "public", "anything"));
        assert!(m(" public.a , s.b ", "s", "b"));
        assert!(m("public.a\\.b", "public", "a.b"));
    }

    #[test]
    fn wildcards_and_quotes() {
        assert!(m("public.audit_*", "public", "audit_2026"));
        assert!(!m("public.audit_*", "public", "xaudit_2026"));
        assert!(m("public.*_log_*", "public", "a_log_b"));
        assert!(m("p*.t", "public", "t"));
        assert!(m("\"My Schema\".\"a,b.c\"", "My Schema", "a,b.c"));
        assert!(m("\"q\"\"x\".\"*\"", "q\"x", "*"));
        assert!(!m("\"q\".\"*\"", "q", "other"));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in ["public", "public.", ".t", "a.b,", "\"x.t", "a.b c.d", "a.\"\""] {
            assert!(parse_table_patterns(bad).is_err(), "{bad}");
        }
        assert!(parse_table_patterns("").unwrap().is_empty());
    }

    #[test]
    fn lists() {
        assert_eq!(parse_list("a, b ,\"c,d\"").unwrap(), vec!["a", "b", "c,d"]);
        assert_eq!(parse_list("").unwrap(), Vec::<String>::new());
        assert!(parse_list("a,,b").is_err());
    }

    #[test]
    fn identifier_lists_fold_case_like_postgres() {
        assert_eq!(parse_identifier_list("Pub1, \"Pub2\"").unwrap(), vec!["pub1", "Pub2"]);
        assert!(parse_identifier_list("").is_err());
        assert!(parse_identifier_list("a,").is_err());
    }
}
