//! The deployment files in `deploy/` and the `Dockerfile`, checked by what runs here:
//! they parse, name what docs/scaling.md says they name, agree with each other, and
//! the nginx config passes `nginx -t`. (`docker compose config` needs a Docker client
//! with the compose plugin, which this machine lacks; the YAML checks stand in.)

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use crate::harness::{command, missing_service, nginx_available};

/// The one build command: Dockerfile, docs/scaling.md and local-cluster.sh use it.
const BUILD: &str = "cargo build --release --locked -p shoal";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    let mut cur = v;
    for key in path {
        cur = &cur[*key];
    }
    cur.as_str()
        .unwrap_or_else(|| panic!("no string at {}", path.join(".")))
}

#[test]
fn compose_has_three_instances_nginx_redis_postgres_and_an_ha_profile_with_sentinels() {
    let compose = yaml("deploy/docker-compose.yml");
    let services = compose["services"].as_mapping().expect("services");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for want in [
        "shoal-1", "shoal-2", "shoal-3", "nginx", "redis", "postgres",
    ] {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }
    let profile = |name: &str| -> Vec<String> {
        compose["services"][name]["profiles"]
            .as_sequence()
            .map(|s| {
                s.iter()
                    .filter_map(|p| p.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    for always in ["shoal-1", "nginx", "redis", "postgres"] {
        assert!(
            profile(always).is_empty(),
            "{always} runs without a profile"
        );
    }
    let sentinels: Vec<&&str> = names.iter().filter(|n| n.starts_with("sentinel")).collect();
    assert!(
        sentinels.len() >= 3,
        "three sentinels for a quorum: {sentinels:?}"
    );
    for s in sentinels {
        assert_eq!(profile(s), ["ha"], "{s} is in the ha profile");
        assert!(
            compose["services"][*s]["command"]
                .as_sequence()
                .is_some_and(|c| c.iter().any(|p| p
                    .as_str()
                    .is_some_and(|p| p.contains("sentinel monitor shoal")))),
            "{s} monitors the master `shoal`"
        );
    }
    assert_eq!(profile("redis-replica"), ["ha"]);
    let ha_env = read("deploy/redis-ha.env");
    assert!(ha_env.contains("REDIS_SENTINELS=") && ha_env.contains("REDIS_SENTINEL_MASTER=shoal"));

    for i in 1..=3 {
        let s = &compose["services"][format!("shoal-{i}").as_str()];
        assert_eq!(str_at(s, &["build", "dockerfile"]), "Dockerfile");
        assert_eq!(str_at(s, &["build", "context"]), "..");
        let probe = format!("{:?}", s["healthcheck"]["test"]);
        assert!(
            probe.contains("/health/ready"),
            "shoal-{i} health check: {probe}"
        );
        for key in [
            "DATABASE_URL",
            "TRUSTED_PROXIES",
            "SESSION_SECRET",
            "JWT_REFRESH_SECRET",
        ] {
            assert!(s["environment"][key].is_string(), "shoal-{i} sets {key}");
        }
        assert_eq!(
            s["environment"]["COOKIE_SECURE"].as_str(),
            Some("true"),
            "shoal-{i} marks the session cookie Secure"
        );
    }
    // The instances reach PostgreSQL through PgBouncer in transaction mode; `migrate`
    // goes to PostgreSQL itself.
    let shoal = &compose["services"]["shoal-1"]["environment"];
    assert!(
        str_at(shoal, &["DATABASE_URL"]).contains("@pgbouncer:6432/"),
        "instances go through PgBouncer"
    );
    assert_eq!(str_at(shoal, &["DATABASE_POOLER"]), "transaction");
    let migrate = &compose["services"]["migrate"];
    assert!(str_at(migrate, &["environment", "DATABASE_URL"]).contains("@postgres:5432/"));
    assert!(format!("{:?}", migrate["command"]).contains("migrate"));
    assert_eq!(
        str_at(&compose["services"]["pgbouncer"], &["build"]),
        "./pgbouncer"
    );
    for ini in [
        read("deploy/pgbouncer/pgbouncer.ini"),
        yaml("deploy/k8s/pgbouncer-config.yaml")["data"]["pgbouncer.ini"]
            .as_str()
            .expect("pgbouncer.ini in the ConfigMap")
            .to_owned(),
    ] {
        for line in [
            "pool_mode = transaction",
            "ignore_startup_parameters = extra_float_digits",
        ] {
            assert!(
                ini.contains(line),
                "PgBouncer config lacks `{line}`:\n{ini}"
            );
        }
    }
    // nginx renders the same template as scripts/local-cluster.sh.
    let nginx = format!("{:?}", compose["services"]["nginx"]);
    assert!(nginx.contains("nginx/shoal.conf.template"));
    for i in 1..=3 {
        assert!(
            nginx.contains(&format!("server shoal-{i}:8080")),
            "nginx → shoal-{i}"
        );
    }
    assert!(repo("deploy/nginx/shoal.conf.template").is_file());
}

#[test]
fn kubernetes_manifests_have_the_expected_kinds_probes_and_drain() {
    let mut kinds = BTreeSet::new();
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(repo("deploy/k8s")).expect("deploy/k8s") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read a manifest");
        let doc: Value = serde_norway::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        assert!(
            doc["apiVersion"].is_string(),
            "{} has apiVersion",
            path.display()
        );
        kinds.insert(str_at(&doc, &["kind"]).to_owned());
        docs.push(doc);
    }
    // No Secret: `kubectl apply -f deploy/k8s/` must never overwrite the real one
    // with an example's placeholders (the example lives in deploy/examples/).
    let want: BTreeSet<String> = [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Service",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(kinds, want);
    let of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == "shoal")
            .expect(kind)
    };

    let deployment = of("Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        str_at(container, &["readinessProbe", "httpGet", "path"]),
        "/health/ready"
    );
    assert_eq!(
        str_at(container, &["livenessProbe", "httpGet", "path"]),
        "/health/live"
    );
    let pre_stop = &container["lifecycle"]["preStop"];
    assert!(!pre_stop.is_null(), "a preStop drain");
    let pause: u64 = pre_stop["exec"]["command"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| pre_stop["sleep"]["seconds"].as_u64())
        .expect("the preStop pause in seconds");
    let config = of("ConfigMap");
    let shutdown: u64 = str_at(config, &["data", "SHUTDOWN_TIMEOUT"])
        .parse()
        .expect("seconds");
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(
        grace > pause + shutdown,
        "terminationGracePeriodSeconds ({grace}) must cover the preStop pause ({pause}) and SHUTDOWN_TIMEOUT ({shutdown})"
    );
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_u64(),
        Some(0)
    );

    // Everything points at the same names and labels.
    let name = str_at(deployment, &["metadata", "name"]);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&of("Service")["spec"]["selector"], labels);
    assert_eq!(
        &of("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        labels
    );
    assert_eq!(
        str_at(
            of("HorizontalPodAutoscaler"),
            &["spec", "scaleTargetRef", "name"]
        ),
        name
    );
    let secret = yaml("deploy/examples/k8s-secret.yaml");
    assert_eq!(str_at(&secret, &["kind"]), "Secret");
    assert_eq!(
        str_at(config, &["data", "COOKIE_SECURE"]),
        "true",
        "the cookie is Secure behind the ingress's TLS"
    );
    let env_from = format!("{:?}", container["envFrom"]);
    assert!(env_from.contains(str_at(config, &["metadata", "name"])));
    assert!(env_from.contains(str_at(&secret, &["metadata", "name"])));
    for key in [
        "SESSION_SECRET",
        "SESSION_ENCRYPTION_KEY",
        "JWT_ACCESS_SECRET",
        "JWT_REFRESH_SECRET",
    ] {
        let v = str_at(&secret, &["stringData", key]);
        assert!(
            v.len() >= 32,
            "the example {key} is long enough to pass validation"
        );
    }
}

/// The rules of the Pod Security Standards' "restricted" profile
/// (kubernetes.io/docs/concepts/security/pod-security-standards), checked on a pod
/// spec: every violation, as text.
fn restricted_violations(pod: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let pod_ctx = &pod["securityContext"];
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host].as_bool() == Some(true) {
            out.push(format!("{host} is set"));
        }
    }
    let allowed_volumes = [
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    for volume in pod["volumes"].as_sequence().into_iter().flatten() {
        let kinds: Vec<&str> = volume
            .as_mapping()
            .into_iter()
            .flatten()
            .filter_map(|(k, _)| k.as_str())
            .filter(|k| *k != "name")
            .collect();
        if kinds.iter().any(|k| !allowed_volumes.contains(k)) {
            out.push(format!("volume type {kinds:?}"));
        }
    }
    let containers = pod["containers"]
        .as_sequence()
        .into_iter()
        .chain(pod["initContainers"].as_sequence())
        .flatten();
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let ctx = &c["securityContext"];
        let either = |key: &str| {
            if ctx[key].is_null() {
                &pod_ctx[key]
            } else {
                &ctx[key]
            }
        };
        if ctx["privileged"].as_bool() == Some(true) {
            out.push(format!("{name}: privileged"));
        }
        if ctx["allowPrivilegeEscalation"].as_bool() != Some(false) {
            out.push(format!("{name}: allowPrivilegeEscalation is not false"));
        }
        if either("runAsNonRoot").as_bool() != Some(true) {
            out.push(format!("{name}: runAsNonRoot is not true"));
        }
        if either("runAsUser").as_u64() == Some(0) {
            out.push(format!("{name}: runs as uid 0"));
        }
        let seccomp = either("seccompProfile")["type"].as_str();
        if !matches!(seccomp, Some("RuntimeDefault" | "Localhost")) {
            out.push(format!("{name}: seccompProfile is {seccomp:?}"));
        }
        let drop: Vec<&str> = ctx["capabilities"]["drop"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !drop.contains(&"ALL") {
            out.push(format!("{name}: capabilities do not drop ALL"));
        }
        for add in ctx["capabilities"]["add"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if add.as_str() != Some("NET_BIND_SERVICE") {
                out.push(format!("{name}: adds capability {add:?}"));
            }
        }
        if c["ports"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|p| !p["hostPort"].is_null())
        {
            out.push(format!("{name}: a hostPort"));
        }
    }
    out
}

#[test]
fn the_pods_pass_the_restricted_pod_security_profile() {
    for file in [
        "deploy/k8s/deployment.yaml",
        "deploy/k8s/pgbouncer-deployment.yaml",
    ] {
        let deployment = yaml(file);
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(restricted_violations(pod), Vec::<String>::new(), "{file}");
    }
    // The check itself: a pod that breaks the rules is caught.
    let loose: Value = serde_norway::from_str(
        "containers: [{name: x, securityContext: {privileged: true}}]\nhostNetwork: true",
    )
    .expect("YAML");
    assert!(
        restricted_violations(&loose).len() >= 5,
        "{:?}",
        restricted_violations(&loose)
    );
}

/// `kubernetes-validate --strict` (PyPI; the Kubernetes schemas ship with it, so it
/// works offline), or a loud skip locally / a failure under `CI=true` without it.
#[test]
fn the_manifests_pass_the_kubernetes_schemas_strictly() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo("deploy/k8s"))
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .collect();
    files.push(repo("deploy/examples/k8s-secret.yaml"));
    files.push(repo("deploy/examples/k8s-pgbouncer-secret.yaml"));
    let out = match std::process::Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", "1.34.1"])
        .args(&files)
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            missing_service(&format!(
                "kubernetes-validate is not installed ({e}; pip install kubernetes-validate, .ci/run does it)"
            ));
            return;
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "kubernetes-validate failed:\n{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        files.len(),
        "every manifest was validated:\n{text}"
    );
}

#[test]
fn the_dockerfile_builds_with_the_documented_command() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("FROM "))
        .collect();
    assert!(stages.len() >= 2, "multi-stage: {stages:?}");
    assert!(
        stages[0].contains(" AS build"),
        "the first stage is `build`"
    );
    let build_stage = dockerfile.split("\nFROM ").nth(1).expect("the build stage");
    assert!(
        build_stage
            .lines()
            .any(|l| l.trim() == format!("RUN {BUILD}")),
        "the build stage runs `{BUILD}`"
    );
    // Dependencies are built in a layer of their own, before any source is copied.
    let deps = build_stage
        .find("cargo build --release --locked -p shoal")
        .expect("a dependency build");
    let sources = build_stage
        .find("COPY src src")
        .expect("the sources copied");
    assert!(
        deps < sources,
        "dependencies build before the sources are copied"
    );
    assert!(
        !build_stage.contains("COPY . ."),
        "only what the server needs"
    );
    assert!(dockerfile.contains("COPY --from=build /src/target/release/shoal"));
    assert!(
        read("docs/scaling.md").contains(BUILD),
        "docs/scaling.md documents `{BUILD}`"
    );
    assert!(read("scripts/local-cluster.sh").contains(BUILD));
}

#[test]
fn the_rendered_nginx_config_passes_nginx_t() {
    if !nginx_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // A self-signed certificate, for the TLS listener.
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl");
    assert!(made.status.success(), "openssl: {made:?}");
    let env = vec![
        ("RUN_DIR".to_owned(), dir.path().display().to_string()),
        ("PORTS".to_owned(), "18081 18082 18083".to_owned()),
        ("NGINX_PORT".to_owned(), "18080".to_owned()),
        ("TLS_PORT".to_owned(), "18443".to_owned()),
        ("TLS_CERT".to_owned(), cert.display().to_string()),
        ("TLS_KEY".to_owned(), key.display().to_string()),
    ];
    let out = command("bash", &env)
        .arg(repo("scripts/local-cluster.sh"))
        .arg("check")
        .output()
        .expect("run local-cluster.sh check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "nginx -t failed: {text}");
    let conf = std::fs::read_to_string(dir.path().join("nginx/nginx.conf")).expect("rendered");
    for want in [
        "least_conn;",
        "server 127.0.0.1:18083 max_fails=1",
        "keepalive 64;",
        "proxy_next_upstream error timeout http_502 http_503;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        "proxy_set_header Upgrade $http_upgrade;",
        "location /socket.io/",
        "listen 127.0.0.1:18443 ssl;",
        "ssl_certificate_key ",
        "proxy_set_header X-Request-Id $shoal_request_id;",
        "request_id=$shoal_request_id",
        "location ~ ^/(metrics|dashboard|health|health/cluster|health/backend|api/health)/?$",
    ] {
        assert!(conf.contains(want), "rendered config has {want:?}");
    }
    assert!(
        !conf.contains("listen @")
            && !conf
                .lines()
                .any(|l| l.trim() == "@SERVERS@" || l.trim() == "@TLS@"),
        "every placeholder is replaced"
    );
    assert!(
        !conf
            .lines()
            .any(|l| l.trim_start().starts_with("proxy_next_upstream ")
                && l.contains("non_idempotent")),
        "writes are never retried once sent"
    );
}
