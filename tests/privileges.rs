//! `lifeboat config check --connect`: every tenant's server is checked with the backup
//! credentials before the first backup fails, and the README's grants are exactly what fixes it.

mod support;

use std::time::Duration;
use support::*;

/// The SQL block of the README's "Backup privileges" section for `engine`, as written there.
fn readme_grants(engine: &str) -> String {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let marker = format!("<!-- grants: {engine} -->");
    let at = readme
        .find(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker}"));
    let after = &readme[at + marker.len()..];
    let start = after
        .find("```sql\n")
        .expect("a sql block after the marker")
        + "```sql\n".len();
    let end = after[start..].find("```").expect("the block ends");
    after[start..start + end].to_string()
}

/// Nothing was backed up: no catalog row and no object in any region.
fn no_backup(inst: &Install) {
    assert!(
        inst.column("SELECT id FROM backups").is_empty(),
        "a backup was attempted"
    );
    for region in ["regions/eu", "regions/us"] {
        let dir = inst.path(region);
        let found = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(found, 0, "{} holds objects", dir.display());
    }
}

const PG_SCHEMA: &str = "
CREATE SCHEMA app;
CREATE TABLE app.orders (id int PRIMARY KEY, cents int);
INSERT INTO app.orders SELECT g, g * 100 FROM generate_series(1, 50) g;
CREATE TABLE app.secrets (id int PRIMARY KEY, v text);
INSERT INTO app.secrets VALUES (1, 'hidden');
CREATE TABLE app.notes (id int PRIMARY KEY, author text, body text);
INSERT INTO app.notes VALUES (1, 'alice', 'a'), (2, 'bob', 'b');
ALTER TABLE app.notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_notes ON app.notes USING (author = current_user);
CREATE VIEW app.order_total AS SELECT sum(cents) AS cents FROM app.orders;
GRANT USAGE ON SCHEMA app TO lifeboat_backup;
GRANT SELECT ON app.orders, app.notes, app.order_total TO lifeboat_backup;
";

#[test]
fn postgres_gaps_are_named_before_a_backup_and_the_readme_grants_close_them() {
    let pg = Postgres::start();
    let inst = Install::new();
    pg.psql("postgres", "CREATE ROLE lifeboat_backup LOGIN");
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql("postgres", "CREATE DATABASE disc_shop");
    // `shop` is configured, `disc_shop` found by a discovery source: both are checked.
    pg.psql("shop", PG_SCHEMA);
    pg.psql("disc_shop", PG_SCHEMA);
    let port = free_port();
    let server = format!("postgres://lifeboat_backup@127.0.0.1:{}", pg.port);
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n{DIR_REGIONS}\
         [[tenants]]\nid = \"shop\"\nengine = \"postgres\"\ntier = \"paid\"\nurl = \"{server}/shop\"\n\n\
         [[discovery]]\nkind = \"server\"\nengine = \"postgres\"\nurl = \"{server}/postgres\"\npattern = \"disc_*\"\ntier = \"paid\"\n",
        inst.head()
    ));

    let out = inst.run(&["config", "check", "--connect"]).failed().stdout;
    for tenant in ["shop", "disc_shop"] {
        let lines: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with(&format!("MISSING     {tenant} (postgres")))
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].contains("needs SELECT on table app.secrets; fix: GRANT SELECT ON app.secrets TO lifeboat_backup;"),
            "{out}"
        );
        assert!(
            lines[1]
                .contains("needs BYPASSRLS or ownership for table app.notes (row-level security")
                && lines[1].contains("fix: ALTER ROLE lifeboat_backup BYPASSRLS;"),
            "{out}"
        );
    }
    assert!(
        out.contains("2 tenants on 1 server checked with their backup credentials: 0 ok, 2 missing privileges, 0 unreachable"),
        "{out}"
    );
    no_backup(&inst);

    // The daemon logs the same findings at start-up, and starts anyway.
    let serve = Serve::start(&inst.config, &[port], &[]);
    serve.until_logged(
        "disc_shop (postgres, postgres://lifeboat_backup@127.0.0.1",
        Duration::from_secs(60),
    );
    serve.until_logged("needs SELECT on table app.secrets", Duration::from_secs(60));
    serve.until_logged(
        "needs BYPASSRLS or ownership for table app.notes",
        Duration::from_secs(60),
    );
    let log = serve.log_text();
    assert!(log.contains("WARN"), "{log}");
    serve.stop();

    // Exactly the README's grants, run as a superuser.
    pg.psql("postgres", &readme_grants("postgres"));
    let out = inst.run(&["config", "check", "--connect"]).ok().stdout;
    assert!(out.contains("ok          shop (postgres"), "{out}");
    assert!(out.contains("ok          disc_shop (postgres"), "{out}");
    assert!(
        out.contains(": 2 ok, 0 missing privileges, 0 unreachable"),
        "{out}"
    );
    inst.run(&["backup", "--tenant", "shop"]).ok();
}

/// A database with every kind of object mariadb-dump writes besides tables.
const MY_SCHEMA: &str = "
CREATE TABLE orders (id int PRIMARY KEY, cents int);
INSERT INTO orders VALUES (1, 100), (2, 200);
CREATE VIEW order_total AS SELECT sum(cents) AS cents FROM orders;
CREATE TRIGGER orders_cents BEFORE INSERT ON orders FOR EACH ROW SET NEW.cents = abs(NEW.cents);
CREATE FUNCTION double_it(x int) RETURNS int DETERMINISTIC RETURN x * 2;
CREATE PROCEDURE count_orders() SELECT count(*) FROM orders;
CREATE EVENT purge_negative ON SCHEDULE EVERY 1 DAY DO DELETE FROM orders WHERE cents < 0;
";

fn my_objects(my: &Mariadb, db: &str) -> String {
    my.sql(
        "",
        &format!(
            "SELECT (SELECT count(*) FROM information_schema.routines WHERE routine_schema = '{db}'),
                    (SELECT count(*) FROM information_schema.triggers WHERE trigger_schema = '{db}'),
                    (SELECT count(*) FROM information_schema.events WHERE event_schema = '{db}'),
                    (SELECT count(*) FROM information_schema.views WHERE table_schema = '{db}')"
        ),
    )
}

#[test]
fn mariadb_routine_privilege_is_named_and_the_readme_grants_make_a_whole_backup() {
    let my = Mariadb::start();
    let inst = Install::new();
    my.sql("", "CREATE DATABASE shop");
    my.sql("shop", MY_SCHEMA);
    // The issue's user: everything on the database, and nothing else.
    my.sql(
        "",
        "CREATE USER lifeboat_backup@'%' IDENTIFIED BY 'b4ckup-pw'; GRANT ALL ON shop.* TO lifeboat_backup@'%';",
    );
    let pw = inst.path("backup.pw");
    write_private(&pw, "b4ckup-pw");
    let config = |user: &str, pw: &std::path::Path| {
        format!(
            "{}{DIR_REGIONS}[[tenants]]\nid = \"shop\"\nengine = \"mariadb\"\ntier = \"paid\"\n\
             url = \"mariadb://{user}@127.0.0.1:{}/shop\"\npassword-file = \"{}\"\n",
            inst.head(),
            my.port,
            pw.display()
        )
    };
    inst.write_config(&config("lifeboat_backup", &pw));

    let run = inst.run(&["config", "check", "--connect"]).failed();
    let out = run.stdout;
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("MISSING")).collect();
    assert_eq!(lines.len(), 1, "{out}");
    assert!(
        lines[0].starts_with("MISSING     shop (mariadb, mariadb://lifeboat_backup@127.0.0.1:")
            && lines[0].contains("needs SELECT on mysql.proc")
            && lines[0].ends_with("fix: GRANT SELECT ON mysql.proc TO 'lifeboat_backup'@'%';"),
        "{out}"
    );
    assert!(!out.contains("b4ckup-pw") && !run.stderr.contains("b4ckup-pw"));
    no_backup(&inst);
    // What it predicts: the backup fails on the routines.
    let failed = inst.run(&["backup", "--tenant", "shop"]).failed();
    assert!(
        failed
            .stderr
            .contains("insufficient privileges to SHOW CREATE")
            || failed
                .stdout
                .contains("insufficient privileges to SHOW CREATE"),
        "{}\n{}",
        failed.stdout,
        failed.stderr
    );

    // Exactly the README's grants, run as root.
    my.sql("", &readme_grants("mariadb"));
    let out = inst.run(&["config", "check", "--connect"]).ok().stdout;
    assert!(out.contains("ok          shop (mariadb"), "{out}");
    inst.run(&["backup", "--tenant", "shop"]).ok();

    // The backup holds every object: restored on the side by a user that may create databases.
    let admin_pw = inst.path("admin.pw");
    write_private(&admin_pw, &my.password);
    inst.write_config(&config("lifeboat", &admin_pw));
    inst.restore("shop", &[], "shop_copy").ok();
    assert_eq!(my_objects(&my, "shop_copy"), my_objects(&my, "shop"));
    assert_eq!(my_objects(&my, "shop"), "2\t1\t1\t1");
}
