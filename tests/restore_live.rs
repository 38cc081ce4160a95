//! Staff restores over live, on real servers: for PostgreSQL, MariaDB and SQLite, a restore over
//! the live database takes a safety backup (completed and verified in both regions, holding the
//! data that was live), swaps the verified backup in, keeps the previous data until `restore
//! rollback` (previous live again, restored copy gone) or `restore finalize` (previous dropped).
//! A failure in the middle of the swap is undone and recorded; a crash there leaves the live data
//! intact (or, past MariaDB's atomic RENAME, swapped) and is settled by the next command. Every
//! refusal changes nothing, and every action is in the audit log with its reason.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;

const TENANT: &str = "shop";

/// What a scenario needs to know about one engine's live database.
struct Live<'a> {
    inst: &'a Install,
    /// Every table of the live data, row by row, as one comparable string.
    fingerprint: &'a dyn Fn() -> String,
    /// The same for a side restore target.
    fingerprint_of: &'a dyn Fn(&str) -> String,
    /// Targets (databases, files) of restores beside the live one: staging, previous.
    leftovers: &'a dyn Fn() -> Vec<String>,
    /// A new side target for the `n`th check, and the options that restore it as live was.
    side: &'a dyn Fn(usize) -> String,
    side_args: &'a [&'a str],
    /// Changes the live data: rows deleted and inserted, a table added.
    change: &'a dyn Fn(),
}

fn over_live(inst: &Install, extra: &[&str], env: &[(&str, &str)]) -> Run {
    let mut args = vec!["restore", "--tenant", TENANT, "--over-live"];
    args.extend_from_slice(extra);
    lifeboat_env(&inst.config, &args, env)
}

fn completed_backups(inst: &Install) -> Vec<String> {
    inst.column(&format!(
        "SELECT id FROM backups WHERE tenant_id = '{TENANT}' AND status = 'completed' ORDER BY id"
    ))
}

/// The newest restore of the tenant: id, state, safety backup, previous target, error.
fn newest_restore(inst: &Install) -> Vec<String> {
    inst.catalog_query(&format!(
        "SELECT id, state, safety_backup_id, previous_target, error FROM restores \
         WHERE tenant_id = '{TENANT}' ORDER BY id DESC LIMIT 1"
    ))
    .pop()
    .expect("a restore is recorded")
}

fn state(inst: &Install, id: &str) -> String {
    inst.column(&format!("SELECT state FROM restores WHERE id = '{id}'"))
        .pop()
        .unwrap()
}

/// `(action, outcome, detail)` of the restore actions in the audit log, in order.
fn audited(inst: &Install) -> Vec<Vec<String>> {
    inst.catalog_query(
        "SELECT action, outcome, detail FROM audit_log WHERE action LIKE 'restore.%' ORDER BY seq",
    )
}

/// Back up, change the live data, restore over live, roll back, restore over live again,
/// finalize. Returns the backup restored (the state before the change).
fn restore_rollback_finalize(l: &Live) -> String {
    let inst = l.inst;
    inst.run(&["backup", "--tenant", TENANT]).ok();
    let b1 = completed_backups(inst).pop().unwrap();
    let original = (l.fingerprint)();
    (l.change)();
    let changed = (l.fingerprint)();
    assert_ne!(original, changed, "the change must show");

    let reason = "INC-4711 customer deleted rows by mistake";
    let out = over_live(
        inst,
        &["--backup", &b1, "--reason", reason, "--progress"],
        &[("SUDO_USER", "alice")],
    )
    .ok();
    assert!(out.stdout.contains("to the live "), "{}", out.stdout);
    // --progress prints even though stderr is a pipe here.
    assert!(out.stderr.contains("restore: "), "{}", out.stderr);
    let row = newest_restore(inst);
    let (id, safety, previous) = (row[0].clone(), row[2].clone(), row[3].clone());
    assert_eq!(row[1], "swapped", "{row:?}");
    assert!(out.stdout.contains(&id) && out.stdout.contains(&previous));
    assert_eq!((l.fingerprint)(), original, "live now equals the backup");
    assert_eq!(
        (l.leftovers)(),
        std::slice::from_ref(&previous),
        "only the previous data is kept"
    );

    // The safety backup is a regular completed backup, verified in both regions, holding the
    // data that was live.
    assert!(completed_backups(inst).contains(&safety));
    let copies = inst.catalog_query(&format!(
        "SELECT region, state FROM copies WHERE backup_id = '{safety}' ORDER BY region"
    ));
    assert_eq!(
        copies,
        [["eu", "verified"], ["local", "verified"]],
        "safety backup copies"
    );
    let side = (l.side)(1);
    let mut args = vec!["--backup", safety.as_str()];
    args.extend_from_slice(l.side_args);
    inst.restore(TENANT, &args, &side).ok();
    assert_eq!((l.fingerprint_of)(&side), changed, "the safety backup");

    // Rollback: the changed data is live again and the restored copy is gone.
    let out = inst
        .run(&[
            "restore",
            "rollback",
            &id,
            "--reason",
            "INC-4711 wrong backup",
        ])
        .ok();
    assert!(out.stdout.contains("live again"), "{}", out.stdout);
    assert_eq!((l.fingerprint)(), changed);
    assert!((l.leftovers)().is_empty(), "{:?}", (l.leftovers)());
    assert_eq!(state(inst, &id), "rolled_back");

    // Over live again, then finalize: the previous data is dropped.
    over_live(inst, &["--backup", &b1, "--reason", reason], &[]).ok();
    let id2 = newest_restore(inst)[0].clone();
    assert_ne!(id, id2);
    assert_eq!((l.fingerprint)(), original);
    inst.run(&[
        "restore",
        "finalize",
        &id2,
        "--reason",
        "INC-4711 confirmed",
    ])
    .ok();
    assert_eq!((l.fingerprint)(), original);
    assert!((l.leftovers)().is_empty(), "{:?}", (l.leftovers)());
    assert_eq!(state(inst, &id2), "finalized");
    for verb in ["finalize", "rollback"] {
        let out = inst
            .run(&["restore", verb, &id2, "--reason", "again"])
            .failed();
        assert!(
            out.stderr.contains("is finalized, not swapped"),
            "{}",
            out.stderr
        );
    }
    assert_eq!((l.fingerprint)(), original);

    let audit = audited(inst);
    let ok: Vec<&str> = audit
        .iter()
        .filter(|r| r[1] == "ok")
        .map(|r| r[0].as_str())
        .collect();
    assert_eq!(
        ok,
        [
            "restore.live",
            "restore.side",
            "restore.rollback",
            "restore.live",
            "restore.finalize"
        ],
        "{audit:?}"
    );
    let live = &audit.iter().find(|r| r[0] == "restore.live").unwrap()[2];
    for part in [id.as_str(), &b1, &safety, &previous, reason] {
        assert!(live.contains(part), "{part} not in {live}");
    }
    // Who and why in their own columns: the operator on the command line, the ticket.
    let who = inst.catalog_query(
        "SELECT actor, role, reason FROM audit_log WHERE action = 'restore.live' ORDER BY seq LIMIT 1",
    );
    assert_eq!(who, [["cli:alice", "operator", reason]]);
    // The restore's own record names the same person.
    assert_eq!(
        inst.column(&format!("SELECT actor FROM restores WHERE id = '{id}'")),
        ["cli:alice"]
    );
    b1
}

/// A failure in the middle of the swap is undone; a crash there is settled by the next command:
/// failed with the live data intact, or (`crash_swaps`: the crash came after an atomic swap)
/// swapped, and then rolled back.
fn swap_faults(l: &Live, b1: &str, crash_swaps: bool) {
    let inst = l.inst;
    let original = (l.fingerprint)();
    (l.change)();
    let changed = (l.fingerprint)();
    let backups = completed_backups(inst).len();

    let out = over_live(
        inst,
        &["--backup", b1, "--reason", "INC-1 fault"],
        &[("LIFEBOAT_TEST_FAULT", "fail-at:swap")],
    )
    .failed();
    assert!(
        out.stderr
            .contains("the swap failed and the live data is as it was")
            && out.stderr.contains("failing at swap"),
        "{}",
        out.stderr
    );
    assert_eq!((l.fingerprint)(), changed, "live untouched");
    assert!((l.leftovers)().is_empty(), "{:?}", (l.leftovers)());
    let row = newest_restore(inst);
    assert_eq!(row[1], "failed", "{row:?}");
    assert!(row[4].contains("failing at swap"), "{row:?}");
    // Its safety backup was taken and stays, like any backup.
    assert_eq!(completed_backups(inst).len(), backups + 1);

    let out = over_live(
        inst,
        &["--backup", b1, "--reason", "INC-2 crash"],
        &[("LIFEBOAT_TEST_FAULT", "crash-at:swap")],
    );
    assert_eq!(out.code, 86, "{}", out.stderr);
    let id = newest_restore(inst)[0].clone();
    assert_eq!(state(inst, &id), "running");
    let listed = inst.run(&["restores", "--tenant", TENANT]).ok();
    assert!(
        listed
            .stdout
            .lines()
            .any(|l| l.starts_with(&id) && l.contains("running")),
        "{}",
        listed.stdout
    );
    if crash_swaps {
        assert_eq!((l.fingerprint)(), original, "the atomic swap had happened");
        // The next command finds its process gone and the swap done: it can be rolled back.
        inst.run(&["restore", "rollback", &id, "--reason", "INC-2 undo"])
            .ok();
        assert_eq!(state(inst, &id), "rolled_back");
    } else {
        assert_eq!((l.fingerprint)(), changed, "live intact after the crash");
        let out = inst
            .run(&["restore", "rollback", &id, "--reason", "INC-2 undo"])
            .failed();
        assert!(
            out.stderr.contains("is failed, not swapped"),
            "{}",
            out.stderr
        );
        let row = newest_restore(inst);
        assert_eq!(row[1], "failed");
        assert!(row[4].contains("ended before the swap"), "{row:?}");
    }
    assert_eq!((l.fingerprint)(), changed);
    assert!((l.leftovers)().is_empty(), "{:?}", (l.leftovers)());
    assert!(audited(inst).iter().any(|r| r[0] == "restore.settle"));
}

// ---- PostgreSQL ----------------------------------------------------------------------------

fn pg_fingerprint(pg: &Postgres, db: &str) -> String {
    let mut out = pg.psql(
        db,
        "SELECT string_agg(tablename || '=' || tableowner, ',' ORDER BY tablename) FROM pg_tables WHERE schemaname = 'public'",
    );
    for t in pg
        .psql(
            db,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
        )
        .lines()
    {
        out += &format!(
            "\n{t}: {}",
            pg.psql(
                db,
                &format!("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {t} t")
            )
        );
    }
    out
}

#[test]
fn postgres_over_live_rollback_finalize_and_faults() {
    let (garage, pg) = (Garage::start(), Postgres::start());
    let inst = Install::new();
    // The application's role owns the database and its tables; grants must survive a restore.
    pg.psql("postgres", "CREATE ROLE app LOGIN");
    pg.psql("postgres", "CREATE DATABASE shop OWNER app");
    pg.psql(
        "shop",
        "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
         CREATE TABLE ledger (id serial PRIMARY KEY, account int REFERENCES accounts, amount bigint);
         INSERT INTO accounts SELECT g, g * 10 FROM generate_series(1, 200) g;
         INSERT INTO ledger (account, amount) SELECT 1 + g % 200, g FROM generate_series(1, 3000) g;
         CREATE VIEW rich AS SELECT id FROM accounts WHERE balance > 1000;
         ALTER TABLE accounts OWNER TO app; GRANT SELECT ON ledger TO app;",
    );
    inst.write_garage_config(
        &garage,
        &format!(
            "[[tenants]]\nid = \"shop\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{}\"\n",
            pg.url("shop")
        ),
    );
    let change = || {
        pg.psql(
            "shop",
            "DELETE FROM ledger WHERE id <= 50; INSERT INTO accounts VALUES (999, 5);
             CREATE TABLE added (x int); INSERT INTO added VALUES (1), (2);",
        );
    };
    let leftovers = || {
        pg.psql(
            "postgres",
            "SELECT datname FROM pg_database WHERE datname LIKE 'shop\\_%' ORDER BY 1",
        )
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let live = Live {
        inst: &inst,
        fingerprint: &|| pg_fingerprint(&pg, "shop"),
        fingerprint_of: &|db| pg_fingerprint(&pg, db),
        leftovers: &leftovers,
        side: &|n| format!("check_{n}"),
        side_args: &["--keep-owners"],
        change: &change,
    };

    // A session on the live database does not block the swap: it is disconnected.
    let mut session = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-d",
            &pg.url("shop"),
            "-c",
            "SELECT pg_sleep(600)",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    until("the session to connect", Duration::from_secs(30), || {
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'shop' AND query LIKE '%pg_sleep%' AND pid <> pg_backend_pid()",
        ) == "1"
    });
    let b1 = restore_rollback_finalize(&live);
    assert!(
        !session.wait().unwrap().success(),
        "the live session was terminated by the swap"
    );
    // Owners, grants, the database's owner and the view came back with the restore.
    assert!(pg_fingerprint(&pg, "shop").starts_with("accounts=app,ledger=postgres"));
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'shop'"
        ),
        "app"
    );
    assert_eq!(
        pg.psql(
            "shop",
            "SELECT has_table_privilege('app', 'ledger', 'SELECT')::text || (SELECT count(*) FROM rich)"
        ),
        "true100"
    );
    swap_faults(&live, &b1, false);
}

// ---- MariaDB -------------------------------------------------------------------------------

fn my_fingerprint(my: &Mariadb, db: &str) -> String {
    let mut out = my.sql(
        "",
        &format!(
            "SELECT GROUP_CONCAT(table_name ORDER BY table_name) FROM information_schema.tables WHERE table_schema = '{db}'"
        ),
    );
    for t in my
        .sql(
            "",
            &format!(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' ORDER BY 1"
            ),
        )
        .lines()
    {
        out += &format!(
            "\n{t}: {}",
            my.sql(db, &format!("SELECT COUNT(*), COALESCE(SUM(CRC32(CONCAT_WS('|', t.id, t.v))), 0) FROM {t} t"))
        );
    }
    out
}

#[test]
fn mariadb_over_live_rollback_finalize_limits_and_faults() {
    let (garage, my) = (Garage::start(), Mariadb::start());
    let inst = Install::new();
    my.sql("", "CREATE DATABASE shop CHARACTER SET utf8mb4");
    my.sql(
        "shop",
        "CREATE TABLE accounts (id INT PRIMARY KEY, v BIGINT NOT NULL) ENGINE=InnoDB;
         CREATE TABLE ledger (id INT AUTO_INCREMENT PRIMARY KEY, account INT NOT NULL, v BIGINT,
           FOREIGN KEY (account) REFERENCES accounts(id)) ENGINE=InnoDB;
         INSERT INTO accounts SELECT seq, seq * 10 FROM seq_1_to_200;
         INSERT INTO ledger (account, v) SELECT 1 + seq % 200, seq FROM seq_1_to_3000;",
    );
    let pw = inst.path("shop.password");
    write_private(&pw, &my.password);
    inst.write_garage_config(
        &garage,
        &format!(
            "[[tenants]]\nid = \"shop\"\nengine = \"mariadb\"\ntier = \"paid\"\nurl = \"{}\"\npassword-file = \"{}\"\n",
            my.url("shop"),
            pw.display()
        ),
    );
    let change = || {
        my.sql(
            "shop",
            "DELETE FROM ledger WHERE id <= 50; INSERT INTO accounts VALUES (999, 5);
             CREATE TABLE added (id INT, v INT); INSERT INTO added VALUES (1, 1), (2, 2);",
        );
    };
    let leftovers = || {
        my.sql(
            "",
            "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'shop\\_%' ORDER BY 1",
        )
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    let live = Live {
        inst: &inst,
        fingerprint: &|| my_fingerprint(&my, "shop"),
        fingerprint_of: &|db| my_fingerprint(&my, db),
        leftovers: &leftovers,
        side: &|n| format!("check_{n}"),
        side_args: &[],
        change: &change,
    };
    let b1 = restore_rollback_finalize(&live);
    // The foreign key moved with its tables and still holds.
    assert!(
        my.sql("shop", "SHOW CREATE TABLE ledger")
            .contains("REFERENCES `accounts`")
    );
    swap_faults(&live, &b1, true);

    // Limits: one RENAME TABLE cannot carry views or tables with triggers to another database,
    // and routines and events stay with theirs. A live database with any of them is refused
    // before anything is done (no safety backup either).
    let before = (my_fingerprint(&my, "shop"), completed_backups(&inst).len());
    for (create, drop) in [
        (
            "CREATE VIEW big AS SELECT id FROM accounts WHERE v > 100",
            "DROP VIEW big",
        ),
        (
            "CREATE TRIGGER ledger_ai AFTER INSERT ON ledger FOR EACH ROW SET @x = 1",
            "DROP TRIGGER ledger_ai",
        ),
        (
            "CREATE FUNCTION f() RETURNS INT RETURN 1",
            "DROP FUNCTION f",
        ),
    ] {
        my.sql("shop", create);
        let out = over_live(&inst, &["--backup", &b1, "--reason", "INC-3"], &[]).failed();
        assert!(
            out.stderr.contains("RENAME TABLE") && out.stderr.contains("--to-side"),
            "{}",
            out.stderr
        );
        my.sql("shop", drop);
    }
    assert_eq!(
        (my_fingerprint(&my, "shop"), completed_backups(&inst).len()),
        before
    );
    // A backup holding a view: found once loaded, before the swap; the staging database goes.
    my.sql("shop", "CREATE VIEW big AS SELECT id FROM accounts");
    inst.run(&["backup", "--tenant", TENANT]).ok();
    let with_view = completed_backups(&inst).pop().unwrap();
    my.sql("shop", "DROP VIEW big");
    let now = my_fingerprint(&my, "shop");
    let out = over_live(&inst, &["--backup", &with_view, "--reason", "INC-4"], &[]).failed();
    assert!(out.stderr.contains("views (big)"), "{}", out.stderr);
    assert_eq!(my_fingerprint(&my, "shop"), now);
    assert!(leftovers().is_empty(), "{:?}", leftovers());
    assert_eq!(newest_restore(&inst)[1], "failed");
}

// ---- SQLite --------------------------------------------------------------------------------

fn sqlite_query(path: &Path, sql: &str) -> String {
    let (path, sql) = (path.to_path_buf(), sql.to_string());
    block_on(async move {
        use sqlx::{ConnectOptions, Connection, Row};
        let mut c = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .read_only(true)
            .connect()
            .await
            .unwrap();
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&mut c)
            .await
            .unwrap();
        c.close().await.unwrap();
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<String, _>(i)
                            .or_else(|_| r.try_get::<i64, _>(i).map(|n| n.to_string()))
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn sqlite_fingerprint(path: &Path) -> String {
    let tables = sqlite_query(
        path,
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1",
    );
    let mut out = tables.replace('\n', ",");
    for t in tables.lines() {
        // Every column of every row, quoted by SQLite itself (blobs as hex), hashed.
        let columns: Vec<String> = sqlite_query(
            path,
            &format!("SELECT name FROM pragma_table_info('{t}') ORDER BY cid"),
        )
        .lines()
        .map(|c| format!("quote(\"{c}\")"))
        .collect();
        let rows = sqlite_query(
            path,
            &format!(
                "SELECT {} FROM \"{t}\" ORDER BY rowid",
                columns.join(" || ',' || ")
            ),
        );
        use sha2::Digest;
        out += &format!(
            "\n{t}: {} rows {}",
            rows.lines().count(),
            hex::encode(sha2::Sha256::digest(rows.as_bytes()))
        );
    }
    out
}

/// Files beside the live `shop.db` left by restores (its own -wal and -shm are not).
fn sqlite_leftovers(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| {
            (n.starts_with("shop.db")
                && !["shop.db", "shop.db-wal", "shop.db-shm"].contains(&n.as_str()))
                || n.contains("lifeboat-restore")
        })
        .collect();
    found.sort();
    found
}

fn sqlite_install(regions: &str) -> Install {
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), "sqlite-marker");
    inst.write_config(&format!(
        "{}{regions}[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n",
        inst.head()
    ));
    inst
}

#[test]
fn sqlite_over_live_rollback_finalize_and_faults() {
    let garage = Garage::start();
    let inst = Install::new();
    let db = inst.path("shop.db");
    make_sqlite_tenant(&db, "sqlite-marker");
    inst.write_garage_config(
        &garage,
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n",
    );
    let change = || {
        sqlite_exec(
            &db,
            "DELETE FROM invoices WHERE id <= 50; INSERT INTO users (email) VALUES ('new@x.io');
             CREATE TABLE added (id INTEGER); INSERT INTO added VALUES (1), (2);",
        )
    };
    let leftovers = || sqlite_leftovers(inst.dir.path());
    let live = Live {
        inst: &inst,
        fingerprint: &|| sqlite_fingerprint(&db),
        fingerprint_of: &|p| sqlite_fingerprint(Path::new(p)),
        leftovers: &|| {
            leftovers()
                .into_iter()
                .map(|n| inst.path(&n).display().to_string())
                .collect()
        },
        side: &|n| inst.path(&format!("check-{n}.db")).display().to_string(),
        side_args: &[],
        change: &change,
    };
    let b1 = restore_rollback_finalize(&live);
    // The restored file is a sound database in WAL mode, as the live one was.
    assert_eq!(sqlite_query(&db, "PRAGMA integrity_check"), "ok");
    swap_faults(&live, &b1, false);
    assert_eq!(sqlite_query(&db, "PRAGMA integrity_check"), "ok");
}

/// Refusals change nothing: not the live data, not the backups, not the restores; the ones the
/// executor sees are audited as refused.
#[test]
fn refusals_change_nothing() {
    let inst = sqlite_install(
        "[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
         [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n",
    );
    let db = inst.path("shop.db");
    inst.run(&["backup", "--tenant", TENANT]).ok();
    let snapshot = || {
        (
            sqlite_fingerprint(&db),
            inst.column("SELECT id || status FROM backups ORDER BY id"),
            inst.column("SELECT id || state FROM restores ORDER BY id"),
            sqlite_leftovers(inst.dir.path()),
        )
    };
    let unknown = "01900000-0000-7000-8000-000000000000";
    let cases: &[(&[&str], &str)] = &[
        (
            &["restore", "--tenant", TENANT, "--over-live"],
            "required arguments were not provided:\n  --reason",
        ),
        (
            &[
                "restore",
                "--tenant",
                TENANT,
                "--over-live",
                "--reason",
                " ",
            ],
            "--reason is empty",
        ),
        (
            &[
                "restore",
                "--tenant",
                TENANT,
                "--over-live",
                "--reason",
                "x",
                "--backup",
                unknown,
            ],
            &format!("tenant shop has no backup {unknown}"),
        ),
        (
            &[
                "restore",
                "--tenant",
                TENANT,
                "--over-live",
                "--reason",
                "x",
                "--before",
                "2000-01-01T00:00:00Z",
            ],
            "no completed backup verified in region eu with a recovery point at or before 2000-01-01T00:00:00Z",
        ),
        (
            &[
                "restore",
                "--tenant",
                TENANT,
                "--over-live",
                "--reason",
                "x",
                "--before",
                "yesterday",
            ],
            "expected an RFC 3339 time",
        ),
        (
            &[
                "restore",
                "--tenant",
                TENANT,
                "--over-live",
                "--to-side",
                "x.db",
                "--reason",
                "x",
            ],
            "cannot be used with",
        ),
        (
            &["restore", "finalize", unknown, "--reason", "x"],
            &format!("no restore {unknown} in the catalog"),
        ),
        (
            &["restore", "rollback", unknown, "--reason", "x"],
            &format!("no restore {unknown} in the catalog"),
        ),
        (
            &["restore", "rollback", "nope", "--reason", "x"],
            "is not a restore id",
        ),
        (&["restore", "finalize", unknown], "--reason"),
    ];
    let before = snapshot();
    for (args, needle) in cases {
        let out = inst.run(args).failed();
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert_eq!(snapshot(), before, "{args:?} changed something");
    }

    // Rollback of a restore on the side; a second restore over live while one is swapped.
    inst.restore(TENANT, &[], inst.path("side.db")).ok();
    let side = newest_restore(&inst)[0].clone();
    let out = inst
        .run(&["restore", "rollback", &side, "--reason", "x"])
        .failed();
    assert!(out.stderr.contains("restore on the side"), "{}", out.stderr);
    // Without --backup: the newest verified backup before this restore's own safety backup.
    let backed_up = sqlite_fingerprint(&db);
    sqlite_exec(&db, "DELETE FROM invoices WHERE id > 10");
    over_live(&inst, &["--reason", "INC-9"], &[]).ok();
    assert_eq!(sqlite_fingerprint(&db), backed_up);
    let open = newest_restore(&inst)[0].clone();
    let before = snapshot();
    let out = over_live(&inst, &["--reason", "INC-10"], &[]).failed();
    assert!(
        out.stderr
            .contains(&format!("has restore {open} swapped in"))
            && out.stderr.contains("finalize or roll it back first"),
        "{}",
        out.stderr
    );
    assert_eq!(snapshot(), before, "no safety backup, no restore recorded");
    inst.run(&["restore", "finalize", &open, "--reason", "x"])
        .ok();
    let out = inst
        .run(&["restore", "finalize", &open, "--reason", "x"])
        .failed();
    assert!(
        out.stderr.contains("is finalized, not swapped"),
        "{}",
        out.stderr
    );

    let refused: Vec<Vec<String>> = audited(&inst)
        .into_iter()
        .filter(|r| r[1] == "refused")
        .collect();
    // The empty reason and the RFC 3339 time are refused by the CLI before any catalog.
    assert_eq!(refused.len(), 7, "{refused:?}");
    assert!(refused.iter().any(|r| r[2].contains(unknown)));
}

/// The progress a restore reports: stages and every artifact byte fetched.
#[test]
fn progress_counts_every_artifact_byte() {
    let inst = sqlite_install(
        "[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
         [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n",
    );
    inst.run(&["backup", "--tenant", TENANT]).ok();
    let size: u64 = inst
        .column("SELECT artifact_size FROM backups")
        .pop()
        .unwrap()
        .parse()
        .unwrap();
    use lifeboat::executor::restore::{Progress, RestoreRequest, Stage, Target};
    let progress = std::sync::Arc::new(Progress::default());
    let target = inst.path("progress.db");
    block_on(async {
        let config = lifeboat::config::Config::load(&inst.config).unwrap();
        let ctx = lifeboat::executor::Context::open(config).await.unwrap();
        let req = RestoreRequest {
            tenant: lifeboat::tenant::TenantId::parse(TENANT).unwrap(),
            backup: None,
            before: None,
            target: Target::Side(target.display().to_string()),
            region: None,
            ownership: None,
            reason: "TEST-1".into(),
            actor: ctx.actor.clone(),
            id: None,
        };
        lifeboat::executor::restore::restore(&ctx, &req, &progress)
            .await
            .unwrap();
    });
    assert_eq!(progress.bytes(), (size, size));
    assert_eq!(progress.stage(), Stage::Done);
    assert!(size > 0 && target.exists());
}
