//! The operator runbooks under docs/runbooks/ are kept true: every Lifeboat command line in them
//! is checked against the binary's `--help`; the restore-without-Lifeboat script is run as
//! written on real SQLite, PostgreSQL and MariaDB backups; the loss of the operator key is
//! recovered with the escrow key as the runbook says; `tenant erase` erases, and refuses.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use support::*;

const RUNBOOKS: [&str; 6] = [
    "README.md",
    "region-loss.md",
    "catalog-loss.md",
    "master-key-rotation.md",
    "restore-without-lifeboat.md",
    "tenant-erasure.md",
];

fn runbook(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("docs/runbooks")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ---- Commands against --help ---------------------------------------------------------------

/// The binary's help per subcommand path, asked once each.
#[derive(Default)]
struct Help(HashMap<Vec<String>, String>);

impl Help {
    fn of(&mut self, path: &[String]) -> &str {
        self.0.entry(path.to_vec()).or_insert_with(|| {
            let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
                .args(path)
                .arg("--help")
                .env_remove("LIFEBOAT_CONFIG")
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "lifeboat {} --help: {}",
                path.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).to_string()
        })
    }

    /// The subcommands listed under `Commands:`.
    fn subcommands(&mut self, path: &[String]) -> Vec<String> {
        let mut out = Vec::new();
        let mut listing = false;
        for line in self.of(path).lines() {
            if line.trim_end() == "Commands:" {
                listing = true;
            } else if listing {
                if !line.starts_with("  ") {
                    break;
                }
                out.extend(line.split_whitespace().next().map(str::to_string));
            }
        }
        out
    }

    /// The long options of the help's option lines, and whether each takes a value.
    fn options(&mut self, path: &[String]) -> HashMap<String, bool> {
        let mut out = HashMap::new();
        for line in self.of(path).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if !words.first().is_some_and(|w| w.starts_with('-')) {
                continue;
            }
            for (i, w) in words.iter().enumerate() {
                let w = w.trim_end_matches(',');
                if !w.starts_with('-') {
                    break;
                }
                if w.starts_with("--") {
                    let takes = words.get(i + 1).is_some_and(|n| n.starts_with('<'));
                    out.insert(w.to_string(), takes);
                }
            }
        }
        out
    }
}

/// Checks one `lifeboat …` command line: every word before the arguments is a subcommand, the
/// path ends at a leaf, and every `--flag` is an option of that subcommand.
fn check_command(help: &mut Help, words: &[String]) -> Result<(), String> {
    let line = words.join(" ");
    let mut path: Vec<String> = Vec::new();
    let mut positional = false;
    let mut i = 1;
    while i < words.len() {
        let w = &words[i];
        if let Some(flag) = w.strip_prefix("--") {
            let name = format!("--{}", flag.split('=').next().unwrap_or_default());
            match help.options(&path).get(&name) {
                None => {
                    return Err(format!(
                        "`{line}`: {name} is not an option of `lifeboat {}`",
                        path.join(" ")
                    ));
                }
                Some(true) if !w.contains('=') => i += 1,
                Some(_) => {}
            }
        } else if w.starts_with('-') {
            return Err(format!("`{line}`: short option {w} (use the long form)"));
        } else if !positional && help.subcommands(&path).contains(w) {
            path.push(w.clone());
        } else if help.subcommands(&path).is_empty() {
            positional = true;
        } else {
            return Err(format!(
                "`{line}`: {w:?} is not a subcommand of `lifeboat {}` (one of {:?})",
                path.join(" "),
                help.subcommands(&path)
            ));
        }
        i += 1;
    }
    let subs = help.subcommands(&path);
    // A command with options of its own beside subcommands (`restore`) has a usage form
    // without <COMMAND>.
    let own_form = help
        .of(&path)
        .lines()
        .skip_while(|l| !l.starts_with("Usage:"))
        .take_while(|l| !l.trim().is_empty())
        .any(|l| !l.contains("<COMMAND>"));
    if !subs.is_empty() && !own_form {
        return Err(format!(
            "`{line}`: `lifeboat {}` needs a subcommand, one of {subs:?}",
            path.join(" ")
        ));
    }
    Ok(())
}

/// Splits shell text into commands (words), at `|`, `;`, `&`, `(`, `)`, redirections and line
/// ends; handles quotes, backslash escapes, line continuations and comments.
fn shell_commands(text: &str) -> Vec<Vec<String>> {
    let mut commands = vec![Vec::new()];
    let mut word: Option<String> = None;
    let mut chars = text.chars().peekable();
    fn end_word(commands: &mut [Vec<String>], word: &mut Option<String>) {
        if let Some(w) = word.take() {
            commands.last_mut().unwrap().push(w);
        }
    }
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    w.push(c);
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => w.extend(chars.next()),
                        c => w.push(c),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') | None => end_word(&mut commands, &mut word),
                Some(c) => word.get_or_insert_with(String::new).push(c),
            },
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
                end_word(&mut commands, &mut word);
                commands.push(Vec::new());
            }
            c if c.is_whitespace() && c != '\n' => end_word(&mut commands, &mut word),
            '\n' | '|' | ';' | '&' | '(' | ')' | '<' | '>' | '$' | '`' => {
                end_word(&mut commands, &mut word);
                commands.push(Vec::new());
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    end_word(&mut commands, &mut word);
    commands
        .into_iter()
        .map(|words| {
            // Leading `VAR=value` assignments are not the command.
            words
                .into_iter()
                .skip_while(|w| w.contains('=') && !w.starts_with('-'))
                .collect::<Vec<_>>()
        })
        .filter(|words| words.first().is_some_and(|w| w == "lifeboat"))
        .collect()
}

/// Every `lifeboat …` command of a Markdown text: in fenced code blocks, and inline code spans
/// that start with `lifeboat `.
fn markdown_commands(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut block: Option<String> = None;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            match block.take() {
                Some(b) => out.extend(shell_commands(&b)),
                None => block = Some(String::new()),
            }
            continue;
        }
        match &mut block {
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {
                for span in line.split('`').skip(1).step_by(2) {
                    if span.starts_with("lifeboat ") {
                        out.extend(shell_commands(span));
                    }
                }
            }
        }
    }
    assert!(block.is_none(), "an unclosed code block");
    out
}

fn command_errors(help: &mut Help, text: &str) -> Vec<String> {
    markdown_commands(text)
        .iter()
        .filter_map(|c| check_command(help, c).err())
        .collect()
}

#[test]
fn every_lifeboat_command_in_the_runbooks_names_a_real_subcommand_and_real_flags() {
    let mut help = Help::default();
    // The checker itself: wrong subcommands and flags are caught, right ones pass.
    let cases: &[(&str, bool)] = &[
        ("`lifeboat verify --deep --repair`", true),
        (
            "`lifeboat --config x.toml verify --max-rate 1MiB --json`",
            true,
        ),
        (
            "```sh\nLIFEBOAT_LOG=info lifeboat restore --tenant acme \\\n  --region us-east --to-side x\n```",
            true,
        ),
        (
            "`lifeboat tenant erase acme --reason \"GDPR --not-a-flag\"`",
            true,
        ),
        ("`lifeboat verify --deeep`", false),
        ("`lifeboat tenant eras acme --reason x`", false),
        ("`lifeboat catalog --from eu`", false),
        (
            "`lifeboat restore --tenant acme --over-live --reason \"INC-7\"`",
            true,
        ),
        ("`lifeboat restore rollback ID --reason x`", true),
        ("`lifeboat restore finalise ID --reason x`", false),
        ("`lifeboat restore finalize ID --over-live`", false),
        ("`lifeboat catalog rebuild --region eu`", false),
        (
            "```sh\nlifeboat metrics | grep x\nlifeboat keys rotate-master --old-identity eu\n```",
            false,
        ),
    ];
    for (text, ok) in cases {
        let errors = command_errors(&mut help, text);
        assert_eq!(errors.is_empty(), *ok, "{text}: {errors:?}");
    }

    let mut checked = 0;
    let mut errors = Vec::new();
    let mut all = String::new();
    for name in RUNBOOKS {
        let text = runbook(name);
        checked += markdown_commands(&text).len();
        errors.extend(
            command_errors(&mut help, &text)
                .into_iter()
                .map(|e| format!("{name}: {e}")),
        );
        all.push_str(&text);
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(checked >= 40, "only {checked} commands found");
    // The index links every runbook, and each runbook has the commands of its procedure.
    let index = runbook("README.md");
    for name in &RUNBOOKS[1..] {
        assert!(
            index.contains(&format!("]({name})")),
            "README misses {name}"
        );
    }
    let expected: &[(&str, &[&str])] = &[
        (
            "region-loss.md",
            &[
                "lifeboat verify",
                "lifeboat_replication_lag_seconds",
                "lifeboat_copies_pending",
                "lifeboat restore --tenant acme --region us-east",
                "role = \"primary\"",
                "lifeboat drill run restore-drills/region-loss.toml",
                "lifeboat replicate",
                "lifeboat verify --deep --repair",
            ],
        ),
        (
            "catalog-loss.md",
            &[
                "lifeboat catalog rebuild --from eu-west",
                "lifeboat tenant hold",
                "lifeboat verify --deep",
            ],
        ),
        (
            "master-key-rotation.md",
            &[
                "lifeboat keys init --out",
                "master-recipients",
                "lifeboat keys rotate-master --old-identity-file /etc/lifeboat/master.key",
                "lifeboat keys rotate-master --old-identity-file /etc/lifeboat/escrow.key",
            ],
        ),
        (
            "tenant-erasure.md",
            &[
                "lifeboat tenant terminate acme",
                "lifeboat tenant erase acme",
            ],
        ),
    ];
    for (name, needles) in expected {
        let text = runbook(name);
        for n in *needles {
            assert!(text.contains(n), "{name} does not say {n:?}");
        }
    }
}

// ---- Restore without Lifeboat ----------------------------------------------------------------

/// The one ```sh block of the runbook: the script an operator runs.
fn restore_script() -> String {
    let text = runbook("restore-without-lifeboat.md");
    let blocks: Vec<&str> = text
        .split("```sh\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 1, "exactly one ```sh block");
    let script = blocks[0].to_string();
    assert!(
        !shell_commands(&script).iter().any(|c| c[0] == "lifeboat"),
        "the script must not need Lifeboat"
    );
    script
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Every file under `dir`, relative, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&e.path()).into_iter().map(|f| format!("{name}/{f}")));
        } else {
            out.push(name);
        }
    }
    out.sort();
    out
}

struct ScriptRun {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs the runbook's script with bash, exactly as written, with only these variables added.
fn run_script(inst: &Install, vars: &[(&str, String)]) -> ScriptRun {
    let tmp = inst.path("script-tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let path = format!(
        "{}:{}",
        pg_bindir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &restore_script()])
        .env_clear()
        .env("PATH", path)
        .env("HOME", inst.dir.path())
        .env("TMPDIR", &tmp)
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .current_dir(inst.dir.path())
        .output()
        .unwrap();
    assert!(
        files(&tmp).is_empty(),
        "the script left {:?} behind (the unwrapped key or the dump)",
        files(&tmp)
    );
    ScriptRun {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn pg_fingerprint(pg: &Postgres, db: &str) -> String {
    let mut out = String::new();
    for t in ["customers", "orders"] {
        out += &pg.psql(
            db,
            &format!(
                "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {t} t"
            ),
        );
        out.push('\n');
    }
    out += &pg.psql(
        db,
        "SELECT string_agg(sequencename || '=' || coalesce(last_value, 0), ',' ORDER BY sequencename) FROM pg_sequences",
    );
    out
}

const MARIADB_ROWS: &str = "SELECT id, email, HEX(data), note FROM users ORDER BY id";

fn dir_regions(inst: &Install, tenants: &str) {
    inst.write_config(&format!("{}{DIR_REGIONS}{tenants}", inst.head()));
}

fn completed_backups(inst: &Install, tenant: &str) -> Vec<String> {
    inst.column(&format!(
        "SELECT id FROM backups WHERE tenant_id = '{tenant}' AND status = 'completed' ORDER BY id"
    ))
}

#[test]
fn the_restore_without_lifeboat_script_restores_sqlite_postgres_and_mariadb_tenants() {
    let pg = Postgres::start();
    let my = Mariadb::start();
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    pg.psql("postgres", "CREATE DATABASE acme");
    pg.psql(
        "acme",
        "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, meta jsonb); \
         INSERT INTO customers (name, meta) SELECT 'customer ' || g, jsonb_build_object('n', g) FROM generate_series(1, 700) g; \
         CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), cents int, note text); \
         INSERT INTO orders (customer_id, cents, note) SELECT 1 + g % 700, g * 3, 'Zürich ' || g FROM generate_series(1, 2500) g;",
    );
    my.sql("", "CREATE DATABASE initech");
    my.sql(
        "initech",
        "CREATE TABLE users (id INT AUTO_INCREMENT PRIMARY KEY, email VARCHAR(100), data BLOB, note TEXT) \
         DEFAULT CHARSET = utf8mb4; \
         INSERT INTO users (email, data, note) SELECT CONCAT('u', seq, '@example.com'), UNHEX(SHA2(seq, 256)), \
         CONCAT('naïve ', seq) FROM seq_1_to_400;",
    );
    let pw = inst.path("my.password");
    write_private(&pw, &my.password);
    dir_regions(
        &inst,
        &format!(
            "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
             [[tenants]]\nid = \"acme\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{}\"\n\n\
             [[tenants]]\nid = \"initech\"\nengine = \"mariadb\"\ntier = \"free\"\nurl = \"{}\"\npassword-file = \"{}\"\n",
            pg.url("acme"),
            my.url("initech"),
            pw.display()
        ),
    );
    inst.run(&["backup", "--all"]).ok();
    // The first backup's state of shop, then a change and a second backup: the script restores
    // the newest by default and the first one when asked.
    let first = inst.path("shop-first.db");
    sqlite_exec(
        &inst.path("shop.db"),
        &format!("VACUUM INTO '{}'", first.display()),
    );
    sqlite_exec(
        &inst.path("shop.db"),
        "INSERT INTO users (email, note) VALUES ('late@example.com', 'after the first backup')",
    );
    inst.run(&["backup", "--tenant", "shop"]).ok();
    let shop_backups = completed_backups(&inst, "shop");
    assert_eq!(shop_backups.len(), 2);

    // What an operator has: the master identity, and each tenant's prefix fetched from region us.
    let download = |tenant: &str| {
        let to = inst.path(&format!("download/{tenant}"));
        copy_dir(&inst.path(&format!("regions/us/v1/tenants/{tenant}")), &to);
        to.display().to_string()
    };
    let master = inst.master_key.display().to_string();
    let with = |backup_dir: &str, target: &str, extra: &[(&'static str, String)]| {
        let mut vars = vec![
            ("MASTER_IDENTITY", master.clone()),
            ("BACKUP_DIR", backup_dir.to_string()),
            ("TARGET", target.to_string()),
        ];
        vars.extend_from_slice(extra);
        vars
    };

    // SQLite, newest backup.
    let shop = download("shop");
    let target = inst.path("shop-restored.db");
    let run = run_script(&inst, &with(&shop, target.to_str().unwrap(), &[]));
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("restored backup {} to", shop_backups[1])),
        "{}",
        run.stdout
    );
    sqlite_equal(&inst.path("shop.db"), &target);
    // SQLite, the first backup by id.
    let target = inst.path("shop-first-restored.db");
    let run = run_script(
        &inst,
        &with(
            &shop,
            target.to_str().unwrap(),
            &[("BACKUP_ID", shop_backups[0].clone())],
        ),
    );
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    sqlite_equal(&first, &target);
    // An existing target is refused and left alone.
    let run = run_script(&inst, &with(&shop, target.to_str().unwrap(), &[]));
    assert!(!run.ok && run.stderr.contains("exists"), "{}", run.stderr);
    sqlite_equal(&first, &target);

    // A tampered artifact stops the script before anything is restored.
    let tampered = inst.path("download/tampered");
    copy_dir(Path::new(&shop), &tampered);
    let artifact = tampered.join(format!("backups/{}.dump.zst.age", shop_backups[1]));
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&artifact, bytes).unwrap();
    let target = inst.path("tampered.db");
    let run = run_script(
        &inst,
        &with(tampered.to_str().unwrap(), target.to_str().unwrap(), &[]),
    );
    assert!(
        !run.ok && run.stdout.contains(": FAILED") && run.stderr.contains("did NOT match"),
        "{}\n{}",
        run.stdout,
        run.stderr
    );
    assert!(!target.exists());

    // PostgreSQL, into a new database on the same server.
    let acme = download("acme");
    let run = run_script(
        &inst,
        &with(
            &acme,
            "acme_restored",
            &[
                ("PGHOST", "127.0.0.1".to_string()),
                ("PGPORT", pg.port.to_string()),
                ("PGUSER", "postgres".to_string()),
            ],
        ),
    );
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("\"public.orders\":2500"),
        "{}",
        run.stdout
    );
    assert_eq!(
        pg_fingerprint(&pg, "acme"),
        pg_fingerprint(&pg, "acme_restored")
    );

    // MariaDB, with the credentials in an option file.
    let cnf = inst.path("restore.cnf");
    write_private(
        &cnf,
        &format!(
            "[client]\nhost = 127.0.0.1\nport = {}\nuser = lifeboat\npassword = {}\n",
            my.port, my.password
        ),
    );
    let initech = download("initech");
    let run = run_script(
        &inst,
        &with(
            &initech,
            "initech_restored",
            &[("MARIADB_CNF", cnf.display().to_string())],
        ),
    );
    assert!(run.ok, "{}\n{}", run.stdout, run.stderr);
    let source = my.sql("initech", MARIADB_ROWS);
    assert_eq!(source.lines().count(), 400);
    assert_eq!(source, my.sql("initech_restored", MARIADB_ROWS));
}

// ---- Master key loss -------------------------------------------------------------------------

fn keys_init(path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
        .args(["keys", "init", "--out"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every wrapped tenant key: each region's key objects and the catalog's rows.
fn wrapped_keys(inst: &Install) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for region in ["eu", "us"] {
        let root = inst.path(&format!("regions/{region}/v1/tenants"));
        for f in files(&root).into_iter().filter(|f| f.contains("/keys/")) {
            out.push((
                format!("{region}: {f}"),
                std::fs::read(root.join(&f)).unwrap(),
            ));
        }
    }
    let path = inst.path("catalog.db");
    let rows: Vec<(String, Vec<u8>)> = block_on(async move {
        use sqlx::{Connection, Row};
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        sqlx::query("SELECT key_id, wrapped FROM tenant_keys ORDER BY key_id")
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<Vec<u8>, _>(1)))
            .collect()
    });
    out.extend(rows.into_iter().map(|(k, w)| (format!("catalog: {k}"), w)));
    assert_eq!(
        out.len(),
        2 * 3,
        "2 tenant keys in 2 regions and the catalog"
    );
    out
}

fn opens_all(inst: &Install, identity: &Path) -> bool {
    wrapped_keys(inst)
        .iter()
        .all(|(_, w)| age_opens(identity, w, inst.dir.path()))
}

fn opens_none(inst: &Install, identity: &Path) -> bool {
    wrapped_keys(inst)
        .iter()
        .all(|(_, w)| !age_opens(identity, w, inst.dir.path()))
}

#[test]
fn a_lost_operator_key_is_recovered_with_the_escrow_key_as_the_runbook_says() {
    let inst = Install::new();
    let safe = inst.path("safe");
    std::fs::create_dir(&safe).unwrap();
    let escrow = safe.join("escrow.key");
    let escrow_recipient = keys_init(&escrow);
    make_sqlite_tenant(&inst.path("shop.db"), "shop-marker");
    make_sqlite_tenant(&inst.path("blog.db"), "blog-marker");
    let tenants = "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
                   [[tenants]]\nid = \"blog\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"blog.db\"\n";
    // As in deploy/lifeboat.example.toml: the operator key and the offline escrow key.
    let config = |recipients: &[&str], identity: &Path| {
        let list: Vec<String> = recipients.iter().map(|r| format!("\"{r}\"")).collect();
        dir_regions(&inst, tenants);
        let text = std::fs::read_to_string(&inst.config).unwrap().replace(
            &format!(
                "master-recipients = [\"{}\"]\nmaster-identity-file = \"master.key\"",
                inst.recipient
            ),
            &format!(
                "master-recipients = [{}]\nmaster-identity-file = \"{}\"",
                list.join(", "),
                identity.display()
            ),
        );
        assert!(text.contains(&list.join(", ")), "the config head changed");
        inst.write_config(&text);
        inst.run(&["config", "check"]).ok();
    };
    config(&[&inst.recipient, &escrow_recipient], &inst.master_key);
    inst.run(&["backup", "--all"]).ok();
    assert!(opens_all(&inst, &escrow) && opens_all(&inst, &inst.master_key));

    // The operator key is lost (kept aside here only to prove, at the end, that it opens nothing).
    let lost = inst.path("lost-operator.key");
    std::fs::rename(&inst.master_key, &lost).unwrap();
    inst.restore("shop", &[], inst.path("r0.db")).failed();

    // B.2: a restore that cannot wait, with the escrow identity.
    config(&[&inst.recipient, &escrow_recipient], &escrow);
    let target = inst.path("r1.db");
    inst.restore("shop", &[], &target).ok();
    sqlite_equal(&inst.path("shop.db"), &target);

    // B.3: a new operator key, in place of the lost one, the escrow recipient kept.
    let new_key = inst.path("master-2027.key");
    let new_recipient = keys_init(&new_key);
    config(&[&new_recipient, &escrow_recipient], &new_key);
    // Nothing is wrapped to it yet: the rotation is what makes it work.
    inst.restore("shop", &[], inst.path("r2.db")).failed();
    // B.4: re-wrap, opening the tenant keys with the escrow identity.
    let out = inst
        .run(&[
            "keys",
            "rotate-master",
            "--old-identity-file",
            escrow.to_str().unwrap(),
        ])
        .ok();
    assert!(
        out.stdout
            .contains("re-wrapped 2 tenant keys to 2 master recipients; 6 wrapped copies"),
        "{}",
        out.stdout
    );
    // B.5: restores work with the new key, from either region.
    for (region, tenant) in [("eu", "shop"), ("us", "blog")] {
        let target = inst.path(&format!("{tenant}-after-rotation.db"));
        inst.restore(tenant, &["--region", region], &target).ok();
        sqlite_equal(&inst.path(&format!("{tenant}.db")), &target);
    }
    assert!(
        opens_all(&inst, &new_key),
        "the new operator key opens every copy"
    );
    assert!(
        opens_all(&inst, &escrow),
        "the escrow key still opens every copy"
    );
    assert!(
        opens_none(&inst, &lost),
        "the lost operator key opens nothing"
    );

    // B.6: the escrow key was on a server: replace it, the current operator key opening.
    let new_escrow = safe.join("escrow-2027.key");
    let new_escrow_recipient = keys_init(&new_escrow);
    config(&[&new_recipient, &new_escrow_recipient], &new_key);
    inst.run(&[
        "keys",
        "rotate-master",
        "--old-identity-file",
        new_key.to_str().unwrap(),
    ])
    .ok();
    assert!(opens_all(&inst, &new_key) && opens_all(&inst, &new_escrow));
    assert!(
        opens_none(&inst, &escrow),
        "the old escrow key opens nothing"
    );
    assert!(opens_none(&inst, &lost));
    let target = inst.path("shop-final.db");
    inst.restore("shop", &["--region", "us"], &target).ok();
    sqlite_equal(&inst.path("shop.db"), &target);
    let actions = inst.column("SELECT action FROM audit_log WHERE action = 'key.rotate-master'");
    assert_eq!(actions.len(), 2);
}

// ---- Tenant erasure --------------------------------------------------------------------------

/// Everything a refused erasure must leave as it was: every region's files and the catalog's
/// tenants, keys, backups, copies, deletions, certificates and audit log.
fn state(inst: &Install) -> (Vec<String>, BTreeMap<&'static str, Vec<Vec<String>>>) {
    let queries = [
        (
            "tenants",
            "SELECT id, state, legal_hold, purge_started_at, key_shredded_at, purged_at FROM tenants ORDER BY id",
        ),
        (
            "keys",
            "SELECT key_id, tenant_id FROM tenant_keys ORDER BY key_id",
        ),
        ("backups", "SELECT id, status FROM backups ORDER BY id"),
        (
            "copies",
            "SELECT backup_id, region, state FROM copies ORDER BY backup_id, region",
        ),
        ("deletions", "SELECT count(*) FROM deletions"),
        ("certificates", "SELECT count(*) FROM deletion_certificates"),
        ("audit", "SELECT count(*) FROM audit_log"),
    ];
    (
        files(&inst.path("regions")),
        queries
            .into_iter()
            .map(|(k, q)| (k, inst.catalog_query(q)))
            .collect(),
    )
}

fn tenant_files(inst: &Install, region: &str, tenant: &str) -> Vec<String> {
    files(&inst.path(&format!("regions/{region}/v1/tenants/{tenant}")))
}

#[test]
fn tenant_erase_purges_a_terminated_tenant_now_and_refuses_everything_else() {
    let inst = Install::new();
    for t in ["shop", "blog", "held"] {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), &format!("{t}-marker"));
    }
    dir_regions(
        &inst,
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
         [[tenants]]\nid = \"blog\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"blog.db\"\n\n\
         [[tenants]]\nid = \"held\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"held.db\"\n",
    );
    inst.run(&["backup", "--all"]).ok();
    inst.run(&["backup", "--all"]).ok();
    for region in ["eu", "us"] {
        for t in ["shop", "blog", "held"] {
            assert_eq!(tenant_files(&inst, region, t).len(), 2 * 2 + 1);
        }
    }
    inst.run(&["tenant", "terminate", "held", "--reason", "TICKET-7 left"])
        .ok();
    inst.run(&["tenant", "hold", "held", "--reason", "LEGAL-12 dispute"])
        .ok();

    // Refusals: a clear reason naming the tenant, a failure exit, and nothing changed.
    let before = state(&inst);
    let refusals: &[(&str, &str, &[&str])] = &[
        (
            "blog",
            "PRIV-1",
            &[
                "tenant blog cannot be erased",
                "is active, not terminated",
                "lifeboat tenant terminate blog",
            ],
        ),
        (
            "held",
            "PRIV-2",
            &[
                "tenant held cannot be erased",
                "under legal hold (LEGAL-12 dispute)",
                "Nothing was deleted",
            ],
        ),
        (
            "ghost",
            "PRIV-3",
            &["tenant ghost cannot be erased", "unknown"],
        ),
        ("../etc", "PRIV-4", &["invalid tenant id \"../etc\""]),
        ("Shop", "PRIV-5", &["invalid tenant id \"Shop\""]),
        ("shop", "  ", &["tenant shop", "--reason is empty"]),
    ];
    for (tenant, reason, says) in refusals {
        let out = inst
            .run(&["tenant", "erase", tenant, "--reason", reason])
            .failed();
        for s in *says {
            assert!(
                out.stderr.contains(s),
                "{tenant}: {s:?} not in {}",
                out.stderr
            );
        }
        assert!(
            state(&inst) == before,
            "refusing to erase {tenant} changed something"
        );
    }

    // Shop's erasure request: terminated now, erased now. The first run stops right after
    // shredding the keys of region eu, as a crash would.
    inst.run(&[
        "tenant",
        "terminate",
        "shop",
        "--reason",
        "PRIV-9 erasure request",
    ])
    .ok();
    let shop_objects: Vec<(String, String)> = ["eu", "us"]
        .iter()
        .flat_map(|r| {
            tenant_files(&inst, r, "shop")
                .into_iter()
                .map(move |f| (r.to_string(), format!("v1/tenants/shop/{f}")))
        })
        .collect();
    let reason = "GDPR art. 17 request PRIV-9, approved by legal";
    let out = lifeboat_env(
        &inst.config,
        &["tenant", "erase", "shop", "--reason", reason],
        &[("LIFEBOAT_TEST_FAULT", "purge-after-key-delete:eu")],
    );
    assert_eq!(out.code, 86, "{}", out.stderr);
    assert!(
        !tenant_files(&inst, "eu", "shop")
            .iter()
            .any(|f| f.starts_with("keys/"))
    );
    assert_eq!(
        tenant_files(&inst, "eu", "shop").len(),
        4,
        "eu: keys gone, backups left"
    );
    assert_eq!(
        tenant_files(&inst, "us", "shop").len(),
        5,
        "us: untouched yet"
    );
    let out = inst
        .run(&["tenant", "reinstate", "shop", "--reason", "changed mind"])
        .failed();
    assert!(
        out.stderr.contains("can no longer be reinstated"),
        "{}",
        out.stderr
    );

    // Run again: the purge resumes and completes.
    let out = inst
        .run(&["tenant", "erase", "shop", "--reason", reason])
        .ok();
    assert!(
        out.stdout
            .contains("tenant shop erased: its keys were shredded, then")
            && out.stdout.contains("deletion certificate"),
        "{}",
        out.stdout
    );
    for region in ["eu", "us"] {
        assert!(
            tenant_files(&inst, region, "shop").is_empty(),
            "{region}: shop remains"
        );
        for t in ["blog", "held"] {
            assert_eq!(
                tenant_files(&inst, region, t).len(),
                5,
                "{region}: {t} untouched"
            );
        }
    }
    let one = |sql: &str| inst.catalog_query(sql)[0][0].clone();
    assert_eq!(
        one("SELECT count(*) FROM tenant_keys WHERE tenant_id = 'shop'"),
        "0"
    );
    assert_eq!(
        one("SELECT count(*) FROM backups WHERE tenant_id = 'shop'"),
        "0"
    );
    assert_eq!(one("SELECT state FROM tenants WHERE id = 'shop'"), "purged");
    assert_eq!(
        one("SELECT count(*) FROM deletion_certificates WHERE tenant_id = 'shop'"),
        "1"
    );
    let audit = inst.catalog_query(
        "SELECT action, outcome, reason FROM audit_log WHERE tenant_id = 'shop' ORDER BY seq",
    );
    let actions: Vec<&str> = audit.iter().map(|r| r[0].as_str()).collect();
    for a in [
        "tenant.terminate",
        "purge.start",
        "key.shred",
        "purge.region",
        "purge.complete",
    ] {
        assert!(actions.contains(&a), "{a} not in {actions:?}");
    }
    let erase: Vec<_> = audit.iter().filter(|r| r[0] == "tenant.erase").collect();
    assert_eq!(erase.len(), 1, "{audit:?}");
    assert!(
        erase[0][1] == "ok" && erase[0][2] == reason,
        "{:?}",
        erase[0]
    );
    assert_eq!(actions.last(), Some(&"tenant.erase"));

    // The certificate: every object of both runs, keys first, and why.
    let dir = inst.path("deletion-certificates");
    let json: PathBuf = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    assert!(json.with_extension("md").exists());
    let cert: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(cert["tenant"], "shop");
    let policy = cert["policy"].as_str().unwrap();
    assert!(
        policy.contains("erasure request") && policy.contains(reason),
        "{policy}"
    );
    let deleted = cert["deleted"].as_array().unwrap();
    let listed = certificate_deletions(&cert);
    let mut expected = shop_objects.clone();
    expected.sort();
    assert_eq!(listed, expected);
    let first_artifact = deleted
        .iter()
        .position(|d| d["kind"] == "artifact")
        .unwrap();
    assert_eq!(
        deleted[..first_artifact]
            .iter()
            .filter(|d| d["kind"] == "key")
            .count(),
        2,
        "keys of both regions go first"
    );

    // Afterwards: nothing to restore, a second erase is refused, retention has nothing of it.
    inst.restore("shop", &[], inst.path("shop-after.db"))
        .failed();
    let out = inst
        .run(&["tenant", "erase", "shop", "--reason", reason])
        .failed();
    assert!(
        out.stderr.contains("was already purged at"),
        "{}",
        out.stderr
    );
    let out = inst.run(&["retention", "apply"]).ok();
    assert!(out.stdout.contains("purged 0 tenants"), "{}", out.stdout);
}
