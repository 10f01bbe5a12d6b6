//! The output plugin's options: a closed set, parsed by one pure function.
//!
//! Names follow wal2json where the behaviour is the same, so wal2json
//! consumers keep their option lists; `origin` and `publication_names` are
//! ours (the latter spelled as pgoutput spells it). Any unknown, duplicated
//! or malformed option is an [`OptionError`], reported once by the plugin
//! layer as SQLSTATE 22023.

use super::selectors::{TablePattern, parse_identifier_list, parse_table_patterns, parse_wal2json_list};

/// Which DML kinds are emitted (`actions` option, or a publication's `publish`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Actions {
    pub(crate) insert: bool,
    pub(crate) update: bool,
    pub(crate) delete: bool,
    pub(crate) truncate: bool,
}

impl Actions {
    pub(crate) const ALL: Actions = Actions { insert: true, update: true, delete: true, truncate: true };
    pub(crate) const NONE: Actions = Actions { insert: false, update: false, delete: false, truncate: false };

    pub(crate) fn union(self, o: Actions) -> Actions {
        Actions {
            insert: self.insert || o.insert,
            update: self.update || o.update,
            delete: self.delete || o.delete,
            truncate: self.truncate || o.truncate,
        }
    }

    pub(crate) fn intersect(self, o: Actions) -> Actions {
        Actions {
            insert: self.insert && o.insert,
            update: self.update && o.update,
            delete: self.delete && o.delete,
            truncate: self.truncate && o.truncate,
        }
    }
}

/// `origin` option: whether changes that arrived through a replication origin
/// are emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OriginMode {
    Any,
    None,
}

/// An entry of `filter-origins`: a numeric origin id or an origin name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OriginRef {
    /// wal2json's reading: C's `atoi` of the item (`0`, which never
    /// matches, for an empty item or one beyond any origin id).
    Id(u16),
    /// Ours: an item that does not start with a number names an origin
    /// (backslash escapes removed); wal2json reads it as `0`, i.e. ignores it.
    Name(String),
}

impl OriginRef {
    /// One item of `filter-origins`, split as wal2json splits it.
    fn from_item(item: &str) -> OriginRef {
        let unsigned = item.strip_prefix(['+', '-']).unwrap_or(item);
        let digits = unsigned.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 && !item.is_empty() && unsigned.len() == item.len() {
            let mut name = String::new();
            let mut chars = item.chars();
            while let Some(c) = chars.next() {
                name.push(if c == '\\' { chars.next().unwrap_or(c) } else { c });
            }
            return OriginRef::Name(name);
        }
        // atoi: the leading digits. An origin id is 1..=65535; anything else
        // (0, negative, larger) matches no origin, as in wal2json.
        let id = if item.starts_with('-') { None } else { unsigned[..digits].parse::<u16>().ok() };
        OriginRef::Id(id.unwrap_or(0))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Options {
    /// wal2json's `format-version`: 1 (one document per transaction, the
    /// default, as wal2json's) or 2 (one document per change). Without the
    /// option but with `publication_names` (only logical_ext subscribers
    /// send it) it is 2: what every released logical_ext subscriber reads.
    pub(crate) format_version: FormatVersion,
    /// format-version 1: write each change as its own output row instead of
    /// the whole transaction at once (wal2json's `write-in-chunks`).
    pub(crate) write_in_chunks: bool,
    pub(crate) include_column_positions: bool,
    pub(crate) include_not_null: bool,
    pub(crate) include_default: bool,
    pub(crate) include_domain_data_type: bool,
    pub(crate) numeric_data_types_as_string: bool,
    pub(crate) include_transaction: bool,
    pub(crate) include_xids: bool,
    pub(crate) include_timestamp: bool,
    pub(crate) include_lsn: bool,
    pub(crate) include_origin: bool,
    pub(crate) include_schemas: bool,
    pub(crate) include_types: bool,
    pub(crate) include_typmod: bool,
    pub(crate) include_type_oids: bool,
    pub(crate) include_pk: bool,
    pub(crate) pretty_print: bool,
    pub(crate) actions: Actions,
    pub(crate) add_tables: Option<Vec<TablePattern>>,
    pub(crate) filter_tables: Vec<TablePattern>,
    pub(crate) add_msg_prefixes: Option<Vec<String>>,
    pub(crate) filter_msg_prefixes: Vec<String>,
    pub(crate) filter_origins: Vec<OriginRef>,
    pub(crate) origin: OriginMode,
    pub(crate) publication_names: Option<Vec<String>>,
    /// DDL events (prefix `logical_ext.ddl`) as `"DDL"` documents; off: as
    /// the plain messages they are, exactly as wal2json prints them.
    pub(crate) include_ddl: bool,
    /// `include-reconcile`: authentic reconcile messages (prefix
    /// `logical_ext.reconcile`) as `"V"` documents (off: the plain `M`
    /// messages they are). Asked for by 0.4.0's apply worker.
    pub(crate) include_reconcile: bool,
    /// Stream a transaction larger than `logical_decoding_work_mem` while
    /// it is in progress (`stream.rs`'s streamed blocks; pgoutput's
    /// `streaming`). Off: PostgreSQL spills it and sends it at its commit.
    pub(crate) streaming: bool,
    /// `two-phase`: decode `PREPARE TRANSACTION` when it happens (`P`,
    /// then `CP`/`RP` documents) instead of the whole transaction at its
    /// `COMMIT PREPARED`. PostgreSQL then marks the slot two-phase for good
    /// (as pgoutput's `two_phase`); docs/FORMAT.md.
    pub(crate) two_phase: bool,
    /// `compact`: logical_ext's internal wire format between its own nodes
    /// (`compact.rs`): relation documents once per relation, rows as
    /// positional values. Version 2 with `publication_names` only.
    pub(crate) compact: bool,
    /// `batch`: with `compact`, the row documents of a transaction (outside
    /// streamed blocks) travel several to a message (`compact.rs`
    /// [`super::compact::BATCH_MARK`]), so the walsender writes one message
    /// per 64 kB instead of one per change.
    pub(crate) batch: bool,
    /// `owner`: the apply worker's identity (`owner.rs`), checked against
    /// the slot's recorded owner at startup. `None` for other consumers.
    pub(crate) owner: Option<super::owner::SlotOwner>,
    /// `takeover`: with `owner`, take the slot from its recorded owner.
    pub(crate) takeover: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            format_version: FormatVersion::V1,
            write_in_chunks: false,
            include_column_positions: false,
            include_not_null: false,
            include_default: false,
            include_domain_data_type: false,
            numeric_data_types_as_string: false,
            include_transaction: true,
            include_xids: false,
            include_timestamp: false,
            include_lsn: false,
            include_origin: false,
            include_schemas: true,
            include_types: true,
            include_typmod: true,
            include_type_oids: false,
            include_pk: false,
            pretty_print: false,
            actions: Actions::ALL,
            add_tables: None,
            filter_tables: Vec::new(),
            add_msg_prefixes: None,
            filter_msg_prefixes: Vec::new(),
            filter_origins: Vec::new(),
            origin: OriginMode::Any,
            publication_names: None,
            include_ddl: true,
            include_reconcile: false,
            streaming: false,
            two_phase: false,
            compact: false,
            batch: false,
            owner: None,
            takeover: false,
        }
    }
}

impl Options {
    /// Whether `add-tables` / `filter-tables` select this relation.
    pub(crate) fn table_selected(&self, schema: &str, table: &str) -> bool {
        !self.filter_tables.iter().any(|p| p.matches(schema, table))
            && self.add_tables.as_ref().is_none_or(|add| add.iter().any(|p| p.matches(schema, table)))
    }

    /// Whether `add-msg-prefixes` / `filter-msg-prefixes` select this prefix.
    /// An empty `add-msg-prefixes` selects every prefix, as in wal2json
    /// (unlike an empty `add-tables`, which selects no table there too).
    pub(crate) fn prefix_selected(&self, prefix: &str) -> bool {
        !self.filter_msg_prefixes.iter().any(|p| p == prefix)
            && self.add_msg_prefixes.as_ref().is_none_or(|add| add.is_empty() || add.iter().any(|p| p == prefix))
    }

    /// Whether `bytea` values keep PostgreSQL's `\x` prefix: only for the
    /// stream logical_ext subscribers read (format-version 2 with
    /// `publication_names`), whose apply feeds the text to `bytea_in` —
    /// every released subscriber relies on it. wal2json consumers get
    /// wal2json's bare hex digits.
    pub(crate) fn bytea_prefix(&self) -> bool {
        self.format_version == FormatVersion::V2 && self.publication_names.is_some()
    }
}

/// The two document layouts of wal2json.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormatVersion {
    /// One document per transaction: `{"xid":…,"change":[…]}`.
    V1,
    /// One document per change: `{"action":"I",…}`.
    V2,
}

/// Why an option list was refused. Reported as SQLSTATE 22023.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OptionError {
    Unknown { name: String },
    Duplicate { name: String },
    Malformed { name: String, value: String, reason: String },
}

impl OptionError {
    pub(crate) fn message(&self) -> String {
        match self {
            OptionError::Unknown { name } => format!("logical_ext: unrecognized option \"{name}\""),
            OptionError::Duplicate { name } => format!("logical_ext: option \"{name}\" is given more than once"),
            OptionError::Malformed { name, value, reason } => {
                format!("logical_ext: invalid value \"{value}\" for option \"{name}\": {reason}")
            }
        }
    }

    pub(crate) fn hint(&self) -> String {
        match self {
            OptionError::Unknown { .. } => format!("Valid options are: {}.", KNOWN.join(", ")),
            OptionError::Duplicate { .. } => "Give each option once.".into(),
            OptionError::Malformed { name, .. } => format!("See docs/FORMAT.md for the syntax of \"{name}\"."),
        }
    }
}

const KNOWN: &[&str] = &[
    "format-version",
    "write-in-chunks",
    "include-column-positions",
    "include-not-null",
    "include-default",
    "include-domain-data-type",
    "numeric-data-types-as-string",
    "include-transaction",
    "include-xids",
    "include-timestamp",
    "include-lsn",
    "include-origin",
    "include-schemas",
    "include-types",
    "include-typmod",
    "include-type-oids",
    "include-pk",
    "pretty-print",
    "actions",
    "add-tables",
    "filter-tables",
    "add-msg-prefixes",
    "filter-msg-prefixes",
    "filter-origins",
    "origin",
    "publication_names",
    "include-ddl",
    "streaming",
    "two-phase",
    "compact",
    "batch",
    "owner",
    "takeover",
    "include-reconcile",
];

/// PostgreSQL's `parse_bool`: case-insensitive prefixes of true/false/yes/no,
/// on/off (at least `of`), 1/0.
fn parse_bool(v: &str) -> Option<bool> {
    let l = v.to_ascii_lowercase();
    let prefix_of = |word: &str, min: usize| l.len() >= min && word.starts_with(l.as_str());
    if prefix_of("true", 1) || prefix_of("yes", 1) || l == "on" || l == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || l == "0" {
        Some(false)
    } else {
        None
    }
}

/// PostgreSQL's `parse_int` without units, as wal2json reads
/// `format-version`: blanks around, an optional sign, then `strtol` base 0
/// (`0x` hexadecimal, a leading `0` octal, else decimal).
fn parse_int(v: &str) -> Option<i64> {
    let t = v.trim_matches(|c: char| c.is_ascii_whitespace());
    let (negative, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let n = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(hex, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse::<i64>().ok()?
    };
    // checked: `--9223372036854775808` must be malformed, not an overflow.
    if negative { n.checked_neg() } else { Some(n) }
}

/// Parse the `(name, value)` pairs the client passed. A missing value (only
/// possible over the replication protocol) means what it means to wal2json:
/// `true` for booleans, 2 for `format-version`, the default for `actions`,
/// an empty list for the list options; it is malformed for our own options.
pub(crate) fn parse(pairs: &[(String, Option<String>)]) -> Result<Options, OptionError> {
    let mut o = Options::default();
    let mut seen: Vec<&str> = Vec::new();
    let mut format_given = false;
    for (name, value) in pairs {
        if !KNOWN.contains(&name.as_str()) {
            return Err(OptionError::Unknown { name: name.clone() });
        }
        if seen.contains(&name.as_str()) {
            return Err(OptionError::Duplicate { name: name.clone() });
        }
        seen.push(name);
        let bad = |reason: &str| OptionError::Malformed {
            name: name.clone(),
            value: value.clone().unwrap_or_default(),
            reason: reason.to_string(),
        };
        let boolean = || match value {
            None => Ok(true),
            Some(v) => parse_bool(v).ok_or_else(|| bad("expected a boolean")),
        };
        let text = || value.as_deref().ok_or_else(|| bad("a value is required"));
        let list = || value.as_deref().unwrap_or("");
        match name.as_str() {
            "format-version" => {
                format_given = true;
                o.format_version = match value.as_deref().map(parse_int) {
                    // No value: wal2json takes its WAL2JSON_FORMAT_VERSION, 2.
                    Some(Some(1)) => FormatVersion::V1,
                    None | Some(Some(2)) => FormatVersion::V2,
                    _ => return Err(bad("expected 1 or 2 (wal2json's format versions)")),
                }
            }
            "write-in-chunks" => o.write_in_chunks = boolean()?,
            "include-column-positions" => o.include_column_positions = boolean()?,
            "include-not-null" => o.include_not_null = boolean()?,
            "include-default" => o.include_default = boolean()?,
            "include-domain-data-type" => o.include_domain_data_type = boolean()?,
            "numeric-data-types-as-string" => o.numeric_data_types_as_string = boolean()?,
            "include-transaction" => o.include_transaction = boolean()?,
            "include-xids" => o.include_xids = boolean()?,
            "include-timestamp" => o.include_timestamp = boolean()?,
            "include-lsn" => o.include_lsn = boolean()?,
            "include-origin" => o.include_origin = boolean()?,
            "include-schemas" => o.include_schemas = boolean()?,
            "include-types" => o.include_types = boolean()?,
            "include-typmod" => o.include_typmod = boolean()?,
            "include-type-oids" => o.include_type_oids = boolean()?,
            "include-pk" => o.include_pk = boolean()?,
            "pretty-print" => o.pretty_print = boolean()?,
            "include-ddl" => o.include_ddl = boolean()?,
            "include-reconcile" => o.include_reconcile = boolean()?,
            "streaming" => o.streaming = boolean()?,
            "two-phase" => o.two_phase = boolean()?,
            "compact" => o.compact = boolean()?,
            "batch" => o.batch = boolean()?,
            "owner" => o.owner = Some(super::owner::SlotOwner::parse(text()?).map_err(|r| bad(&r))?),
            "takeover" => o.takeover = boolean()?,
            "actions" => {
                if let Some(v) = value {
                    o.actions = parse_actions(v).map_err(|r| bad(&r))?
                }
            }
            "add-tables" => o.add_tables = Some(parse_table_patterns(list()).map_err(|r| bad(&r))?),
            "filter-tables" => o.filter_tables = parse_table_patterns(list()).map_err(|r| bad(&r))?,
            "add-msg-prefixes" => o.add_msg_prefixes = Some(parse_wal2json_list(list(), false).map_err(|r| bad(&r))?),
            "filter-msg-prefixes" => o.filter_msg_prefixes = parse_wal2json_list(list(), false).map_err(|r| bad(&r))?,
            "filter-origins" => {
                o.filter_origins = parse_wal2json_list(list(), true)
                    .map_err(|r| bad(&r))?
                    .iter()
                    .map(|item| OriginRef::from_item(item))
                    .collect()
            }
            "origin" => {
                o.origin = match text()?.to_ascii_lowercase().as_str() {
                    "any" => OriginMode::Any,
                    "none" => OriginMode::None,
                    _ => return Err(bad("expected \"any\" or \"none\"")),
                }
            }
            "publication_names" => o.publication_names = Some(parse_identifier_list(text()?).map_err(|r| bad(&r))?),
            _ => unreachable!("every KNOWN option is handled"),
        }
    }
    if !format_given && (o.publication_names.is_some() || o.two_phase) {
        // Released logical_ext subscribers (0.1-0.3) send publication_names
        // and no format-version, and read version 2; two-phase documents
        // exist in version 2 only, so asking for them implies it.
        o.format_version = FormatVersion::V2;
    }
    // format-version 1 is one document per transaction: a transaction sent
    // in pieces before its commit has no place in it. `streaming` (no
    // wal2json consumer sends it) therefore reads version 2 unless version 1
    // is asked for, which is refused.
    if !format_given && o.streaming {
        o.format_version = FormatVersion::V2;
    }
    if o.streaming && o.format_version == FormatVersion::V1 {
        return Err(OptionError::Malformed {
            name: "streaming".into(),
            value: "true".into(),
            reason: "streaming needs format-version 2".into(),
        });
    }
    // A format-version 1 document is the whole transaction: it has no
    // place for a transaction that is prepared now and decided later.
    if o.two_phase && o.format_version == FormatVersion::V1 {
        return Err(OptionError::Malformed {
            name: "two-phase".into(),
            value: "1".into(),
            reason: "prepared transactions are decoded in format-version 2 only".into(),
        });
    }
    // The compact documents are read by logical_ext subscribers only, which
    // always stream version 2 with publication_names.
    if o.compact && (o.format_version == FormatVersion::V1 || o.publication_names.is_none()) {
        return Err(OptionError::Malformed {
            name: "compact".into(),
            value: "true".into(),
            reason: "compact needs format-version 2 and publication_names".into(),
        });
    }
    if o.batch && !o.compact {
        return Err(OptionError::Malformed {
            name: "batch".into(),
            value: "true".into(),
            reason: "batch needs compact".into(),
        });
    }
    if o.takeover && o.owner.is_none() {
        return Err(OptionError::Malformed {
            name: "takeover".into(),
            value: "true".into(),
            reason: "takeover needs owner".into(),
        });
    }
    Ok(o)
}

fn parse_actions(v: &str) -> Result<Actions, String> {
    let mut a = Actions::NONE;
    for item in parse_wal2json_list(v, false)? {
        match item.as_str() {
            "insert" => a.insert = true,
            "update" => a.update = true,
            "delete" => a.delete = true,
            "truncate" => a.truncate = true,
            other => return Err(format!("unknown action \"{other}\" (expected insert, update, delete, truncate)")),
        }
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, Option<&str>)]) -> Result<Options, OptionError> {
        let owned: Vec<(String, Option<String>)> =
            pairs.iter().map(|(n, v)| (n.to_string(), v.map(str::to_string))).collect();
        parse(&owned)
    }

    #[test]
    fn default_format_version_is_wal2json_s_except_for_subscribers() {
        assert_eq!(p(&[]).unwrap().format_version, FormatVersion::V1);
        // Over the replication protocol a value may be missing: wal2json
        // then takes its highest version, 2.
        assert_eq!(p(&[("format-version", None)]).unwrap().format_version, FormatVersion::V2);
        // What every released logical_ext subscriber sends: version 2, bytea with \x.
        let sub = p(&[("publication_names", Some("p")), ("include-lsn", Some("on"))]).unwrap();
        assert_eq!(sub.format_version, FormatVersion::V2);
        assert!(sub.bytea_prefix());
        let o = p(&[("publication_names", Some("p")), ("format-version", Some("1"))]).unwrap();
        assert_eq!(o.format_version, FormatVersion::V1);
        assert!(!o.bytea_prefix());
        // A wal2json consumer gets wal2json's bare hex digits in both versions.
        assert!(!p(&[("format-version", Some("2"))]).unwrap().bytea_prefix());
        assert!(!p(&[]).unwrap().bytea_prefix());
    }

    #[test]
    fn missing_values_mean_what_they_mean_to_wal2json() {
        let o = p(&[
            ("actions", None),
            ("filter-tables", None),
            ("add-msg-prefixes", None),
            ("filter-msg-prefixes", None),
            ("filter-origins", None),
        ])
        .unwrap();
        assert_eq!(o.actions, Actions::ALL);
        assert!(o.prefix_selected("any"));
        assert!(o.table_selected("s", "t"));
        assert!(o.filter_origins.is_empty());
        assert!(!p(&[("add-tables", None)]).unwrap().table_selected("s", "t"));
        assert!(p(&[("publication_names", None)]).is_err());
        assert!(p(&[("origin", None)]).is_err());
    }

    #[test]
    fn origin_items_are_read_with_atoi_or_as_names() {
        let o = p(&[("filter-origins", Some("3, 4x,,-5,+6,70000,node_b,o\\,1,\"q\""))]).unwrap();
        use OriginRef::*;
        assert_eq!(
            o.filter_origins,
            vec![
                Id(3),
                Id(4),
                Id(0),
                Id(0),
                Id(6),
                Id(0),
                Name("node_b".into()),
                Name("o,1".into()),
                Name("\"q\"".into())
            ]
        );
    }

    #[test]
    fn prefix_lists_are_split_as_wal2json_splits_them() {
        let o = p(&[("add-msg-prefixes", Some("a\\,b, \"q"))]).unwrap();
        assert!(o.prefix_selected("a\\,b") && o.prefix_selected("\"q"));
        assert!(!o.prefix_selected("a,b") && !o.prefix_selected("a"));
        // An empty add-msg-prefixes selects everything (wal2json's empty list).
        assert!(p(&[("add-msg-prefixes", Some(""))]).unwrap().prefix_selected("x"));
        assert!(p(&[("add-msg-prefixes", Some("a,,b"))]).is_err());
        // Actions are read with the same splitter.
        assert!(p(&[("actions", Some("\"insert\""))]).is_err());
    }

    #[test]
    fn defaults_match_wal2json() {
        let o = p(&[]).unwrap();
        assert!(o.include_transaction && o.include_schemas && o.include_types && o.include_typmod);
        assert!(!o.include_xids && !o.include_timestamp && !o.include_lsn && !o.include_pk);
        assert_eq!(o.actions, Actions::ALL);
        assert_eq!(o.origin, OriginMode::Any);
    }

    #[test]
    fn booleans_accept_postgres_spellings() {
        for (v, want) in
            [("1", true), ("t", true), ("ON", true), ("yes", true), ("0", false), ("of", false), ("n", false)]
        {
            assert_eq!(p(&[("include-xids", Some(v))]).unwrap().include_xids, want, "{v}");
        }
        assert!(p(&[("include-xids", None)]).unwrap().include_xids);
        assert!(matches!(p(&[("include-xids", Some("o"))]), Err(OptionError::Malformed { .. })));
        assert!(matches!(p(&[("include-xids", Some("maybe"))]), Err(OptionError::Malformed { .. })));
    }

    #[test]
    fn errors_name_the_option() {
        let e = p(&[("include-nothing", Some("1"))]).unwrap_err();
        assert!(e.message().contains("include-nothing"));
        let e = p(&[("include-xids", Some("1")), ("include-xids", Some("0"))]).unwrap_err();
        assert_eq!(e, OptionError::Duplicate { name: "include-xids".into() });
        let e = p(&[("actions", Some("insert,upsert"))]).unwrap_err();
        assert!(e.message().contains("actions") && e.message().contains("upsert"));
        assert_eq!(p(&[("format-version", Some("1"))]).unwrap().format_version, FormatVersion::V1);
        assert_eq!(p(&[("format-version", Some("2"))]).unwrap().format_version, FormatVersion::V2);
        assert!(p(&[("format-version", Some("3"))]).is_err());
        // wal2json reads it with parse_int (strtol base 0).
        for (v, want) in [(" 2 ", FormatVersion::V2), ("0x2", FormatVersion::V2), ("01", FormatVersion::V1)] {
            assert_eq!(p(&[("format-version", Some(v))]).unwrap().format_version, want, "{v}");
        }
        for bad in ["", "2.0", "two", "0x", "+-2", "--9223372036854775808", "-0x-8000000000000000"] {
            assert!(p(&[("format-version", Some(bad))]).is_err(), "{bad}");
        }
        for name in [
            "write-in-chunks",
            "include-column-positions",
            "include-not-null",
            "include-default",
            "include-domain-data-type",
            "numeric-data-types-as-string",
        ] {
            assert!(p(&[(name, Some("1"))]).is_ok(), "{name}");
        }
        assert!(p(&[("origin", Some("some"))]).is_err());
        assert!(p(&[("publication_names", Some(""))]).is_err());
    }

    #[test]
    fn owner_and_takeover() {
        assert_eq!(p(&[]).unwrap().owner, None, "other consumers name no owner");
        let o = p(&[("owner", Some("7300000000000000001/2/5/1")), ("takeover", Some("on"))]).unwrap();
        assert_eq!(o.owner.map(|w| w.to_string()).as_deref(), Some("7300000000000000001/2/5/1"));
        assert!(o.takeover);
        assert!(p(&[("owner", Some("1/2/3"))]).is_err(), "malformed");
        assert!(p(&[("owner", None)]).is_err(), "a value is required");
        assert!(p(&[("takeover", Some("on"))]).is_err(), "takeover needs owner");
        assert!(p(&[("takeover", Some("off"))]).is_ok());
    }

    #[test]
    fn streaming_option() {
        assert!(!p(&[]).unwrap().streaming);
        assert!(p(&[("streaming", Some("on"))]).unwrap().streaming);
        assert_eq!(p(&[("streaming", Some("on"))]).unwrap().format_version, FormatVersion::V2, "implied");
        assert!(p(&[("streaming", None)]).unwrap().streaming);
        assert!(p(&[("streaming", Some("sometimes"))]).is_err());
        let e = p(&[("streaming", Some("1")), ("format-version", Some("1"))]).unwrap_err();
        assert!(e.message().contains("streaming"), "{e:?}");
        assert!(p(&[("streaming", Some("0")), ("format-version", Some("1"))]).is_ok());
    }

    #[test]
    fn compact_is_opt_in_and_for_subscribers_only() {
        assert!(!p(&[]).unwrap().compact);
        let o = p(&[("publication_names", Some("p")), ("compact", Some("on"))]).unwrap();
        assert!(o.compact && o.format_version == FormatVersion::V2);
        assert!(p(&[("publication_names", Some("p")), ("compact", Some("off"))]).is_ok());
        for bad in [
            &[("compact", Some("on"))][..],
            &[("format-version", Some("2")), ("compact", Some("on"))][..],
            &[("publication_names", Some("p")), ("format-version", Some("1")), ("compact", Some("on"))][..],
            &[("publication_names", Some("p")), ("compact", Some("maybe"))][..],
        ] {
            let e = p(bad).unwrap_err();
            assert!(matches!(e, OptionError::Malformed { ref name, .. } if name == "compact"), "{e:?}");
        }
    }

    #[test]
    fn batch_is_opt_in_and_needs_compact() {
        let c = [("publication_names", Some("p")), ("compact", Some("on"))];
        assert!(!p(&c).unwrap().batch);
        assert!(p(&[c[0], c[1], ("batch", Some("on"))]).unwrap().batch);
        assert!(!p(&[c[0], ("batch", Some("off"))]).unwrap().batch);
        for bad in [&[c[0], ("batch", Some("on"))][..], &[c[0], c[1], ("batch", Some("maybe"))][..]] {
            let e = p(bad).unwrap_err();
            assert!(matches!(e, OptionError::Malformed { ref name, .. } if name == "batch"), "{e:?}");
        }
    }

    #[test]
    fn two_phase_is_opt_in_and_v2_only() {
        assert!(!p(&[]).unwrap().two_phase);
        assert!(p(&[("two-phase", Some("1"))]).unwrap().two_phase);
        // Two-phase documents are version 2's: asking for them implies it.
        assert_eq!(p(&[("two-phase", Some("1"))]).unwrap().format_version, FormatVersion::V2);
        assert!(!p(&[("two-phase", Some("off"))]).unwrap().two_phase);
        let e = p(&[("two-phase", Some("1")), ("format-version", Some("1"))]).unwrap_err();
        assert!(e.message().contains("two-phase") && e.message().contains("format-version 2"), "{e:?}");
        assert!(p(&[("two-phase", Some("0")), ("format-version", Some("1"))]).is_ok());
    }

    #[test]
    fn filters() {
        let o = p(&[("add-tables", Some("public.*")), ("filter-tables", Some("public.secret"))]).unwrap();
        assert!(o.table_selected("public", "a"));
        assert!(!o.table_selected("public", "secret"));
        assert!(!o.table_selected("other", "a"));
        let o = p(&[("filter-msg-prefixes", Some("x")), ("add-msg-prefixes", Some("x,y"))]).unwrap();
        assert!(o.prefix_selected("y") && !o.prefix_selected("x") && !o.prefix_selected("z"));
        let o = p(&[("filter-origins", Some("3,node_b"))]).unwrap();
        assert_eq!(o.filter_origins, vec![OriginRef::Id(3), OriginRef::Name("node_b".into())]);
        assert!(p(&[("add-tables", Some(""))]).unwrap().add_tables.is_some_and(|a| a.is_empty()));
        let o = p(&[("actions", Some("insert, delete"))]).unwrap();
        assert_eq!(o.actions, Actions { insert: true, update: false, delete: true, truncate: false });
    }
}
