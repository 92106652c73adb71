//! The deployment files stay valid: `docker-compose.yml` passes
//! `docker-compose config` (no Docker engine is needed for that).
//!
//! `docker-compose` is not among what the README asks a developer to
//! install, so without it this test says so and passes; `.ci/run` installs it
//! and sets `SPARKLET_REQUIRE_DOCKER_COMPOSE=1`, which makes it required.

use anyhow::{Context, Result};

use crate::support::repo_path;

#[test]
fn docker_compose_file_is_valid() -> Result<()> {
    let required = std::env::var_os("SPARKLET_REQUIRE_DOCKER_COMPOSE").is_some_and(|v| v == "1");
    let out =
        match std::process::Command::new("docker-compose").args(["config", "-q"]).current_dir(repo_path("")).output() {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                eprintln!(
                "NOTICE: docker_compose_file_is_valid skipped: docker-compose is not installed (.ci/run installs it)"
            );
                return Ok(());
            }
            result => result.context("running docker-compose (apt-get install docker-compose; .ci/run installs it)")?,
        };
    assert!(out.status.success(), "docker-compose config: {}", String::from_utf8_lossy(&out.stderr));
    Ok(())
}

/// The Kubernetes schema validator (PyPI's `kubernetes-validate`, bundled
/// schemas, no network): `SPARKLET_K8S_VALIDATE`, the venv `.ci/run` makes,
/// or the PATH.
fn kubernetes_validate() -> Option<std::path::PathBuf> {
    let venv =
        std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache/sparklet-venv/bin/kubernetes-validate"));
    std::env::var_os("SPARKLET_K8S_VALIDATE")
        .map(std::path::PathBuf::from)
        .into_iter()
        .chain(venv)
        .chain(Some("kubernetes-validate".into()))
        .find(|p| std::process::Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success()))
}

const MANIFESTS: [&str; 8] = [
    "statefulset.yaml",
    "service.yaml",
    "pdb.yaml",
    "networkpolicy.yaml",
    "configmap-sql.yaml",
    "secret.yaml",
    "checkpoint-pvc.yaml",
    "jobs/repartition-job.yaml",
];

#[test]
fn kubernetes_manifests_pass_strict_schema_validation_offline() -> Result<()> {
    let Some(validate) = kubernetes_validate() else {
        let required = std::env::var_os("SPARKLET_REQUIRE_K8S_VALIDATE").is_some_and(|v| v == "1");
        assert!(!required, "kubernetes-validate is required but missing (.ci/run installs it)");
        eprintln!("NOTICE: kubernetes manifests not validated: pip install kubernetes-validate (.ci/run does)");
        return Ok(());
    };
    let dir = repo_path("deploy/kubernetes");
    let out = std::process::Command::new(validate).arg("--strict").args(MANIFESTS).current_dir(&dir).output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    // An unknown kind is only a warning to the tool: every file must pass.
    assert_eq!(text.matches("passed for resource").count(), MANIFESTS.len(), "{text}");
    assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
    Ok(())
}

/// The `data:` entries of the SQL ConfigMap: file name to content.
fn config_map_files(yaml: &str) -> std::collections::BTreeMap<String, String> {
    let mut files = std::collections::BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in yaml.lines().skip_while(|l| *l != "data:").skip(1) {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")).filter(|n| !n.starts_with(' '))
        {
            files.extend(current.take());
            current = Some((name.to_string(), String::new()));
        } else if let Some((_, text)) = current.as_mut() {
            text.push_str(line.strip_prefix("    ").unwrap_or(line));
            text.push('\n');
        }
    }
    files.extend(current);
    files
}

#[test]
fn the_kubernetes_config_map_holds_the_repos_sql_files_and_the_pods_options_exist() -> Result<()> {
    let yaml = std::fs::read_to_string(repo_path("deploy/kubernetes/configmap-sql.yaml"))?;
    let in_map = config_map_files(&yaml);
    let mut in_repo = std::collections::BTreeMap::new();
    for entry in std::fs::read_dir(repo_path("sql"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "sql" || e == "toml") {
            let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
            in_repo.insert(name, std::fs::read_to_string(&path)?.trim_end().to_string() + "\n");
        }
    }
    assert_eq!(in_map, in_repo, "deploy/kubernetes/configmap-sql.yaml differs from sql/: regenerate it");

    use clap::CommandFactory;
    let command = sparklet::cli::Cli::command();
    let run = command.find_subcommand("run").context("no run command")?;
    let checkpoint = command.find_subcommand("checkpoint").context("no checkpoint command")?;
    let repartition = checkpoint.find_subcommand("repartition").context("no repartition command")?;
    let envs = |c: &clap::Command| -> Vec<String> {
        c.get_arguments()
            .chain(command.get_arguments())
            .filter_map(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .collect()
    };
    for (file, known) in [("statefulset.yaml", envs(run)), ("jobs/repartition-job.yaml", envs(repartition))] {
        let pod = std::fs::read_to_string(repo_path(&format!("deploy/kubernetes/{file}")))?;
        let words = pod.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        for name in words.filter(|w| w.starts_with("SPARKLET_")) {
            assert!(known.iter().any(|k| k == name), "{file} sets {name}, which its sparklet command does not read");
        }
    }
    Ok(())
}

#[test]
fn docker_composes_grants_are_what_sparklet_setup_prints() -> Result<()> {
    let committed = std::fs::read_to_string(repo_path("deploy/postgres/20_sparklet_setup.sql"))?;
    let printed = sparklet::admin::setup_sql("sparklet", None)?;
    assert!(
        committed == printed,
        "deploy/postgres/20_sparklet_setup.sql is stale: run `sparklet setup --print-sql --role sparklet > deploy/postgres/20_sparklet_setup.sql`"
    );
    let compose = std::fs::read_to_string(repo_path("docker-compose.yml"))?;
    assert!(compose.contains("POSTGRES_USER: postgres") && compose.contains("postgres://sparklet:"), "{compose}");
    Ok(())
}

/// One significant line of a manifest: its indentation, whether it starts a
/// list item, and its text. A list item's `- ` counts as indentation, so the
/// item's first key lines up with its other keys.
#[derive(Clone, Copy, Debug)]
struct Line<'a> {
    indent: usize,
    item: bool,
    text: &'a str,
}

/// The lines of a manifest without comments, blank lines and `---` (enough
/// YAML for the hand-written pod specs: maps, lists, `[flow]` lists).
fn yaml_lines(yaml: &str) -> Vec<Line<'_>> {
    yaml.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#') && l.trim() != "---")
        .map(|l| {
            let text = l.trim_start();
            let indent = l.len() - text.len();
            match text.strip_prefix("- ") {
                Some(rest) => Line { indent: indent + 2, item: true, text: rest.trim_start() },
                None => Line { indent, item: false, text },
            }
        })
        .collect()
}

/// The key and the value (without a trailing comment or quotes) of a `key: value` line.
fn key_value<'a>(line: &Line<'a>) -> Option<(&'a str, &'a str)> {
    let (key, value) = line.text.split_once(':')?;
    let value = value.split(" #").next().unwrap_or_default().trim().trim_matches('"');
    Some((key.trim(), value))
}

/// The lines under `key:` at the top level of `lines`.
fn child<'a, 'b>(lines: &'b [Line<'a>], key: &str) -> Option<&'b [Line<'a>]> {
    let top = lines.iter().map(|l| l.indent).min()?;
    let at = lines.iter().position(|l| l.indent == top && key_value(l).is_some_and(|(k, _)| k == key))?;
    let end = lines[at + 1..].iter().position(|l| l.indent <= lines[at].indent).map_or(lines.len(), |n| at + 1 + n);
    Some(&lines[at + 1..end])
}

/// The value of `key: value` at the top level of `lines`.
fn value<'a>(lines: &[Line<'a>], key: &str) -> Option<&'a str> {
    let top = lines.iter().map(|l| l.indent).min()?;
    lines.iter().filter(|l| l.indent == top).filter_map(key_value).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// The items of a list (the lines under `key:` of a list).
fn items<'a, 'b>(lines: &'b [Line<'a>]) -> Vec<&'b [Line<'a>]> {
    let Some(top) = lines.iter().map(|l| l.indent).min() else { return Vec::new() };
    let starts: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].item && lines[i].indent == top).collect();
    starts.iter().enumerate().map(|(n, &s)| &lines[s..starts.get(n + 1).copied().unwrap_or(lines.len())]).collect()
}

/// The entries of a list of scalars, in flow (`["a", "b"]`) or block form.
fn scalars<'a>(lines: &[Line<'a>], key: &str) -> Vec<&'a str> {
    match value(lines, key).filter(|v| !v.is_empty()) {
        Some(flow) => flow
            .trim_start_matches('[')
            .trim_end_matches(']')
            .split(',')
            .map(|s| s.trim().trim_matches('"'))
            .filter(|s| !s.is_empty())
            .collect(),
        None => {
            child(lines, key).unwrap_or_default().iter().filter(|l| l.item).map(|l| l.text.trim_matches('"')).collect()
        }
    }
}

fn manifest(file: &str) -> Result<String> {
    let path = repo_path(&format!("deploy/kubernetes/{file}"));
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// The pod spec of a StatefulSet's or Job's template.
fn pod_spec<'a, 'b>(lines: &'b [Line<'a>]) -> Option<&'b [Line<'a>]> {
    child(child(child(lines, "spec")?, "template")?, "spec")
}

/// The env variable `name` of a container, when set by `value:`.
fn env_value<'a>(container: &[Line<'a>], name: &str) -> Option<&'a str> {
    items(child(container, "env")?).into_iter().find(|e| value(e, "name") == Some(name)).and_then(|e| value(e, "value"))
}

/// The mounts of a container: mount path, volume name, read-only.
fn mounts<'a>(container: &[Line<'a>]) -> Vec<(&'a str, &'a str, bool)> {
    let Some(list) = child(container, "volumeMounts") else { return Vec::new() };
    items(list)
        .into_iter()
        .filter_map(|m| Some((value(m, "mountPath")?, value(m, "name")?, value(m, "readOnly") == Some("true"))))
        .collect()
}

/// The mount a path is on (the longest mount path that holds it).
fn mount_of<'a>(mounts: &[(&'a str, &'a str, bool)], path: &str) -> Option<(&'a str, &'a str, bool)> {
    mounts
        .iter()
        .filter(|(at, _, _)| path.strip_prefix(at).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
        .max_by_key(|(at, _, _)| at.len())
        .copied()
}

const POD_MANIFESTS: [&str; 2] = ["statefulset.yaml", "jobs/repartition-job.yaml"];

#[test]
fn kubernetes_pods_are_hardened() -> Result<()> {
    let image = format!("sparklet:{}", env!("CARGO_PKG_VERSION"));
    for file in POD_MANIFESTS {
        let yaml = manifest(file)?;
        let lines = yaml_lines(&yaml);
        let is_job = value(&lines, "kind") == Some("Job");
        let pod = pod_spec(&lines).with_context(|| format!("{file}: no spec.template.spec"))?;
        assert_eq!(value(pod, "automountServiceAccountToken"), Some("false"), "{file}: the pod mounts a token");
        let pod_context = child(pod, "securityContext").with_context(|| format!("{file}: no pod securityContext"))?;
        assert!(
            value(pod_context, "fsGroup").and_then(|g| g.parse::<u32>().ok()).is_some_and(|g| g > 0),
            "{file}: the pod has no numeric, non-root fsGroup"
        );
        assert!(!pod.iter().any(|l| l.text.starts_with("hostNetwork: true")), "{file}: hostNetwork");
        let containers: Vec<_> =
            ["containers", "initContainers"].into_iter().filter_map(|k| child(pod, k)).flat_map(items).collect();
        assert!(!containers.is_empty(), "{file}: no containers");
        for c in containers {
            let name = value(c, "name").unwrap_or("?");
            let at = format!("{file}, container {name}");
            assert_eq!(value(c, "image"), Some(image.as_str()), "{at}: the image must be Cargo.toml's version");
            let sc = child(c, "securityContext").with_context(|| format!("{at}: no securityContext"))?;
            for (key, want) in
                [("allowPrivilegeEscalation", "false"), ("readOnlyRootFilesystem", "true"), ("runAsNonRoot", "true")]
            {
                assert_eq!(value(sc, key), Some(want), "{at}: securityContext.{key}");
            }
            for key in ["runAsUser", "runAsGroup"] {
                let id = value(sc, key).and_then(|v| v.parse::<u32>().ok());
                assert!(id.is_some_and(|id| id > 0), "{at}: securityContext.{key} must be a non-root number");
            }
            let drop = child(sc, "capabilities").map(|caps| scalars(caps, "drop")).unwrap_or_default();
            assert_eq!(drop, ["ALL"], "{at}: securityContext.capabilities.drop");
            let seccomp = child(sc, "seccompProfile").and_then(|s| value(s, "type"));
            assert_eq!(seccomp, Some("RuntimeDefault"), "{at}: securityContext.seccompProfile.type");
            let resources = child(c, "resources").with_context(|| format!("{at}: no resources"))?;
            let mut wanted = vec![("requests", "cpu"), ("requests", "memory"), ("limits", "memory")];
            if is_job {
                wanted.push(("limits", "cpu"));
            }
            for (kind, what) in wanted {
                assert!(
                    child(resources, kind).and_then(|r| value(r, what)).is_some(),
                    "{at}: no resources.{kind}.{what}"
                );
            }
            // The root filesystem is read-only: what sparklet writes must be
            // on a writable mount.
            let mounts = mounts(c);
            for var in ["SPARKLET_CHECKPOINT_DIR", "SPARKLET_PROGRESS_JSON"] {
                let Some(path) = env_value(c, var).filter(|p| p.starts_with('/')) else { continue };
                let mount = mount_of(&mounts, path);
                assert!(mount.is_some_and(|(_, _, ro)| !ro), "{at}: {var}={path} is not on a writable volume");
            }
        }
    }
    Ok(())
}

#[test]
fn kubernetes_pods_verify_postgres_against_a_ca_from_the_secret() -> Result<()> {
    let yaml = manifest("statefulset.yaml")?;
    let lines = yaml_lines(&yaml);
    let pod = pod_spec(&lines).context("no pod spec")?;
    let container = items(child(pod, "containers").context("no containers")?)[0];
    let ca = env_value(container, "SPARKLET_DATABASE_CA_FILE").context("SPARKLET_DATABASE_CA_FILE is not set")?;
    let (_, volume, read_only) = mount_of(&mounts(container), ca).context("the CA file is on no mount")?;
    assert!(read_only, "the CA's volume {volume} is not mounted read-only");
    let volume = items(child(pod, "volumes").context("no volumes")?)
        .into_iter()
        .find(|v| value(v, "name") == Some(volume))
        .context("the CA's volume is not defined")?;
    let secret = child(volume, "secret").context("the CA's volume is not a Secret")?;
    assert_eq!(value(secret, "secretName"), Some("sparklet"));
    let keys: Vec<_> =
        items(child(secret, "items").context("no items")?).into_iter().filter_map(|i| value(i, "key")).collect();
    assert_eq!(keys, ["database-ca.crt"]);

    let secret = manifest("secret.yaml")?;
    let secret = yaml_lines(&secret);
    let data = child(&secret, "stringData").context("secret.yaml: no stringData")?;
    assert!(value(data, "database-ca.crt").is_some(), "secret.yaml has no database-ca.crt");
    let url = value(data, "database-url").context("secret.yaml: no database-url")?;
    assert!(!url.contains("sslmode=disable"), "{url}: the CA file needs TLS");
    Ok(())
}

/// The port at the end of `host:port`, or of a URL's authority.
fn port_of(address: &str) -> Option<&str> {
    let authority = address.split("://").last()?.split(['/', '?']).next()?;
    authority.rsplit_once(':').map(|(_, port)| port)
}

#[test]
fn the_network_policy_lets_in_only_the_http_port_and_out_only_dns_kafka_and_postgres() -> Result<()> {
    let yaml = manifest("statefulset.yaml")?;
    let lines = yaml_lines(&yaml);
    let pod = pod_spec(&lines).context("no pod spec")?;
    let container = items(child(pod, "containers").context("no containers")?)[0];
    let http = items(child(container, "ports").context("no ports")?)[0];
    let http_port = value(http, "containerPort").context("no containerPort")?;
    let kafka = env_value(container, "SPARKLET_BOOTSTRAP_SERVERS").context("no bootstrap servers")?;
    let kafka_port = port_of(kafka).context("no Kafka port")?;
    let secret = manifest("secret.yaml")?;
    let secret = yaml_lines(&secret);
    let url = child(&secret, "stringData").and_then(|d| value(d, "database-url")).context("no database-url")?;
    let postgres_port = port_of(url).context("no Postgres port")?;

    let yaml = manifest("networkpolicy.yaml")?;
    let policy = yaml_lines(&yaml);
    assert_eq!(value(&policy, "kind"), Some("NetworkPolicy"));
    let spec = child(&policy, "spec").context("no spec")?;
    let mut types = scalars(spec, "policyTypes");
    types.sort();
    assert_eq!(types, ["Egress", "Ingress"], "the policy must restrict both directions");
    // It selects the pods of both the StatefulSet and the Job.
    let selector = child(spec, "podSelector").context("no podSelector")?;
    let selected = child(selector, "matchExpressions")
        .map(items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| value(e, "key") == Some("app.kubernetes.io/name") && value(e, "operator") == Some("In"))
        .flat_map(|e| scalars(e, "values"))
        .collect::<Vec<_>>();
    for file in POD_MANIFESTS {
        let yaml = manifest(file)?;
        let lines = yaml_lines(&yaml);
        let template = child(child(&lines, "spec").context("no spec")?, "template").context("no template")?;
        let label = child(child(template, "metadata").context("no metadata")?, "labels")
            .and_then(|l| value(l, "app.kubernetes.io/name"))
            .context("no name label")?;
        assert!(selected.contains(&label), "the policy does not select the pods of {file} ({label})");
    }
    // Every rule names its peers and its ports, and only the expected ports.
    let ports = |direction: &str, peers: &str| -> Result<Vec<String>> {
        let mut found = Vec::new();
        for rule in items(child(spec, direction).with_context(|| format!("no {direction} rules"))?) {
            assert!(
                child(rule, peers).is_some_and(|p| !p.is_empty()),
                "a {direction} rule without `{peers}`: any peer"
            );
            let ports = items(child(rule, "ports").with_context(|| format!("a {direction} rule without ports"))?);
            found.extend(ports.into_iter().filter_map(|p| value(p, "port")).map(str::to_string));
        }
        found.sort();
        found.dedup();
        Ok(found)
    };
    assert_eq!(ports("ingress", "from")?, [http_port]);
    let mut expected = vec!["53", kafka_port, postgres_port];
    expected.sort();
    assert_eq!(ports("egress", "to")?, expected);
    Ok(())
}
