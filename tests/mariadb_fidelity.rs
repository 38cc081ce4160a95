//! MariaDB backups that restore wherever the source data could live (issue 17). The server runs
//! at its defaults (`max_allowed_packet` 16 MiB). The tenant database has a non-default
//! collation, a 12 MB binary row, a large row in a table without a primary key, and every object
//! type; a routine's "Database Collation" differs from the database's. It is backed up by a user
//! holding exactly the README's backup grants and restored by one holding exactly its restore
//! grants: on the side (equal content, the database's and every object's collations as in the
//! source, the source database untouched) and over live.

mod support;

use support::*;

const README: &str = include_str!("../README.md");

/// The README's GRANT statements for `user`, for the database `db` and the host `127.0.0.1`.
fn readme_grants(user: &str, db: &str) -> String {
    let grants: Vec<String> = README
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("GRANT ") && l.contains(&format!("'{user}'@")))
        // The restore block names `TENANT_DB`@`HOST`; "Backup privileges" names `shop` and '%'.
        .map(|l| {
            l.replace("TENANT_DB", db)
                .replace(" shop.*", &format!(" `{db}`.*"))
                .replace("'HOST'", "'127.0.0.1'")
                .replace("'%'", "'127.0.0.1'")
        })
        .collect();
    assert!(!grants.is_empty(), "the README lists no grants for {user}");
    grants.join("\n")
}

const SCHEMA: &str = r#"
CREATE TABLE blobs (id INT PRIMARY KEY, body LONGBLOB NOT NULL);
CREATE TABLE journal (at INT, note LONGTEXT, payload MEDIUMBLOB);
CREATE VIEW blob_sizes AS SELECT id, LENGTH(body) AS size FROM blobs;
CREATE TRIGGER journal_at BEFORE INSERT ON journal FOR EACH ROW SET NEW.at = COALESCE(NEW.at, -1);
CREATE FUNCTION same_letters(a VARCHAR(10), b VARCHAR(10)) RETURNS INT DETERMINISTIC RETURN a = b;
CREATE PROCEDURE count_notes(IN x VARCHAR(10), OUT n INT) SELECT COUNT(*) INTO n FROM journal WHERE LEFT(note, 2) = x;
CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY DO DELETE FROM journal WHERE at < -100;
CREATE SEQUENCE invoice_no START WITH 1000;
SELECT NEXTVAL(invoice_no), NEXTVAL(invoice_no);
"#;

/// 12 MiB of random bytes in row 1 of `blobs`, built 1 MiB per statement: the server at its
/// defaults takes the row, not one statement carrying it.
const BIG_ROW: &str = "SET SESSION group_concat_max_len = 4194304;
INSERT INTO blobs VALUES (1, ''), (2, RANDOM_BYTES(100));
UPDATE blobs SET body = CONCAT(body, (SELECT GROUP_CONCAT(RANDOM_BYTES(1024) SEPARATOR '') FROM seq_1_to_1024)) WHERE id = 1;";

/// A row of about 8 MB of text (quotes, backslashes, accents) and 9 MiB of random bytes, in a
/// table without a primary key, between small rows.
const JOURNAL_ROWS: &str = "SET SESSION group_concat_max_len = 4194304;
INSERT INTO journal VALUES (1, 'first', NULL);
INSERT INTO journal VALUES (2, REPEAT(CONCAT('it''s ', CHAR(92), ' é ß ', CHAR(10)), 600000), '');
UPDATE journal SET payload = CONCAT(payload, (SELECT GROUP_CONCAT(RANDOM_BYTES(1024) SEPARATOR '') FROM seq_1_to_1024)) WHERE at = 2;";

fn tenant_toml(id: &str, my: &Mariadb, user: &str, db: &str, pw: &std::path::Path) -> String {
    format!(
        "[[tenants]]\nid = \"{id}\"\nengine = \"mariadb\"\ntier = \"paid\"\nurl = \"mariadb://{user}@127.0.0.1:{}/{db}\"\npassword-file = \"{}\"\n\n",
        my.port,
        pw.display()
    )
}

/// Everything compared between a database and its restore: rows, content checksums, the
/// database's collation, each object's character sets and collations, and what they compute.
fn fingerprint(my: &Mariadb, db: &str) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    facts.push((
        "database".to_string(),
        my.sql(
            db,
            &format!(
            "SELECT default_character_set_name, default_collation_name FROM information_schema.schemata WHERE schema_name = '{db}'"
            ),
        ),
    ));
    for table in ["blobs", "journal"] {
        facts.push((
            table.to_string(),
            my.sql(
                db,
                &format!(
                "SELECT COUNT(*), SUM(LENGTH(t.payload_or_body)), MD5(GROUP_CONCAT(MD5(t.payload_or_body) ORDER BY MD5(t.payload_or_body))) FROM (SELECT {} AS payload_or_body FROM {table}) t",
                if table == "blobs" { "body" } else { "CONCAT_WS('|', at, MD5(note), MD5(payload))" }
                ),
            ),
        ));
        let checksum = my.sql(db, &format!("CHECKSUM TABLE {table}"));
        facts.push((
            format!("CHECKSUM TABLE {table}"),
            checksum.split('\t').nth(1).unwrap_or_default().to_string(),
        ));
    }
    // The collation of the database decides: 'ß' = 'ss' under utf8mb4_unicode_ci only.
    for (what, sql) in [
        ("view", "SELECT * FROM blob_sizes ORDER BY id"),
        ("function", "SELECT same_letters('ß', 'ss')"),
        ("legacy function", "SELECT legacy_same('ß', 'ss')"),
        ("procedure", "CALL count_notes('IT', @n); SELECT @n"),
        (
            "sequence",
            "SELECT next_not_cached_value, increment, cache_size FROM invoice_no",
        ),
    ] {
        let v = my.sql(db, sql);
        facts.push((what.to_string(), v));
    }
    // character_set_client, collation_connection and Database Collation: the last three columns.
    for show in [
        "FUNCTION same_letters",
        "FUNCTION legacy_same",
        "PROCEDURE count_notes",
        "TRIGGER journal_at",
        "EVENT tidy",
    ] {
        let row = my.sql(db, &format!("SHOW CREATE {show}"));
        let cols: Vec<&str> = row.split('\t').collect();
        let n = cols.len();
        assert!(n >= 4, "SHOW CREATE {show}: {row}");
        let collations = if show.starts_with("TRIGGER") {
            // Trigger, sql_mode, statement, then the three, then Created.
            cols[3..6].join(" ")
        } else {
            cols[n - 3..].join(" ")
        };
        facts.push((format!("SHOW CREATE {show}"), collations));
    }
    let view = my.sql(db, "SHOW CREATE VIEW blob_sizes");
    facts.push((
        "SHOW CREATE VIEW".into(),
        view.split('\t').skip(2).collect::<Vec<_>>().join(" "),
    ));
    facts
}

/// Two directory regions: this test is about the engine.
fn write_config(inst: &Install, tenants: &str) {
    inst.write_config(&format!("{}{DIR_REGIONS}{tenants}", inst.head()));
}

#[test]
fn mariadb_large_rows_collations_and_minimal_grants() {
    let my = Mariadb::start();
    let inst = Install::new();
    assert_eq!(my.sql("", "SELECT @@max_allowed_packet"), "16777216");

    my.sql(
        "",
        "CREATE DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci",
    );
    // Created while the database was utf8mb4_general_ci: mariadb-dump wraps it in
    // ALTER DATABASE `shop` statements.
    my.sql(
        "shop",
        "CREATE FUNCTION legacy_same(a VARCHAR(10), b VARCHAR(10)) RETURNS INT DETERMINISTIC RETURN a = b;
         ALTER DATABASE shop CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;",
    );
    my.sql("shop", SCHEMA);
    my.sql("shop", &format!("{BIG_ROW}{}", "\nUPDATE blobs SET body = CONCAT(body, (SELECT GROUP_CONCAT(RANDOM_BYTES(1024) SEPARATOR '') FROM seq_1_to_1024)) WHERE id = 1;".repeat(11)));
    my.sql("shop", &format!("{JOURNAL_ROWS}{}", "\nUPDATE journal SET payload = CONCAT(payload, (SELECT GROUP_CONCAT(RANDOM_BYTES(1024) SEPARATOR '') FROM seq_1_to_1024)) WHERE at = 2;".repeat(8)));
    my.sql("shop", "INSERT INTO journal (note) VALUES ('last')");
    assert_eq!(
        my.sql("shop", "SELECT LENGTH(body) FROM blobs WHERE id = 1"),
        "12582912"
    );
    assert_eq!(
        my.sql("shop", "SELECT LENGTH(payload) FROM journal WHERE at = 2"),
        "9437184"
    );
    let source = fingerprint(&my, "shop");
    assert!(
        source.iter().any(|(w, v)| w == "function" && v == "1")
            && source
                .iter()
                .any(|(w, v)| w == "legacy function" && v == "0"),
        "{source:?}"
    );

    let pw = inst.path("tenant.password");
    write_private(&pw, &my.password);
    for user in ["lifeboat_backup", "lifeboat_restore"] {
        my.sql(
            "",
            &format!(
                "CREATE USER '{user}'@'127.0.0.1' IDENTIFIED BY '{}';\n{}",
                my.password,
                readme_grants(user, "shop")
            ),
        );
    }

    // Backed up with the backup grants only.
    write_config(
        &inst,
        &tenant_toml("shop", &my, "lifeboat_backup", "shop", &pw),
    );
    inst.run(&["backup", "--tenant", "shop"]).ok();

    // Restored on the side with the restore grants only.
    write_config(
        &inst,
        &tenant_toml("shop", &my, "lifeboat_restore", "shop", &pw),
    );
    let out = inst.restore("shop", &[], "shop_restored").ok();
    assert!(out.stdout.contains("2 tables, 5 rows"), "{}", out.stdout);
    let restored = fingerprint(&my, "shop_restored");
    for ((what, a), (_, b)) in source.iter().zip(&restored) {
        assert_eq!(a, b, "{what} differs after the restore on the side");
    }
    // The source database was never altered by the restore.
    assert_eq!(fingerprint(&my, "shop"), source);

    // Over live: a tenant of tables only (a swap carries no routines), its large rows included.
    my.sql(
        "",
        "CREATE DATABASE files CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
    );
    my.sql(
        "files",
        &format!(
            "CREATE TABLE blobs (id INT PRIMARY KEY, body LONGBLOB NOT NULL);
             CREATE TABLE journal (at INT, note LONGTEXT, payload MEDIUMBLOB);
             {BIG_ROW}{}{JOURNAL_ROWS}",
            "\nUPDATE blobs SET body = CONCAT(body, (SELECT GROUP_CONCAT(RANDOM_BYTES(1024) SEPARATOR '') FROM seq_1_to_1024)) WHERE id = 1;".repeat(11)
        ),
    );
    my.sql(
        "",
        &format!(
            "{}\n{}",
            readme_grants("lifeboat_backup", "files"),
            readme_grants("lifeboat_restore", "files")
        ),
    );
    let files = |db: &str| {
        ["blobs", "journal"]
            .iter()
            .map(|t| my.sql(db, &format!("CHECKSUM TABLE {t}")).split('\t').nth(1).unwrap().to_string())
            .chain([my.sql(
                "",
                &format!("SELECT default_collation_name FROM information_schema.schemata WHERE schema_name = '{db}'"),
            )])
            .collect::<Vec<_>>()
    };
    let before = files("files");
    write_config(
        &inst,
        &tenant_toml("files", &my, "lifeboat_backup", "files", &pw),
    );
    inst.run(&["backup", "--tenant", "files"]).ok();
    my.sql(
        "files",
        "DELETE FROM journal; UPDATE blobs SET body = 'changed'",
    );
    write_config(
        &inst,
        &tenant_toml("files", &my, "lifeboat_restore", "files", &pw),
    );
    let backups = inst.column(
        "SELECT id FROM backups WHERE tenant_id = 'files' AND status = 'completed' ORDER BY id",
    );
    lifeboat(
        &inst.config,
        &[
            "restore",
            "--tenant",
            "files",
            "--over-live",
            "--backup",
            &backups[0],
            "--reason",
            "TEST-2",
        ],
    )
    .ok();
    assert_eq!(files("files"), before);
    assert_eq!(before[2], "utf8mb4_unicode_ci");
}
