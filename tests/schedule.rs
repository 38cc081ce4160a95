//! The schedule planner against a real catalog: `lifeboat plan` after real backups and failures.

mod support;

use support::*;

fn regions() -> &'static str {
    DIR_REGIONS
}

fn due_lines(out: &str) -> Vec<String> {
    out.lines().skip(2).map(str::to_string).collect()
}

#[test]
fn plan_follows_backups_failures_and_the_rpo() {
    let inst = Install::new();
    // A cron slot falling between the backup and the plan below would rightly make a tenant due
    // again: the test must not depend on the time of day.
    inst.quiet_schedules();
    for t in ["paid1", "free1"] {
        make_sqlite_tenant(&inst.path(&format!("{t}.db")), "x");
    }
    inst.write_config(&format!(
        "{}{}[[tenants]]\nid = \"paid1\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"paid1.db\"\n\n\
         [[tenants]]\nid = \"free1\"\nengine = \"sqlite\"\ntier = \"free\"\npath = \"free1.db\"\n\n\
         [[tenants]]\nid = \"gone\"\nengine = \"sqlite\"\ntier = \"paid\"\npath = \"gone.db\"\n",
        inst.head(),
        regions()
    ));

    // Never backed up: all three are due, as first backups.
    let out = inst.run(&["plan"]).ok().stdout;
    assert!(out.contains("3 due"), "{out}");
    assert_eq!(
        due_lines(&out)
            .iter()
            .filter(|l| l.contains("first backup"))
            .count(),
        3,
        "{out}"
    );

    // After a backup, paid1 and free1 are not due now; `gone` failed (no file) and waits for its
    // retry backoff.
    inst.run(&["backup", "--all"]).failed();
    let out = inst.run(&["plan"]).ok().stdout;
    assert!(out.contains("0 due"), "{out}");

    // 13 h later: paid1 is past its 12 h RPO (late, negative slack) and first in line; free1
    // (RPO 90 h) is due on its cron slot with plenty of slack; `gone` is retried.
    let later = (chrono::Utc::now() + chrono::Duration::hours(13))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let out = inst.run(&["plan", "--at", &later]).ok().stdout;
    let lines = due_lines(&out);
    assert!(lines.len() >= 2, "{out}");
    assert!(
        lines[0].starts_with("gone") || lines[0].starts_with("paid1"),
        "{out}"
    );
    let paid = lines
        .iter()
        .find(|l| l.starts_with("paid1"))
        .expect("paid1 due");
    let slack = paid.split_whitespace().last().unwrap();
    assert!(slack.starts_with('-'), "paid1 is late: {paid}");
    let free = lines.iter().find(|l| l.starts_with("free1"));
    if let Some(free) = free {
        let slack = free.split_whitespace().last().unwrap();
        assert!(!slack.starts_with('-'), "free1 has slack: {free}");
    }
    assert!(lines.iter().any(|l| l.starts_with("gone")), "{out}");

    // A terminated tenant is never planned.
    inst.run(&["tenant", "terminate", "gone", "--reason", "left"])
        .ok();
    let out = inst.run(&["plan", "--at", &later]).ok().stdout;
    assert!(!out.contains("\ngone"), "{out}");

    // Bad input names the flag and the form.
    let out = inst.run(&["plan", "--at", "tomorrow"]).failed();
    assert!(out.stderr.contains("--at \"tomorrow\""), "{}", out.stderr);
}
