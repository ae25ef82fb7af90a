//! The deployment artefacts, each checked by its real tool: the Helm chart (`helm lint
//! --strict`; `helm template` with the default and the cluster values validated against
//! the Kubernetes schemas by `kubernetes-validate`; `values.schema.json` refusing bad
//! values; the rendered configuration accepted by `limes check-config`; the
//! PrometheusRule's rules by `promtool`), the systemd unit (`systemd-analyze verify`) and
//! the container image (built from Debian's packages by `nodes/deploy/build-image.sh`, run,
//! and answering an OPTIONS). Needs helm and kubernetes-validate (`helm/requirements.txt`),
//! promtool, systemd, podman or buildah, and mmdebstrap.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn chart() -> PathBuf {
    repo().join("helm/limes")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs ({e}): see helm/requirements.txt"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm template` of the chart with `args`; the rendered manifests.
fn template(args: &[&str]) -> String {
    let chart = chart().display().to_string();
    let mut all = vec!["template", "edge", chart.as_str()];
    all.extend_from_slice(args);
    let out = run("helm", &all);
    assert!(
        out.status.success(),
        "helm template {args:?}: {}",
        text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value of `data.limes.toml` of the rendered ConfigMap (indented four spaces).
fn rendered_config(manifests: &str) -> String {
    let start = manifests
        .find("  limes.toml: |\n")
        .expect("a ConfigMap with limes.toml")
        + "  limes.toml: |\n".len();
    manifests[start..]
        .lines()
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_temp(name: &str, contents: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("limes-deploy-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).expect("written");
    path
}

#[test]
fn the_helm_chart_lints_renders_and_validates() {
    let out = run("python3", &["helm/limes/generate.py", "--check"]);
    assert!(out.status.success(), "{}", text(&out));
    let chart_dir = chart().display().to_string();
    let cluster_values = chart().join("ci/cluster-values.yaml").display().to_string();
    for values in [vec![], vec!["-f", cluster_values.as_str()]] {
        let mut args = vec!["lint", "--strict", chart_dir.as_str()];
        args.extend_from_slice(&values);
        let out = run("helm", &args);
        assert!(out.status.success(), "helm lint {values:?}: {}", text(&out));

        let manifests = template(&values);
        let file = write_temp("manifests.yaml", &manifests);
        let out = run(
            "kubernetes-validate",
            &["--strict", "-k", "1.30.0", &file.display().to_string()],
        );
        assert!(out.status.success(), "kubernetes-validate: {}", text(&out));
        let passed = text(&out).matches(" passed for resource ").count();
        assert!(passed >= 6, "{}", text(&out));

        // The configuration file the nodes get is one `limes check-config` accepts.
        let config = write_temp("limes.toml", &rendered_config(&manifests));
        let out = run(
            env!("CARGO_BIN_EXE_limes"),
            &["check-config", &config.display().to_string()],
        );
        assert!(
            out.status.success(),
            "{}\n{}",
            text(&out),
            rendered_config(&manifests)
        );
        for wanted in [
            "kind: StatefulSet",
            "kind: PodDisruptionBudget",
            "path: /health/ready",
            "path: /health/live",
            "preStop:",
            "terminationGracePeriodSeconds: 75",
            "name: LIMES_NODE_SECRET",
            "runAsNonRoot: true",
            "volumeClaimTemplates:",
        ] {
            assert!(manifests.contains(wanted), "{wanted} in {values:?}");
        }
    }

    // The cluster values: hostNetwork, the chart's etcd, monitoring.
    let manifests = template(&["-f", &cluster_values]);
    assert!(manifests.contains("hostNetwork: true"));
    assert!(manifests.contains(
        "value: \"http://edge-limes-etcd-0.edge-limes-etcd:2379,http://edge-limes-etcd-1.edge-limes-etcd:2379,http://edge-limes-etcd-2.edge-limes-etcd:2379\""
    ));
    assert!(
        manifests.contains("kind: ServiceMonitor") && manifests.contains("kind: PrometheusRule")
    );
    assert!(
        !manifests.contains("edge-limes-sip-0"),
        "no per-node Service with hostNetwork"
    );
    let config = rendered_config(&manifests);
    assert!(
        config.contains("[[trunk]]") && config.contains("udp_workers = 2\n"),
        "{config}"
    );
    // The PrometheusRule carries dashboards/alerts.yml's rules, which promtool accepts.
    let rules = manifests
        .split("\n---\n")
        .find(|d| d.contains("kind: PrometheusRule"))
        .and_then(|d| d.split_once("\nspec:\n"))
        .map(|(_, spec)| {
            spec.lines()
                .map(|l| l.strip_prefix("  ").unwrap_or(l))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .expect("the rule's spec");
    let file = write_temp("rules.yml", &rules);
    let out = run("promtool", &["check", "rules", &file.display().to_string()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("SUCCESS: 9 rules found"),
        "{}",
        text(&out)
    );

    // The default values: a Service per node.
    let manifests = template(&[]);
    for i in 0..3 {
        assert!(manifests.contains(&format!("name: edge-limes-sip-{i}")));
    }
}

#[test]
fn the_values_schema_refuses_bad_values() {
    let chart_dir = chart().display().to_string();
    for (bad, why) in [
        ("replicas=0", "replicas: Must be greater than or equal to 1"),
        (
            "sip.port=70000",
            "sip.port: Must be less than or equal to 65535",
        ),
        (
            "sip.service.type=Ingress",
            "sip.service.type must be one of",
        ),
        (
            "config.sip.udp_workers=many",
            "config.sip.udp_workers: Invalid type. Expected: integer",
        ),
        (
            "config.sip.udp_wrokers=2",
            "Additional property udp_wrokers is not allowed",
        ),
        (
            "secrets.nodeSecret=short",
            "secrets.nodeSecret: Must validate",
        ),
        (
            "cluster.etcdEndpoints={etcd:2379}",
            "cluster.etcdEndpoints.0: Does not match pattern",
        ),
    ] {
        let out = run("helm", &["template", "edge", &chart_dir, "--set", bad]);
        assert!(!out.status.success(), "{bad} was accepted");
        let why_text = text(&out);
        assert!(
            why_text.contains("values don't meet the specifications of the schema"),
            "{bad}: {why_text}"
        );
        assert!(why_text.contains(why), "{bad}: {why_text}");
    }
    let good = run(
        "helm",
        &[
            "template",
            "edge",
            &chart_dir,
            "--set",
            "config.sip.udp_workers=4",
        ],
    );
    assert!(good.status.success(), "{}", text(&good));
    assert!(String::from_utf8_lossy(&good.stdout).contains("udp_workers = 4\n"));
}

#[test]
fn the_systemd_unit_verifies() {
    let unit = std::fs::read_to_string(repo().join("nodes/deploy/limes.service")).expect("unit");
    // The unit names the installed binary; verify it against the one built here.
    let dir = std::env::temp_dir().join(format!("limes-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("limes.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/limes", env!("CARGO_BIN_EXE_limes")),
    )
    .expect("written");
    let out = run("systemd-analyze", &["verify", &path.display().to_string()]);
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "{}",
        text(&out)
    );
    for wanted in [
        "ExecStartPre=/usr/local/bin/limes check-config",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=limes",
        "User=limes",
    ] {
        assert!(unit.contains(wanted), "{wanted}");
    }
}

/// Builds the image and runs it: podman when the machine lets it run containers, else
/// buildah's chroot isolation (the image's root files, user and binary, on the host's
/// network); the node in it answers an OPTIONS and its readiness probe.
#[test]
fn the_image_is_built_and_answers_options() {
    let tag = format!("localhost/limes-test:{}", std::process::id());
    let out = run("nodes/deploy/build-image.sh", &[&tag]);
    assert!(out.status.success(), "{}", text(&out));
    let storage = ["--storage-driver", "vfs"];
    let port = support::ports();
    let listen = format!("udp:127.0.0.1:{port}");
    let admin = format!("127.0.0.1:{}", port + 9);
    let node_args = [
        "run",
        "--listen",
        listen.as_str(),
        "--admin",
        admin.as_str(),
        "--state-dir",
        "/var/lib/limes",
    ];
    let probe = Command::new("podman")
        .args(storage)
        .args(["run", "--rm", "--network", "host", &tag, "--version"])
        .output()
        .map(|o| (o.status.success(), text(&o)));
    let mut container = None;
    let mut child = match probe {
        Ok((true, version)) => {
            assert!(version.contains("limes "), "{version}");
            Command::new("podman")
                .args(storage)
                .args(["run", "--rm", "--network", "host", &tag])
                .args(node_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("podman runs")
        }
        other => {
            eprintln!("podman cannot run a container here ({other:?}); running the image with buildah's chroot isolation");
            let from = run("buildah", &["--storage-driver", "vfs", "from", &tag]);
            assert!(from.status.success(), "{}", text(&from));
            let name = String::from_utf8_lossy(&from.stdout).trim().to_owned();
            let user = run(
                "buildah",
                &[
                    "--storage-driver",
                    "vfs",
                    "inspect",
                    "--format",
                    "{{.OCIv1.Config.User}} {{.OCIv1.Config.Entrypoint}}",
                    &name,
                ],
            );
            assert_eq!(
                text(&user).trim(),
                "10001:10001 [/usr/local/bin/limes]",
                "a non-root user and the limes entrypoint"
            );
            let child = Command::new("buildah")
                .args(["--storage-driver", "vfs", "run", "--isolation", "chroot"])
                .args([name.as_str(), "--", "/usr/local/bin/limes"])
                .args(node_args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("buildah runs");
            container = Some(name);
            child
        }
    };
    let mut ready = false;
    for _ in 0..100 {
        if support::http(&admin, "GET", "/health/ready", "").is_some_and(|(s, _)| s == 200) {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Addressed to the node itself (its port): answered by it, not relayed.
    let options = "OPTIONS sip:127.0.0.1:PORT SIP/2.0\r\n\
                   Via: SIP/2.0/UDP {addr};branch=z9hG4bK-image-1;rport\r\n\
                   Max-Forwards: 70\r\n\
                   From: <sip:probe@example.com>;tag=i1\r\n\
                   To: <sip:127.0.0.1:PORT>\r\n\
                   Call-ID: image-1@test\r\n\
                   CSeq: 1 OPTIONS\r\n\
                   Content-Length: 0\r\n\r\n";
    let answer = support::Peer::bind("127.0.0.1").exchange(
        &format!("127.0.0.1:{port}"),
        &options.replace("PORT", &port.to_string()),
        Duration::from_secs(3),
    );
    let _ = child.kill();
    let _ = child.wait();
    // Under chroot isolation the node is not buildah's to stop.
    let _ = Command::new("pkill")
        .args(["-f", &format!("limes run --listen {listen}")])
        .status();
    if let Some(name) = container {
        let _ = Command::new("buildah")
            .args(["--storage-driver", "vfs", "rm", &name])
            .output();
    }
    let _ = Command::new("podman")
        .args(storage)
        .args(["rmi", "-f", &tag])
        .output();
    assert!(ready, "the node in the image became ready");
    assert_eq!(
        support::status(support::final_of(&answer)),
        200,
        "{answer:?}"
    );
}
