//! The Kubernetes manifests under deploy/kubernetes/: every file parses and names itself; the
//! pods' volumes are laid out on disk exactly as the kubelet would mount them, and the
//! configuration found there passes `lifeboat config check` with the shipped tiers and drill
//! plans; every Secret and ConfigMap key, environment variable, port and label selector the
//! manifests use points at something that exists; the containers are hardened.

mod support;

use lifeboat::config::{Config, Connection, DiscoverySource, DrillPlan, RegionBackend};
use lifeboat::secret::SecretSource;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

const DEPLOYMENT: &str = "lifeboat";
const DRILL_CRONJOB: &str = "lifeboat-drill-weekly-paid";
const LIFEBOAT_IMAGE: &str = "ghcr.io/example/lifeboat:0.1.0";
const LIFEBOAT_BINARY: &str = "/usr/local/bin/lifeboat";
const LIFEBOAT_USER: i64 = 10001;

// ---- reading the manifests -------------------------------------------------------------------

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// One YAML document of a manifest file.
struct Doc {
    file: String,
    yaml: Yaml,
}

impl Doc {
    fn kind(&self) -> &str {
        self.yaml["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.yaml["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every document of every YAML file under deploy/kubernetes/ (empty documents skipped).
fn manifests() -> Vec<Doc> {
    let dir = repo().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifest in {}", dir.display());
    let mut docs = Vec::new();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed =
            YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file}: not YAML: {e}"));
        let before = docs.len();
        for yaml in parsed.into_iter().filter(|y| !y.is_null()) {
            docs.push(Doc {
                file: file.clone(),
                yaml,
            });
        }
        assert!(docs.len() > before, "{file}: no document");
    }
    docs
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} named {name:?} under deploy/kubernetes/"))
}

fn only<'a>(docs: &'a [Doc], kind: &str) -> &'a Doc {
    let all: Vec<&Doc> = docs.iter().filter(|d| d.kind() == kind).collect();
    assert_eq!(all.len(), 1, "expected exactly one {kind}");
    all[0]
}

/// A sequence, or nothing when the field is absent.
fn seq(y: &Yaml) -> &[Yaml] {
    match y {
        Yaml::Array(a) => a,
        Yaml::BadValue | Yaml::Null => &[],
        other => panic!("expected a list, found {other:?}"),
    }
}

fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    // Labels, selectors and ConfigMap/Secret data are strings to Kubernetes: an
                    // unquoted `true` or `1` is rejected by the API server.
                    let v = match v {
                        Yaml::String(s) => s.clone(),
                        other => panic!("{k:?}: {other:?} is not a string; quote it"),
                    };
                    (k.as_str().expect("string key").to_string(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A label selector's `matchLabels` selects `labels` (matchExpressions are not used here).
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    assert!(
        selector["matchExpressions"].is_badvalue(),
        "matchExpressions: extend this test to read them"
    );
    let want = string_map(&selector["matchLabels"]);
    let have = string_map(labels);
    assert!(
        !want.is_empty(),
        "a selector without matchLabels selects everything"
    );
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

// ---- workloads -------------------------------------------------------------------------------

/// The pod template of a Deployment or a CronJob.
fn pod_template(doc: &Doc) -> &Yaml {
    match doc.kind() {
        "Deployment" => &doc.yaml["spec"]["template"],
        "CronJob" => &doc.yaml["spec"]["jobTemplate"]["spec"]["template"],
        other => panic!("{other} has no pod template here"),
    }
}

fn pod_spec(doc: &Doc) -> &Yaml {
    &pod_template(doc)["spec"]
}

/// Containers and init containers (sidecars included) of a pod.
fn all_containers(pod: &Yaml) -> Vec<&Yaml> {
    seq(&pod["initContainers"])
        .iter()
        .chain(seq(&pod["containers"]))
        .collect()
}

/// The container running the Lifeboat image (exactly one per pod).
fn lifeboat_container(pod: &Yaml) -> &Yaml {
    let found: Vec<&Yaml> = all_containers(pod)
        .into_iter()
        .filter(|c| c["image"].as_str() == Some(LIFEBOAT_IMAGE))
        .collect();
    assert_eq!(found.len(), 1, "one container runs {LIFEBOAT_IMAGE}");
    found[0]
}

/// What the image of deploy/docker/Dockerfile runs: its ENTRYPOINT with the program named by
/// its installed path, after checking that the image runs as the user the pods assume.
fn image_command() -> Vec<String> {
    let dockerfile = std::fs::read_to_string(repo().join("deploy/docker/Dockerfile")).unwrap();
    let line = |directive: &str| {
        dockerfile
            .lines()
            .rfind(|l| l.starts_with(directive))
            .unwrap_or_else(|| panic!("deploy/docker/Dockerfile has no {directive}"))
            .trim_start_matches(directive)
            .trim()
            .to_string()
    };
    let user = line("USER ");
    assert!(
        user == LIFEBOAT_USER.to_string() || user.starts_with(&format!("{LIFEBOAT_USER}:")),
        "the Dockerfile's USER {user} is not the pods' runAsUser {LIFEBOAT_USER}"
    );
    assert!(
        dockerfile.contains(LIFEBOAT_BINARY),
        "the Dockerfile does not install {LIFEBOAT_BINARY}"
    );
    let mut entrypoint: Vec<String> =
        serde_json::from_str(&line("ENTRYPOINT ")).expect("ENTRYPOINT in exec form (a JSON array)");
    let program = entrypoint.last_mut().expect("an ENTRYPOINT");
    if program == "lifeboat" {
        *program = LIFEBOAT_BINARY.into();
    }
    assert_eq!(
        program, LIFEBOAT_BINARY,
        "the ENTRYPOINT runs {LIFEBOAT_BINARY}"
    );
    entrypoint
}

fn strings(y: &Yaml) -> Vec<String> {
    seq(y)
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect()
}

/// The value after `flag` in a container's args.
fn flag_value(args: &[String], flag: &str) -> String {
    let i = args
        .iter()
        .position(|a| a == flag)
        .unwrap_or_else(|| panic!("args {args:?} have no {flag}"));
    args.get(i + 1)
        .unwrap_or_else(|| panic!("{flag} has no value in {args:?}"))
        .clone()
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EnvValue {
    Literal(String),
    Secret { name: String, key: String },
    ConfigMap { name: String, key: String },
}

/// A container's environment: `env` entries and every key of each `envFrom` source.
fn env_of(container: &Yaml, docs: &[Doc]) -> BTreeMap<String, EnvValue> {
    let mut env = BTreeMap::new();
    for from in seq(&container["envFrom"]) {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        for (field, kind) in [("secretRef", "Secret"), ("configMapRef", "ConfigMap")] {
            let Some(name) = from[field]["name"].as_str() else {
                continue;
            };
            for key in keys_of(find(docs, kind, name)) {
                let value = match kind {
                    "Secret" => EnvValue::Secret {
                        name: name.into(),
                        key: key.clone(),
                    },
                    _ => EnvValue::ConfigMap {
                        name: name.into(),
                        key: key.clone(),
                    },
                };
                env.insert(format!("{prefix}{key}"), value);
            }
        }
    }
    for e in seq(&container["env"]) {
        let name = e["name"].as_str().expect("env name").to_string();
        let (secret, config_map) = (
            &e["valueFrom"]["secretKeyRef"],
            &e["valueFrom"]["configMapKeyRef"],
        );
        let value = if let Some(v) = e["value"].as_str() {
            EnvValue::Literal(v.into())
        } else if secret.as_hash().is_some() {
            EnvValue::Secret {
                name: secret["name"].as_str().expect("secretKeyRef.name").into(),
                key: secret["key"].as_str().expect("secretKeyRef.key").into(),
            }
        } else if config_map.as_hash().is_some() {
            EnvValue::ConfigMap {
                name: config_map["name"]
                    .as_str()
                    .expect("configMapKeyRef.name")
                    .into(),
                key: config_map["key"]
                    .as_str()
                    .expect("configMapKeyRef.key")
                    .into(),
            }
        } else {
            panic!("env {name}: neither a value nor a secretKeyRef/configMapKeyRef");
        };
        assert!(
            env.insert(name.clone(), value).is_none(),
            "env {name} is set twice"
        );
    }
    env
}

/// The keys of a Secret (`data` and `stringData`) or a ConfigMap (`data`).
fn keys_of(doc: &Doc) -> BTreeSet<String> {
    ["data", "stringData", "binaryData"]
        .iter()
        .flat_map(|f| string_map(&doc.yaml[*f]).into_keys())
        .collect()
}

/// A container port by name or number, as probes and Services name it.
fn resolve_port(container: &Yaml, port: &Yaml) -> i64 {
    match port {
        Yaml::Integer(n) => *n,
        Yaml::String(name) => seq(&container["ports"])
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {name:?}")),
        other => panic!("not a port: {other:?}"),
    }
}

// ---- the pods' files, as the kubelet lays them out ----------------------------------------

/// Writes under `root` the files `container` sees through its volume mounts (ConfigMaps whole,
/// by `items` or by `subPath`; emptyDirs as empty directories), checking that every volume,
/// ConfigMap and key it names exists. Other volume kinds are refused: a secret volume would
/// give Lifeboat a group-readable file, which it rejects.
fn lay_out(docs: &[Doc], pod: &Yaml, container: &Yaml, root: &Path) {
    for mount in seq(&container["volumeMounts"]) {
        let vname = mount["name"].as_str().expect("volumeMount name");
        let at = root.join(
            mount["mountPath"]
                .as_str()
                .expect("mountPath")
                .trim_start_matches('/'),
        );
        let volume = seq(&pod["volumes"])
            .iter()
            .find(|v| v["name"].as_str() == Some(vname))
            .unwrap_or_else(|| panic!("volumeMount {vname:?}: the pod has no such volume"));
        if let Some(cm) = volume["configMap"]["name"].as_str() {
            let data = string_map(&find(docs, "ConfigMap", cm).yaml["data"]);
            let value = |key: &str| {
                data.get(key).unwrap_or_else(|| {
                    panic!("volume {vname:?}: ConfigMap {cm} has no key {key:?}")
                })
            };
            // What the volume holds: `items` (key → path), or every key under its own name.
            let files: Vec<(String, &String)> = match volume["configMap"]["items"].as_vec() {
                Some(items) => items
                    .iter()
                    .map(|i| {
                        let key = i["key"].as_str().expect("items[].key");
                        (i["path"].as_str().expect("items[].path").into(), value(key))
                    })
                    .collect(),
                None => data.iter().map(|(k, v)| (k.clone(), v)).collect(),
            };
            match mount["subPath"].as_str() {
                Some(sub) => {
                    let (_, text) = files
                        .iter()
                        .find(|(p, _)| p == sub)
                        .unwrap_or_else(|| panic!("subPath {sub:?}: not in ConfigMap {cm}"));
                    std::fs::create_dir_all(at.parent().unwrap()).unwrap();
                    std::fs::write(&at, text).unwrap();
                }
                None => {
                    for (path, text) in files {
                        let file = at.join(path);
                        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
                        std::fs::write(file, text).unwrap();
                    }
                }
            }
        } else if volume["emptyDir"].as_hash().is_some() {
            std::fs::create_dir_all(&at).unwrap();
        } else {
            panic!(
                "volume {vname:?}: only configMap and emptyDir volumes are expected: {volume:?}"
            );
        }
    }
}

/// A workload's Lifeboat container laid out in a temp dir; `path` maps a path of the pod to it.
struct Laid {
    dir: tempfile::TempDir,
}

impl Laid {
    fn new(docs: &[Doc], doc: &Doc) -> Laid {
        let dir = tempfile::tempdir().unwrap();
        let pod = pod_spec(doc);
        lay_out(docs, pod, lifeboat_container(pod), dir.path());
        Laid { dir }
    }
    fn path(&self, in_pod: &str) -> PathBuf {
        assert!(in_pod.starts_with('/'), "{in_pod}: not an absolute path");
        self.dir.path().join(in_pod.trim_start_matches('/'))
    }
    /// The configuration of a container whose args name it with `--config`.
    fn config(&self, container: &Yaml) -> (PathBuf, Config) {
        let file = self.path(&flag_value(&strings(&container["args"]), "--config"));
        let config = Config::load(&file).unwrap_or_else(|e| panic!("{e}"));
        (file, config)
    }
}

// ---- what the configuration resolves from the environment ----------------------------------

/// Who needs a secret of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Backups (serve) and drills: catalog, regions, discovery sources.
    Both,
    /// Backups only: the tenants' database passwords.
    Serve,
    /// Restores only: the master identity.
    Drill,
}

/// Every secret `config` names, by environment variable. A `*-file` secret fails the test:
/// in a pod it could only be a group-readable secret volume, which Lifeboat refuses.
fn secret_envs(config: &Config) -> BTreeMap<String, (Need, String)> {
    let mut out = BTreeMap::new();
    let mut add = |what: String, source: &Option<SecretSource>, need: Need| match source {
        None => {}
        Some(SecretSource::Env(var)) => {
            out.insert(var.clone(), (need, what));
        }
        Some(SecretSource::File(p)) => panic!(
            "{what} comes from the file {}: in Kubernetes use `-env` and a secretKeyRef (a secret \
             volume's files are group-readable, which Lifeboat refuses)",
            p.display()
        ),
        Some(other) => panic!("{what}: unexpected source {other:?}"),
    };
    add(
        "catalog.password".into(),
        &config.catalog.password,
        Need::Both,
    );
    add(
        "keys.master-identity".into(),
        &config.keys.master_identity,
        Need::Drill,
    );
    // Both append to the audit log, so both need its key.
    add("audit.key".into(), &config.audit.key, Need::Both);
    for r in &config.regions {
        if let RegionBackend::S3 {
            access_key_id,
            secret_access_key,
            ..
        } = &r.backend
        {
            let name = &r.name;
            add(
                format!("regions.{name}.access-key-id"),
                &Some(access_key_id.clone()),
                Need::Both,
            );
            add(
                format!("regions.{name}.secret-access-key"),
                &Some(secret_access_key.clone()),
                Need::Both,
            );
        }
    }
    for t in &config.tenants {
        if let Connection::Postgres { password, .. } | Connection::Mariadb { password, .. } =
            &t.connection
        {
            add(format!("tenants.{}.password", t.id), password, Need::Serve);
        }
    }
    for d in &config.discovery {
        match d {
            DiscoverySource::Query {
                name,
                password,
                tenant_password,
                ..
            } => {
                add(format!("{name}.password"), password, Need::Both);
                add(
                    format!("{name}.tenant-password"),
                    tenant_password,
                    Need::Serve,
                );
            }
            DiscoverySource::Server { name, password, .. } => {
                add(format!("{name}.password"), password, Need::Both)
            }
        }
    }
    out
}

/// The scratch servers' password variables of a drill plan.
fn scratch_envs(plan: &DrillPlan) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (what, conn) in [
        ("scratch.postgres", &plan.scratch.postgres),
        ("scratch.mariadb", &plan.scratch.mariadb),
    ] {
        if let Some(Connection::Postgres { password, .. } | Connection::Mariadb { password, .. }) =
            conn
        {
            match password {
                Some(SecretSource::Env(var)) => {
                    out.insert(var.clone(), what.to_string());
                }
                None => {}
                other => panic!("{what}-password: use -env in Kubernetes, not {other:?}"),
            }
        }
    }
    out
}

/// The variables of `env` that come from a Secret.
fn secret_backed(env: &BTreeMap<String, EnvValue>) -> BTreeSet<String> {
    env.iter()
        .filter(|(_, v)| matches!(v, EnvValue::Secret { .. }))
        .map(|(k, _)| k.clone())
        .collect()
}

// ---- the tests -------------------------------------------------------------------------------

#[test]
fn every_manifest_parses_and_names_itself() {
    let docs = manifests();
    let namespace = only(&docs, "Namespace").name().to_string();
    assert!(!namespace.is_empty());
    for d in &docs {
        let at = format!("{} ({} {:?})", d.file, d.kind(), d.name());
        assert!(
            d.yaml["apiVersion"].as_str().is_some(),
            "{at}: no apiVersion"
        );
        assert!(!d.kind().is_empty(), "{at}: no kind");
        assert!(!d.name().is_empty(), "{at}: no metadata.name");
        if d.kind() != "Namespace" {
            assert_eq!(
                d.yaml["metadata"]["namespace"].as_str(),
                Some(namespace.as_str()),
                "{at}: every namespaced object belongs in namespace {namespace}"
            );
        }
    }
    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    for kind in [
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "CronJob",
    ] {
        assert!(kinds.contains(kind), "no {kind} under deploy/kubernetes/");
    }
    // The Secrets are templates: placeholders only, clearly marked, never real values.
    for s in docs.iter().filter(|d| d.kind() == "Secret") {
        assert!(
            s.yaml["data"].is_badvalue(),
            "{}: {} uses `data` (base64); templates use readable stringData placeholders",
            s.file,
            s.name()
        );
        let values = string_map(&s.yaml["stringData"]);
        assert!(!values.is_empty(), "{}: {} has no keys", s.file, s.name());
        for (k, v) in values {
            assert!(
                v.starts_with("REPLACE-ME"),
                "{}: {}.{k} is not a marked placeholder: {v:?}",
                s.file,
                s.name()
            );
        }
    }
}

#[test]
fn the_mounted_config_passes_config_check_with_the_shipped_tiers_and_plans() {
    let docs = manifests();
    for workload in [
        find(&docs, "Deployment", DEPLOYMENT),
        find(&docs, "CronJob", DRILL_CRONJOB),
    ] {
        let laid = Laid::new(&docs, workload);
        let container = lifeboat_container(pod_spec(workload));
        let (file, config) = laid.config(container);
        // Env vars are unset here: a check names each secret's source and resolves none.
        let out = support::lifeboat(&file, &["config", "check"]).ok();
        assert!(
            out.stdout.contains("# ok: 2 regions, "),
            "{}: {}",
            workload.name(),
            out.stdout
        );
        // `config check` prints the catalog, keys, regions and tenants (not [[discovery]]).
        for (var, (_, what)) in secret_envs(&config) {
            if what.starts_with("discovery") {
                continue;
            }
            assert!(
                out.stdout
                    .contains(&format!("<from environment variable {var}>")),
                "{what} ({var}) not in\n{}",
                out.stdout
            );
        }
        assert!(!out.stdout.contains("<from file"), "{}", out.stdout);

        // The tiers the config found (through schedules-dir, as mounted) are the shipped files.
        let shipped = repo().join("schedules");
        let shipped_tiers = lifeboat::config::load_tiers(&shipped).unwrap();
        assert_eq!(
            config.tiers.keys().collect::<Vec<_>>(),
            shipped_tiers.keys().collect::<Vec<_>>(),
            "{}: the mounted tiers are not those of schedules/",
            workload.name()
        );
        for tier in config.tiers.values() {
            let name = tier.file.file_name().unwrap();
            assert_eq!(
                std::fs::read_to_string(&tier.file).unwrap(),
                std::fs::read_to_string(shipped.join(name)).unwrap(),
                "{}: tier file {name:?} differs from schedules/",
                workload.name()
            );
        }
    }
}

#[test]
fn the_drill_cronjob_runs_a_shipped_plan_with_its_scratch_servers_in_the_pod() {
    let docs = manifests();
    let cron = find(&docs, "CronJob", DRILL_CRONJOB);
    let laid = Laid::new(&docs, cron);
    let pod = pod_spec(cron);
    let container = lifeboat_container(pod);
    let (_, config) = laid.config(container);
    let args = strings(&container["args"]);
    let run = args
        .windows(3)
        .find(|w| w[0] == "drill" && w[1] == "run")
        .unwrap_or_else(|| panic!("the CronJob's args {args:?} do not run `drill run PLAN`"));
    let plan_file = laid.path(&run[2]);
    assert!(plan_file.is_file(), "{} is not mounted", run[2]);

    // Every plan mounted beside it is a shipped plan, byte for byte, and all of them are there.
    let shipped = repo().join("restore-drills");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".toml"))
            .collect()
    };
    let mounted = plan_file.parent().unwrap();
    assert_eq!(names(mounted), names(&shipped), "drill plans mounted");
    for name in names(mounted) {
        assert_eq!(
            std::fs::read_to_string(mounted.join(&name)).unwrap(),
            std::fs::read_to_string(shipped.join(&name)).unwrap(),
            "drill plan {name} differs from restore-drills/"
        );
        lifeboat::config::load_drill_plan(&mounted.join(&name), &config)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let plan = lifeboat::config::load_drill_plan(&plan_file, &config).unwrap();

    // The CronJob fires when the plan says (UTC), one at a time, and outlives its time limit.
    let spec = &cron.yaml["spec"];
    let schedule = spec["schedule"].as_str().expect("schedule");
    let fires = lifeboat::config::parse_cron(schedule)
        .unwrap_or_else(|| panic!("schedule {schedule:?} is not a cron expression"));
    let from = chrono::Utc::now();
    assert_eq!(
        fires.after(&from).take(5).collect::<Vec<_>>(),
        plan.schedule.after(&from).take(5).collect::<Vec<_>>(),
        "the CronJob's schedule {schedule:?} is not the plan's {:?}",
        plan.schedule_text
    );
    assert!(
        matches!(spec["timeZone"].as_str(), Some("Etc/UTC" | "UTC")),
        "plans are in UTC"
    );
    assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"));
    let deadline = spec["jobTemplate"]["spec"]["activeDeadlineSeconds"]
        .as_i64()
        .expect("activeDeadlineSeconds");
    assert!(
        deadline as u64 > plan.time_limit.as_secs(),
        "activeDeadlineSeconds {deadline} must leave the plan's time-limit ({:?}) room to end the drill cleanly",
        plan.time_limit
    );

    // Each scratch server on loopback is a sidecar of this pod: same port, user and password.
    let env = env_of(container, &docs);
    let sidecars: Vec<&Yaml> = seq(&pod["initContainers"])
        .iter()
        .filter(|c| c["restartPolicy"].as_str() == Some("Always"))
        .collect();
    for (conn, default_port, user_var, password_var) in [
        (
            &plan.scratch.postgres,
            5432,
            "POSTGRES_USER",
            "POSTGRES_PASSWORD",
        ),
        (
            &plan.scratch.mariadb,
            3306,
            "MARIADB_USER",
            "MARIADB_PASSWORD",
        ),
    ] {
        let Some(Connection::Postgres { url, password } | Connection::Mariadb { url, password }) =
            conn
        else {
            continue;
        };
        if !matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")) {
            continue;
        }
        let port = i64::from(url.port().unwrap_or(default_port));
        let sidecar = sidecars
            .iter()
            .find(|c| {
                seq(&c["ports"])
                    .iter()
                    .any(|p| p["containerPort"].as_i64() == Some(port))
            })
            .unwrap_or_else(|| panic!("no sidecar serves the plan's scratch server {url}"));
        let side_env = env_of(sidecar, &docs);
        assert_eq!(
            side_env.get(user_var),
            Some(&EnvValue::Literal(url.username().to_string())),
            "{url}: the sidecar's {user_var}"
        );
        let Some(SecretSource::Env(var)) = password else {
            panic!("{url}: its password must come from an environment variable");
        };
        let drill_side = env
            .get(var)
            .unwrap_or_else(|| panic!("{var} is not set in the drill container"));
        assert!(matches!(drill_side, EnvValue::Secret { .. }), "{var}");
        assert_eq!(
            side_env.get(password_var),
            Some(drill_side),
            "{url}: the sidecar's {password_var} and the drill's {var} must be the same Secret key"
        );
        assert!(
            strings(&sidecar["args"])
                .iter()
                .any(|a| a.contains("127.0.0.1")),
            "{url}: the scratch server should listen on loopback only"
        );
    }
    // SQLite tenants are restored into the plan's sqlite-dir: a writable (emptyDir) mount.
    if let Some(dir) = &plan.scratch.sqlite_dir {
        let mounted = seq(&container["volumeMounts"]).iter().any(|m| {
            let path = Path::new(m["mountPath"].as_str().unwrap_or_default());
            let volume = seq(&pod["volumes"])
                .iter()
                .find(|v| v["name"] == m["name"])
                .expect("volume");
            dir.starts_with(path) && volume["emptyDir"].as_hash().is_some()
        });
        assert!(
            mounted,
            "sqlite-dir {} has no writable mount",
            dir.display()
        );
    }
}

#[test]
fn every_secret_the_config_names_is_set_from_a_secret_that_exists() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", DEPLOYMENT);
    let cron = find(&docs, "CronJob", DRILL_CRONJOB);
    let (_, config) = Laid::new(&docs, deployment).config(lifeboat_container(pod_spec(deployment)));
    let secrets = secret_envs(&config);
    assert!(secrets.len() >= 5, "catalog and two S3 regions at least");

    // Every reference of every container (sidecars too) resolves: volumes, ConfigMaps and
    // their keys (by laying the mounts out), Secret and ConfigMap keys of the environment.
    for workload in [deployment, cron] {
        for c in all_containers(pod_spec(workload)) {
            lay_out(
                &docs,
                pod_spec(workload),
                c,
                tempfile::tempdir().unwrap().path(),
            );
            for (var, value) in env_of(c, &docs) {
                let (kind, name, key) = match &value {
                    EnvValue::Literal(_) => continue,
                    EnvValue::Secret { name, key } => ("Secret", name, key),
                    EnvValue::ConfigMap { name, key } => ("ConfigMap", name, key),
                };
                assert!(
                    keys_of(find(&docs, kind, name)).contains(key),
                    "{} {}: env {var} refers to key {key:?}, which {kind} {name} lacks",
                    workload.name(),
                    c["name"].as_str().unwrap_or_default()
                );
            }
        }
    }

    // serve: every secret it resolves, from a Secret; nothing more. The master identity only
    // opens tenant keys (restores, drills): the workers must not have it.
    let serve_env = env_of(lifeboat_container(pod_spec(deployment)), &docs);
    let serve_needs: BTreeSet<String> = secrets
        .iter()
        .filter(|(_, (need, _))| *need != Need::Drill)
        .map(|(var, _)| var.clone())
        .collect();
    assert_eq!(
        secret_backed(&serve_env),
        serve_needs,
        "the Deployment's secret variables must be exactly those serve resolves: {secrets:#?}"
    );
    let identity = secrets
        .iter()
        .find(|(_, (need, _))| *need == Need::Drill)
        .map(|(var, _)| var.clone())
        .expect("keys.master-identity-env: drills restore, they need the master identity");
    assert!(!serve_env.contains_key(&identity));

    // The drill: catalog, regions, discovery, the master identity and the plan's scratch
    // passwords; no tenant database password (it restores into scratch servers only).
    let laid = Laid::new(&docs, cron);
    let drill = lifeboat_container(pod_spec(cron));
    let args = strings(&drill["args"]);
    let plan_path = &args[args.iter().position(|a| a == "run").expect("drill run") + 1];
    let plan = lifeboat::config::load_drill_plan(&laid.path(plan_path), &config).unwrap();
    let mut drill_needs: BTreeSet<String> = secrets
        .iter()
        .filter(|(_, (need, _))| *need != Need::Serve)
        .map(|(var, _)| var.clone())
        .collect();
    drill_needs.extend(scratch_envs(&plan).into_keys());
    assert_eq!(
        secret_backed(&env_of(drill, &docs)),
        drill_needs,
        "the drill's secret variables must be exactly those a drill resolves"
    );

    // No pod mounts a Secret as files (see secret.example.yaml), the host's files, or
    // reaches the API server: configMap and emptyDir volumes only.
    for workload in [deployment, cron] {
        let pod = pod_spec(workload);
        for v in seq(&pod["volumes"]) {
            let mut fields: Vec<&str> = v
                .as_hash()
                .expect("a volume")
                .keys()
                .map(|k| k.as_str().expect("a field"))
                .collect();
            fields.sort_unstable();
            assert!(
                fields == ["configMap", "name"] || fields == ["emptyDir", "name"],
                "{}: volume {:?} has {fields:?}: configMap and emptyDir only (secrets are environment variables here)",
                workload.name(),
                v["name"]
            );
        }
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{}: Lifeboat does not use the Kubernetes API",
            workload.name()
        );
    }
}

#[test]
fn the_deployment_runs_serve_on_a_shared_catalog_and_drains_within_its_grace_period() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", DEPLOYMENT);
    let pod = pod_spec(deployment);
    let container = lifeboat_container(pod);
    assert_eq!(strings(&container["command"]), image_command());
    let args = strings(&container["args"]);
    assert_eq!(args.last().map(String::as_str), Some("serve"), "{args:?}");
    let (_, config) = Laid::new(&docs, deployment).config(container);

    // Several workers need the PostgreSQL catalog: a SQLite one is locked to one process.
    let replicas = deployment.yaml["spec"]["replicas"].as_i64().unwrap_or(1);
    assert!(replicas > 1, "replicas: {replicas}");
    assert!(
        config.catalog.url.starts_with("postgres://"),
        "{} replicas share the catalog; {} is not PostgreSQL",
        replicas,
        config.catalog.url
    );
    assert!(config.drills.is_empty(), "drills run in the CronJob");

    // SIGTERM: running backups get [scheduler] drain, then are stopped and cleaned up.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds") as u64;
    assert!(
        grace >= config.scheduler.drain.as_secs() + 30,
        "terminationGracePeriodSeconds {grace} leaves no time after the drain of {:?}",
        config.scheduler.drain
    );

    // Temporary files (MariaDB option files, SQLite snapshots) need a writable /tmp.
    let tmp = seq(&container["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"].as_str() == Some("/tmp"))
        .expect("a /tmp mount: the root file system is read-only");
    let volume = seq(&pod["volumes"])
        .iter()
        .find(|v| v["name"] == tmp["name"])
        .unwrap();
    assert!(volume["emptyDir"].as_hash().is_some(), "/tmp: an emptyDir");

    // The workers apply retention on a schedule; its certificates need a writable directory.
    assert!(
        config.retention.schedule.is_some(),
        "[retention] schedule: nothing else runs retention here"
    );
    let certificates = &config.retention.certificates_dir;
    let writable = seq(&container["volumeMounts"]).iter().any(|m| {
        let volume = seq(&pod["volumes"])
            .iter()
            .find(|v| v["name"] == m["name"])
            .expect("volume");
        certificates.starts_with(m["mountPath"].as_str().unwrap_or_default())
            && volume["emptyDir"].as_hash().is_some()
    });
    assert!(
        writable,
        "certificates-dir {} has no writable mount",
        certificates.display()
    );
}

#[test]
fn probes_service_monitor_and_policies_use_the_listen_port() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", DEPLOYMENT);
    let cron = find(&docs, "CronJob", DRILL_CRONJOB);
    let pod = pod_spec(deployment);
    let container = lifeboat_container(pod);
    let (_, config) = Laid::new(&docs, deployment).config(container);
    let listen = config.server.listen;
    assert!(
        listen.ip().is_unspecified(),
        "[server] listen = {listen}: probes and Prometheus reach the pod's address"
    );
    let port = i64::from(listen.port());

    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        let get = &container[probe]["httpGet"];
        if probe == "startupProbe" && container[probe].is_badvalue() {
            continue;
        }
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(resolve_port(container, &get["port"]), port, "{probe}");
    }

    let worker_labels = &pod_template(deployment)["metadata"]["labels"];
    let drill_labels = &pod_template(cron)["metadata"]["labels"];
    assert!(selects(&deployment.yaml["spec"]["selector"], worker_labels));

    let service = only(&docs, "Service");
    let selector = Yaml::Hash(
        [(
            Yaml::String("matchLabels".into()),
            service.yaml["spec"]["selector"].clone(),
        )]
        .into_iter()
        .collect(),
    );
    assert!(selects(&selector, worker_labels), "Service → workers");
    assert!(!selects(&selector, drill_labels), "Service → not the drill");
    let service_ports = seq(&service.yaml["spec"]["ports"]);
    for p in service_ports {
        assert_eq!(resolve_port(container, &p["targetPort"]), port, "Service");
    }

    let monitor = only(&docs, "ServiceMonitor");
    assert!(selects(
        &monitor.yaml["spec"]["selector"],
        &service.yaml["metadata"]["labels"]
    ));
    let namespace = service.yaml["metadata"]["namespace"].as_str().unwrap();
    assert!(
        strings(&monitor.yaml["spec"]["namespaceSelector"]["matchNames"])
            .iter()
            .any(|n| n == namespace)
    );
    for e in seq(&monitor.yaml["spec"]["endpoints"]) {
        assert_eq!(e["path"].as_str(), Some("/metrics"));
        let name = e["port"].as_str().expect("endpoint port name");
        assert!(
            service_ports
                .iter()
                .any(|p| p["name"].as_str() == Some(name)),
            "ServiceMonitor port {name:?} is not a port of the Service"
        );
    }

    let pdb = only(&docs, "PodDisruptionBudget");
    assert!(selects(&pdb.yaml["spec"]["selector"], worker_labels));
    assert!(!selects(&pdb.yaml["spec"]["selector"], drill_labels));

    // Ingress: only the metrics port, only from the monitoring namespace.
    let policy = only(&docs, "NetworkPolicy");
    let spec = &policy.yaml["spec"];
    assert!(selects(&spec["podSelector"], worker_labels));
    assert!(selects(&spec["podSelector"], drill_labels));
    assert_eq!(strings(&spec["policyTypes"]), ["Ingress", "Egress"]);
    let ingress = seq(&spec["ingress"]);
    assert!(!ingress.is_empty());
    for rule in ingress {
        let ports: Vec<i64> = seq(&rule["ports"])
            .iter()
            .map(|p| p["port"].as_i64().expect("numeric port"))
            .collect();
        assert_eq!(ports, [port], "ingress is for the metrics port only");
        for peer in seq(&rule["from"]) {
            assert_eq!(
                peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str(),
                Some("monitoring"),
                "ingress from the monitoring namespace only"
            );
        }
    }
    // Egress: DNS, and every server the configuration connects to on its port.
    let egress = seq(&spec["egress"]);
    let allows = |port: i64, protocol: &str, peer_ok: &dyn Fn(&Yaml) -> bool| {
        egress.iter().any(|rule| {
            let ports = seq(&rule["ports"]);
            let port_ok = ports.is_empty()
                || ports.iter().any(|p| {
                    p["port"].as_i64() == Some(port)
                        && p["protocol"].as_str().unwrap_or("TCP") == protocol
                });
            let peers = seq(&rule["to"]);
            port_ok && (peers.is_empty() || peers.iter().any(peer_ok))
        })
    };
    let in_namespace = |ns: &str| {
        let ns = ns.to_string();
        move |peer: &Yaml| {
            peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"].as_str()
                == Some(ns.as_str())
        }
    };
    for protocol in ["UDP", "TCP"] {
        assert!(
            allows(53, protocol, &in_namespace("kube-system")),
            "DNS/{protocol}"
        );
    }
    let mut servers: Vec<(String, url::Url)> = vec![(
        "catalog".into(),
        url::Url::parse(&config.catalog.url).unwrap(),
    )];
    for r in &config.regions {
        if let RegionBackend::S3 { endpoint, .. } = &r.backend {
            servers.push((
                format!("region {}", r.name),
                url::Url::parse(endpoint).unwrap(),
            ));
        }
    }
    for d in &config.discovery {
        let (DiscoverySource::Query { name, url, .. } | DiscoverySource::Server { name, url, .. }) =
            d;
        servers.push((name.clone(), url.clone()));
    }
    for (what, url) in servers {
        let Some(host) = url.host_str().map(str::to_string) else {
            panic!("{what}: {url} names no server");
        };
        let port = i64::from(url.port_or_known_default().unwrap_or(match url.scheme() {
            "postgres" | "postgresql" => 5432,
            _ => 3306,
        }));
        let labels: Vec<&str> = host.split('.').collect();
        let ok = if labels.len() == 1 {
            // A Service of this namespace: a pod selector alone.
            allows(port, "TCP", &|p: &Yaml| {
                p["podSelector"].as_hash().is_some()
                    && p["namespaceSelector"].is_badvalue()
                    && p["ipBlock"].is_badvalue()
            })
        } else if labels.get(2) == Some(&"svc") {
            // NAME.NAMESPACE.svc…: a Service of another namespace.
            allows(port, "TCP", &in_namespace(labels[1]))
        } else {
            // Outside the cluster.
            allows(port, "TCP", &|p: &Yaml| p["ipBlock"].as_hash().is_some())
        };
        assert!(
            ok,
            "NetworkPolicy: no egress rule lets the pods reach {what} at {host}:{port}"
        );
    }
}

#[test]
fn every_container_is_hardened() {
    let docs = manifests();
    for workload in [
        find(&docs, "Deployment", DEPLOYMENT),
        find(&docs, "CronJob", DRILL_CRONJOB),
    ] {
        let pod = pod_spec(workload);
        let pod_sc = &pod["securityContext"];
        assert!(
            pod_sc["fsGroup"].is_badvalue(),
            "{}: fsGroup makes secret volumes group-readable",
            workload.name()
        );
        for c in all_containers(pod) {
            let at = format!(
                "{} container {}",
                workload.name(),
                c["name"].as_str().unwrap_or_default()
            );
            let sc = &c["securityContext"];
            // A container's field wins over the pod's.
            let effective = |field: &str| -> Yaml {
                if sc[field].is_badvalue() {
                    pod_sc[field].clone()
                } else {
                    sc[field].clone()
                }
            };
            assert_eq!(effective("runAsNonRoot").as_bool(), Some(true), "{at}");
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{at}");
            assert_eq!(
                sc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{at}"
            );
            assert!(
                strings(&sc["capabilities"]["drop"]).contains(&"ALL".to_string()),
                "{at}: capabilities.drop ALL"
            );
            assert!(
                sc["capabilities"]["add"].is_badvalue(),
                "{at}: no capability added"
            );
            assert_eq!(
                effective("seccompProfile")["type"].as_str(),
                Some("RuntimeDefault"),
                "{at}"
            );
            assert!(sc["privileged"].as_bool() != Some(true), "{at}");
            let user = effective("runAsUser").as_i64();
            assert!(user.is_some_and(|u| u > 0), "{at}: runAsUser");
            if c["image"].as_str() == Some(LIFEBOAT_IMAGE) {
                // The Dockerfile's user.
                assert_eq!(user, Some(LIFEBOAT_USER), "{at}");
                assert_eq!(strings(&c["command"]), image_command(), "{at}");
            }
            assert!(
                c["resources"]["requests"].as_hash().is_some(),
                "{at}: resources"
            );
            assert!(
                c["resources"]["limits"]["memory"].as_str().is_some(),
                "{at}: a memory limit"
            );
        }
    }
}
