"""The Helm charts of deploy/helm, checked without a helm binary.

The chatlens chart's templates go through a small stand-in for Helm's renderer (`render`
below): enough to parse every object, validate the core ones against Kubernetes' own schemas
with kubernetes-validate, and read the fields that matter. `helm lint` and `helm template`,
where Helm is installed, remain the complete check.
"""

from __future__ import annotations

import functools
import json
import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHATLENS = DEPLOY / "helm" / "chatlens"
OBSERVABILITY = DEPLOY / "helm" / "observability"
KUBERNETES_VERSION = "1.30"
CORE_KINDS = {
    "ConfigMap",
    "Deployment",
    "HorizontalPodAutoscaler",
    "Job",
    "PodDisruptionBudget",
    "Secret",
    "Service",
}
PART_OF_CHATLENS = {"app.kubernetes.io/part-of": "chatlens"}
# A path and an address inside the pods: only compared against here.
POD_TMP = "/tmp"  # noqa: S108
ALL_INTERFACES = "0.0.0.0"  # noqa: S104


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


# --- A stand-in for Helm's template engine -------------------------------------------------
#
# Templates are read line by line, with the chart's default values:
# - a line holding only control flow ({{- if }}, {{- else }}, {{- end }}, {{- range }},
#   {{- with }}, {{- $x := }}) is dropped: both branches of an `if` stay, a `range` runs once;
# - a line holding only `include "helper" . | nindent N` becomes that helper of _helpers.tpl,
#   rendered the same way and indented by N (by the line's own indentation without nindent);
# - a line holding only `toYaml <value> | nindent N` becomes the value from values.yaml as YAML,
#   indented by N, or is dropped when it names none (`.`, a variable, .Files);
# - any other line-long action (.Files.Glob ... AsConfig) is dropped;
# - an action inside a line becomes the value it names (.Values.x or $.Values.x,
#   .Chart.AppVersion, .Release.Name, through `default` and `quote`), else the scalar
#   "placeholder", quoted when the action ends in `quote`.
# A key left without a value by a dropped line reads as None; `prune` removes those before
# kubernetes-validate sees the object.

PLACEHOLDER = "placeholder"
MISSING = object()
ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}")
COMMENT = re.compile(r"{{-?\s*/\*.*?\*/\s*-?}}", re.DOTALL)
WHOLE_LINE = re.compile(r"^(\s*){{-?\s*(.*?)\s*-?}}\s*$")
CONTROL = re.compile(r"^(?:(?:if|else|end|range|with|define|block)\b|\$\w+\s*:?=)")
OPENERS = {"if", "range", "with", "define", "block"}
INCLUDE = re.compile(r'^include\s+"([^"]+)"\s+\S+(?:\s*\|\s*nindent\s+(\d+))?$')
TO_YAML = re.compile(r"^toYaml\s+(\S+)\s*\|\s*nindent\s+(\d+)$")
VALUES_REFERENCE = re.compile(r"\.Values((?:\.\w+)+)")
TEMPLATE_FILES = sorted(
    path
    for chart in (CHATLENS, OBSERVABILITY)
    for path in (chart / "templates").iterdir()
    if path.name not in {"_helpers.tpl", "NOTES.txt"}
)


@functools.cache
def context(chart: Path) -> dict[str, Any]:
    """What templates see: .Values, .Chart (keys capitalised, as Helm does), .Release."""
    metadata = load_yaml(chart / "Chart.yaml")
    return {
        "Values": load_yaml(chart / "values.yaml"),
        "Chart": {key[0].upper() + key[1:]: value for key, value in metadata.items()},
        "Release": {"Name": "chatlens", "Namespace": "chatlens", "Service": "Helm"},
    }


@functools.cache
def helpers(chart: Path) -> dict[str, str]:
    """The bodies of the `define` blocks of templates/_helpers.tpl, by name."""
    text = COMMENT.sub("", (chart / "templates" / "_helpers.tpl").read_text())
    found: dict[str, str] = {}
    depth, name, start = 0, "", 0
    for action in ACTION.finditer(text):
        words = action.group(1).split()
        keyword = words[0] if words else ""
        if keyword in OPENERS:
            if depth == 0:
                name, start = words[1].strip('"'), action.end()
            depth += 1
        elif keyword == "end":
            depth -= 1
            if depth == 0:
                found[name] = text[start : action.start()].strip("\n")
    return found


def lookup(reference: str, chart: Path) -> Any:
    """The value `reference` names (.Values.a.b, .Chart.Name, a "literal"), else MISSING."""
    if reference.startswith('"'):
        return json.loads(reference)
    reference = reference.removeprefix("$")  # $.Values: the root context, inside a range
    if not reference.startswith(".") or reference == ".":
        return MISSING
    node: Any = context(chart)
    for key in reference[1:].split("."):
        if not isinstance(node, dict) or key not in node:
            return MISSING
        node = node[key]
    return node


def go_text(value: Any) -> str:
    """A value as Go's templates print it."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def inline(expression: str, chart: Path) -> str:
    """The text an action inside a line stands for."""
    head, *pipes = (part.strip() for part in expression.split("|"))
    value = lookup(head, chart)
    for pipe in pipes:
        function, _, argument = pipe.partition(" ")
        if function == "default" and (value is MISSING or not value):
            value = lookup(argument.strip(), chart)
    text = PLACEHOLDER if value is MISSING or value is None else go_text(value)
    return json.dumps(text) if pipes and pipes[-1] == "quote" else text


def indented(text: str, width: int) -> list[str]:
    return [" " * width + line for line in text.splitlines() if line.strip() != "..."]


def render(template: str, chart: Path) -> str:
    """A template (or a helper's body) as YAML, following the rules above."""
    lines: list[str] = []
    for line in COMMENT.sub("", template).splitlines():
        whole = WHOLE_LINE.match(line)
        if whole is None:
            lines.append(ACTION.sub(lambda action: inline(action.group(1), chart), line))
            continue
        lead, action = whole.groups()
        if include := INCLUDE.match(action):
            name, width = include.groups()
            body = render(helpers(chart)[name], chart)
            lines.extend(indented(body, int(width) if width else len(lead)))
        elif to_yaml := TO_YAML.match(action):
            value = lookup(to_yaml.group(1), chart)
            if value is not MISSING:
                dumped = yaml.safe_dump(value, default_flow_style=False, sort_keys=False)
                lines.extend(indented(dumped, int(to_yaml.group(2))))
        # Control flow, and actions that name no value, leave no line behind.
    return "\n".join(lines) + "\n"


def documents(path: Path) -> list[dict[str, Any]]:
    """The objects a template file renders to with the default values."""
    rendered = render(path.read_text(), path.parents[1])
    return [doc for doc in yaml.safe_load_all(rendered) if doc is not None]


@functools.cache
def rendered_objects() -> dict[str, dict[str, Any]]:
    """The chatlens chart's objects, by kind (one of each)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((CHATLENS / "templates").glob("*.yaml")):
        for doc in documents(path):
            assert doc["kind"] not in found, f"two {doc['kind']} objects"
            found[doc["kind"]] = doc
    return found


def obj(kind: str) -> dict[str, Any]:
    return rendered_objects()[kind]


def prune(node: Any) -> Any:
    """`node` without the keys whose value a dropped line left empty (None)."""
    if isinstance(node, dict):
        return {key: prune(value) for key, value in node.items() if value is not None}
    if isinstance(node, list):
        return [prune(item) for item in node]
    return node


def container(kind: str) -> Any:
    [only] = obj(kind)["spec"]["template"]["spec"]["containers"]
    return only


def env(kind: str) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container(kind)["env"]}


def glob_pattern(template: str) -> str:
    """The pattern a template gives .Files.Glob."""
    found = re.search(r'\.Files\.Glob "([^"]+)"', (CHATLENS / "templates" / template).read_text())
    assert found is not None, f"{template} reads no .Files.Glob"
    return found.group(1)


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`."""
    if any(labels.get(key) != value for key, value in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def test_render_turns_actions_into_values_and_placeholders() -> None:
    template = (
        "{{- if .Values.pdb.enabled }}\n"
        "a: {{ .Values.replicaCount }}\n"
        "b: {{ .Values.image.tag | default .Chart.AppVersion | quote }}\n"
        'c: {{ include "chatlens.fullname" . }}\n'
        "d:\n"
        "  {{- toYaml .Values.resources | nindent 2 }}\n"
        "e:\n"
        '  {{- include "chatlens.serverSelectorLabels" . | nindent 2 }}\n'
        "{{- end }}\n"
    )
    values = context(CHATLENS)["Values"]
    assert yaml.safe_load(render(template, CHATLENS)) == {
        "a": values["replicaCount"],
        "b": context(CHATLENS)["Chart"]["AppVersion"],
        "c": PLACEHOLDER,
        "d": values["resources"],
        "e": {
            "app.kubernetes.io/name": PLACEHOLDER,
            "app.kubernetes.io/instance": "chatlens",
            "app.kubernetes.io/component": "server",
        },
    }


# --- Chart.yaml ------------------------------------------------------------------------------


@pytest.mark.parametrize("chart", [CHATLENS, OBSERVABILITY], ids=lambda chart: chart.name)
def test_chart_metadata(chart: Path) -> None:
    metadata = load_yaml(chart / "Chart.yaml")
    assert metadata["apiVersion"] == "v2", "Helm 3 charts are apiVersion v2"
    assert metadata["name"] == chart.name
    assert metadata["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", metadata["version"]), metadata["version"]


def test_chatlens_app_version_is_the_project_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert load_yaml(CHATLENS / "Chart.yaml")["appVersion"] == project["version"]


def test_observability_dependencies() -> None:
    dependencies = load_yaml(OBSERVABILITY / "Chart.yaml")["dependencies"]
    found = {(d["name"], d["version"], d["repository"]) for d in dependencies}
    assert len(dependencies) == 2, "kube-prometheus-stack and loki-stack, nothing else"
    assert found == {
        ("kube-prometheus-stack", "~62.0", "https://prometheus-community.github.io/helm-charts"),
        ("loki-stack", "~2.10", "https://grafana.github.io/helm-charts"),
    }


# --- values.yaml against values.schema.json ---------------------------------------------------


def schema_errors(values: dict[str, Any]) -> list[str]:
    schema = json.loads((CHATLENS / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in validator.iter_errors(values)
    ]


def test_default_values_fit_the_schema() -> None:
    assert schema_errors(load_yaml(CHATLENS / "values.yaml")) == []


def test_schema_allows_helm_globals() -> None:
    # Helm adds `global` to the values of a chart used as a dependency.
    assert schema_errors({**load_yaml(CHATLENS / "values.yaml"), "global": {"x": 1}}) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("replicaCount", "two"),
        ("replicas", 3),  # not a key of the chart
        ("config.environment", "prod"),
        ("image.pullPolicy", "Sometimes"),
        ("serviceMonitor.interval", "fast"),
        ("secret.values.DATABASE_URL", "mysql://db/chatlens"),
    ],
)
def test_schema_rejects_broken_values(path: str, value: Any) -> None:
    values = load_yaml(CHATLENS / "values.yaml")
    *parents, key = path.split(".")
    node = values
    for parent in parents:
        node = node[parent]
    node[key] = value
    errors = schema_errors(values)
    assert any(key in error for error in errors), f"{path}={value!r} accepted: {errors}"


def test_default_values_hold_no_secret() -> None:
    secret = load_yaml(CHATLENS / "values.yaml")["secret"]
    assert "DATABASE_URL" in secret["values"]
    assert all(value == "" for value in secret["values"].values()), "a secret in values.yaml"


# --- Templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", TEMPLATE_FILES, ids=lambda path: path.name)
def test_template_renders_to_kubernetes_objects(path: Path) -> None:
    docs = documents(path)
    assert docs, f"{path.name} renders to nothing"
    for doc in docs:
        assert isinstance(doc, dict), f"{path.name}: a document is not a mapping"
        missing = {"apiVersion", "kind", "metadata"} - doc.keys()
        assert not missing, f"{path.name}: no {', '.join(sorted(missing))}"


def test_every_include_names_a_helper() -> None:
    defined = set(helpers(CHATLENS))
    for path in (CHATLENS / "templates").iterdir():
        for name in re.findall(r'include "([^"]+)"', path.read_text()):
            assert name in defined, f"{path.name} includes {name}, which _helpers.tpl lacks"


def test_every_values_reference_exists() -> None:
    for path in (CHATLENS / "templates").iterdir():
        for reference in VALUES_REFERENCE.findall(path.read_text()):
            assert lookup(".Values" + reference, CHATLENS) is not MISSING, (
                f"{path.name} reads .Values{reference}, absent from values.yaml"
            )


@pytest.mark.parametrize("kind", sorted(CORE_KINDS))
def test_core_object_is_valid_kubernetes(kind: str) -> None:
    try:
        kubernetes_validate.validate(prune(obj(kind)), KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = ".".join(map(str, error.path))
        pytest.fail(
            f"{kind} does not validate against Kubernetes {KUBERNETES_VERSION}: "
            f"{path}: {error.message}"
        )


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("servicemonitor.yaml", "serviceMonitor"),
        ("prometheusrule.yaml", "prometheusRule"),
        ("dashboards-configmap.yaml", "dashboards"),
        ("hpa.yaml", "autoscaling"),
        ("pdb.yaml", "pdb"),
        ("migration-job.yaml", "migrations"),
    ],
)
def test_optional_object_is_guarded_by_enabled(template: str, key: str) -> None:
    first = (CHATLENS / "templates" / template).read_text().splitlines()[0]
    assert first == f"{{{{- if .Values.{key}.enabled }}}}", f"{template} starts with {first!r}"
    assert isinstance(context(CHATLENS)["Values"][key]["enabled"], bool)


def test_deployment_probes() -> None:
    server = container("Deployment")
    assert server["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert server["startupProbe"]["httpGet"]["path"] == "/health/live"
    assert {"name": "http", "containerPort": 8000, "protocol": "TCP"} in server["ports"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_run_locked_down(kind: str) -> None:
    pod = obj(kind)["spec"]["template"]["spec"]
    security = container(kind)["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001, "the image's user"
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert {"name": "tmp", "mountPath": POD_TMP} in container(kind)["volumeMounts"]
    [tmp] = pod["volumes"]
    assert "emptyDir" in tmp, "a writable /tmp on a read-only root"


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_pods_get_secret_and_plain_settings(kind: str) -> None:
    [source] = container(kind)["envFrom"]
    assert set(source) == {"secretRef"}
    settings = env(kind)
    assert settings["CHATLENS_AUTO_MIGRATE"] == "false", "migrations belong to the Job"
    assert settings["CHATLENS_HOST"] == ALL_INTERFACES
    assert settings["CHATLENS_PORT"] == "8000"
    assert settings["LOG_FORMAT"] == "json"
    assert settings["CHATLENS_ENVIRONMENT"] == context(CHATLENS)["Values"]["config"]["environment"]
    # Production's sampling, as the README advises: a tenth of the traces nobody asked for.
    assert settings["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert settings["OTEL_TRACES_SAMPLER_ARG"] == "0.1"


def test_server_workers_share_metrics_under_tmp() -> None:
    # One worker per pod by default: each pod keeps its process_* metrics. With several,
    # and only then (the stand-in renderer keeps both branches of an `if`, so the guard is
    # read from the template), they merge their metrics through a folder of /tmp.
    assert context(CHATLENS)["Values"]["config"]["workers"] == 1
    template = (CHATLENS / "templates" / "deployment.yaml").read_text()
    guarded = template.split("{{- if gt (int .Values.config.workers) 1 }}", 1)[1]
    guarded = guarded.split("{{- end }}", 1)[0]
    assert "- name: PROMETHEUS_MULTIPROC_DIR" in guarded
    assert f'value: "{POD_TMP}/' in guarded
    assert "PROMETHEUS_MULTIPROC_DIR" not in env("Job"), "the Job serves no metrics"


def test_deployment_rolls_on_config_change_and_stops_gracefully() -> None:
    deployment = obj("Deployment")
    assert "checksum/config" in deployment["spec"]["template"]["metadata"]["annotations"]
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace == context(CHATLENS)["Values"]["terminationGracePeriodSeconds"]


def test_labels_tie_the_objects_together() -> None:
    deployment, service = obj("Deployment"), obj("Service")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"], pod_labels)
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels)
    assert selects(obj("ServiceMonitor")["spec"]["selector"], service["metadata"]["labels"])
    assert selects(obj("PodDisruptionBudget")["spec"]["selector"], pod_labels)
    job_labels = obj("Job")["spec"]["template"]["metadata"]["labels"]
    assert not selects({"matchLabels": service["spec"]["selector"]}, job_labels), (
        "the Service would send traffic to the migration pod"
    )
    for kind, doc in rendered_objects().items():
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "chatlens", kind
        for key in ("name", "instance", "version", "managed-by"):
            assert f"app.kubernetes.io/{key}" in labels, f"{kind} lacks app.kubernetes.io/{key}"


def test_service() -> None:
    service = obj("Service")
    assert service["spec"]["type"] == "ClusterIP"
    [port] = service["spec"]["ports"]
    assert port == {"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}


def test_migration_job_runs_before_install_and_upgrade() -> None:
    job, secret = obj("Job"), obj("Secret")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert container("Job")["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    assert container("Job")["image"] == container("Deployment")["image"]
    # The chart's Secret is a hook too, created first, so that the Job can read it.
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )


def test_autoscaler_and_disruption_budget() -> None:
    values = context(CHATLENS)["Values"]
    hpa = obj("HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["scaleTargetRef"]["name"] == obj("Deployment")["metadata"]["name"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (
        values["autoscaling"]["minReplicas"],
        values["autoscaling"]["maxReplicas"],
    )
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"] == {
        "type": "Utilization",
        "averageUtilization": values["autoscaling"]["targetCPUUtilizationPercentage"],
    }
    assert obj("PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_service_monitor() -> None:
    monitor = obj("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    assert endpoint["honorLabels"] is True, "the metrics' own service label must survive"
    # The rules select job="chatlens": the Service's app.kubernetes.io/name.
    assert monitor["spec"]["jobLabel"] == "app.kubernetes.io/name"


def test_prometheus_rule() -> None:
    rule = obj("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert "groups" in rule["spec"]
    # One object per rule file (the range runs once here): the operator gives each its own
    # rule file, as deploy/prometheus/prometheus.yml loads them.
    text = (CHATLENS / "templates" / "prometheusrule.yaml").read_text()
    assert re.search(r"{{- range \$path, \$_ := \.Files\.Glob ", text)
    assert glob_pattern("prometheusrule.yaml") == "files/rules/*.yml"


def test_dashboards_config_map() -> None:
    labels = obj("ConfigMap")["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "1", "the label Grafana's dashboard sidecar watches"
    assert glob_pattern("dashboards-configmap.yaml") == "files/dashboards/*.json"
    assert "AsConfig" in (CHATLENS / "templates" / "dashboards-configmap.yaml").read_text()


# --- Files the chart reads: links to the single source ------------------------------------------


@pytest.mark.parametrize(
    ("link", "target"),
    [("rules", DEPLOY / "prometheus" / "rules"), ("dashboards", DEPLOY / "grafana" / "dashboards")],
)
def test_chart_files_link_to_the_repository_copies(link: str, target: Path) -> None:
    path = CHATLENS / "files" / link
    assert path.is_symlink(), f"files/{link} must be a symlink, not a copy"
    assert not os.path.isabs(os.readlink(path)), "a relative link survives a checkout elsewhere"
    assert path.resolve() == target.resolve()


def test_rule_files_all_reach_a_prometheus_rule() -> None:
    everything = sorted(p.name for p in (CHATLENS / "files" / "rules").iterdir())
    globbed = sorted(p.name for p in CHATLENS.glob(glob_pattern("prometheusrule.yaml")))
    assert globbed == everything, "a rule file the PrometheusRule's glob misses"
    for name in globbed:
        # The file's stem ends the PrometheusRule's name.
        assert re.fullmatch(r"[a-z0-9-]+\.yml", name), f"{name}: not a Kubernetes name"
        groups = load_yaml(CHATLENS / "files" / "rules" / name).get("groups")
        assert groups, f"{name} has no groups"
        names = [group["name"] for group in groups]
        assert len(names) == len(set(names)), f"{name}: a group name twice"


def test_dashboards_all_reach_the_config_map() -> None:
    files = sorted(CHATLENS.glob(glob_pattern("dashboards-configmap.yaml")))
    assert len(files) == len(list((DEPLOY / "grafana" / "dashboards").glob("*.json"))) == 4
    for path in files:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"], path.name
        assert re.fullmatch(r"[-._a-zA-Z0-9]+", path.name), f"{path.name}: not a ConfigMap key"
    assert sum(path.stat().st_size for path in files) < 1024 * 1024, "a ConfigMap holds 1 MiB"


# --- The observability chart's values --------------------------------------------------------


def observability() -> Any:
    return load_yaml(OBSERVABILITY / "values.yaml")


def prometheus_spec() -> Any:
    return observability()["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]


def grafana() -> Any:
    return observability()["kube-prometheus-stack"]["grafana"]


def provisioned_datasources() -> dict[str, Any]:
    path = DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml"
    return {d["uid"]: d for d in load_yaml(path)["datasources"]}


def keys(node: Any) -> Iterator[str]:
    """Every mapping key in `node`, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key
            yield from keys(value)
    elif isinstance(node, list):
        for item in node:
            yield from keys(item)


def claim_size(spec: dict[str, Any]) -> str:
    size: str = spec["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"]
    return size


def test_prometheus_retention_storage_and_exemplars() -> None:
    spec = prometheus_spec()
    assert spec["retention"] == "15d"
    assert claim_size(spec["storageSpec"]) == "50Gi"
    assert "exemplar-storage" in spec["enableFeatures"]


def test_prometheus_selects_the_chatlens_chart_objects() -> None:
    spec = prometheus_spec()
    assert spec["serviceMonitorSelectorNilUsesHelmValues"] is False
    assert spec["ruleSelectorNilUsesHelmValues"] is False
    for selector in (spec["serviceMonitorSelector"], spec["ruleSelector"]):
        assert selects(selector, PART_OF_CHATLENS)
        assert not selects(selector, {"app.kubernetes.io/part-of": "something-else"})
        assert not selects(selector, {})
    assert selects(spec["serviceMonitorSelector"], obj("ServiceMonitor")["metadata"]["labels"])
    assert selects(spec["ruleSelector"], obj("PrometheusRule")["metadata"]["labels"])


def test_alertmanager_storage_and_routes() -> None:
    alertmanager = observability()["kube-prometheus-stack"]["alertmanager"]
    assert claim_size(alertmanager["alertmanagerSpec"]["storage"]) == "10Gi"
    config = alertmanager["config"]
    receivers = {receiver["name"]: receiver for receiver in config["receivers"]}
    route = config["route"]
    assert "email_configs" in receivers[route["receiver"]], "the rest goes by e-mail"
    [critical] = [r for r in route["routes"] if 'severity="critical"' in r["matchers"]]
    assert "slack_configs" in receivers[critical["receiver"]], "critical goes to Slack"
    repository = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    assert route["group_by"] == repository["route"]["group_by"] == ["alertname", "service"]
    assert alertmanager["tplConfig"] is False, "Helm would eat Alertmanager's {{ }} templates"


def test_alertmanager_secrets_come_from_mounted_files() -> None:
    alertmanager = observability()["kube-prometheus-stack"]["alertmanager"]
    config = alertmanager["config"]
    assert "hooks.slack.com" not in (OBSERVABILITY / "values.yaml").read_text()
    assert not {"smtp_auth_password", "api_url"} & set(keys(config)), "a secret in the values"
    [secret] = alertmanager["alertmanagerSpec"]["secrets"]
    mount = f"/etc/alertmanager/secrets/{secret}/"
    [slack] = next(r for r in config["receivers"] if r["name"] == "slack")["slack_configs"]
    assert slack["api_url_file"].startswith(mount)
    assert config["global"]["smtp_auth_password_file"].startswith(mount)


def test_grafana_signs_in_through_oauth_only() -> None:
    ini = grafana()["grafana.ini"]
    assert ini["auth"]["disable_login_form"] is True
    assert ini["auth.basic"]["enabled"] is False
    assert ini["auth.generic_oauth"]["enabled"] is True
    assert "client_secret" not in ini["auth.generic_oauth"], "the secret belongs in a Secret"
    assert grafana()["envFromSecret"], "GF_AUTH_GENERIC_OAUTH_CLIENT_SECRET comes from a Secret"
    assert grafana()["admin"]["existingSecret"], "not the chart's default admin password"


def test_grafana_datasources_match_the_provisioning_file() -> None:
    sidecar = grafana()["sidecar"]["datasources"]
    extra = {d["uid"]: d for d in grafana()["additionalDataSources"]}
    assert {sidecar["uid"], *extra} == {"prometheus", "loki", "tempo"}
    provisioned = provisioned_datasources()
    [exemplar] = provisioned["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert sidecar["exemplarTraceIdDestinations"] == {
        "datasourceUid": exemplar["datasourceUid"],
        "traceIdLabelName": exemplar["name"],
    }
    for uid in ("loki", "tempo"):
        assert extra[uid]["type"] == provisioned[uid]["type"]
        assert extra[uid]["jsonData"] == provisioned[uid]["jsonData"], f"{uid} links differ"


def test_grafana_dashboard_sidecar_picks_the_chatlens_config_map() -> None:
    sidecar = grafana()["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True
    labels = obj("ConfigMap")["metadata"]["labels"]
    assert labels[sidecar["label"]] == sidecar["labelValue"] == "1"
    assert sidecar["searchNamespace"] == "ALL"


def test_grafana_alerting_routes_critical_to_slack() -> None:
    alerting = grafana()["alerting"]
    points = {
        point["name"]: {receiver["type"] for receiver in point["receivers"]}
        for point in alerting["contactpoints.yaml"]["contactPoints"]
    }
    [policy] = alerting["policies.yaml"]["policies"]
    assert points[policy["receiver"]] == {"email"}
    [critical] = [
        route
        for route in policy["routes"]
        if ["severity", "=", "critical"] in route["object_matchers"]
    ]
    assert points[critical["receiver"]] == {"slack"}


def test_loki_retention_and_schema() -> None:
    loki = observability()["loki-stack"]["loki"]
    assert loki["persistence"]["enabled"] is True
    assert loki["persistence"]["size"] == "50Gi"
    config = loki["config"]
    assert config["limits_config"]["retention_period"] == "720h", "30 days"
    assert config["compactor"]["retention_enabled"] is True, "the compactor applies retention"
    [schema] = config["schema_config"]["configs"]
    assert (schema["store"], schema["schema"], schema["object_store"]) == (
        "tsdb",
        "v13",
        "filesystem",
    )
    assert config["limits_config"]["allow_structured_metadata"] is True


def stages(pipeline: list[dict[str, Any]], name: str) -> Iterator[Any]:
    """Every stage called `name`, inside `match` stages too."""
    for stage in pipeline:
        if name in stage:
            yield stage[name]
        if "match" in stage:
            yield from stages(stage["match"]["stages"], name)


def test_promtail_labels_only_level_and_service() -> None:
    promtail = observability()["loki-stack"]["promtail"]
    pipeline = promtail["config"]["snippets"]["pipelineStages"]
    [parsed] = stages(pipeline, "json")
    assert {"level", "service", "trace_id", "user_id", "event"} <= set(parsed["expressions"])
    [labels] = stages(pipeline, "labels")
    assert set(labels) == {"level", "service"}, "labels must stay low-cardinality"
    [metadata] = stages(pipeline, "structured_metadata")
    assert set(metadata) == {"trace_id", "user_id"}
    [timestamp] = stages(pipeline, "timestamp")
    assert timestamp == {"source": "timestamp", "format": "RFC3339Nano"}
    loki_url = next(d["url"] for d in grafana()["additionalDataSources"] if d["uid"] == "loki")
    [client] = promtail["config"]["clients"]
    assert client["url"] == f"{loki_url}/loki/api/v1/push", "Promtail and Grafana reach one Loki"
