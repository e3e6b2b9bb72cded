"""Execution modules loaded through Salt's own loader (pytest-salt-factories),
with our _modules synced from salt://_modules as a minion would get them."""

import itertools

import pytest
from saltfactories.utils.functional import Loaders

from tests.conftest import REPO

_ids = itertools.count()


@pytest.fixture(scope="module")
def make_loaders(salt_factories):
    """make_loaders(**minion_opts) -> Loaders; `loaders.modules.NAME.FUNC(...)`
    calls our execution modules with those minion options (for example the
    module's settings, `pg_replication: {...}`)."""

    def _make(**overrides):
        factory = salt_factories.salt_minion_daemon(
            f"functional-{next(_ids)}",
            overrides={
                "file_client": "local",
                "file_roots": {"base": [str(REPO / "salt")]},
                "pillar_roots": {"base": []},
                # No failover has happened: the primary is cluster:primary.
                "airflow_topology_record": f"{salt_factories.root_dir}/no-topology-record.json",
                **overrides,
            },
        )
        return Loaders(factory.config.copy())

    return _make
