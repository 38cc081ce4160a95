//! `lifeboat demo`: the whole job on the embedded default, with no server and no config.
//!
//! It creates a directory with a master key, two local regions, a SQLite catalog and a dozen
//! SQLite tenants with realistic data; backs them all up; copies them to the second region; shows
//! the retention plan; restores a sample from both regions and checks them row by row against
//! the originals; and prints a verdict per tenant. Running it again adds a backup cycle.

use crate::config::Config;
use crate::domain::objectives::{self, fmt_duration};
use crate::executor::{self, Context};
use crate::tenant::TenantId;
use anyhow::{Context as _, Result, bail};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// (tenant, tier, size factor).
const TENANTS: &[(&str, &str, u32)] = &[
    ("acme", "paid", 4),
    ("globex", "paid", 3),
    ("initech", "paid", 2),
    ("umbrella", "paid", 3),
    ("hooli", "standard", 2),
    ("stark", "standard", 3),
    ("wayne", "standard", 2),
    ("wonka", "standard", 1),
    ("cyberdyne", "free", 1),
    ("soylent", "free", 2),
    ("tyrell", "free", 1),
    ("vandelay", "free", 1),
];

/// Tenants restored and checked each run: one per tier from the primary, one from the secondary.
const SAMPLE: &[(&str, &str)] = &[
    ("acme", "eu-west"),
    ("hooli", "eu-west"),
    ("cyberdyne", "us-east"),
    ("globex", "us-east"),
];

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL UNIQUE,
    country TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
    price_cents INTEGER NOT NULL);
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL REFERENCES customers(id),
    status TEXT NOT NULL, total_cents INTEGER NOT NULL, created_at TEXT NOT NULL);
CREATE INDEX orders_by_customer ON orders(customer_id);
CREATE TABLE order_items (id INTEGER PRIMARY KEY, order_id INTEGER NOT NULL REFERENCES orders(id),
    product_id INTEGER NOT NULL REFERENCES products(id), qty INTEGER NOT NULL, price_cents INTEGER NOT NULL);
CREATE TABLE events (id INTEGER PRIMARY KEY, customer_id INTEGER, kind TEXT NOT NULL,
    payload TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX events_by_kind ON events(kind, at);
";

fn fill_sql(f: u32, fresh: bool) -> String {
    let (customers, products, orders, items, events) = if fresh {
        (600 * f, 120 * f, 2500 * f, 6000 * f, 3500 * f)
    } else {
        (10 * f, 0, 80 * f, 200 * f, 300 * f)
    };
    format!(
        "
BEGIN;
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {customers})
INSERT INTO customers (name, email, country, created_at)
SELECT printf('Customer %s', hex(randomblob(3))), printf('user-%s@example.com', lower(hex(randomblob(8)))),
       substr('DEFRUSGBNLESITJPBRIN', 1 + 2 * (abs(random()) % 10), 2), datetime('now', printf('-%d minutes', abs(random()) % 500000)) FROM s;
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {products})
INSERT INTO products (sku, title, price_cents)
SELECT printf('SKU-%s', hex(randomblob(5))), printf('Product %s', lower(hex(randomblob(6)))), 100 + abs(random()) % 50000 FROM s;
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {orders})
INSERT INTO orders (customer_id, status, total_cents, created_at)
SELECT 1 + abs(random()) % (SELECT count(*) FROM customers), substr('new     paid    shipped refunded', 1 + 8 * (abs(random()) % 4), 8),
       abs(random()) % 200000, datetime('now', printf('-%d minutes', abs(random()) % 500000)) FROM s;
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {items})
INSERT INTO order_items (order_id, product_id, qty, price_cents)
SELECT 1 + abs(random()) % (SELECT count(*) FROM orders), 1 + abs(random()) % (SELECT count(*) FROM products),
       1 + abs(random()) % 5, 100 + abs(random()) % 50000 FROM s;
WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {events})
INSERT INTO events (customer_id, kind, payload, at)
SELECT 1 + abs(random()) % (SELECT count(*) FROM customers), substr('login   view    cart    checkout', 1 + 8 * (abs(random()) % 4), 8),
       json_object('ip', printf('10.%d.%d.%d', abs(random()) % 256, abs(random()) % 256, abs(random()) % 256),
                   'agent', 'Mozilla/5.0 (X11; Linux x86_64)', 'session', lower(hex(randomblob(16))),
                   'path', printf('/shop/%s', lower(hex(randomblob(4)))), 'note', lower(hex(randomblob(40)))),
       datetime('now', printf('-%d seconds', abs(random()) % 9000000)) FROM s;
COMMIT;
"
    )
}

async fn open_rw(path: &Path, create: bool) -> Result<SqliteConnection> {
    Ok(SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .disable_statement_logging()
        .connect()
        .await?)
}

/// Creates a tenant database with realistic data, or adds some activity to an existing one.
async fn seed_tenant(path: &Path, factor: u32) -> Result<()> {
    let fresh = !path.exists();
    let mut conn = open_rw(path, fresh).await?;
    if fresh {
        sqlx::raw_sql(SCHEMA).execute(&mut conn).await?;
    }
    sqlx::raw_sql(sqlx::AssertSqlSafe(fill_sql(factor, fresh)))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Compares two SQLite databases row by row (rowid included), table by table.
pub async fn compare_databases(original: &Path, restored: &Path) -> Result<(usize, u64)> {
    let mut conn = open_rw(original, false).await?;
    sqlx::query("ATTACH DATABASE ? AS restored")
        .bind(restored.to_string_lossy().to_string())
        .execute(&mut conn)
        .await?;
    let tables: Vec<String> = sqlx::query_scalar(
        // sqlite_sequence holds AUTOINCREMENT counters, which a restore must keep too.
        "SELECT name FROM main.sqlite_master WHERE type = 'table' \
         AND (name NOT LIKE 'sqlite_%' OR name = 'sqlite_sequence') ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await?;
    let mut rows = 0u64;
    for t in &tables {
        let q = format!("\"{}\"", t.replace('"', "\"\""));
        let sql = format!(
            "SELECT (SELECT count(*) FROM main.{q}), (SELECT count(*) FROM restored.{q}),
                    (SELECT count(*) FROM (SELECT rowid, * FROM main.{q} EXCEPT SELECT rowid, * FROM restored.{q})),
                    (SELECT count(*) FROM (SELECT rowid, * FROM restored.{q} EXCEPT SELECT rowid, * FROM main.{q}))"
        );
        let (a, b, only_a, only_b): (i64, i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut conn)
            .await?;
        if a != b || only_a != 0 || only_b != 0 {
            bail!(
                "table {t}: original has {a} rows, restored {b}; {only_a} rows only in the original, {only_b} only in the restore"
            );
        }
        rows += a as u64;
    }
    conn.close().await?;
    Ok((tables.len(), rows))
}

fn write_if_missing(path: &Path, text: &str) -> Result<()> {
    if !path.exists() {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Restore time and region of each sampled tenant.
type Restores = BTreeMap<String, (Duration, String)>;

/// Runs the demo in `dir`: sets it up (or adds activity to it), backs every tenant up, shows
/// the retention plan, restores a sample and prints a verdict per tenant.
pub async fn run(dir: &Path) -> Result<()> {
    let second_run = dir.join("lifeboat.toml").exists();
    let config = set_up(dir)?;
    println!(
        "{} tenant databases in {} …",
        if second_run {
            "Adding activity to"
        } else {
            "Creating"
        },
        dir.join("tenants").display()
    );
    for (id, _, factor) in TENANTS {
        seed_tenant(&dir.join("tenants").join(format!("{id}.db")), *factor).await?;
    }

    let ctx = Context::open(config).await?;
    back_up_all(&ctx).await?;
    println!();
    let plans = executor::retention::plan_all(&ctx, chrono::Utc::now()).await?;
    crate::retention_report::print_plan(&plans, false, crate::retention_report::DRY_RUN);

    let restores = restore_sample(&ctx, dir).await?;
    let all_ok = print_verdicts(&ctx, &restores).await?;
    ctx.catalog.close().await;

    let cfg = dir.join("lifeboat.toml");
    println!(
        "\n{}\n\nTry the other commands on this demo:\n  \
         lifeboat --config {c} config check\n  \
         lifeboat --config {c} backups --tenant acme\n  \
         lifeboat --config {c} restore --tenant acme --region us-east --to-side /tmp/acme-restored.db\n  \
         lifeboat --config {c} retention plan\n\n\
         To run it for real: write a lifeboat.toml with your tenants (sqlite, postgres or mariadb) and two S3 regions\n\
         (see README.md), create the master key with `lifeboat keys init --out master.key`, check it with\n\
         `lifeboat config check`, and run `lifeboat serve` (or `lifeboat backup --all` from a systemd timer or cron job).",
        if all_ok {
            "Every tenant meets its objectives."
        } else {
            "Some tenants miss their objectives (see above)."
        },
        c = cfg.display()
    );
    if !all_ok {
        bail!("some tenants miss their objectives");
    }
    Ok(())
}

/// Creates the demo's directories, schedules, master key and `lifeboat.toml` (each only when
/// missing, so a second run keeps them) and loads the config.
fn set_up(dir: &Path) -> Result<Config> {
    std::fs::create_dir_all(dir.join("tenants"))
        .with_context(|| format!("creating {}", dir.display()))?;
    std::fs::create_dir_all(dir.join("schedules"))?;
    std::fs::create_dir_all(dir.join("scratch"))?;

    for (name, text) in [
        ("paid.toml", include_str!("../schedules/paid.toml")),
        ("standard.toml", include_str!("../schedules/standard.toml")),
        ("free.toml", include_str!("../schedules/free.toml")),
    ] {
        write_if_missing(&dir.join("schedules").join(name), text)?;
    }
    let key_path = dir.join("master.key");
    let recipient = if key_path.exists() {
        let text = crate::secret::read_private_file("master key", &key_path)?;
        crate::crypto::parse_identity(text.expose(), &key_path.display().to_string())?
            .to_public()
            .to_string()
    } else {
        crate::crypto::write_new_identity_file(&key_path)?.to_string()
    };
    let mut toml = format!(
        "# Written by `lifeboat demo`. Paths are relative to this file.\n\
         [catalog]\nurl = \"sqlite://catalog.db\"\n\n\
         [keys]\nmaster-recipients = [\"{recipient}\"]\nmaster-identity-file = \"master.key\"\n\n\
         [[regions]]\nname = \"eu-west\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu-west\"\n\n\
         [[regions]]\nname = \"us-east\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us-east\"\n"
    );
    for (id, tier, _) in TENANTS {
        toml.push_str(&format!(
            "\n[[tenants]]\nid = \"{id}\"\nengine = \"sqlite\"\ntier = \"{tier}\"\npath = \"tenants/{id}.db\"\n"
        ));
    }
    write_if_missing(&dir.join("lifeboat.toml"), &toml)?;
    Ok(Config::load(&dir.join("lifeboat.toml"))?)
}

/// Backs every configured tenant up, one line each.
async fn back_up_all(ctx: &Context) -> Result<()> {
    println!(
        "Backing up {} tenants (dump → zstd → age → eu-west, then copy to us-east and verify):",
        TENANTS.len()
    );
    for t in &ctx.config.tenants {
        let r = executor::backup::backup_tenant(ctx, t)
            .await
            .with_context(|| format!("backing up tenant {}", t.id))?;
        let pending: Vec<&str> = r
            .copies
            .iter()
            .filter(|(_, c)| c.is_err())
            .map(|(r, _)| r.as_str())
            .collect();
        println!(
            "  {:<10} {:>6.1} MB → {:>5.2} MB encrypted in {:>6}{}",
            r.tenant,
            r.dump_size as f64 / 1e6,
            r.artifact_size as f64 / 1e6,
            fmt_duration(r.duration),
            if pending.is_empty() {
                String::new()
            } else {
                format!("  copies pending: {}", pending.join(", "))
            }
        );
    }

    Ok(())
}

/// Restores `SAMPLE` on the side and compares each with its original: restore time and region
/// by tenant.
async fn restore_sample(ctx: &Context, dir: &Path) -> Result<Restores> {
    println!(
        "\nRestoring a sample into {} and comparing row by row with the originals:",
        dir.join("scratch").display()
    );
    let mut restores = Restores::new();
    for (id, region) in SAMPLE {
        let target = dir
            .join("scratch")
            .join(format!("{id}-{}.db", uuid::Uuid::now_v7()));
        let req = executor::restore::RestoreRequest {
            tenant: TenantId::parse(id)?,
            backup: None,
            before: None,
            target: executor::restore::Target::Side(target.to_string_lossy().to_string()),
            region: Some(region.to_string()),
            ownership: None,
            reason: "demo: compare a restore with the original".into(),
            actor: ctx.actor.clone(),
            id: None,
        };
        let r = executor::restore::restore(ctx, &req, &Default::default())
            .await
            .with_context(|| format!("restoring tenant {id} from {region}"))?;
        let (tables, rows) =
            compare_databases(&dir.join("tenants").join(format!("{id}.db")), &target).await?;
        println!(
            "  {:<10} from {:<8} {} tables, {} rows identical, restored in {}",
            id,
            region,
            tables,
            rows,
            fmt_duration(r.duration)
        );
        restores.insert(id.to_string(), (r.duration, region.to_string()));
        std::fs::remove_file(&target).ok();
    }

    Ok(restores)
}

/// Prints each tenant's backups per region, RPO and restore time against its tier's objectives;
/// true when every tenant meets them.
async fn print_verdicts(ctx: &Context, restores: &Restores) -> Result<bool> {
    println!();
    let now = chrono::Utc::now();
    let region_names: Vec<String> = ctx.regions.iter().map(|r| r.name.clone()).collect();
    println!(
        "{:<10} {:<8} {:>7}  {:<10} {:<10}  {:<22}  {:<22}  verdict",
        "tenant",
        "tier",
        "backups",
        region_names[0],
        region_names[1],
        "RPO achieved / target",
        "restore / RTO target"
    );
    let mut all_ok = true;
    let replication = crate::metrics::replication_state(ctx).await?;
    for t in &ctx.config.tenants {
        let tier = &ctx.config.tiers[&t.tier];
        let state = replication.get(t.id.as_str()).cloned().unwrap_or_default();
        // A tenant without backups has no region entries: zero everywhere.
        let mut per_region: Vec<usize> = state.regions.iter().map(|s| s.verified).collect();
        per_region.resize(region_names.len(), 0);
        let newest_verified = state.newest_everywhere;
        let rpo = objectives::rpo_achieved(now, newest_verified);
        let rpo_verdict = objectives::rpo_verdict(rpo, tier.rpo);
        let (restore_text, rto_verdict) = match restores.get(t.id.as_str()) {
            Some((d, _)) => (
                format!("{} / {}", fmt_duration(*d), fmt_duration(tier.rto)),
                Some(objectives::rto_verdict(*d, tier.rto)),
            ),
            None => (format!("- / {}", fmt_duration(tier.rto)), None),
        };
        let ok = rpo_verdict.is_met() && rto_verdict.as_ref().is_none_or(|v| v.is_met());
        all_ok &= ok;
        let mut why = Vec::new();
        if let objectives::Verdict::Missed(w) = &rpo_verdict {
            why.push(format!("RPO: {w}"));
        }
        if let Some(objectives::Verdict::Missed(w)) = &rto_verdict {
            why.push(format!("RTO: {w}"));
        }
        println!(
            "{:<10} {:<8} {:>7}  {:<10} {:<10}  {:<22}  {:<22}  {}",
            t.id,
            t.tier,
            state.completed,
            format!("{}/{}", per_region[0], state.completed),
            format!("{}/{}", per_region[1], state.completed),
            format!(
                "{} / {}",
                rpo.map(fmt_duration).unwrap_or_else(|| "none".into()),
                fmt_duration(tier.rpo)
            ),
            restore_text,
            if ok {
                "OK".to_string()
            } else {
                format!("FAIL ({})", why.join("; "))
            }
        );
    }
    Ok(all_ok)
}
