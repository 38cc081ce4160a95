//! `cargo bench --bench scheduler`: the cost of planning and of orchestrating backups.
//!
//! 1. A catalog of 10,000 tenants and 240,000 backups (24 each, the last one completed a few
//!    hours ago for most), in SQLite and in PostgreSQL: one planning pass (`executor::plan::plan`:
//!    the tenants and their history summaries, the queue, the pure planner), best of 5, beside
//!    its parts measured in the same run: the catalog read alone and the pure planner alone; and,
//!    once, opening a catalog whose summaries are all missing (an upgrade).
//! 2. A fleet of `LIFEBOAT_BENCH_FLEET` (default 500) tiny SQLite tenants backed up by one
//!    `lifeboat backup --all` into a Garage region (and a directory secondary); the baseline is
//!    the dumps themselves (`VACUUM INTO` of every tenant, measured in the same run), so the
//!    overhead per backup is (total − dumps) / tenants.
//!
//! Ends with `scheduler: plan_10k_ms=N overhead_per_backup_ms=N backups_per_s=N`. Under
//! `cargo test` (no `--bench`) it runs small (500 tenants, 20 in the fleet) to keep it working.

#[path = "../tests/support/mod.rs"]
mod support;

use chrono::{Duration as Days, Utc};
use lifeboat::config::Config;
use lifeboat::executor::{Context, plan};
use std::time::{Duration, Instant};
use support::*;

fn best(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().expect("n > 0")
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let tenants: usize = if full { 10_000 } else { 500 };
    let fleet: usize = std::env::var("LIFEBOAT_BENCH_FLEET")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if full { 500 } else { 20 });

    // ---- 1. planning, on a SQLite and on a PostgreSQL catalog ------------------------------
    let now = Utc::now();
    let sqlite = Install::new();
    let sqlite_plan = planning(&sqlite, tenants, "sqlite://catalog.db", now, || {
        fill_sqlite(&sqlite.path("catalog.db"), tenants, now)
    });
    let pg = Postgres::start();
    pg.psql("postgres", "CREATE DATABASE catalog");
    let pg_inst = Install::new();
    let pg_plan = planning(&pg_inst, tenants, &pg.url("catalog"), now, || {
        pg.psql("catalog", &pg_fill_sql(tenants, now));
    });
    drop(pg);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!();
    println!(
        "scheduler benchmark: {tenants} tenants, {} backups in the catalog; a fleet of {fleet}",
        tenants * 24
    );
    println!(
        "{:<56} {:>12} {:>14}",
        "planning step", "ms", "vs catalog read"
    );
    for (db, p) in [("SQLite", &sqlite_plan), ("PostgreSQL", &pg_plan)] {
        for (step, d) in [
            ("catalog read (tenants and their summaries)", p.read),
            ("pure planner", p.pure),
            ("planning pass", p.pass),
            ("opening: summing up every tenant (once)", p.backfill),
        ] {
            println!(
                "{:<56} {:>12.1} {:>14.2}",
                format!("{db}: {step}"),
                ms(d),
                ms(d) / ms(p.read)
            );
        }
    }
    println!("({} due in the pass)", sqlite_plan.due);

    // ---- 2. orchestration overhead ----------------------------------------------------------
    let garage = Garage::start();
    let fleet_inst = Install::new();
    let mut tenants_toml = String::new();
    for i in 0..fleet {
        let id = format!("f{i:04}");
        sqlite_exec(
            &fleet_inst.path(&format!("{id}.db")),
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t (v) VALUES ('a'), ('b'), ('c');",
        );
        tenants_toml += &format!(
            "[[tenants]]\nid = \"{id}\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"{id}.db\"\n\n"
        );
    }
    fleet_inst.write_garage_config(&garage, &tenants_toml);
    // Baseline: the dumps alone, as the engine takes them (VACUUM INTO a new file).
    let scratch = fleet_inst.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let t = Instant::now();
    for i in 0..fleet {
        let id = format!("f{i:04}");
        let to = scratch.join(format!("{id}.db"));
        sqlite_exec(
            &fleet_inst.path(&format!("{id}.db")),
            &format!("VACUUM INTO '{}'", to.display()),
        );
    }
    let dumps = t.elapsed();
    let t = Instant::now();
    fleet_inst.run(&["backup", "--all"]).ok();
    let total = t.elapsed();
    let done = fleet_inst.column("SELECT count(*) FROM backups WHERE status = 'completed'");
    assert_eq!(done, vec![fleet.to_string()]);

    let overhead = (ms(total) - ms(dumps)).max(0.0) / fleet as f64;
    println!("{:<56} {:>12} {:>14}", "fleet step", "ms", "per backup");
    println!(
        "{:<56} {:>12.0} {:>14.1}",
        format!("dumps alone ({fleet} × VACUUM INTO)"),
        ms(dumps),
        ms(dumps) / fleet as f64
    );
    println!(
        "{:<56} {:>12.0} {:>14.1}",
        "lifeboat backup --all (Garage + dir secondary)",
        ms(total),
        ms(total) / fleet as f64
    );
    println!(
        "scheduler: plan_10k_ms={:.0} overhead_per_backup_ms={:.0} backups_per_s={:.0}",
        ms(sqlite_plan.pass) * 10_000.0 / tenants as f64,
        overhead,
        fleet as f64 / total.as_secs_f64()
    );
}

/// What one planning measurement found.
struct Planning {
    read: Duration,
    pure: Duration,
    pass: Duration,
    backfill: Duration,
    due: usize,
}

/// Creates the catalog at `catalog` (config: two dir regions and `tenants` tenants), fills it
/// by `fill` straight into the tables, then times: opening it (which sums up every tenant's
/// history, as after an upgrade from a catalog without summaries), and best of 5 of a planning
/// pass, of its catalog read alone and of the pure planner alone.
fn planning(
    inst: &Install,
    tenants: usize,
    catalog: &str,
    now: chrono::DateTime<Utc>,
    fill: impl FnOnce(),
) -> Planning {
    let mut cfg = format!(
        "{}[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
         [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n",
        inst.head().replace("sqlite://catalog.db", catalog)
    );
    for i in 0..tenants {
        cfg += &format!(
            "[[tenants]]\nid = \"t{i:05}\"\nengine = \"sqlite\"\ntier = \"{}\"\npath = \"t{i:05}.db\"\n\n",
            TIERS[i % 3]
        );
    }
    inst.write_config(&cfg);
    let config = Config::load(&inst.config).expect("config");
    // One runtime throughout: a PostgreSQL pool's connections live on the runtime that made them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    eprintln!(
        "filling a catalog: {tenants} tenants, {} backups…",
        tenants * 24
    );
    let ctx = rt
        .block_on(Context::open(config.clone()))
        .expect("create the catalog");
    rt.block_on(ctx.catalog.close());
    fill();
    let t = Instant::now();
    let ctx = rt.block_on(Context::open(config)).expect("context");
    let backfill = t.elapsed();

    let mut due = 0;
    let pass = best(5, || {
        let t = Instant::now();
        due = rt
            .block_on(plan::plan(&ctx, &ctx.config.tenants, now))
            .expect("plan")
            .len();
        t.elapsed()
    });
    let read = best(5, || {
        let t = Instant::now();
        let known = rt.block_on(ctx.catalog.known_tenants()).expect("summaries");
        assert_eq!(known.len(), tenants);
        t.elapsed()
    });
    let known = rt.block_on(ctx.catalog.known_tenants()).expect("summaries");
    let pure = best(5, || {
        let t = Instant::now();
        let facts: Vec<_> = ctx
            .config
            .tenants
            .iter()
            .map(|t| {
                plan::tenant_facts(t, &ctx.config.tiers[&t.tier], &known[t.id.as_str()].history)
            })
            .collect();
        std::hint::black_box(lifeboat::domain::schedule::plan(&facts, now));
        t.elapsed()
    });
    rt.block_on(ctx.catalog.close());
    Planning {
        read,
        pure,
        pass,
        backfill,
        due,
    }
}

const TIERS: [&str; 3] = ["paid", "standard", "free"];

/// The same catalog content as `fill_sqlite`, as one PostgreSQL statement pair (ids sort by
/// start time within a tenant, as the UUIDv7 ids Lifeboat makes do).
fn pg_fill_sql(tenants: usize, now: chrono::DateTime<Utc>) -> String {
    let now = now.to_rfc3339();
    format!(
        "INSERT INTO tenants (id, engine, tier, created_at) \
         SELECT 't' || lpad(i::text, 5, '0'), 'sqlite', (ARRAY['paid','standard','free'])[i % 3 + 1], \
                '{now}'::timestamptz - interval '200 days' \
         FROM generate_series(0, {last}) i; \
         INSERT INTO backups (id, tenant_id, tier, engine, status, started_at, finished_at, recovery_point) \
         SELECT to_char(s, 'YYYYMMDDHH24MISS') || '-' || tenant, tenant, tier, 'sqlite', status, s, \
                s + make_interval(secs => 30 + i % 90), CASE WHEN status = 'completed' THEN s END \
         FROM (SELECT i, b, 't' || lpad(i::text, 5, '0') AS tenant, (ARRAY['paid','standard','free'])[i % 3 + 1] AS tier, \
                      CASE WHEN b = 23 AND i % 50 = 0 THEN 'failed' ELSE 'completed' END AS status, \
                      '{now}'::timestamptz - make_interval(hours => 1 + i % 7 + 6 * (23 - b)) AS s \
               FROM generate_series(0, {last}) i, generate_series(0, 23) b) x",
        last = tenants - 1
    )
}

/// Writes tenants and 24 backups each straight into the catalog, in one transaction.
fn fill_sqlite(path: &std::path::Path, tenants: usize, now: chrono::DateTime<Utc>) {
    use sqlx::Connection;
    let path = path.to_path_buf();
    block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        let tiers = TIERS;
        for i in 0..tenants {
            let id = format!("t{i:05}");
            sqlx::query(
                "INSERT INTO tenants (id, engine, tier, created_at) VALUES (?, 'sqlite', ?, ?)",
            )
            .bind(&id)
            .bind(tiers[i % 3])
            .bind(now - Days::days(200))
            .execute(&mut *tx)
            .await
            .unwrap();
            for b in 0..24i64 {
                // Every 6 h going back; the newest 1–7 h ago depending on the tenant.
                let start = now - Days::hours(1 + (i as i64 % 7) + 6 * (23 - b));
                let status = if b == 23 && i % 50 == 0 {
                    "failed"
                } else {
                    "completed"
                };
                sqlx::query(
                    "INSERT INTO backups (id, tenant_id, tier, engine, status, started_at, finished_at, recovery_point) \
                     VALUES (?, ?, ?, 'sqlite', ?, ?, ?, ?)",
                )
                .bind(uuid::Uuid::now_v7().to_string())
                .bind(&id)
                .bind(tiers[i % 3])
                .bind(status)
                .bind(start)
                .bind(start + Days::seconds(30 + (i as i64 % 90)))
                .bind((status == "completed").then_some(start))
                .execute(&mut *tx)
                .await
                .unwrap();
            }
        }
        tx.commit().await.unwrap();
    });
}
