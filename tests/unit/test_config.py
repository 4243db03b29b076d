from __future__ import annotations

import json
from pathlib import Path

import pytest

from claudemesh.config import load_meshes, paths_from_env
from claudemesh.errors import ConfigError

PK = "ab" * 32
ENTRY = {"slug": "demo", "mesh_id": "m", "member_id": "u", "display_name": "alice",
         "broker_url": "ws://127.0.0.1:7900/ws", "pubkey": PK, "secret_key": "cd" * 32 + PK}


def test_paths_follow_the_environment(tmp_path: Path) -> None:
    paths = paths_from_env({"CLAUDEMESH_CONFIG_DIR": str(tmp_path)})
    assert paths.config_file == tmp_path / "config.json"
    assert paths.sock == tmp_path / "daemon" / "daemon.sock"
    assert paths.token.name == "local-token"
    other = paths_from_env({"CLAUDEMESH_CONFIG_DIR": str(tmp_path),
                            "CLAUDEMESH_DAEMON_DIR": str(tmp_path / "d")})
    assert other.pid == tmp_path / "d" / "daemon.pid"
    assert paths_from_env({}, home=tmp_path).config_dir == tmp_path / ".claudemesh"


def test_missing_file_means_no_mesh(tmp_path: Path) -> None:
    assert load_meshes(tmp_path / "config.json") == ()


def test_a_valid_entry_loads_and_hides_its_secret(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"version": 1, "meshes": [ENTRY]}))
    [mesh] = load_meshes(path)
    assert mesh.slug == "demo" and mesh.pubkey == PK
    assert "cd" * 32 not in repr(mesh)


@pytest.mark.parametrize(("doc", "reason"), [
    ("not json", "not valid JSON"),
    ("[]", "JSON object"),
    (json.dumps({"version": 2}), "unsupported version"),
    (json.dumps({"meshes": {}}), "must be a list"),
    (json.dumps({"meshes": [{**ENTRY, "pubkey": "xyz"}]}), "pubkey"),
    (json.dumps({"meshes": [{**ENTRY, "secret_key": "cd" * 64}]}), "does not end with"),
    (json.dumps({"meshes": [{**ENTRY, "slug": ""}]}), "slug"),
    (json.dumps({"meshes": [ENTRY, ENTRY]}), "share a slug"),
])
def test_bad_config_names_the_problem(tmp_path: Path, doc: str, reason: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(doc)
    with pytest.raises(ConfigError) as info:
        load_meshes(path)
    assert reason in info.value.detail
    assert str(path) in info.value.detail


def test_inbox_retention_defaults_to_30_days_and_reads_the_inbox_section(
        tmp_path: Path) -> None:
    from claudemesh.config import MeshConfig, add_mesh, load_inbox_retention_days  # noqa: PLC0415

    path = tmp_path / "config.json"
    assert load_inbox_retention_days(path) == 30
    path.write_text(json.dumps({"version": 1, "meshes": [], "inbox": {"retention_days": 0.5}}))
    assert load_inbox_retention_days(path) == 0.5
    add_mesh(path, MeshConfig(**ENTRY))  # a join keeps the other sections
    assert load_inbox_retention_days(path) == 0.5
    for bad in ({"retention_days": -1}, {"retention_days": "7"}, {"retention_days": True},
                {"keep": 1}, [1]):
        path.write_text(json.dumps({"version": 1, "meshes": [], "inbox": bad}))
        with pytest.raises(ConfigError, match="inbox"):
            load_inbox_retention_days(path)
