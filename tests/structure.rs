//! The shape of the code, checked: no function in `src/` longer than 200 lines (issue 16), so
//! every function can be read whole.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 200;

#[test]
fn no_function_in_src_is_longer_than_200_lines() {
    let mut long = Vec::new();
    for file in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for (name, line, lines) in functions(&text) {
            if lines > MAX_LINES {
                long.push(format!(
                    "{}:{line} fn {name}: {lines} lines",
                    file.display()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions longer than {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_function_scanner_measures_what_it_should() {
    let text = "fn a() {\n    let s = \"}\";\n    // }\n    let c = '{';\n}\n\
                pub async fn b(x: u8) -> u8 {\n    x\n}\nfn decl();\n";
    assert_eq!(
        functions(text),
        vec![("a".into(), 1, 5), ("b".into(), 6, 3)]
    );
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// Every `fn` with a body: its name, first line (1-based) and length in lines, counted from the
/// `fn` line to the line of its closing brace. Strings, characters and comments are skipped, so
/// their braces do not count.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let code = code_only(text);
    let lines: Vec<&str> = code.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = fn_name(line) else { continue };
        let mut depth = 0i64;
        let mut opened = false;
        for (j, l) in lines.iter().enumerate().skip(i) {
            if !opened && l.trim_end().ends_with(';') && !l.contains('{') {
                break; // a declaration without a body
            }
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                out.push((name.clone(), i + 1, j - i + 1));
                break;
            }
        }
    }
    out
}

fn fn_name(line: &str) -> Option<String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "fn")?;
    let before_ok = words[..at].iter().all(|w| {
        matches!(*w, "pub" | "async" | "unsafe" | "const" | "extern") || w.starts_with("pub(")
    });
    let name: String = words
        .get(at + 1)?
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (before_ok && !name.is_empty()).then_some(name)
}

/// The text without its comments and the contents of its strings and characters (newlines
/// kept, so lines still count): a rough lexer, enough to count braces.
fn code_only(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => skip_string(&mut chars, &mut out, 0),
            'r' if matches!(chars.peek(), Some('#' | '"')) => {
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.next() == Some('"') {
                    skip_string(&mut chars, &mut out, hashes);
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '\'' => {
                // A character literal ('{', '\n'); a lifetime ('a) has no closing quote soon.
                let rest: String = chars.clone().take(4).collect();
                let len = if let Some(escaped) = rest.strip_prefix('\\') {
                    escaped.find('\'').map(|end| end + 2)
                } else {
                    (rest.chars().nth(1) == Some('\'')).then_some(2)
                };
                for _ in 0..len.unwrap_or(0) {
                    chars.next();
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// Skips a string's contents up to its closing quote (and `hashes` #s for a raw string).
fn skip_string(chars: &mut std::iter::Peekable<std::str::Chars>, out: &mut String, hashes: usize) {
    while let Some(c) = chars.next() {
        match c {
            '\n' => out.push('\n'),
            // An escape; a line continuation keeps its newline.
            '\\' if hashes == 0 && chars.next() == Some('\n') => out.push('\n'),
            '"' => {
                let closing: String = chars.clone().take(hashes).collect();
                if closing.chars().all(|c| c == '#') && closing.len() == hashes {
                    for _ in 0..hashes {
                        chars.next();
                    }
                    return;
                }
            }
            _ => {}
        }
    }
}
