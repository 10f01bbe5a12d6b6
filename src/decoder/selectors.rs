//! Parsing and matching of the list-valued options: table patterns
//! (`add-tables`, `filter-tables`), wal2json's plain lists (message prefixes,
//! origins, actions) and identifier lists (`publication_names`). Pure code,
//! tested without a server.
//!
//! Table patterns are read exactly as wal2json 2.x reads them (so a pattern
//! list means the same to both plugins): items separated by commas, blanks
//! around items ignored, `\` escapes the next character (a blank, comma, dot
//! or `*`), the schema ends at the first unescaped dot, `*.` at the start is
//! every schema and a table part of exactly `*` every table; any other `*`
//! and double quotes are literal characters; no case folding.

/// One side (schema or table) of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NamePattern {
    Any,
    Exact(String),
}

impl NamePattern {
    fn matches(&self, name: &str) -> bool {
        match self {
            NamePattern::Any => true,
            NamePattern::Exact(s) => s == name,
        }
    }
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

/// C's `isspace` in the "C" locale.
fn blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// Parse `add-tables` / `filter-tables` as wal2json does (module notes).
pub(crate) fn parse_table_patterns(value: &str) -> Result<Vec<TablePattern>, String> {
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    while i < chars.len() && blank(chars[i]) {
        i += 1;
    }
    let mut out = Vec::new();
    if i == chars.len() {
        return Ok(out);
    }
    loop {
        // One item: up to an unescaped comma or blank; escapes kept for now.
        let start = i;
        while i < chars.len() && chars[i] != ',' && !blank(chars[i]) {
            if chars[i] == '\\' {
                i += 1;
                if i == chars.len() {
                    return Err("trailing backslash".into());
                }
            }
            i += 1;
        }
        if i == start {
            return Err("empty item".into());
        }
        let item = &chars[start..i];
        while i < chars.len() && blank(chars[i]) {
            i += 1;
        }
        let done = match chars.get(i) {
            None => true,
            Some(',') => {
                i += 1;
                while i < chars.len() && blank(chars[i]) {
                    i += 1;
                }
                false
            }
            Some(c) => return Err(format!("unexpected character \"{c}\" (escape blanks inside a name with \\)")),
        };
        out.push(table_pattern(item)?);
        if done {
            return Ok(out);
        }
    }
}

/// One `schema.table` item (escapes still in it).
fn table_pattern(item: &[char]) -> Result<TablePattern, String> {
    let all_schemas = item.starts_with(&['*', '.']);
    let mut schema = String::new();
    let mut k = 0;
    while k < item.len() && item[k] != '.' {
        if item[k] == '\\' {
            k += 1;
        }
        schema.push(item[k]);
        k += 1;
    }
    if k == item.len() {
        let text: String = item.iter().collect();
        return Err(format!("\"{text}\" is not of the form schema.table"));
    }
    let rest = &item[k + 1..];
    let all_tables = rest == ['*'];
    let mut table = String::new();
    let mut k = 0;
    while k < rest.len() {
        if rest[k] == '\\' {
            k += 1;
        }
        table.push(rest[k]);
        k += 1;
    }
    Ok(TablePattern {
        schema: if all_schemas { NamePattern::Any } else { NamePattern::Exact(schema) },
        table: if all_tables { NamePattern::Any } else { NamePattern::Exact(table) },
    })
}

/// A scanned list item: its text and whether it was double-quoted.
struct Part {
    text: String,
    quoted: bool,
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
            return Ok(Part { text, quoted: true });
        }
        let mut text = String::new();
        while let Some(&c) = self.chars.peek() {
            if stops.contains(&c) || c.is_whitespace() {
                break;
            }
            self.chars.next();
            match c {
                '\\' => text.push(self.chars.next().ok_or("trailing backslash")?),
                '"' => return Err("unexpected double quote inside a name".into()),
                c => text.push(c),
            }
        }
        if text.is_empty() {
            return Err("empty name".into());
        }
        Ok(Part { text, quoted: false })
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

/// Split a list exactly as wal2json 2.5/2.6's `split_string_to_list`
/// (`empty_items` false: message prefixes, actions) or
/// `split_string_to_oid_list` (`empty_items` true: origins) do: items end at
/// a comma or a blank, blanks around items are skipped, a `\\` makes the next
/// character part of the item and **stays in it** (wal2json never removes
/// it), double quotes are ordinary characters. An empty value is an empty
/// list. An empty item (`a,,b`, a trailing comma) is an error for string
/// lists, an item `""` for origin lists, as in wal2json. A trailing backslash
/// is an error (wal2json reads past the end of the string there).
pub(crate) fn parse_wal2json_list(value: &str, empty_items: bool) -> Result<Vec<String>, String> {
    let chars: Vec<char> = value.chars().collect();
    let mut i = 0;
    while i < chars.len() && blank(chars[i]) {
        i += 1;
    }
    let mut out = Vec::new();
    if i == chars.len() {
        return Ok(out);
    }
    loop {
        let start = i;
        while i < chars.len() && chars[i] != ',' && !blank(chars[i]) {
            if chars[i] == '\\' {
                i += 1;
                if i == chars.len() {
                    return Err("trailing backslash".into());
                }
            }
            i += 1;
        }
        if i == start && !empty_items {
            return Err("empty item".into());
        }
        let item: String = chars[start..i].iter().collect();
        while i < chars.len() && blank(chars[i]) {
            i += 1;
        }
        let done = match chars.get(i) {
            None => true,
            Some(',') => {
                i += 1;
                while i < chars.len() && blank(chars[i]) {
                    i += 1;
                }
                false
            }
            Some(c) => return Err(format!("unexpected character \"{c}\" (escape blanks inside an item with \\)")),
        };
        out.push(item);
        if done {
            return Ok(out);
        }
    }
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
    fn stars_and_quotes_are_literal_as_in_wal2json() {
        assert!(m("public.audit_*", "public", "audit_*"));
        assert!(!m("public.audit_*", "public", "audit_2026"));
        assert!(!m("p*.t", "public", "t"));
        assert!(m("p*.t", "p*", "t"));
        assert!(m("\\*.t", "*", "t"));
        assert!(!m("\\*.t", "other", "t"));
        assert!(m("s.\\*", "s", "*"));
        assert!(!m("s.\\*", "s", "x"));
        // wal2json's own regression pattern
        assert!(m("public.filter\"table_9", "public", "filter\"table_9"));
        assert!(m("\"q\".t", "\"q\"", "t"));
        assert!(m("My\\ Schema.a\\,b\\.c", "My Schema", "a,b.c"));
        assert!(m("a\\.b.c", "a.b", "c"));
        assert!(m(".t", "", "t"));
        assert!(m("s.", "s", ""));
    }

    #[test]
    fn malformed_patterns_are_rejected() {
        for bad in ["public", "a.b,", "a.b c.d", "a.b,,c.d", "a.b\\", "\"My Schema\".t"] {
            assert!(parse_table_patterns(bad).is_err(), "{bad}");
        }
        assert!(parse_table_patterns("").unwrap().is_empty());
        assert!(parse_table_patterns("  ").unwrap().is_empty());
    }

    #[test]
    fn lists_split_as_wal2json() {
        let l = |v| parse_wal2json_list(v, false);
        assert_eq!(l(" a , b ,c").unwrap(), vec!["a", "b", "c"]);
        // Quotes are ordinary characters; a backslash escapes and stays.
        assert_eq!(l("\"b,c\"").unwrap(), vec!["\"b", "c\""]);
        assert_eq!(l("a\\,b,c\\ d").unwrap(), vec!["a\\,b", "c\\ d"]);
        assert_eq!(l("").unwrap(), Vec::<String>::new());
        assert_eq!(l("  ").unwrap(), Vec::<String>::new());
        for bad in ["a,,b", "a,", ",a", "a b", "a\\"] {
            assert!(l(bad).is_err(), "{bad}");
        }
        // Origin lists: empty items are allowed (wal2json's atoi("") is 0).
        let o = |v| parse_wal2json_list(v, true);
        assert_eq!(o("1,,2,").unwrap(), vec!["1", "", "2", ""]);
        assert!(o("1 2").is_err());
    }

    #[test]
    fn identifier_lists_fold_case_like_postgres() {
        assert_eq!(parse_identifier_list("Pub1, \"Pub2\"").unwrap(), vec!["pub1", "Pub2"]);
        assert!(parse_identifier_list("").is_err());
        assert!(parse_identifier_list("a,").is_err());
    }
}
