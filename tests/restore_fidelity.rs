//! A restore reproduces what the source database was, beyond its rows, on real servers:
//! PostgreSQL row-level security (policies, ENABLE and FORCE flags) with a materialized view
//! over a forced table, restored with `--owner` and over live; a backup role that row-level
//! security keeps from reading everything is told what to grant; a SQLite tenant's journal
//! mode, page size, `user_version` and `application_id` survive restores on the side and over
//! live.

mod support;

use std::path::Path;
use support::*;

fn write_config(inst: &Install, tenant: &str) {
    inst.write_config(&format!("{}{DIR_REGIONS}{tenant}", inst.head()));
}

fn pg_tenant(pg: &Postgres, user: &str) -> String {
    format!(
        "[[tenants]]\nid = \"shop\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"postgres://{user}@127.0.0.1:{}/shop\"\n",
        pg.port
    )
}

fn completed_backups(inst: &Install) -> Vec<String> {
    inst.column(
        "SELECT id FROM backups WHERE tenant_id = 'shop' AND status = 'completed' ORDER BY id",
    )
}

// ---- PostgreSQL ------------------------------------------------------------------------------

/// Everything here is owned by `app`, which has no BYPASSRLS: `notes` has row-level security
/// (its owner is exempt), `secrets` forces it on its owner too, so the materialized view over
/// `secrets` holds what `app` may see (the visible rows), and refreshing it needs RLS applied.
const RLS_SCHEMA: &str = r#"
SET ROLE app;
CREATE TABLE notes (id int PRIMARY KEY, author text NOT NULL, body text);
INSERT INTO notes SELECT g, 'user' || (g % 3), 'note ' || g FROM generate_series(1, 300) g;
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_own ON notes USING (author = current_setting('app.user', true));
CREATE TABLE secrets (id int PRIMARY KEY, visible bool NOT NULL, v text);
INSERT INTO secrets SELECT g, g % 4 <> 0, 'secret ' || g FROM generate_series(1, 200) g;
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY secrets_visible ON secrets FOR SELECT USING (visible);
CREATE POLICY secrets_insert ON secrets FOR INSERT TO app WITH CHECK (v <> '');
CREATE MATERIALIZED VIEW secret_summary AS
  SELECT visible, count(*) AS n, md5(string_agg(v, ',' ORDER BY id)) AS digest FROM secrets GROUP BY visible;
CREATE MATERIALIZED VIEW notes_per_author AS SELECT author, count(*) AS n FROM notes GROUP BY author;
"#;

/// Rows, materialized view contents, policies and RLS flags of the `public` schema, read as the
/// superuser (who sees every row), as one comparable text; owners apart.
fn pg_state(pg: &Postgres, db: &str) -> String {
    let mut out = Vec::new();
    for relation in ["notes", "secrets", "secret_summary", "notes_per_author"] {
        out.push(pg.psql(
            db,
            &format!(
                "SELECT '{relation} ' || count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {relation} t"
            ),
        ));
    }
    out.push(pg.psql(
        db,
        "SELECT string_agg(tablename || ':' || policyname || ':' || permissive || ':' || cmd || ':' \
         || roles::text || ':' || coalesce(qual, '') || ':' || coalesce(with_check, ''), E'\\n' \
         ORDER BY tablename, policyname) FROM pg_policies WHERE schemaname = 'public'",
    ));
    out.push(pg.psql(
        db,
        "SELECT string_agg(relname || ' rls=' || relrowsecurity || ' force=' || relforcerowsecurity \
         || ' populated=' || relispopulated, E'\\n' ORDER BY relname) FROM pg_class \
         WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'm')",
    ));
    out.join("\n")
}

/// The owners of the database and of every relation in `public`.
fn pg_owners(pg: &Postgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT pg_get_userbyid(datdba) || ' / ' || (SELECT string_agg(DISTINCT pg_get_userbyid(relowner), ',') \
         FROM pg_class WHERE relnamespace = 'public'::regnamespace) FROM pg_database WHERE datname = current_database()",
    )
}

fn rls_server() -> Postgres {
    let pg = Postgres::start();
    for sql in [
        "CREATE ROLE app",
        "CREATE ROLE restorer",
        "CREATE DATABASE shop OWNER app",
    ] {
        pg.psql("postgres", sql);
    }
    pg.psql("shop", RLS_SCHEMA);
    pg
}

/// A restore with `--owner` of a database with forced row-level security and a materialized
/// view over it succeeds and is equal to the source; so is a restore over live, which keeps the
/// source's owners.
#[test]
fn postgres_row_level_security_restores_with_owner_and_over_live() {
    let pg = rls_server();
    // The source's view holds the rows its owner may see: 150 visible of 200.
    assert!(
        pg.psql("shop", "SELECT n FROM secret_summary")
            .lines()
            .eq(["150"]),
        "{}",
        pg.psql("shop", "SELECT * FROM secret_summary")
    );
    let inst = Install::new();
    write_config(&inst, &pg_tenant(&pg, "postgres"));
    inst.run(&["backup", "--tenant", "shop"]).ok();
    let source = pg_state(&pg, "shop");
    assert_eq!(pg_owners(&pg, "shop"), "app / app");

    let out = inst
        .restore("shop", &["--owner", "restorer"], "shop_restorer")
        .ok();
    assert!(out.stdout.contains("shop_restorer"), "{}", out.stdout);
    assert_eq!(pg_state(&pg, "shop_restorer"), source);
    assert_eq!(pg_owners(&pg, "shop_restorer"), "restorer / restorer");

    // Over live: the source's owners are kept, and the refresh runs as `app` again.
    let backup = completed_backups(&inst).pop().unwrap();
    pg.psql(
        "shop",
        "DELETE FROM secrets WHERE id <= 20; REFRESH MATERIALIZED VIEW secret_summary",
    );
    assert_ne!(pg_state(&pg, "shop"), source);
    restore_over_live(&inst.config, &backup);
    assert_eq!(pg_state(&pg, "shop"), source);
    assert_eq!(pg_owners(&pg, "shop"), "app / app");
}

/// A backup role without BYPASSRLS fails on tables with row-level security before pg_dump
/// starts, with one line naming the tables and the grant; after that grant it backs up.
#[test]
fn postgres_backup_role_without_bypassrls_is_told_what_to_grant() {
    let pg = rls_server();
    for sql in [
        "CREATE ROLE backup LOGIN",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO backup",
    ] {
        pg.psql("shop", sql);
    }
    let inst = Install::new();
    write_config(&inst, &pg_tenant(&pg, "backup"));
    let out = inst.run(&["backup", "--tenant", "shop"]).failed();
    let line = out
        .stderr
        .lines()
        .find(|l| l.contains("BYPASSRLS"))
        .unwrap_or_else(|| panic!("no line says what to grant: {}", out.stderr));
    for part in [
        "public.notes",
        "public.secrets (FORCE ROW LEVEL SECURITY)",
        "row-level security",
        "ALTER ROLE \"backup\" BYPASSRLS;",
    ] {
        assert!(line.contains(part), "{part:?} not in {line}");
    }
    assert!(completed_backups(&inst).is_empty());

    // The owner reads `notes` whole but not `secrets`, which forces RLS on it too: only the
    // grant is offered.
    pg.psql("postgres", "ALTER ROLE app LOGIN");
    write_config(&inst, &pg_tenant(&pg, "app"));
    let out = inst.run(&["backup", "--tenant", "shop"]).failed();
    assert!(
        out.stderr.lines().any(|l| l.contains("role app cannot back up public.secrets (FORCE ROW LEVEL SECURITY) with row-level security")
            && l.contains("ALTER ROLE \"app\" BYPASSRLS;")
            && !l.contains("public.notes")),
        "{}",
        out.stderr
    );

    pg.psql("postgres", "ALTER ROLE backup BYPASSRLS");
    write_config(&inst, &pg_tenant(&pg, "backup"));
    inst.run(&["backup", "--tenant", "shop"]).ok();
    // Restored by a role that may create databases, with the source's owners: the view over
    // `secrets` is refreshed as `app` again, so it holds what `app` sees.
    write_config(&inst, &pg_tenant(&pg, "postgres"));
    inst.restore("shop", &["--keep-owners"], "shop_copy").ok();
    assert_eq!(pg_state(&pg, "shop_copy"), pg_state(&pg, "shop"));
}

// ---- SQLite --------------------------------------------------------------------------------

/// `journal_mode`, `page_size`, `user_version`, `application_id` of a SQLite file, read through
/// a writable connection (a read-only one would leave -wal and -shm files behind).
fn sqlite_settings(path: &Path) -> Vec<String> {
    let path = path.to_path_buf();
    block_on(async move {
        use sqlx::{ConnectOptions, Connection};
        let mut c = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .connect()
            .await
            .unwrap();
        let mut out = Vec::new();
        for pragma in [
            "journal_mode",
            "page_size",
            "user_version",
            "application_id",
        ] {
            let v: String = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT CAST({pragma} AS TEXT) FROM pragma_{pragma}"
            )))
            .fetch_one(&mut c)
            .await
            .unwrap();
            out.push(format!("{pragma}={v}"));
        }
        c.close().await.unwrap();
        out
    })
}

/// A SQLite tenant in WAL mode with a page size of 16 KiB, `user_version` 42 and
/// `application_id` 0x4c494645 backs up and comes back with all four, on the side and over
/// live.
#[test]
fn sqlite_file_settings_survive_restores_on_the_side_and_over_live() {
    let inst = Install::new();
    let db = inst.path("shop.db");
    sqlite_exec(
        &db,
        "PRAGMA page_size = 16384; PRAGMA journal_mode = WAL;
         PRAGMA user_version = 42; PRAGMA application_id = 1279870277;
         CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, blob BLOB);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 2000)
           INSERT INTO items (name, blob) SELECT printf('item %d', n), randomblob(100) FROM s;",
    );
    let source = sqlite_settings(&db);
    assert_eq!(
        source,
        [
            "journal_mode=wal",
            "page_size=16384",
            "user_version=42",
            "application_id=1279870277"
        ]
    );
    write_config(
        &inst,
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n",
    );
    inst.run(&["backup", "--tenant", "shop"]).ok();
    let backup = completed_backups(&inst).pop().unwrap();

    let side = inst.path("side.db");
    inst.restore("shop", &[], &side).ok();
    assert_eq!(sqlite_settings(&side), source, "on the side");
    sqlite_equal(&db, &side);
    // Nothing of the restore's temporary file is left beside it.
    let mut names: Vec<String> = std::fs::read_dir(inst.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("side") || n.contains("lifeboat-restore"))
        .collect();
    names.sort();
    assert_eq!(names, ["side.db"]);

    // Over live, after the application changed its rows and its user_version.
    sqlite_exec(
        &db,
        "DELETE FROM items WHERE id <= 100; PRAGMA user_version = 43;",
    );
    restore_over_live(&inst.config, &backup);
    assert_eq!(sqlite_settings(&db), source, "over live");
    sqlite_equal(&db, &side);
}

/// `restore --over-live` of tenant `shop` from `backup`, which must succeed.
fn restore_over_live(config: &std::path::Path, backup: &str) {
    lifeboat(
        config,
        &[
            "restore",
            "--tenant",
            "shop",
            "--over-live",
            "--backup",
            backup,
            "--reason",
            "TEST-2",
        ],
    )
    .ok();
}
