"""Shared fixtures and the order of tests.

Lab tests share one lab per run. `lab_first` tests run first (the upgrade
test, on a lab brought up on the Airflow version the marker names); tests
that break the lab run after the others: first everything else, then
`destructive` tests, then `wipes_servers` tests (disaster recovery), then
`lab_teardown` tests.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "artifacts"
sys.path.insert(0, str(REPO))
# The core (_utils/ha_core), importable as the Salt loader makes it for our modules.
sys.path.insert(0, str(REPO / "_utils"))

from lab.settings import lab_nodes  # noqa: E402
from salt._logging.impl import shutdown_temp_handler  # noqa: E402

# The lab's HAProxy serves the Airflow UI with the lab's self-signed
# certificate (pillar/lab/secrets.sls): the tests' HTTPS requests trust it,
# and only it.
LAB_CA = ARTIFACTS / "lab-ca.pem"
ARTIFACTS.mkdir(exist_ok=True)
LAB_CA.write_text(yaml.safe_load((REPO / "pillar" / "lab" / "secrets.sls").read_text())
                  ["haproxy"]["tls"]["certificate"])
os.environ["REQUESTS_CA_BUNDLE"] = str(LAB_CA)

# Salt holds log records in a deferred stderr handler until its logging is
# set up, and writes them out at exit, after pytest's report. Tests do not
# set up Salt's logging: hand the records to pytest's handlers instead.
shutdown_temp_handler()


def pytest_collection_modifyitems(items):
    def rank(item):
        if item.get_closest_marker("lab_first"):
            return -1
        if item.get_closest_marker("lab_teardown"):
            return 3
        if item.get_closest_marker("wipes_servers"):
            return 2
        if item.get_closest_marker("destructive"):
            return 1
        return 0

    items.sort(key=rank)  # stable: file and definition order within a rank


def load_module(path):
    """Import one of our Salt modules (_modules, _states, _runners) from its
    file, without Salt's loader, to test its plain functions."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def assert_converged(results):
    """Every node's highstate rendered, and every state succeeded unchanged."""
    for name, states in results.items():
        assert isinstance(states, dict), f"{name} did not render: {states}"
        failed = {key: s["comment"] for key, s in states.items() if s["result"] is not True}
        changed = {key: s["changes"] for key, s in states.items() if s["changes"]}
        assert not failed, f"{name}: {failed}"
        assert not changed, f"{name}: {changed}"


@pytest.fixture(scope="session")
def salt_factories_config(tmp_path_factory):
    """Salt's test daemons (the minions the render and functional tests
    configure) keep their directories under pytest's own temporary
    directory, which pytest prunes, not in /tmp for good."""
    return {"root_dir": tmp_path_factory.mktemp("salt-factories")}


@pytest.fixture
def say(capsys):
    """say(line): print straight to the terminal, past pytest's capture:
    progress of long operations and benchmark figures."""
    def _say(line):
        with capsys.disabled():
            print(line, flush=True)

    return _say


@pytest.fixture(scope="module")
def say_module(request):
    """say for module-scoped fixtures (a setup a module's tests share)."""
    capture = request.config.pluginmanager.getplugin("capturemanager")

    def _say(line):
        with capture.global_and_fixture_disabled():
            print(line, flush=True)

    return _say


def bin_lab(*args, check=True, input=None):
    """Run bin/lab and return its result (stdout and stderr as text); input
    goes to its standard input (bin/lab exec passes it to the command)."""
    result = subprocess.run([str(REPO / "bin" / "lab"), *args], cwd=REPO,
                            capture_output=True, text=True, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"bin/lab {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def salt_json(*args):
    """Run the salt CLI from the repository root, as an operator does."""
    result = subprocess.run([str(REPO / ".venv" / "bin" / "salt"), "--out=json", "--static", *args],
                            cwd=REPO, capture_output=True, text=True)
    return json.loads(result.stdout)


def highstate(target, *args):
    """salt TARGET state.apply, waiting for every node however long its
    highstate takes: with the CLI's default wait, a node busy restarting
    its Airflow units may answer the CLI's job check too late and be left
    out of the results."""
    return salt_json("--timeout=600", target, "state.apply", *args)


# The lab's own pillar settings, outside git (pillar/lab/init.sls includes
# the file when it exists): a test pins airflow:version there.
LAB_LOCAL_PILLAR = REPO / "pillar" / "lab" / "local.sls"


def pin_airflow_version(version):
    """The lab's pillar asks for Airflow ``version`` from now on; with None,
    for the state tree's default."""
    if version:
        LAB_LOCAL_PILLAR.write_text(yaml.safe_dump({"airflow": {"version": version}}))
    else:
        LAB_LOCAL_PILLAR.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def lab(request):
    """The lab, up and highstated; taken down at the end of the run unless
    LAB_KEEP=1 (for iterating on lab tests without rebuilding the lab). It
    comes up on the Airflow version a collected ``lab_first`` test names
    (the upgrade test's 2.10.5), else on the state tree's default.

    bin/lab up prints its progress straight to the terminal (it takes minutes).
    """
    capture = request.config.pluginmanager.getplugin("capturemanager")
    ARTIFACTS.mkdir(exist_ok=True)
    pin_airflow_version(next((marker.kwargs["airflow_version"] for item in request.session.items
                              for marker in item.iter_markers("lab_first")
                              if marker.kwargs.get("airflow_version")), None))
    with capture.global_and_fixture_disabled():
        print("\n-- bin/lab up", flush=True)
        returncode = subprocess.run([str(REPO / "bin" / "lab"), "up"], cwd=REPO).returncode
    if returncode != 0:
        pytest.fail(f"bin/lab up exited {returncode}")
    yield lab_nodes()
    if os.environ.get("LAB_KEEP") != "1":
        bin_lab("down")
        pin_airflow_version(None)

