//! The host and container deployment files: the systemd unit passes `systemd-analyze verify`
//! and agrees with its example config, which passes `lifeboat config check`; the Dockerfile (it
//! cannot be built here) has the stages, user, health check and tools it must; `lifeboat health`
//! answers for a running `serve`, a failing one and a stopped one.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::*;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn read(p: &str) -> String {
    std::fs::read_to_string(repo(p)).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// `KEY=value` lines of a unit file (comments skipped), in order.
fn directives(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn directive<'a>(d: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    d.iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .collect()
}

fn one<'a>(d: &'a [(String, String)], key: &str) -> &'a str {
    match directive(d, key).as_slice() {
        [v] => v,
        other => panic!("{key}= should be set once in the unit: {other:?}"),
    }
}

// ---- systemd -------------------------------------------------------------------------------------

const UNIT: &str = "deploy/systemd/lifeboat.service";
const CREDENTIALS: &str = "/run/credentials/lifeboat.service/";

/// `systemd-analyze verify` needs every unit the service depends on and an executable ExecStart.
/// There is no systemd as PID 1 here, so it runs offline on a throwaway root: the system's own
/// unit directory, the unit as shipped under /etc/systemd/system, and the built binary at the
/// ExecStart path.
#[test]
fn systemd_unit_passes_systemd_analyze_verify_without_a_warning() {
    let root = tempfile::tempdir().unwrap();
    let r = |p: &str| root.path().join(p);
    for d in ["usr/local/bin", "etc/systemd/system", "usr/lib/systemd"] {
        std::fs::create_dir_all(r(d)).unwrap();
    }
    let system_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|d| Path::new(d).join("multi-user.target").exists())
        .expect("the system's systemd units (package systemd) for systemd-analyze");
    let copied = Command::new("cp")
        .args(["-a", system_units])
        .arg(r("usr/lib/systemd/system"))
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::copy(repo(UNIT), r("etc/systemd/system/lifeboat.service")).unwrap();
    let exec = one(&directives(&read(UNIT)), "ExecStart")
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(exec, "/usr/local/bin/lifeboat");
    let bin = r(exec.trim_start_matches('/'));
    let built = Path::new(env!("CARGO_BIN_EXE_lifeboat"));
    if std::fs::hard_link(built, &bin).is_err() {
        std::fs::copy(built, &bin).unwrap();
    }

    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", root.path().display()))
        .arg("lifeboat.service")
        .output()
        .expect("systemd-analyze (package systemd) runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {}\n{said}",
        out.status
    );
}

#[test]
fn systemd_unit_is_hardened_and_agrees_with_its_config() {
    let d = directives(&read(UNIT));
    for (key, value) in [
        ("Type", "simple"),
        ("User", "lifeboat"),
        ("StateDirectory", "lifeboat"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("NoNewPrivileges", "yes"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("CapabilityBoundingSet", ""),
        ("UMask", "0077"),
        ("KillSignal", "SIGTERM"),
        // SIGTERM to serve alone: the dump tools of draining backups must not get it.
        ("KillMode", "mixed"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(one(&d, key), value, "{key}=");
    }
    assert!(directive(&d, "SystemCallFilter").contains(&"@system-service"));
    assert!(
        directive(&d, "Type") != ["notify"],
        "serve does not speak sd_notify"
    );

    // Every credential the config reads is loaded by the unit, and every loaded one is read.
    let loaded: BTreeSet<&str> = directive(&d, "LoadCredential")
        .iter()
        .map(|v| v.split_once(':').expect("NAME:PATH").0)
        .collect();
    let config = read("deploy/systemd/lifeboat.toml");
    let read_by_config: BTreeSet<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(CREDENTIALS))
        .map(|(_, rest)| rest.trim_end_matches('"'))
        .collect();
    assert!(!loaded.is_empty());
    assert_eq!(loaded, read_by_config);
    for name in ["master.key", "db1.password", "db2.password"] {
        assert!(loaded.contains(name), "{name}");
    }
    assert_eq!(
        loaded
            .iter()
            .filter(|n| n.ends_with(".secret-access-key"))
            .count(),
        2,
        "both regions' S3 secret keys"
    );

    // The service writes only its state directory (and the private /tmp).
    let exec: Vec<&str> = one(&d, "ExecStart").split_whitespace().collect();
    assert_eq!(
        exec,
        [
            "/usr/local/bin/lifeboat",
            "--config",
            "/etc/lifeboat/lifeboat.toml",
            "serve"
        ]
    );
    let state = format!("/var/lib/{}/", one(&d, "StateDirectory"));
    assert!(config.contains(&format!("url = \"sqlite://{state}catalog.db\"")));
    assert!(config.contains(&format!("certificates-dir = \"{state}")));

    // The stop timeout covers the drain the config sets, with room for the clean-up after it.
    let secs = |s: &str| {
        humantime::parse_duration(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .as_secs()
    };
    let drain = config
        .lines()
        .find_map(|l| l.strip_prefix("drain = "))
        .expect("the config sets scheduler.drain")
        .trim_matches('"');
    assert!(secs(one(&d, "TimeoutStopSec")) >= secs(drain) + 60);
}

/// The host config, installed as the README says (beside the shipped tier files), checks; its
/// secrets are named, never read (the credential files exist only inside the running service).
#[test]
fn systemd_example_config_passes_config_check() {
    let etc = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo("deploy/systemd/lifeboat.toml"),
        etc.path().join("lifeboat.toml"),
    )
    .unwrap();
    std::fs::create_dir(etc.path().join("schedules")).unwrap();
    for f in std::fs::read_dir(repo("schedules")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(
            &f,
            etc.path().join("schedules").join(f.file_name().unwrap()),
        )
        .unwrap();
    }
    let out = lifeboat(&etc.path().join("lifeboat.toml"), &["config", "check"]).ok();
    assert!(
        out.stdout.contains("# ok: 2 regions, 3 tiers, 2 tenants"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("<from file {CREDENTIALS}master.key>")),
        "{}",
        out.stdout
    );
}

// ---- Docker --------------------------------------------------------------------------------------

/// A Dockerfile's instructions per stage: continuation lines joined, comments dropped.
fn dockerfile_stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut line = String::new();
    for raw in text.lines() {
        let t = raw.trim();
        if t.starts_with('#') || (t.is_empty() && line.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                line.push_str(part);
                line.push(' ');
                continue;
            }
            None => line.push_str(t),
        }
        let full = std::mem::take(&mut line);
        let (op, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
        let op = op.to_ascii_uppercase();
        if op == "FROM" {
            stages.push(Vec::new());
        }
        let Some(stage) = stages.last_mut() else {
            continue; // ARG before the first FROM.
        };
        stage.push((op, args.split_whitespace().collect::<Vec<_>>().join(" ")));
    }
    stages
}

#[test]
fn dockerfile_builds_a_non_root_image_with_the_tools_and_a_health_check() {
    let text = read("deploy/docker/Dockerfile");
    let stages = dockerfile_stages(&text);
    assert!(stages.len() >= 2, "a build stage and a runtime stage");
    let get = |stage: &[(String, String)], op: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(o, _)| o == op)
            .map(|(_, a)| a.clone())
            .collect()
    };
    let builder = &stages[0];
    assert!(get(builder, "FROM")[0].starts_with("rust:1-bookworm"));
    assert!(
        get(builder, "RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked"))
    );

    let last = stages.last().unwrap();
    assert!(get(last, "FROM")[0].starts_with("debian:bookworm-slim"));
    let user = get(last, "USER");
    let user = user.last().expect("the final stage sets USER");
    assert_eq!(user.split(':').next(), Some("10001"), "USER {user}");
    let run = get(last, "RUN").join(" ");
    assert!(run.contains("--uid 10001") && run.contains("--gid 10001"));
    assert!(run.contains("apt-get install"));
    for package in [
        "postgresql-client-${PG_MAJOR}",
        "mariadb-client",
        "zstd",
        "ca-certificates",
        "tini",
    ] {
        assert!(
            run.split_whitespace().any(|w| w == package),
            "installs {package}"
        );
    }
    assert!(
        run.contains("apt.postgresql.org"),
        "PGDG for a current pg_dump"
    );
    let pg_major = text
        .lines()
        .find_map(|l| l.strip_prefix("ARG PG_MAJOR="))
        .and_then(|v| v.trim().parse::<u32>().ok())
        .expect("ARG PG_MAJOR=N");
    assert!(pg_major >= 17);
    let env = get(last, "ENV").join(" ");
    assert!(
        env.contains("PATH=\"/usr/lib/postgresql/${PG_MAJOR}/bin:${PATH}\""),
        "the versioned pg_dump first on PATH: {env}"
    );
    assert!(
        get(last, "COPY")
            .iter()
            .any(|c| c == "--from=builder /usr/local/bin/lifeboat /usr/local/bin/lifeboat")
    );
    let entry = get(last, "ENTRYPOINT");
    assert_eq!(entry, ["[\"/usr/bin/tini\", \"--\", \"lifeboat\"]"]);
    assert_eq!(get(last, "CMD"), ["[\"serve\"]"]);
    let health = get(last, "HEALTHCHECK");
    assert!(
        health.len() == 1 && health[0].ends_with("CMD [\"lifeboat\", \"health\"]"),
        "{health:?}"
    );
    assert_eq!(get(last, "EXPOSE"), ["9187"]);
    assert_eq!(get(last, "STOPSIGNAL"), ["SIGTERM"]);
    let labels = get(last, "LABEL").join(" ");
    for l in ["title", "description", "version", "revision"] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{l}=")),
            "{l}"
        );
    }

    // The paths agree with the systemd unit and its config: binary, config, state directory.
    let unit = directives(&read(UNIT));
    let exec: Vec<&str> = one(&unit, "ExecStart").split_whitespace().collect();
    assert!(
        env.contains(&format!("LIFEBOAT_CONFIG={}", exec[2])),
        "{env}"
    );
    assert_eq!(exec[0], "/usr/local/bin/lifeboat");
    let state = format!("/var/lib/{}", one(&unit, "StateDirectory"));
    assert_eq!(get(last, "VOLUME"), [format!("[\"{state}\"]")]);
    assert_eq!(get(last, "WORKDIR"), std::slice::from_ref(&state));
    assert!(run.contains(&format!("install -d -o 10001 -g 10001 -m 0700 {state}")));
    assert!(run.contains(&format!("--home-dir {state}")));
    // Both run the same PostgreSQL client major, ahead of Debian's version-picking wrapper.
    let path = directive(&unit, "Environment")
        .into_iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .expect("the unit sets PATH");
    assert!(
        path.starts_with(&format!("/usr/lib/postgresql/{pg_major}/bin:")),
        "{path}"
    );
    // What the image copies from the repository exists.
    for c in get(last, "COPY")
        .iter()
        .filter(|c| !c.starts_with("--from"))
    {
        let src = c.split_whitespace().next().unwrap();
        let found = match src.strip_suffix("/*.toml") {
            Some(dir) => std::fs::read_dir(repo(dir)).unwrap().count() > 0,
            None => repo(src).exists(),
        };
        assert!(found, "COPY {c}");
    }

    let ignore = read(".dockerignore");
    let ignored: Vec<&str> = ignore
        .lines()
        .map(|l| l.trim().trim_end_matches('/'))
        .collect();
    assert!(ignored.contains(&"target") && ignored.contains(&".git"));
}

// ---- lifeboat health -----------------------------------------------------------------------------

#[test]
fn health_is_ok_while_serve_is_ready_and_names_the_address_when_not() {
    let inst = Install::new();
    inst.quiet_schedules();
    let port = free_port();
    inst.write_config(&format!(
        "{}[server]\nlisten = \"127.0.0.1:{port}\"\n\n\
         {DIR_REGIONS}",
        inst.head()
    ));
    let serve = Serve::start(&inst.config, &[port], &[]);
    let port = serve.port();
    until("/healthz", Duration::from_secs(30), || {
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    let ready = inst.run(&["health"]).ok();
    assert_eq!(
        ready.stdout.trim(),
        format!("ok: http://127.0.0.1:{port}/readyz answered 200 ready")
    );
    let live = inst.run(&["health", "--live"]).ok();
    assert_eq!(
        live.stdout.trim(),
        format!("ok: http://127.0.0.1:{port}/healthz answered 200 ok")
    );

    // The primary region becomes unusable (its directory is now a file): /readyz says 503 and
    // why; the process still answers /healthz.
    let eu = inst.path("regions/eu");
    std::fs::remove_dir_all(&eu).unwrap();
    std::fs::write(&eu, "not a directory").unwrap();
    let (code, _) = http_get(port, "/readyz").unwrap();
    assert_eq!(code, 503);
    let unready = inst.run(&["health"]).failed();
    assert_eq!(unready.code, 1);
    let line = unready.stderr.trim();
    assert!(
        line.starts_with(&format!(
            "error: http://127.0.0.1:{port}/readyz answered 503 Service Unavailable: "
        )) && line.contains(&eu.display().to_string())
            && !line.contains('\n'),
        "{line}"
    );
    inst.run(&["health", "--live"]).ok();

    let (code, log) = serve.stop();
    assert_eq!(code, Some(0), "{log}");
    let down = inst.run(&["health"]).failed();
    assert_eq!(down.code, 1);
    let line = down.stderr.trim();
    assert!(
        line.starts_with(&format!(
            "error: cannot connect to http://127.0.0.1:{port}/readyz: "
        )) && !line.contains('\n'),
        "{line}"
    );
}

/// A wildcard `listen` is probed on loopback; an answer that never comes ends at `--timeout`.
/// The config's secrets cannot be resolved and its catalog cannot be opened: health needs neither.
#[test]
fn health_probes_loopback_for_a_wildcard_listen_needs_no_secret_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("schedules")).unwrap();
    for f in ["paid.toml", "free.toml", "standard.toml"] {
        std::fs::copy(
            repo("schedules").join(f),
            dir.path().join("schedules").join(f),
        )
        .unwrap();
    }
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let config = dir.path().join("lifeboat.toml");
    std::fs::write(
        &config,
        format!(
            "[catalog]\nurl = \"sqlite:///nonexistent/lifeboat/catalog.db\"\n\n\
             [keys]\nmaster-recipients = [\"age1mas8ytkwul57pyrxt5xlv49zsrg6w35ym366hahd3hjq7rx6lpvqujhepy\"]\n\
             master-identity-file = \"/nonexistent/master.key\"\n\n\
             [server]\nlisten = \"0.0.0.0:{port}\"\n\n\
             [[regions]]\nname = \"eu\"\nrole = \"primary\"\nkind = \"s3\"\nendpoint = \"http://127.0.0.1:9\"\n\
             bucket = \"b\"\naccess-key-id-env = \"LIFEBOAT_TEST_UNSET_KEY_ID\"\n\
             secret-access-key-file = \"/nonexistent/secret\"\n\n\
             [[regions]]\nname = \"us\"\nrole = \"secondary\"\nkind = \"dir\"\npath = \"/nonexistent/us\"\n"
        ),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let out = lifeboat(&config, &["health", "--timeout", "1s"]).failed();
    assert_eq!(out.code, 1);
    assert_eq!(
        out.stderr.trim(),
        format!("error: http://127.0.0.1:{port}/readyz: no answer within 1s")
    );
    assert!(start.elapsed() < Duration::from_secs(10));
    drop(silent);
}
