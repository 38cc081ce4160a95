//! `cargo bench --bench scheduler`: the cost of planning and of orchestrating backups.
//!
//! 1. A catalog of 10,000 tenants and 240,000 backups (24 each, the last one completed a few
//!    hours ago for most): one planning pass (`executor::plan::plan`: catalog read, summary,
//!    pure planner), best of 5, beside its parts measured in the same run: the catalog read
//!    alone and the pure planner alone.
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

    // ---- 1. planning ---------------------------------------------------------------------
    let inst = Install::new();
    let mut cfg = format!(
        "{}[[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"dir\"\npath = \"regions/eu\"\n\n\
         [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"regions/us\"\n\n",
        inst.head()
    );
    let tiers = ["paid", "standard", "free"];
    for i in 0..tenants {
        cfg += &format!(
            "[[tenants]]\nid = \"t{i:05}\"\nengine = \"sqlite\"\ntier = \"{}\"\npath = \"t{i:05}.db\"\n\n",
            tiers[i % 3]
        );
    }
    inst.write_config(&cfg);
    let config = Config::load(&inst.config).expect("config");
    let now = Utc::now();
    let ctx = block_on(Context::open(config)).expect("context");
    eprintln!(
        "filling the catalog: {tenants} tenants, {} backups…",
        tenants * 24
    );
    fill_catalog(&inst.path("catalog.db"), tenants, now);

    let mut due = 0;
    let pass = best(5, || {
        let t = Instant::now();
        due = block_on(plan::plan(&ctx, &ctx.config.tenants, now))
            .expect("plan")
            .len();
        t.elapsed()
    });
    let read = best(5, || {
        let t = Instant::now();
        let rows = block_on(ctx.catalog.backup_history(plan::HISTORY_ROWS)).expect("history");
        assert_eq!(rows.len(), tenants * plan::HISTORY_ROWS as usize);
        t.elapsed()
    });
    let rows = block_on(ctx.catalog.backup_history(plan::HISTORY_ROWS)).expect("history");
    let summary = plan::summarize(&rows);
    let pure = best(5, || {
        let t = Instant::now();
        let facts: Vec<_> = ctx
            .config
            .tenants
            .iter()
            .map(|t| {
                let h = summary.get(t.id.as_str()).cloned().unwrap_or_default();
                plan::tenant_facts(t, &ctx.config.tiers[&t.tier], &h)
            })
            .collect();
        let d = lifeboat::domain::schedule::plan(&facts, now);
        std::hint::black_box(d);
        t.elapsed()
    });
    block_on(ctx.catalog.close());

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

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let overhead = (ms(total) - ms(dumps)).max(0.0) / fleet as f64;
    println!();
    println!(
        "scheduler benchmark: {tenants} tenants, {} backups in the catalog; a fleet of {fleet}",
        tenants * 24
    );
    println!("{:<48} {:>12} {:>14}", "step", "ms", "vs catalog read");
    println!(
        "{:<48} {:>12.1} {:>14.2}",
        "catalog read (backup history)",
        ms(read),
        1.0
    );
    println!(
        "{:<48} {:>12.1} {:>14.2}",
        "pure planner",
        ms(pure),
        ms(pure) / ms(read)
    );
    println!(
        "{:<48} {:>12.1} {:>14.2}",
        format!("planning pass ({due} due)"),
        ms(pass),
        ms(pass) / ms(read)
    );
    println!("{:<48} {:>12} {:>14}", "", "ms", "per backup");
    println!(
        "{:<48} {:>12.0} {:>14.1}",
        format!("dumps alone ({fleet} × VACUUM INTO)"),
        ms(dumps),
        ms(dumps) / fleet as f64
    );
    println!(
        "{:<48} {:>12.0} {:>14.1}",
        "lifeboat backup --all (Garage + dir secondary)",
        ms(total),
        ms(total) / fleet as f64
    );
    println!(
        "scheduler: plan_10k_ms={:.0} overhead_per_backup_ms={:.0} backups_per_s={:.0}",
        ms(pass) * 10_000.0 / tenants as f64,
        overhead,
        fleet as f64 / total.as_secs_f64()
    );
}

/// Writes tenants and 24 backups each straight into the catalog, in one transaction.
fn fill_catalog(path: &std::path::Path, tenants: usize, now: chrono::DateTime<Utc>) {
    use sqlx::Connection;
    let path = path.to_path_buf();
    block_on(async move {
        let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        let mut tx = conn.begin().await.unwrap();
        let tiers = ["paid", "standard", "free"];
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
