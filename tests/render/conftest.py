"""Rendering a node's highstate through Salt's own loader
(pytest-salt-factories), with that node's id, an environment's pillar and an
OS family, as its minion would."""

import json
import zlib
from pathlib import Path

import pytest
from saltfactories.utils.functional import Loaders

from tests.conftest import REPO

PILLAR = REPO / "pillar"


@pytest.fixture(scope="module")
def render(salt_factories):
    """render(environment, node, os_family, pillar_roots=None, topology=None)
    -> the node's highstate as show_highstate returns it (a dict, or a list
    of errors). topology is the content of a topology record (as
    orch.failover writes it on the master), or None for no record."""

    def _render(environment, node, os_family, pillar_roots=None, topology=None):
        tree = f"-{zlib.crc32(str(pillar_roots).encode()):08x}" if pillar_roots else ""
        name = f"{node}-{environment}-{os_family}{tree}".lower()
        record = Path(salt_factories.root_dir) / f"topology-{name}.json"
        factory = salt_factories.salt_minion_daemon(
            name,
            overrides={
                "id": node,
                "file_client": "local",
                "file_roots": {"base": [str(REPO / "salt")]},
                "pillar_roots": {"base": [str(pillar_roots or PILLAR)]},
                "airflow_environment": environment,
                "airflow_topology_record": str(record),
                "grains": {"os_family": os_family},
            },
        )
        if topology is None:
            record.unlink(missing_ok=True)
        else:
            record.parent.mkdir(parents=True, exist_ok=True)
            record.write_text(json.dumps(topology))
        return Loaders(factory.config.copy()).modules.state.show_highstate()

    return _render


