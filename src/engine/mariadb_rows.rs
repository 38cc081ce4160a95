//! The `mariadb-dump` stream as it passes through the pipeline: rows counted, and rewritten
//! where the dump as written would not restore on a server like the source.
//!
//! `mariadb-dump --single-transaction` takes its own snapshot, which no other connection can
//! join, so counting in a second transaction could disagree with the dump under concurrent
//! writes. Counting the rows of the dump itself is exact by construction, costs no lock, and
//! restore then checks that every row arrived. The parser streams: it holds at most one
//! statement of about `STATEMENT_LIMIT` bytes, and refuses anything it does not recognise
//! rather than guess.
//!
//! Three rewrites, each readable by the plain `mariadb` client (the break-glass restore):
//! - a head line after the first one, given by the engine (the database's default character set
//!   and collation, which `mariadb-dump` leaves out), applied to whatever database is loaded;
//! - `ALTER DATABASE \`source\` …`, which `mariadb-dump` writes around routines, triggers and
//!   events whose "Database Collation" differs from the database's, loses its name, so it applies
//!   to the database being loaded, never to the source database of the same server;
//! - an INSERT larger than `STATEMENT_LIMIT` (a row of a 12 MB blob is one 24 MB statement in
//!   hex, over the server's default 16 MiB `max_allowed_packet`, though the row itself fits)
//!   has its long literals built in user variables, `CHUNK` bytes per statement
//!   (`SET @lb0 = 0x…; SET @lb0 = CONCAT(@lb0, 0x…);`), checked (a value over the target's
//!   `max_allowed_packet` would silently be NULL: the check stops the load instead), inserted as
//!   `@lb0`, then cleared.

use std::collections::BTreeMap;

const INSERT: &[u8] = b"INSERT INTO `";
const DUMPING: &[u8] = b"-- Dumping data for table `";
const ALTER: &[u8] = b"ALTER DATABASE `";
const VALUES: &[u8] = b" VALUES";
/// Identifiers are at most 64 characters (up to 4 bytes each, backticks doubled).
const MAX_NAME: usize = 512;
/// An INSERT longer than this is split. Any server accepts it (the default `max_allowed_packet`
/// is 16 MiB, and it was 1 MiB on the oldest servers), and `mariadb-dump`'s own multi-row
/// statements stay below it (`net_buffer_length`, 1 MiB), so only rows larger than that change.
pub const STATEMENT_LIMIT: usize = 1 << 20;
/// Bytes of a long literal per `SET` statement once it is built in a variable.
pub const CHUNK: usize = 512 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Dumping,
    Alter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lit {
    /// A quoted string; `escape` after a backslash.
    Quote { escape: bool },
    /// `0x` and hex digits (`--hex-blob`).
    Hex,
}

/// A literal being read inside an INSERT: where it starts in the statement, and the variable
/// it is built in once it moved out of the statement.
#[derive(Debug, Clone, Copy)]
struct Literal {
    lit: Lit,
    start: usize,
    var: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// At the start of a line, holding the bytes seen so far while they may still be a prefix.
    LineStart(usize),
    /// Passing the rest of an uninteresting line through.
    Skip,
    /// Reading a backtick-quoted name; `tick` is set after a backtick that may be doubled.
    Name { kind: Kind, tick: bool },
    /// Matching " VALUES" after an INSERT's table name.
    AfterName(usize),
    /// Inside the values of an INSERT: counting top-level tuples. `closed_var` right after a
    /// quoted string that moved to a variable (a doubled quote cannot follow it).
    Values {
        depth: u32,
        literal: Option<Literal>,
        closed_var: bool,
    },
}

/// Feeds on dump bytes in chunks of any size; `take_output` yields the dump to store,
/// `finish` the rows per table.
#[derive(Debug)]
pub struct DumpFilter {
    state: State,
    prefix: Vec<u8>,
    name: Vec<u8>,
    table: String,
    counts: BTreeMap<String, u64>,
    line: u64,
    error: Option<String>,
    /// The dumped database, whose name `ALTER DATABASE` loses.
    database: String,
    /// Written after the first line, then `None`.
    head: Option<Vec<u8>>,
    out: Vec<u8>,
    /// The INSERT being read, held until its end (at most about `STATEMENT_LIMIT` bytes).
    stmt: Vec<u8>,
    /// `INSERT INTO … VALUES` up to the first row, repeated when rows are split off.
    head_len: usize,
    /// Where the current row starts in `stmt`, and where the row before it ended.
    row_start: usize,
    prev_row_end: Option<usize>,
    /// The part of a literal in a variable not yet written, and whether its first `SET` was.
    chunk: Vec<u8>,
    chunk_sent: bool,
    /// Variables used by the statement being read.
    vars: u32,
}

impl DumpFilter {
    /// A filter for the dump of `database`; `head` (whole lines) goes after the dump's first line.
    pub fn new(database: &str, head: &str) -> DumpFilter {
        DumpFilter {
            state: State::LineStart(0),
            prefix: Vec::new(),
            name: Vec::new(),
            table: String::new(),
            counts: BTreeMap::new(),
            line: 1,
            error: None,
            database: database.to_string(),
            head: (!head.is_empty()).then(|| head.as_bytes().to_vec()),
            out: Vec::new(),
            stmt: Vec::new(),
            head_len: 0,
            row_start: 0,
            prev_row_end: None,
            chunk: Vec::new(),
            chunk_sent: false,
            vars: 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.error.is_some() {
                return;
            }
            self.byte(b);
            if b == b'\n' {
                self.line += 1;
                if matches!(self.state, State::LineStart(0))
                    && let Some(head) = self.head.take()
                {
                    self.out.extend_from_slice(&head);
                }
            }
        }
    }

    /// The rewritten dump produced so far.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The input ended: passes on a last line without a newline.
    pub fn end(&mut self) {
        if let State::LineStart(_) = self.state {
            self.out.append(&mut self.prefix);
        }
    }

    fn fail(&mut self, what: &str) {
        self.error = Some(format!(
            "cannot read the mariadb-dump output at line {}: {what}",
            self.line
        ));
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            State::LineStart(i) => self.line_start(i, b),
            State::Skip => {
                self.out.push(b);
                if b == b'\n' {
                    self.state = State::LineStart(0);
                }
            }
            State::Name { kind, tick } => self.name_byte(kind, tick, b),
            State::AfterName(n) => {
                if n < VALUES.len() {
                    if VALUES[n] != b {
                        return self.fail("an INSERT without VALUES right after the table name");
                    }
                    self.stmt.push(b);
                    self.state = State::AfterName(n + 1);
                } else if b == b' ' || b == b'\n' {
                    // mariadb-dump puts the first row on the next line.
                    self.stmt.push(b);
                } else if b == b'(' {
                    self.head_len = self.stmt.len();
                    self.prev_row_end = None;
                    self.vars = 0;
                    self.state = State::Values {
                        depth: 0,
                        literal: None,
                        closed_var: false,
                    };
                    self.byte(b);
                } else {
                    self.fail("an INSERT whose VALUES do not start with '('");
                }
            }
            State::Values {
                depth,
                literal,
                closed_var,
            } => self.values_byte(depth, literal, closed_var, b),
        }
    }

    fn line_start(&mut self, i: usize, b: u8) {
        let prefix = &self.prefix;
        let found = [
            (INSERT, Kind::Insert),
            (DUMPING, Kind::Dumping),
            (ALTER, Kind::Alter),
        ]
        .into_iter()
        .find(|(p, _)| i < p.len() && p[i] == b && prefix[..] == p[..i]);
        let Some((p, kind)) = found else {
            self.out.append(&mut self.prefix);
            self.state = State::Skip;
            return self.byte(b);
        };
        self.prefix.push(b);
        if self.prefix.len() < p.len() {
            self.state = State::LineStart(i + 1);
            return;
        }
        match kind {
            Kind::Insert => self.stmt = std::mem::take(&mut self.prefix),
            Kind::Dumping => self.out.append(&mut self.prefix),
            // Written once the name is known.
            Kind::Alter => self.prefix.clear(),
        }
        self.name.clear();
        self.state = State::Name { kind, tick: false };
    }

    /// A name's bytes stay in the dump, except the source database's name.
    fn pass_name_byte(&mut self, kind: Kind, b: u8) {
        match kind {
            Kind::Insert => self.stmt.push(b),
            Kind::Dumping => self.out.push(b),
            Kind::Alter => {}
        }
    }

    fn name_byte(&mut self, kind: Kind, tick: bool, b: u8) {
        if tick && b != b'`' {
            // The name ended at the previous backtick.
            let Ok(name) = String::from_utf8(std::mem::take(&mut self.name)) else {
                return self.fail("a name that is not UTF-8");
            };
            match kind {
                Kind::Insert | Kind::Dumping => {
                    self.counts.entry(name.clone()).or_insert(0);
                    self.table = name;
                }
                Kind::Alter if name == self.database => {
                    self.out.extend_from_slice(b"ALTER DATABASE");
                }
                Kind::Alter => {
                    self.out.extend_from_slice(ALTER);
                    self.out
                        .extend_from_slice(name.replace('`', "``").as_bytes());
                    self.out.push(b'`');
                }
            }
            self.state = if kind == Kind::Insert {
                State::AfterName(0)
            } else {
                State::Skip
            };
            return self.byte(b);
        }
        if b == b'`' {
            if tick {
                self.name.push(b'`');
            }
            self.pass_name_byte(kind, b);
            self.state = State::Name { kind, tick: !tick };
        } else if b == b'\n' || self.name.len() >= MAX_NAME {
            self.fail("an unterminated name");
        } else {
            self.name.push(b);
            self.pass_name_byte(kind, b);
        }
    }

    fn values_byte(&mut self, mut depth: u32, literal: Option<Literal>, closed_var: bool, b: u8) {
        let mut literal = literal;
        if let Some(mut l) = literal {
            match l.lit {
                Lit::Quote { escape: true } => {
                    l.lit = Lit::Quote { escape: false };
                    self.literal_byte(&mut l, b, false);
                }
                Lit::Quote { escape: false } if b == b'\'' => {
                    if l.var.is_some() {
                        self.end_variable(&l);
                    } else {
                        self.stmt.push(b);
                    }
                    self.state = State::Values {
                        depth,
                        literal: None,
                        closed_var: l.var.is_some(),
                    };
                    return;
                }
                Lit::Quote { escape: false } => {
                    if b == b'\\' {
                        l.lit = Lit::Quote { escape: true };
                    }
                    // Never between the bytes of one UTF-8 character.
                    self.literal_byte(&mut l, b, b & 0xC0 != 0x80);
                }
                Lit::Hex if b.is_ascii_hexdigit() => {
                    let even = self.chunk.len().is_multiple_of(2);
                    self.literal_byte(&mut l, b, even);
                }
                Lit::Hex => {
                    if l.var.is_some() {
                        self.end_variable(&l);
                    }
                    literal = None;
                }
            }
            if literal.is_some() {
                literal = Some(l);
                self.state = State::Values {
                    depth,
                    literal,
                    closed_var: false,
                };
                self.overflow();
                return;
            }
        }
        // Outside literals.
        if closed_var && b == b'\'' {
            return self.fail("a doubled quote after a long string");
        }
        self.stmt.push(b);
        let at = self.stmt.len() - 1;
        match b {
            b'\'' => {
                literal = Some(Literal {
                    lit: Lit::Quote { escape: false },
                    start: at,
                    var: None,
                })
            }
            b'x' if at >= 2
                && self.stmt[at - 1] == b'0'
                && matches!(self.stmt[at - 2], b'(' | b',') =>
            {
                literal = Some(Literal {
                    lit: Lit::Hex,
                    start: at - 1,
                    var: None,
                })
            }
            b'(' => {
                if depth == 0 {
                    *self.counts.entry(self.table.clone()).or_insert(0) += 1;
                    self.row_start = at;
                }
                depth += 1;
            }
            b')' => {
                if depth == 0 {
                    return self.fail("an unbalanced ')' in an INSERT");
                }
                depth -= 1;
                if depth == 0 {
                    self.prev_row_end = Some(self.stmt.len());
                }
            }
            b';' if depth == 0 => {
                self.out.append(&mut self.stmt);
                if self.vars > 0 {
                    let cleared: Vec<String> =
                        (0..self.vars).map(|v| format!("@lb{v} = NULL")).collect();
                    self.out
                        .extend_from_slice(format!("\nSET {};", cleared.join(", ")).as_bytes());
                }
                self.state = State::Skip;
                return;
            }
            _ => {}
        }
        self.state = State::Values {
            depth,
            literal,
            closed_var: false,
        };
        self.overflow();
    }

    /// One byte of a literal: into the statement, or into its variable's chunk, whose `SET`
    /// is written first when it is full and `boundary` says it may end before this byte.
    fn literal_byte(&mut self, l: &mut Literal, b: u8, boundary: bool) {
        match l.var {
            None => self.stmt.push(b),
            Some(_) => {
                if boundary && self.chunk.len() >= CHUNK {
                    self.write_chunk(l);
                }
                self.chunk.push(b);
            }
        }
    }

    /// Keeps the statement under `STATEMENT_LIMIT`: the complete rows before the current one
    /// become a statement of their own, then a literal being read moves to a variable.
    fn overflow(&mut self) {
        if self.stmt.len() <= STATEMENT_LIMIT {
            return;
        }
        let State::Values {
            depth,
            mut literal,
            closed_var,
        } = self.state
        else {
            return;
        };
        if depth > 0
            && let Some(end) = self.prev_row_end.take()
        {
            self.out.extend_from_slice(&self.stmt[..end]);
            self.out.extend_from_slice(b";\n");
            let shift = self.row_start - self.head_len;
            self.stmt.drain(self.head_len..self.row_start);
            self.row_start = self.head_len;
            if let Some(l) = literal.as_mut() {
                l.start -= shift;
            }
        }
        if self.stmt.len() > STATEMENT_LIMIT
            && let Some(l) = literal.as_mut()
            && l.var.is_none()
        {
            let opener = match l.lit {
                Lit::Quote { .. } => 1,
                Lit::Hex => 2,
            };
            self.chunk = self.stmt.split_off(l.start + opener);
            self.stmt.truncate(l.start);
            self.stmt
                .extend_from_slice(format!("@lb{}", self.vars).as_bytes());
            l.var = Some(self.vars);
            self.vars += 1;
            self.chunk_sent = false;
        }
        self.state = State::Values {
            depth,
            literal,
            closed_var,
        };
    }

    fn write_chunk(&mut self, l: &Literal) {
        let var = format!("@lb{}", l.var.expect("a literal in a variable"));
        let value = match l.lit {
            Lit::Quote { .. } => [b"'".as_slice(), &self.chunk, b"'"].concat(),
            Lit::Hex if self.chunk.is_empty() => b"X''".to_vec(),
            Lit::Hex => [b"0x".as_slice(), &self.chunk].concat(),
        };
        let (open, close) = if self.chunk_sent {
            (format!("SET {var} = CONCAT({var}, "), ");\n")
        } else {
            (format!("SET {var} = "), ";\n")
        };
        self.out.extend_from_slice(open.as_bytes());
        self.out.extend_from_slice(&value);
        self.out.extend_from_slice(close.as_bytes());
        self.chunk.clear();
        self.chunk_sent = true;
    }

    /// The last chunk of a literal in a variable, then a check that stops the load when the
    /// server made it NULL (a value over its `max_allowed_packet`) instead of inserting NULL.
    fn end_variable(&mut self, l: &Literal) {
        if !self.chunk.is_empty() || !self.chunk_sent {
            self.write_chunk(l);
        }
        let var = format!("@lb{}", l.var.expect("a literal in a variable"));
        self.out.extend_from_slice(
            format!(
                "SET @lb_check = COALESCE(LENGTH({var}), (SELECT '{var} is NULL: a value over max_allowed_packet' UNION ALL SELECT 'restore stopped'));\n"
            )
            .as_bytes(),
        );
    }

    /// Rows per table, or why the stream could not be read.
    pub fn finish(self) -> Result<BTreeMap<String, u64>, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::LineStart(_) | State::Skip => Ok(self.counts),
            _ => Err(format!(
                "the mariadb-dump output ended inside a statement at line {}",
                self.line
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The rewritten dump and its row counts.
    fn filter(dump: &[u8], pieces: usize) -> (Vec<u8>, Result<BTreeMap<String, u64>, String>) {
        let mut f = DumpFilter::new("shop", "");
        let mut out = Vec::new();
        for piece in dump.chunks(pieces.max(1)) {
            f.feed(piece);
            out.extend(f.take_output());
        }
        f.end();
        out.extend(f.take_output());
        (out, f.finish())
    }

    fn count(dump: &str) -> Result<BTreeMap<String, u64>, String> {
        filter(dump.as_bytes(), 7).1
    }

    #[test]
    fn counts_rows_of_real_dump_shapes() {
        let dump = "/*M!999999\\- enable the sandbox mode */ \n\
            --\n-- Dumping data for table `a`\n--\n\n\
            LOCK TABLES `a` WRITE;\n\
            INSERT INTO `a` VALUES\n(1,'x(\\'),(y'),\n(2,'a\\\\b'),\n(3,'it''s;)');\n\
            UNLOCK TABLES;\n\
            -- Dumping data for table `empty`\n\
            -- Dumping data for table `we``ird`\n\
            INSERT INTO `we``ird` VALUES (1,0x28),(2,NULL);\n\
            INSERT INTO `a` VALUES (4,'')\n;\n\
            SELECT 'INSERT INTO `a` VALUES (9)';\n\
            -- no newline at the end";
        let (out, counts) = filter(dump.as_bytes(), 5);
        let expected: BTreeMap<String, u64> = [("a", 4), ("empty", 0), ("we`ird", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(counts.unwrap(), expected);
        // Nothing to rewrite: the dump passes unchanged.
        assert_eq!(String::from_utf8(out).unwrap(), dump);
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        for (dump, why) in [
            ("INSERT INTO `a` (`x`) VALUES (1);\n", "without VALUES"),
            ("INSERT INTO `a` VALUES 1;\n", "do not start with"),
            ("INSERT INTO `a` VALUES (1));\n", "unbalanced"),
            ("INSERT INTO `a` VALUES (1,'x\n", "ended inside"),
            ("INSERT INTO `a\n", "unterminated"),
        ] {
            let err = count(dump).unwrap_err();
            assert!(err.contains(why), "{dump:?}: {err}");
        }
    }

    #[test]
    fn head_after_the_first_line_and_alter_database_without_the_source_name() {
        let dump = "/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n\
            ALTER DATABASE `shop` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci ;\n\
            ALTER DATABASE `shop` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci ;;\n\
            ALTER DATABASE `other` CHARACTER SET latin1 ;\n\
            ALTER DATABASE `sh``op` CHARACTER SET latin1 ;\n";
        let mut f = DumpFilter::new("shop", "HEAD;\n");
        f.feed(dump.as_bytes());
        f.end();
        let out = String::from_utf8(f.take_output()).unwrap();
        assert_eq!(
            out,
            "/*M!999999\\- enable the sandbox mode */ \nHEAD;\n-- MariaDB dump\n\
             ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci ;\n\
             ALTER DATABASE CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci ;;\n\
             ALTER DATABASE `other` CHARACTER SET latin1 ;\n\
             ALTER DATABASE `sh``op` CHARACTER SET latin1 ;\n"
        );
    }

    /// Replays the variables of a rewritten dump: every `@lbN` becomes the literal its SET
    /// statements built, the SET lines go, and split statements are joined again.
    fn replay(out: &str) -> String {
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        let mut rest = String::new();
        for line in out.split_inclusive('\n') {
            if let Some(set) = line.strip_prefix("SET @lb_check") {
                assert!(set.contains("COALESCE(LENGTH(@lb"), "{set}");
            } else if line.starts_with("SET @lb") && line.ends_with("= NULL;\n") {
                continue;
            } else if let Some(set) = line.strip_prefix("SET @lb") {
                let (var, value) = set.split_once(" = ").unwrap();
                let var = format!("@lb{var}");
                let value = value.strip_suffix(";\n").unwrap();
                match value.strip_prefix(&format!("CONCAT({var}, ")) {
                    Some(more) => {
                        let more = more.strip_suffix(')').unwrap();
                        let old = vars.get_mut(&var).unwrap();
                        if let Some(hex) = more.strip_prefix("0x") {
                            old.push_str(hex);
                        } else {
                            old.pop();
                            old.push_str(&more[1..]);
                        }
                    }
                    None => {
                        vars.insert(var, value.to_string());
                    }
                }
            } else {
                let mut line = line.to_string();
                for (var, value) in vars.iter().rev() {
                    line = line.replace(var, value);
                }
                rest.push_str(&line);
            }
        }
        joined(&rest)
    }

    fn joined(dump: &str) -> String {
        dump.replace(";\nINSERT INTO `t` VALUES\n", ",\n")
    }

    #[test]
    fn long_rows_are_built_in_variables_within_the_statement_limit() {
        let hex: String = (0..3_000_000u32)
            .map(|i| format!("{:02X}", i % 251))
            .collect();
        let text: String = "it\\'s é \\\\ 漢字 ".repeat(200_000);
        let small = "(1,'a',0x00)";
        let dump = format!(
            "-- first line\nINSERT INTO `t` VALUES\n{small},\n(2,0x{hex},'{text}'),\n(3,'b',NULL);\n\
             INSERT INTO `t` VALUES\n(4,'{text}',0x{hex});\nUNLOCK TABLES;\n"
        );
        for pieces in [1 << 16, 4093] {
            let (out, counts) = filter(dump.as_bytes(), pieces);
            assert_eq!(counts.unwrap().get("t"), Some(&4));
            let out = String::from_utf8(out).expect("never splits a UTF-8 character");
            for statement in out.split(";\n") {
                assert!(
                    statement.len() <= STATEMENT_LIMIT + 200,
                    "a statement of {} bytes",
                    statement.len()
                );
            }
            assert!(out.contains("SET @lb0 = CONCAT(@lb0, "), "{}", &out[..200]);
            assert_eq!(replay(&out), joined(&dump));
        }
    }

    /// mariadb-dump's string escaping.
    fn escape(s: &str) -> String {
        let mut out = String::from("'");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\0' => out.push_str("\\0"),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }

    proptest! {
        /// Any strings, any chunking: the count is the number of rows written, and a dump
        /// of small rows passes unchanged.
        #[test]
        fn counts_any_rows_in_any_chunks(
            rows in proptest::collection::vec(".*", 0..40),
            splits in proptest::collection::vec(1usize..64, 1..20),
        ) {
            let mut dump = String::from("-- Dumping data for table `t`\n");
            if !rows.is_empty() {
                dump.push_str("INSERT INTO `t` VALUES\n");
                let values: Vec<String> = rows
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("({i},{})", escape(s)))
                    .collect();
                dump.push_str(&values.join(",\n"));
                dump.push_str(";\n");
            }
            let bytes = dump.as_bytes();
            let mut c = DumpFilter::new("t", "");
            let mut out = Vec::new();
            let mut at = 0;
            for s in splits.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + s).min(bytes.len());
                c.feed(&bytes[at..end]);
                out.extend(c.take_output());
                at = end;
            }
            c.end();
            out.extend(c.take_output());
            let counts = c.finish().unwrap();
            prop_assert_eq!(counts.get("t").copied(), Some(rows.len() as u64));
            prop_assert_eq!(out, bytes.to_vec());
        }
    }
}
