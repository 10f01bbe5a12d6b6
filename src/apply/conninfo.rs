//! Connection strings are secrets: every place that shows one (views, log
//! lines, errors) goes through [`redact`], which hides the password in both
//! the `key=value` and the URI forms. Pure and unit-tested.

use crate::ffi::parse::secret_option;

/// `conninfo` with every secret (`password`, `sslpassword`, ...) replaced by
/// `********`.
pub(crate) fn redact(conninfo: &str) -> String {
    let trimmed = conninfo.trim_start();
    if trimmed.starts_with("postgres://") || trimmed.starts_with("postgresql://") {
        return redact_uri(trimmed);
    }
    redact_keywords(conninfo)
}

fn redact_uri(uri: &str) -> String {
    let (scheme, rest) = uri.split_once("://").expect("checked by caller");
    let mut out = format!("{scheme}://");
    // user:password@host...
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:********@{host}")),
            None => out.push_str(&format!("{userinfo}@{host}")),
        },
        None => out.push_str(authority),
    }
    // ...?password=...
    match tail.split_once('?') {
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if secret_option(k) => format!("{k}=********"),
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(&format!("{path}?{}", params.join("&")));
        }
        None => out.push_str(tail),
    }
    out
}

/// `key = value` pairs, values optionally single-quoted with `\` escapes.
fn redact_keywords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            out.push(c);
            chars.next();
            continue;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        out.push_str(&key);
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                out.push(c);
                chars.next();
            } else {
                break;
            }
        }
        if chars.peek() != Some(&'=') {
            continue;
        }
        out.push('=');
        chars.next();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                out.push(c);
                chars.next();
            } else {
                break;
            }
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            value.push('\'');
            chars.next();
            while let Some(c) = chars.next() {
                value.push(c);
                if c == '\\' {
                    if let Some(e) = chars.next() {
                        value.push(e);
                    }
                } else if c == '\'' {
                    break;
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    value.push(c);
                    chars.next();
                    if let Some(e) = chars.next() {
                        value.push(e);
                    }
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        if secret_option(&key) {
            out.push_str("********");
        } else {
            out.push_str(&value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn keyword_form() {
        assert_eq!(redact("host=h password=secret user=u"), "host=h password=******** user=u");
        assert_eq!(redact("password = 'se cr\\'et' dbname=d"), "password = ******** dbname=d");
        assert_eq!(redact("host=h port=5432"), "host=h port=5432");
        assert!(!redact("password=x\\ y host=h").contains('y'));
        assert_eq!(redact("host=h sslpassword='k ey' sslkey=/k"), "host=h sslpassword=******** sslkey=/k");
        assert_eq!(redact("SSLPASSWORD=k"), "SSLPASSWORD=********");
    }

    #[test]
    fn uri_form() {
        assert_eq!(redact("postgresql://u:secret@h:5/db?sslmode=off"), "postgresql://u:********@h:5/db?sslmode=off");
        assert_eq!(redact("postgres://h/db?password=secret&x=1"), "postgres://h/db?password=********&x=1");
        assert_eq!(redact("postgres://u@h"), "postgres://u@h");
        assert_eq!(redact("postgres://h/db?sslpassword=k&a=1"), "postgres://h/db?sslpassword=********&a=1");
    }
}
