//! The foundation path against real servers: SQLite and PostgreSQL tenants through two Garage
//! regions and back.

mod support;

use std::path::Path;
use std::process::Command;
use support::*;

const MARKER: &str = "zebra-marker-7731";

fn make_pg_tenant(pg: &Postgres, db: &str) {
    pg.psql("postgres", &format!("CREATE DATABASE {db}"));
    pg.psql(
        db,
        &format!(
            "CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, tags text[], meta jsonb);
             CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id),
                                  total numeric(10,2), created_at timestamptz DEFAULT now());
             CREATE INDEX orders_customer ON orders(customer_id);
             CREATE SEQUENCE invoice_numbers START 1000;
             SELECT setval('invoice_numbers', 4242);
             INSERT INTO customers (name, tags, meta)
               SELECT '{MARKER} ' || g, ARRAY['a', 'b' || g], jsonb_build_object('n', g) FROM generate_series(1, 2000) g;
             INSERT INTO orders (customer_id, total) SELECT 1 + g % 2000, g * 1.5 FROM generate_series(1, 5000) g;"
        ),
    );
}

/// A fingerprint of a PostgreSQL database's content, table by table, plus sequences and indexes.
fn pg_fingerprint(pg: &Postgres, db: &str) -> String {
    let mut out = String::new();
    for t in ["customers", "orders"] {
        out += &pg.psql(db, &format!("SELECT count(*) || ':' || md5(string_agg(t::text, '|' ORDER BY t::text)) FROM {t} t"));
        out.push('\n');
    }
    out += &pg.psql(
        db,
        "SELECT string_agg(sequencename || '=' || coalesce(last_value, 0), ',' ORDER BY sequencename) FROM pg_sequences",
    );
    out.push('\n');
    out += &pg.psql(db, "SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes WHERE schemaname = 'public'");
    out
}

fn backup_ids(inst: &Install, tenant: &str) -> Vec<String> {
    inst.column(&format!(
        "SELECT id FROM backups WHERE tenant_id = '{tenant}' AND status = 'completed' ORDER BY id"
    ))
}

#[test]
fn sqlite_and_postgres_round_trip_through_two_garage_regions() {
    let (a, b, pg) = (Garage::start(), Garage::start(), Postgres::start());
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), MARKER);
    make_pg_tenant(&pg, "acme");
    inst.write_two_region_config(
        &a,
        &b,
        &format!(
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"shop.db\"\n\n\
         [[tenants]]\nid = \"acme\"\nengine = \"postgres\"\ntier = \"free\"\nurl = \"{}\"\n", pg.url("acme")
        ),
    );
    let out = inst.run(&["backup", "--all"]).ok();
    assert_eq!(
        out.stdout.matches("eu: verified, us: verified").count(),
        2,
        "{}",
        out.stdout
    );

    // Both regions hold artifact, manifest and key for both tenants, under the DESIGN layout.
    for g in [&a, &b] {
        for tenant in ["shop", "acme"] {
            let keys = g.list(&format!("prod/v1/tenants/{tenant}/"));
            assert_eq!(
                keys.iter().filter(|k| k.ends_with(".dump.zst.age")).count(),
                1,
                "{keys:?}"
            );
            assert_eq!(
                keys.iter()
                    .filter(|k| k.ends_with(".manifest.json"))
                    .count(),
                1,
                "{keys:?}"
            );
            assert_eq!(
                keys.iter()
                    .filter(|k| k.contains("/keys/") && k.ends_with(".age"))
                    .count(),
                1,
                "{keys:?}"
            );
        }
    }
    let listing = inst.run(&["backups", "--tenant", "acme"]).ok().stdout;
    assert!(
        listing.contains("completed")
            && listing.contains("eu=verified")
            && listing.contains("us=verified"),
        "{listing}"
    );

    // Restore each tenant on the side, from the primary, and compare with the original.
    let restored = inst.path("shop-restored.db");
    inst.restore("shop", &[], &restored).ok();
    let (tables, rows) = sqlite_equal(&inst.path("shop.db"), &restored);
    assert_eq!(
        (tables, rows),
        (3, 8000 + 1),
        "users, invoices and sqlite_sequence"
    ); // AUTOINCREMENT keeps one row
    let out = inst.restore("acme", &[], "acme_restored").ok();
    assert!(
        out.stdout.contains("2 tables, 7000 rows verified"),
        "{}",
        out.stdout
    );
    assert_eq!(
        pg_fingerprint(&pg, "acme"),
        pg_fingerprint(&pg, "acme_restored")
    );

    // Restoring onto an existing target is refused and changes nothing.
    let before = std::fs::read(&restored).unwrap();
    let out = inst.restore("shop", &[], &restored).failed();
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    assert_eq!(std::fs::read(&restored).unwrap(), before);
    let out = inst.restore("acme", &[], "acme_restored").failed();
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);

    // No object in either region holds plaintext: no SQLite or pg_dump magic, no row value.
    for g in [&a, &b] {
        for key in g.list("") {
            let body = g.get(&key);
            for needle in [
                b"SQLite format 3".as_slice(),
                b"PGDMP",
                MARKER.as_bytes(),
                b"customers",
                b"invoices",
            ] {
                assert!(
                    !body.windows(needle.len()).any(|w| w == needle),
                    "{key} contains plaintext {:?}",
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }

    // Break-glass: each artifact decrypts with the standard age CLI and zstd, given the master key.
    for (tenant, magic) in [("shop", b"SQLite format 3".as_slice()), ("acme", b"PGDMP")] {
        let keys = b.list(&format!("prod/v1/tenants/{tenant}/"));
        let key_obj = keys.iter().find(|k| k.contains("/keys/")).unwrap();
        let artifact = keys.iter().find(|k| k.ends_with(".dump.zst.age")).unwrap();
        let work = inst.path(&format!("breakglass-{tenant}"));
        std::fs::create_dir(&work).unwrap();
        std::fs::write(work.join("tenant-key.age"), b.get(key_obj)).unwrap();
        std::fs::write(work.join("X.dump.zst.age"), b.get(artifact)).unwrap();
        let script = format!(
            "set -eu; cd {w}; umask 077; age -d -i {m} tenant-key.age > t.key; age -d -i t.key X.dump.zst.age | zstd -d -q > dump",
            w = work.display(),
            m = inst.master_key.display()
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "break-glass for {tenant}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = std::fs::read(work.join("dump")).unwrap();
        assert!(
            dump.starts_with(magic),
            "{tenant}: decrypted dump starts with the engine's magic"
        );
    }
    assert_eq!(
        a.pending_multipart_uploads() + b.pending_multipart_uploads(),
        0
    );
}

#[test]
fn restore_from_the_secondary_alone_after_the_primary_bucket_is_emptied() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    make_sqlite_tenant(&inst.path("shop.db"), MARKER);
    inst.write_two_region_config(
        &a,
        &b,
        "[[tenants]]\nid = \"shop\"\nengine = \"sqlite\"\ntier = \"standard\"\npath = \"shop.db\"\n",
    );
    inst.run(&["backup", "--tenant", "shop"]).ok();
    inst.run(&["backup", "--tenant", "shop"]).ok();
    let ids = backup_ids(&inst, "shop");
    assert_eq!(ids.len(), 2);

    a.delete_all();
    assert!(a.list("").is_empty());

    // From the primary, named: a clear error, and no file is created.
    let target = inst.path("from-primary.db");
    let out = inst.restore("shop", &["--region", "eu"], &target).failed();
    assert!(
        out.stderr.contains("region eu") && out.stderr.contains("not found"),
        "{}",
        out.stderr
    );
    assert!(!target.exists());
    // No region named: the primary lost it, so the secondary serves, and the restore says so.
    let out = inst.restore("shop", &[], &target).ok();
    assert!(
        out.stderr.contains("region eu lists backup") && out.stdout.contains("from region us"),
        "{}{}",
        out.stdout,
        out.stderr
    );
    sqlite_equal(&inst.path("shop.db"), &target);

    // From the secondary: the newest backup, and a chosen older one, both restore and match.
    let target = inst.path("from-secondary.db");
    let out = inst.restore("shop", &["--region", "us"], &target).ok();
    assert!(
        out.stdout.contains(&ids[1]) && out.stdout.contains("from region us"),
        "{}",
        out.stdout
    );
    sqlite_equal(&inst.path("shop.db"), &target);
    let older = inst.path("older.db");
    inst.restore("shop", &["--region", "us", "--backup", &ids[0]], &older)
        .ok();
    sqlite_equal(&inst.path("shop.db"), &older);
}

#[test]
fn demo_runs_twice_with_nothing_but_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("d");
    for cycle in 1..=2 {
        let out = Command::new(env!("CARGO_BIN_EXE_lifeboat"))
            .args(["demo", "--dir"])
            .arg(&demo)
            .env_remove("LIFEBOAT_CONFIG")
            // Its private temporary directory goes with the test's.
            .env("TMPDIR", dir.path())
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "demo run {cycle}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("Every tenant meets its objectives."),
            "{stdout}"
        );
        assert!(stdout.contains("rows identical"), "{stdout}");
        let rows: Vec<&str> = stdout.lines().filter(|l| l.ends_with(" OK")).collect();
        assert_eq!(rows.len(), 12, "one verdict line per tenant: {stdout}");
        for row in rows {
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(
                cols[2],
                cycle.to_string(),
                "{row}: backups after run {cycle}"
            );
            assert_eq!(
                cols[3],
                format!("{cycle}/{cycle}"),
                "{row}: copies in eu-west"
            );
            assert_eq!(
                cols[4],
                format!("{cycle}/{cycle}"),
                "{row}: copies in us-east"
            );
        }
    }
    // The demo's config drives every other command.
    let out = lifeboat(
        &demo.join("lifeboat.toml"),
        &["backups", "--tenant", "acme"],
    )
    .ok();
    assert_eq!(
        out.stdout
            .matches("eu-west=verified us-east=verified")
            .count(),
        2,
        "{}",
        out.stdout
    );
    assert!(Path::new(&demo.join("master.key")).exists());
}

#[test]
fn large_artifacts_go_up_as_multipart_uploads_with_nothing_left_pending() {
    let (a, b) = (Garage::start(), Garage::start());
    let inst = Install::new();
    // About 24 MB of random bytes: zstd cannot shrink it, so the artifact spans several 5 MiB parts.
    let db = inst.path("big.db");
    sqlite_exec(
        &db,
        "CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB);
         WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM s WHERE n < 3000)
           INSERT INTO blobs (b) SELECT randomblob(8000) FROM s;",
    );
    inst.write_two_region_config(
        &a,
        &b,
        "[pipeline]\npart-size = \"5MiB\"\nupload-concurrency = 2\n\n\
         [[tenants]]\nid = \"big\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"big.db\"\n",
    );
    let out = inst.run(&["backup", "--tenant", "big"]).ok();
    assert!(
        out.stdout.contains("eu: verified, us: verified"),
        "{}",
        out.stdout
    );
    let size: i64 = inst.catalog_query("SELECT artifact_size FROM backups")[0][0]
        .parse()
        .unwrap();
    assert!(
        size > 4 * 5 * 1024 * 1024,
        "artifact of {size} bytes spans more than four parts"
    );
    assert_eq!(
        a.pending_multipart_uploads() + b.pending_multipart_uploads(),
        0
    );
    let target = inst.path("big-restored.db");
    inst.restore("big", &["--region", "us"], &target).ok();
    sqlite_equal(&db, &target);
}
