//! Engine round trips on hard schemas, with writes running during the dump: PostgreSQL,
//! MariaDB and SQLite through a Garage region and back, compared row by row.
//!
//! Every writer moves money in one transaction (a ledger row plus an account balance), so a
//! restore is consistent exactly when the balances equal the ledger's sum; the ledger only grows,
//! so the restored ledger must be a prefix of the live one and shorter than its final state.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use support::*;

/// A client process fed transactions on stdin in a loop until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    fn start(mut client: Command, statement: fn(u64) -> String) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut child = client
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .expect("client starts");
            let mut stdin = child.stdin.take().unwrap();
            let mut i = 0;
            while !s.load(Ordering::SeqCst) {
                stdin.write_all(statement(i).as_bytes()).unwrap();
                i += 1;
            }
            drop(stdin);
            assert!(
                child.wait().unwrap().success(),
                "the writer's client failed"
            );
        });
        Writer { stop, thread }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap();
    }
}

/// Waits until `committed()` (rows the writer committed, read from the database) reaches `n`.
fn wait_for(n: u64, committed: impl Fn() -> u64) -> u64 {
    let start = std::time::Instant::now();
    loop {
        let c = committed();
        if c >= n {
            return c;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the writer is stuck at {c} rows"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Runs `backup` while the writer commits, and proves it did commit during the backup:
/// returns the committed count when the backup started.
fn backup_under_writes(inst: &Install, writer: Writer, committed: impl Fn() -> u64) -> u64 {
    let before = wait_for(50, &committed);
    inst.run(&["backup", "--tenant", "shop"]).ok();
    let after = committed();
    assert!(after > before, "the writer must commit during the backup");
    wait_for(after + 50, &committed);
    writer.stop();
    before
}

fn restored_rows(stdout: &str) -> (u64, u64) {
    // "…: 6 tables, 123 rows verified in …"
    let words: Vec<&str> = stdout.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| w.starts_with("tables,"))
        .unwrap_or_else(|| panic!("no table count in {stdout}"));
    (
        words[at - 1].parse().unwrap(),
        words[at + 1].parse().unwrap(),
    )
}

// ---- PostgreSQL ----------------------------------------------------------------------------

const PG_SCHEMA: &str = r#"
CREATE SCHEMA app; CREATE SCHEMA billing;
CREATE TYPE app.mood AS ENUM ('happy', 'sad', 'meh');
CREATE TYPE app.money_pair AS (amount numeric(12,2), currency char(3));
CREATE DOMAIN app.email AS text CHECK (VALUE LIKE '%@%');
CREATE SEQUENCE billing.invoice_no START 1000;
CREATE TABLE app.users (id serial PRIMARY KEY, email app.email NOT NULL, mood app.mood,
  tags text[], scores int[], prefs jsonb, avatar bytea, price app.money_pair,
  created timestamptz DEFAULT '2026-01-01');
INSERT INTO app.users (email, mood, tags, scores, prefs, avatar, price)
  SELECT 'u' || g || '@x.io', (ARRAY['happy','sad','meh']::app.mood[])[1 + g % 3],
         ARRAY['t' || g, 'q''uote', E'back\\slash', 'comma,(paren)'], ARRAY[g, g * 2],
         jsonb_build_object('n', g, 'nested', jsonb_build_object('a', ARRAY[1, 2, g])),
         decode(md5(g::text), 'hex'), ROW(g * 1.5, 'EUR')::app.money_pair
  FROM generate_series(1, 30000) g;
CREATE TABLE billing.events (id bigserial, at date NOT NULL, payload jsonb, PRIMARY KEY (id, at))
  PARTITION BY RANGE (at);
CREATE TABLE billing.events_2025 PARTITION OF billing.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE billing.events_2026 PARTITION OF billing.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO billing.events (at, payload)
  SELECT date '2025-06-01' + (g % 400), jsonb_build_object('g', g) FROM generate_series(1, 20000) g;
CREATE TABLE billing.accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO billing.accounts SELECT g, 0 FROM generate_series(1, 100) g;
CREATE TABLE billing.ledger (id bigserial PRIMARY KEY, account int NOT NULL REFERENCES billing.accounts,
  amount bigint NOT NULL, invoice bigint NOT NULL DEFAULT nextval('billing.invoice_no'));
CREATE TABLE app.audit (id bigserial PRIMARY KEY, user_id int, at timestamptz DEFAULT '2026-01-01');
CREATE FUNCTION app.log_user() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN INSERT INTO app.audit (user_id) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER users_audit AFTER INSERT ON app.users FOR EACH ROW EXECUTE FUNCTION app.log_user();
INSERT INTO app.users (email) VALUES ('late@x.io');
CREATE VIEW app.happy_users AS SELECT id, email FROM app.users WHERE mood = 'happy';
CREATE MATERIALIZED VIEW billing.events_per_month AS
  SELECT date_trunc('month', at) AS m, count(*) AS n FROM billing.events GROUP BY 1;
SELECT lo_from_bytea(0, convert_to(repeat('large object ' || g, 1000), 'UTF8')) FROM generate_series(1, 5) g;
CREATE ROLE reporting; CREATE ROLE app_owner;
ALTER TABLE app.audit OWNER TO reporting;
"#;

fn pg_fingerprint(pg: &Postgres, db: &str, relation: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {relation} t"
        ),
    )
}

#[test]
fn postgres_hard_schema_round_trip_under_writes() {
    let (garage, pg) = (Garage::start(), Postgres::start());
    let inst = Install::new();
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("shop", PG_SCHEMA);
    inst.write_garage_config(
        &garage,
        &format!(
            "[[tenants]]\nid = \"shop\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{}\"\n",
            pg.url("shop")
        ),
    );

    let mut psql = Command::new("psql");
    psql.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", &pg.url("shop")]);
    let writer = Writer::start(psql, |i| {
        format!(
            "BEGIN; INSERT INTO billing.ledger (account, amount) VALUES ({a}, 7);
             UPDATE billing.accounts SET balance = balance + 7 WHERE id = {a}; COMMIT;\n",
            a = 1 + i % 100
        )
    });
    let before = backup_under_writes(&inst, writer, || {
        pg.psql("shop", "SELECT count(*) FROM billing.ledger")
            .parse()
            .unwrap()
    });

    let out = inst.restore("shop", &[], "shop_restored").ok();
    let (tables, rows) = restored_rows(&out.stdout);
    // users, audit, 2 partitions, accounts, ledger, the large objects.
    assert_eq!(tables, 7, "{}", out.stdout);

    // Static relations are identical, row by row.
    for relation in [
        "app.users",
        "app.audit",
        "billing.events",
        "billing.events_2025",
        "billing.events_2026",
        "billing.events_per_month",
        "app.happy_users",
    ] {
        assert_eq!(
            pg_fingerprint(&pg, "shop", relation),
            pg_fingerprint(&pg, "shop_restored", relation),
            "{relation}"
        );
    }
    let lo = "SELECT count(*) || ':' || md5(string_agg(md5(lo_get(oid)), ',' ORDER BY md5(lo_get(oid)))) FROM pg_largeobject_metadata";
    assert_eq!(pg.psql("shop", lo), pg.psql("shop_restored", lo));
    assert!(pg.psql("shop_restored", lo).starts_with("5:"));

    // The restore is one consistent snapshot taken during the writes: balances equal the
    // ledger, the ledger is a strict prefix of the live one, and the row total matches.
    let consistent = "SELECT (SELECT sum(balance) FROM billing.accounts) = (SELECT coalesce(sum(amount), 0) FROM billing.ledger)";
    assert_eq!(pg.psql("shop_restored", consistent), "t");
    let n: u64 = pg
        .psql("shop_restored", "SELECT count(*) FROM billing.ledger")
        .parse()
        .unwrap();
    let live: u64 = pg
        .psql("shop", "SELECT count(*) FROM billing.ledger")
        .parse()
        .unwrap();
    assert!(
        before <= n && n < live,
        "restored {n} ledger rows, {before} before, live {live}"
    );
    let prefix = format!(
        "SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM billing.ledger t WHERE id <= {}",
        pg.psql("shop_restored", "SELECT max(id) FROM billing.ledger")
    );
    assert_eq!(pg.psql("shop", &prefix), pg.psql("shop_restored", &prefix));
    let static_rows: u64 = 30001 + 1 + 20000 + 100 + 5;
    assert_eq!(rows, static_rows + n, "{}", out.stdout);

    // Types, functions, triggers and sequences came back and work.
    assert_eq!(
        pg.psql("shop_restored", "SELECT enum_range(NULL::app.mood)"),
        "{happy,sad,meh}"
    );
    pg.psql(
        "shop_restored",
        "INSERT INTO app.users (email) VALUES ('new@x.io')",
    );
    assert_eq!(
        pg.psql("shop_restored", "SELECT count(*) FROM app.audit"),
        "2"
    );
    assert_eq!(
        pg.psql(
            "shop_restored",
            "SELECT (SELECT last_value FROM billing.invoice_no) >= (SELECT max(invoice) FROM billing.ledger)"
        ),
        "t",
        "the invoice sequence must not hand out numbers already used"
    );
    assert_eq!(
        pg.psql(
            "shop_restored",
            "SELECT count(*) FROM pg_class WHERE relname = 'events' AND relkind = 'p'"
        ),
        "1"
    );

    // Ownership on side restores: the connecting user by default, the source's owners, or one role.
    let owners = "SELECT string_agg(tablename || '=' || tableowner, ',' ORDER BY tablename) \
                  FROM pg_tables WHERE tablename IN ('users', 'audit')";
    assert_eq!(
        pg.psql("shop_restored", owners),
        "audit=postgres,users=postgres"
    );
    inst.restore("shop", &["--keep-owners"], "shop_keep").ok();
    assert_eq!(
        pg.psql("shop_keep", owners),
        "audit=reporting,users=postgres"
    );
    inst.restore("shop", &["--owner", "app_owner"], "shop_owned")
        .ok();
    assert_eq!(
        pg.psql("shop_owned", owners),
        "audit=app_owner,users=app_owner"
    );
}

// ---- MariaDB -------------------------------------------------------------------------------

const MARIADB_SCHEMA: &str = r#"
CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL);
INSERT INTO accounts SELECT seq, 0 FROM seq_1_to_100;
CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, account INT NOT NULL, amount BIGINT NOT NULL,
  note VARCHAR(100), FOREIGN KEY (account) REFERENCES accounts(id));
CREATE TABLE products (id INT PRIMARY KEY, name VARCHAR(200) CHARACTER SET utf8mb4,
  kind ENUM('tool','toy','food'), flags SET('new','sale','gift'), price DECIMAL(10,2), doc JSON,
  photo BLOB, made DATETIME(6), bits BIT(8));
CREATE TABLE product_audit (id INT AUTO_INCREMENT PRIMARY KEY, product INT, at DATETIME);
CREATE TRIGGER products_ai AFTER INSERT ON products FOR EACH ROW
  INSERT INTO product_audit (product, at) VALUES (NEW.id, '2026-01-01');
INSERT INTO products SELECT seq, CONCAT('prod ', seq, ' ''q'' \\ (x),(y); 😀 \n line'),
  ELT(1 + seq % 3, 'tool', 'toy', 'food'), IF(seq % 2, 'new,sale', ''), seq * 1.25,
  JSON_OBJECT('n', seq, 'tags', JSON_ARRAY('a', seq)), UNHEX(SHA2(seq, 256)),
  TIMESTAMP '2026-01-01 00:00:00' + INTERVAL seq SECOND, seq % 256 FROM seq_1_to_40000;
CREATE TABLE `we``ird` (id INT PRIMARY KEY, v TEXT);
INSERT INTO `we``ird` VALUES (1, 'INSERT INTO `x` VALUES (1);'), (2, NULL);
CREATE TABLE empty_table (id INT PRIMARY KEY);
CREATE VIEW cheap AS SELECT id, name FROM products WHERE price < 100;
CREATE FUNCTION price_with_tax(p DECIMAL(10,2)) RETURNS DECIMAL(10,2) DETERMINISTIC RETURN p * 1.2;
CREATE PROCEDURE touch(IN pid INT) UPDATE products SET made = '2027-01-01' WHERE id = pid;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DO DELETE FROM product_audit WHERE at < '2000-01-01';
"#;

#[test]
fn mariadb_hard_schema_round_trip_under_writes() {
    let (garage, my) = (Garage::start(), Mariadb::start());
    let inst = Install::new();
    my.sql("", "CREATE DATABASE shop CHARACTER SET utf8mb4");
    my.sql("shop", MARIADB_SCHEMA);
    // A second tenant: another database of the same server.
    my.sql("", "CREATE DATABASE other");
    my.sql("other", "CREATE TABLE notes (id INT PRIMARY KEY, body TEXT); INSERT INTO notes VALUES (1, 'a'), (2, 'b'), (3, 'c');");
    let pw = inst.path("shop.password");
    write_private(&pw, &my.password);
    inst.write_garage_config(
        &garage,
        &format!(
            "[[tenants]]\nid = \"shop\"\nengine = \"mariadb\"\ntier = \"paid\"\nurl = \"{}\"\npassword-file = \"{pw}\"\n\n\
             [[tenants]]\nid = \"other\"\nengine = \"mariadb\"\ntier = \"free\"\nurl = \"{}\"\npassword-file = \"{pw}\"\n",
            my.url("shop"),
            my.url("other"),
            pw = pw.display()
        ),
    );

    let mut client = Command::new("mariadb");
    client
        .arg("--no-defaults")
        .arg(format!("--socket={}", my.dir.path().join("sock").display()))
        .args(["--default-character-set=utf8mb4", "-u", "root", "shop"]);
    let writer = Writer::start(client, |i| {
        format!(
            "START TRANSACTION; INSERT INTO ledger (account, amount, note) VALUES ({a}, 7, 'w;(''),(');
             UPDATE accounts SET balance = balance + 7 WHERE id = {a}; COMMIT;\n",
            a = 1 + i % 100
        )
    });
    let before = backup_under_writes(&inst, writer, || {
        my.sql("shop", "SELECT COUNT(*) FROM ledger")
            .parse()
            .unwrap()
    });

    let out = inst.restore("shop", &[], "shop_restored").ok();
    let (tables, rows) = restored_rows(&out.stdout);
    assert_eq!(tables, 6, "{}", out.stdout);

    for sql in [
        "SELECT id, name, kind, flags, price, doc, HEX(photo), made, bits + 0 FROM products ORDER BY id",
        "SELECT * FROM product_audit ORDER BY id",
        "SELECT * FROM `we``ird` ORDER BY id",
        "SELECT * FROM empty_table",
        "SELECT * FROM cheap ORDER BY id",
    ] {
        let (a, b) = (my.sql("shop", sql), my.sql("shop_restored", sql));
        assert!(a == b, "{sql} differs after restore");
    }
    assert_eq!(
        my.sql("shop_restored", "SELECT COUNT(*) FROM products"),
        "40000"
    );

    let consistent = "SELECT (SELECT SUM(balance) FROM accounts) = (SELECT COALESCE(SUM(amount), 0) FROM ledger)";
    assert_eq!(my.sql("shop_restored", consistent), "1");
    let n: u64 = my
        .sql("shop_restored", "SELECT COUNT(*) FROM ledger")
        .parse()
        .unwrap();
    let live: u64 = my
        .sql("shop", "SELECT COUNT(*) FROM ledger")
        .parse()
        .unwrap();
    assert!(
        before <= n && n < live,
        "restored {n} ledger rows, {before} before, live {live}"
    );
    let max = my.sql("shop_restored", "SELECT MAX(id) FROM ledger");
    let prefix = format!("SELECT * FROM ledger WHERE id <= {max} ORDER BY id");
    assert!(my.sql("shop", &prefix) == my.sql("shop_restored", &prefix));
    assert_eq!(rows, 100 + 40000 + 40000 + 2 + n, "{}", out.stdout);

    // Routines, triggers and events came back.
    assert_eq!(
        my.sql("shop_restored", "SELECT price_with_tax(10)"),
        "12.00"
    );
    for (what, sql) in [
        (
            "routines",
            "SELECT COUNT(*) FROM information_schema.routines WHERE routine_schema = 'shop_restored'",
        ),
        (
            "triggers",
            "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_schema = 'shop_restored'",
        ),
        (
            "events",
            "SELECT COUNT(*) FROM information_schema.events WHERE event_schema = 'shop_restored'",
        ),
    ] {
        let expected = if what == "routines" { "2" } else { "1" };
        assert_eq!(my.sql("", sql), expected, "{what}");
    }
    my.sql(
        "shop_restored",
        "INSERT INTO products (id, name) VALUES (99999, 'new')",
    );
    // The other tenant of the same server is backed up and restored on its own.
    inst.run(&["backup", "--tenant", "other"]).ok();
    let out = inst.restore("other", &[], "other_restored").ok();
    assert_eq!(restored_rows(&out.stdout), (1, 3), "{}", out.stdout);

    let out = inst
        .restore("shop", &["--owner", "app"], "shop_owned")
        .failed();
    assert!(
        out.stderr.contains("apply to PostgreSQL tenants"),
        "{}",
        out.stderr
    );
    assert_eq!(
        my.sql("shop_restored", "SELECT COUNT(*) FROM product_audit"),
        "40001"
    );
}

// ---- SQLite --------------------------------------------------------------------------------

#[test]
fn sqlite_wal_snapshot_under_writes() {
    let garage = Garage::start();
    let inst = Install::new();
    let db = inst.path("shop.db");
    make_sqlite_tenant(&db, "sqlite-marker");
    sqlite_exec(
        &db,
        "CREATE TABLE accounts (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100)
           INSERT INTO accounts SELECT n, 0 FROM s;
         CREATE TABLE ledger (id INTEGER PRIMARY KEY, account INTEGER NOT NULL, amount INTEGER NOT NULL);",
    );
    inst.write_garage_config(
        &garage,
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n",
    );
    // The sqlite3 CLI is not assumed: the writer is a thread with its own connection.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, done, db) = (stop.clone(), done.clone(), db.clone());
        std::thread::spawn(move || {
            use sqlx::{ConnectOptions, Connection};
            block_on(async move {
                let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&db)
                    .busy_timeout(std::time::Duration::from_secs(30))
                    .connect()
                    .await
                    .unwrap();
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let a = 1 + i % 100;
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "BEGIN IMMEDIATE; INSERT INTO ledger (account, amount) VALUES ({a}, 7);
                         UPDATE accounts SET balance = balance + 7 WHERE id = {a}; COMMIT;"
                    )))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                    i += 1;
                    done.store(i, Ordering::SeqCst);
                }
                conn.close().await.unwrap();
            })
        })
    };
    while done.load(Ordering::SeqCst) < 50 {
        std::thread::yield_now();
    }
    let before = done.load(Ordering::SeqCst);
    inst.run(&["backup", "--tenant", "shop"]).ok();
    assert!(
        done.load(Ordering::SeqCst) > before,
        "the writer must be running during the snapshot"
    );
    let target = done.load(Ordering::SeqCst) + 50;
    while done.load(Ordering::SeqCst) < target {
        std::thread::yield_now();
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();

    let restored = inst.path("restored.db");
    let out = inst.restore("shop", &[], &restored).ok();
    let (_, rows) = restored_rows(&out.stdout);
    let q = |path: &std::path::Path, sql: &str| -> i64 {
        let (path, sql) = (path.to_path_buf(), sql.to_string());
        block_on(async move {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
                .await
                .unwrap();
            sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut c)
                .await
                .unwrap()
        })
    };
    assert_eq!(
        q(
            &restored,
            "SELECT (SELECT sum(balance) FROM accounts) = (SELECT coalesce(sum(amount), 0) FROM ledger)"
        ),
        1
    );
    let n = q(&restored, "SELECT count(*) FROM ledger");
    let live = q(&db, "SELECT count(*) FROM ledger");
    assert!(
        before as i64 <= n && n < live,
        "restored {n} ledger rows, {before} before, live {live}"
    );
    // users (3000), invoices (5000), accounts (100), ledger; sqlite_sequence is SQLite's own.
    assert_eq!(rows, 3000 + 5000 + 100 + n as u64, "{}", out.stdout);
    assert_eq!(
        q(
            &restored,
            "SELECT count(*) FROM users WHERE note LIKE 'sqlite-marker%'"
        ),
        3000
    );
}

/// The dump and restore tools Lifeboat runs never inherit the environment variables the config
/// names as secrets (S3 keys, other tenants' passwords, the master identity): a compromised or
/// verbose tool cannot leak them. Each tool gets its own server's password, passed its own way.
#[test]
fn dump_and_restore_tools_never_inherit_the_configs_secret_variables() {
    let (pg, my) = (Postgres::start(), Mariadb::start());
    let inst = Install::new();
    pg.psql("postgres", "CREATE DATABASE acme");
    pg.psql(
        "acme",
        "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);",
    );
    my.sql("", "CREATE DATABASE shop");
    my.sql(
        "shop",
        "CREATE TABLE t (id INT); INSERT INTO t VALUES (1), (2);",
    );

    // Spies first on PATH: each records its environment, then runs the real tool.
    let spies = inst.path("spies");
    std::fs::create_dir(&spies).unwrap();
    let mut path = format!("{}", spies.display());
    for tool in ["pg_dump", "pg_restore", "mariadb-dump", "mariadb"] {
        let real = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    pg_bindir().display(),
                    std::env::var("PATH").unwrap()
                ),
            )
            .output()
            .unwrap();
        let real = String::from_utf8(real.stdout).unwrap().trim().to_string();
        assert!(!real.is_empty(), "{tool} not found");
        let spy = spies.join(tool);
        std::fs::write(
            &spy,
            format!(
                "#!/bin/sh\nenv > \"{}/{tool}.$$.env\"\nexec {real} \"$@\"\n",
                spies.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&spy, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    path += &format!(
        ":{}:{}",
        pg_bindir().display(),
        std::env::var("PATH").unwrap()
    );

    let master = std::fs::read_to_string(&inst.master_key).unwrap();
    let master = master
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .unwrap();
    inst.write_config(&format!(
        "[catalog]\nurl = \"sqlite://catalog.db\"\n\n[keys]\nmaster-recipients = [\"{}\"]\nmaster-identity-env = \"SPY_MASTER\"\n\n\
         {DIR_REGIONS}\
         [[tenants]]\nid = \"acme\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{}\"\npassword-env = \"SPY_PG_PASSWORD\"\n\n\
         [[tenants]]\nid = \"shop\"\nengine = \"mariadb\"\ntier = \"paid\"\nurl = \"{}\"\npassword-env = \"SPY_MY_PASSWORD\"\n",
        inst.recipient,
        pg.url("acme"),
        my.url("shop"),
    ));
    let env = [
        ("PATH", path.as_str()),
        ("SPY_MASTER", master),
        ("SPY_PG_PASSWORD", "pg-secret-x"),
        ("SPY_MY_PASSWORD", my.password.as_str()),
    ];
    for t in ["acme", "shop"] {
        lifeboat_env(&inst.config, &["backup", "--tenant", t], &env).ok();
    }
    lifeboat_env(
        &inst.config,
        &[
            "restore",
            "--tenant",
            "acme",
            "--to-side",
            "acme_back",
            "--reason",
            "T-1",
        ],
        &env,
    )
    .ok();
    lifeboat_env(
        &inst.config,
        &[
            "restore",
            "--tenant",
            "shop",
            "--to-side",
            "shop_back",
            "--reason",
            "T-1",
        ],
        &env,
    )
    .ok();
    assert_eq!(pg.psql("acme_back", "SELECT count(*) FROM t"), "2");

    let mut seen = Vec::new();
    for entry in std::fs::read_dir(&spies).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "env") {
            let text = std::fs::read_to_string(&p).unwrap();
            let tool = p.file_name().unwrap().to_string_lossy().to_string();
            for (name, value) in &env[1..] {
                assert!(
                    !text.contains(&format!("{name}=")),
                    "{tool} inherited {name}:\n{text}"
                );
                // PostgreSQL tools get their own server's password as PGPASSWORD; MariaDB's
                // come in an option file.
                let own = *name == "SPY_PG_PASSWORD" && tool.starts_with("pg_");
                assert!(own || !text.contains(*value), "{tool} holds {name}'s value");
            }
            seen.push(
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .split('.')
                    .next()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["mariadb", "mariadb-dump", "pg_dump", "pg_restore"]);
}
