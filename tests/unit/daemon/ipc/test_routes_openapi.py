"""docs/openapi.yaml: valid OpenAPI 3.1, complete, and served byte for byte as rendered.

The live side (schemathesis against a running daemon) is
tests/integration/test_openapi.py; these tests need no process.
"""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from openapi_spec_validator import validate

from claudemesh.daemon.ipc import (
    routes_files,
    routes_inbox,
    routes_outbox,
    routes_peers,
    routes_sessions,
    routes_topics,
)
from claudemesh.daemon.ipc.app import ROUTES
from claudemesh.daemon.ipc.routes_info import IPC_FEATURES
from claudemesh.daemon.ipc.routes_openapi import openapi_document

ROOT = Path(__file__).resolve().parents[4]
SCRIPT = ROOT / "scripts" / "openapi"
YAML_PATH = ROOT / "docs" / "openapi.yaml"
JSON_PATH = ROOT / "src" / "claudemesh" / "daemon" / "ipc" / "openapi.json"
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture(scope="module")
def builder() -> dict[str, Any]:
    return runpy.run_path(str(SCRIPT))


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    loaded = yaml.safe_load(YAML_PATH.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def test_the_json_copy_is_exactly_the_yaml_rendered(builder: dict[str, Any]) -> None:
    rendered = builder["render"](YAML_PATH.read_text(encoding="utf-8"))
    assert JSON_PATH.read_text(encoding="utf-8") == rendered, "run scripts/openapi"


def test_check_mode_fails_on_a_stale_copy_and_passes_on_a_fresh_one(tmp_path: Path) -> None:
    stale = tmp_path / "openapi.json"
    stale.write_text(JSON_PATH.read_text(encoding="utf-8").replace("3.1.0", "3.0.3", 1))
    args = [sys.executable, str(SCRIPT), "--check", "--json"]
    failed = subprocess.run([*args, str(stale)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert "stale" in failed.stderr
    fresh = subprocess.run([*args, str(JSON_PATH)], capture_output=True, text=True, check=False)
    assert fresh.returncode == 0, fresh.stderr


@pytest.mark.parametrize(("text", "where"), [
    ("responses:\n  200: {description: ok}\n", "#/responses: key 200"),
    ("paths:\n  on: 1\n", "#/paths: key True"),
    ("info:\n  date: 2026-11-26\n", "#/info/date"),
])
def test_rendering_refuses_what_json_would_say_differently(
        builder: dict[str, Any], text: str, where: str) -> None:
    with pytest.raises(builder["NotJson"], match=where):
        builder["render"](text)


def test_the_document_is_valid_openapi_3_1(doc: dict[str, Any]) -> None:
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_every_route_and_method_is_documented_and_nothing_else(doc: dict[str, Any]) -> None:
    served = {(method.lower(), path) for method, path, _ in ROUTES}
    documented = {(method, path) for path, item in doc["paths"].items()
                  for method in item if method in METHODS}
    assert documented == served


@pytest.mark.parametrize(("path", "accepted"), [
    ("/v1/inbox", routes_inbox.QUERY_PARAMS),
    ("/v1/outbox", routes_outbox.QUERY_PARAMS),
    ("/v1/peers", routes_peers.QUERY_PARAMS),
    ("/v1/file/get", routes_files.GET_PARAMS),
    ("/v1/file/list", routes_files.LIST_PARAMS),
    ("/v1/sessions", routes_sessions.QUERY_PARAMS),
    ("/v1/topic/list", routes_topics.LIST_PARAMS),
    ("/v1/topic/history", routes_topics.HISTORY_PARAMS),
    ("/v1/group/list", routes_topics.LIST_PARAMS),
])
def test_the_query_parameters_are_the_ones_the_route_accepts(
        doc: dict[str, Any], path: str, accepted: frozenset[str]) -> None:
    params = doc["paths"][path]["get"]["parameters"]
    assert {p["name"] for p in params if p["in"] == "query"} == accepted


def test_every_operation_documents_the_auth_and_guard_answers(doc: dict[str, Any]) -> None:
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                assert {"400", "401", "403", "500", "503"} <= set(operation["responses"]), (
                    method, path)


def test_the_features_version_lists_are_the_ones_documented(doc: dict[str, Any]) -> None:
    features = doc["components"]["schemas"]["Version"]["properties"]["ipc_features"]
    assert features["items"]["enum"] == list(IPC_FEATURES)


def test_the_daemon_serves_the_packaged_copy() -> None:
    served = openapi_document()
    assert served == JSON_PATH.read_bytes()
    assert json.loads(served)["paths"]["/v1/openapi.json"]["get"]["operationId"] == "getOpenapi"


def test_the_daemon_loads_no_yaml_parser() -> None:
    code = ("import sys; from claudemesh.daemon.ipc.routes_openapi import openapi_document;"
            " openapi_document(); import claudemesh.daemon.ipc.app;"
            " print('yaml' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
