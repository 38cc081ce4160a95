//! Row counts read from a `mariadb-dump` stream as it passes through the pipeline.
//!
//! `mariadb-dump --single-transaction` takes its own snapshot, which no other connection can
//! join, so counting in a second transaction could disagree with the dump under concurrent
//! writes. Counting the rows of the dump itself is exact by construction, costs no lock, and
//! restore then checks that every row arrived. The parser streams: it keeps a bounded prefix of
//! each line, never a whole line, and refuses anything it does not recognise rather than guess.

use std::collections::BTreeMap;

const INSERT: &[u8] = b"INSERT INTO `";
const DUMPING: &[u8] = b"-- Dumping data for table `";
const VALUES: &[u8] = b" VALUES";
/// Identifiers are at most 64 characters (up to 4 bytes each, backticks doubled).
const MAX_NAME: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Insert,
    Dumping,
}

#[derive(Debug)]
enum State {
    /// At the start of a line, holding the bytes seen so far while they may still be a prefix.
    LineStart(usize),
    /// Skipping to the end of an uninteresting line.
    Skip,
    /// Reading a backtick-quoted table name; `tick` is set after a backtick that may be doubled.
    Name { kind: Kind, tick: bool },
    /// Matching " VALUES" after an INSERT's table name.
    AfterName(usize),
    /// Inside the values of an INSERT: counting top-level tuples.
    Values {
        depth: u32,
        quote: bool,
        escape: bool,
    },
}

/// Feeds on dump bytes in chunks of any size; `finish` yields rows per table.
#[derive(Debug)]
pub struct RowCounter {
    state: State,
    prefix: Vec<u8>,
    name: Vec<u8>,
    table: String,
    counts: BTreeMap<String, u64>,
    line: u64,
    error: Option<String>,
}

impl Default for RowCounter {
    fn default() -> Self {
        RowCounter {
            state: State::LineStart(0),
            prefix: Vec::new(),
            name: Vec::new(),
            table: String::new(),
            counts: BTreeMap::new(),
            line: 1,
            error: None,
        }
    }
}

impl RowCounter {
    pub fn feed(&mut self, data: &[u8]) {
        for &b in data {
            if self.error.is_some() {
                return;
            }
            self.byte(b);
            if b == b'\n' {
                self.line += 1;
            }
        }
    }

    fn fail(&mut self, what: &str) {
        self.error = Some(format!(
            "cannot count rows in the mariadb-dump output at line {}: {what}",
            self.line
        ));
    }

    fn byte(&mut self, b: u8) {
        match &mut self.state {
            State::LineStart(n) => {
                if b == b'\n' {
                    self.prefix.clear();
                    self.state = State::LineStart(0);
                    return;
                }
                let i = *n;
                let insert = i < INSERT.len() && INSERT[i] == b && self.prefix == INSERT[..i];
                let dumping = i < DUMPING.len() && DUMPING[i] == b && self.prefix == DUMPING[..i];
                if !insert && !dumping {
                    self.prefix.clear();
                    self.state = State::Skip;
                    return;
                }
                self.prefix.push(b);
                if self.prefix == INSERT || self.prefix == DUMPING {
                    let kind = if insert { Kind::Insert } else { Kind::Dumping };
                    self.prefix.clear();
                    self.name.clear();
                    self.state = State::Name { kind, tick: false };
                } else {
                    self.state = State::LineStart(i + 1);
                }
            }
            State::Skip => {
                if b == b'\n' {
                    self.state = State::LineStart(0);
                }
            }
            State::Name { kind, tick } => {
                let kind = *kind;
                if *tick {
                    if b == b'`' {
                        *tick = false;
                        self.name.push(b'`');
                        return;
                    }
                    // The name ended at the previous backtick.
                    let Ok(name) = String::from_utf8(std::mem::take(&mut self.name)) else {
                        return self.fail("a table name that is not UTF-8");
                    };
                    self.counts.entry(name.clone()).or_insert(0);
                    self.table = name;
                    match kind {
                        Kind::Dumping => {
                            self.state = State::Skip;
                            self.byte(b);
                        }
                        Kind::Insert => {
                            self.state = State::AfterName(0);
                            self.byte(b);
                        }
                    }
                } else if b == b'`' {
                    *tick = true;
                } else if b == b'\n' || self.name.len() >= MAX_NAME {
                    self.fail("an unterminated table name");
                } else {
                    self.name.push(b);
                }
            }
            State::AfterName(n) => {
                if *n < VALUES.len() {
                    if VALUES[*n] != b {
                        return self.fail("an INSERT without VALUES right after the table name");
                    }
                    *n += 1;
                } else if b == b' ' || b == b'\n' {
                    // mariadb-dump puts the first row on the next line.
                } else if b == b'(' {
                    self.state = State::Values {
                        depth: 0,
                        quote: false,
                        escape: false,
                    };
                    self.byte(b);
                } else {
                    self.fail("an INSERT whose VALUES do not start with '('");
                }
            }
            State::Values {
                depth,
                quote,
                escape,
            } => {
                if *quote {
                    if *escape {
                        *escape = false;
                    } else if b == b'\\' {
                        *escape = true;
                    } else if b == b'\'' {
                        // A doubled quote inside a string closes and reopens it: same count.
                        *quote = false;
                    }
                    return;
                }
                match b {
                    b'\'' => *quote = true,
                    b'(' => {
                        if *depth == 0 {
                            *self.counts.entry(self.table.clone()).or_insert(0) += 1;
                        }
                        *depth += 1;
                    }
                    b')' => {
                        if *depth == 0 {
                            return self.fail("an unbalanced ')' in an INSERT");
                        }
                        *depth -= 1;
                    }
                    b';' if *depth == 0 => self.state = State::Skip,
                    _ => {}
                }
            }
        }
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

    fn count(dump: &str) -> Result<BTreeMap<String, u64>, String> {
        let mut c = RowCounter::default();
        c.feed(dump.as_bytes());
        c.finish()
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
            SELECT 'INSERT INTO `a` VALUES (9)';\n";
        let counts = count(dump).unwrap();
        let expected: BTreeMap<String, u64> = [("a", 4), ("empty", 0), ("we`ird", 2)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(counts, expected);
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
        /// Any strings, any chunking: the count is the number of rows written.
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
            let mut c = RowCounter::default();
            let mut at = 0;
            for s in splits.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + s).min(bytes.len());
                c.feed(&bytes[at..end]);
                at = end;
            }
            let counts = c.finish().unwrap();
            prop_assert_eq!(counts.get("t").copied(), Some(rows.len() as u64));
        }
    }
}
