"""The Debian 12 image every node boots, and the wheelhouse nodes install from.

Both are cached under CACHE_DIR and rebuilt only when their recipe changes:
the image's name carries a hash of everything that goes into it.
"""

import hashlib
import os
import shutil
from pathlib import Path

import yaml

from lab.progress import CLEAN_ENV, LabError, run, run_logged, say
from lab.settings import (
    CACHE_DIR,
    DEBIAN_MIRROR,
    DEBIAN_SUITE,
    GATEWAY,
    REPO,
    VENV_BIN,
    WHEELHOUSE,
)

# What a node needs to boot and run its salt-minion; everything else the
# states install.
IMAGE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "dbus",
    "iproute2",
    "python3",
    "python3-venv",
    "ca-certificates",
]
MINION_REQUIREMENTS = REPO / "requirements" / "minion.txt"
HOST_LOCK = REPO / "requirements" / "host.lock"
# Airflow's version and extras (one place for the states and the lab), and
# its constraints files (made by bin/make-airflow-constraints).
AIRFLOW_VERSIONMAP = REPO / "salt" / "airflow" / "versionmap.yaml"
AIRFLOW_FILES = REPO / "salt" / "airflow" / "files"
# Where nodes see the wheelhouse (bind-mounted read-only).
NODE_WHEELHOUSE = "/opt/wheelhouse"
MINION_VENV = "/opt/salt"

MINION_UNIT = """\
[Unit]
Description=Salt minion
Wants=network-online.target
After=network-online.target

[Service]
ExecStart={venv}/bin/salt-minion
Restart=on-failure
RestartSec=2
# A state that restarts the minion must not kill the job running it.
KillMode=process

[Install]
WantedBy=multi-user.target
"""

MINION_CONF = f"""\
# Written by bin/lab into the lab image. The node's id is /etc/salt/minion_id.
master: {GATEWAY}
hash_type: sha256
# Retry quickly while the master or the network is still coming up.
acceptance_wait_time: 2
"""


def _digest(*parts):
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part if isinstance(part, bytes) else str(part).encode())
    return sha.hexdigest()[:12]


def minion_wheels_stamp():
    return WHEELHOUSE / f".minion-{_digest(MINION_REQUIREMENTS.read_bytes(), HOST_LOCK.read_bytes())}"


def airflow_requirements():
    """Return {version: (requirement line, constraints file)} for every Airflow
    version the state tree has a constraints file of (the default, and the
    others a pillar may choose: the upgrade test installs 2.10.5), with the
    extras of its release line (salt/airflow/versionmap.yaml)."""
    versionmap = yaml.safe_load(AIRFLOW_VERSIONMAP.read_text())
    requirements = {}
    for constraints in sorted(AIRFLOW_FILES.glob("constraints-*-py3.11.txt")):
        version = constraints.name.removeprefix("constraints-").removesuffix("-py3.11.txt")
        extras = versionmap[version.split(".")[0]]["extras"]
        requirements[version] = (f"apache-airflow[{','.join(extras)}]=={version}", constraints)
    return requirements


def airflow_wheels_stamp(version, requirement, constraints):
    return WHEELHOUSE / f".airflow-{version}-{_digest(constraints.read_bytes(), requirement)}"


# Only PyPI and the pins decide the wheels: not the host's pip configuration
# nor the caller's environment (its PIP_* variables, extra indexes,
# find-links, or a REQUESTS_CA_BUNDLE such as the tests' lab CA).
PIP_ENV = {**CLEAN_ENV, "PIP_CONFIG_FILE": os.devnull}


def ensure_wheelhouse():
    """Build the wheels of the node's salt-minion (pinned by host.lock) and of
    each Airflow version (pinned by its constraints file), each only when its
    pins changed."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    stamp = minion_wheels_stamp()
    if stamp.exists():
        say(f"    minion wheels in {WHEELHOUSE} are up to date")
    else:
        run_logged(
            [
                str(VENV_BIN / "pip"), "wheel", "--quiet",
                "-r", str(MINION_REQUIREMENTS), "-c", str(HOST_LOCK),
                "-w", str(WHEELHOUSE),
            ],
            CACHE_DIR / "wheelhouse.log",
            "building minion wheels",
            env=PIP_ENV,
        )
        stamp.touch()
    for version, (requirement, constraints) in airflow_requirements().items():
        stamp = airflow_wheels_stamp(version, requirement, constraints)
        if stamp.exists():
            say(f"    Airflow {version} wheels in {WHEELHOUSE} are up to date")
            continue
        say(f"    building the wheels of {requirement} (a minute or two)")
        # --use-pep517: sdists without a pyproject.toml (python-nvd3) are built in
        # an isolated environment, as .venv has no `wheel` for setup.py bdist_wheel.
        run_logged(
            [
                str(VENV_BIN / "pip"), "wheel", "--progress-bar", "off", "--use-pep517",
                "-c", str(constraints), requirement,
                "-w", str(WHEELHOUSE),
            ],
            CACHE_DIR / f"wheelhouse-airflow-{version}.log",
            f"building Airflow {version} wheels",
            env=PIP_ENV,
        )
        for old in WHEELHOUSE.glob(f".airflow-{version}-*"):
            old.unlink()
        stamp.touch()


def image_path():
    recipe = _digest(
        DEBIAN_SUITE, IMAGE_PACKAGES, MINION_UNIT, MINION_CONF,
        minion_wheels_stamp().name, Path(__file__).read_bytes(),
    )
    return CACHE_DIR / f"image-{recipe}"


def ensure_image(in_use=()):
    """Return the image directory, building it first if its recipe changed.
    Older images not in `in_use` are removed."""
    image = image_path()
    if image.exists():
        say(f"    image {image} is up to date")
        return image
    staging = image.with_name(image.name + ".building")
    shutil.rmtree(staging, ignore_errors=True)
    say(f"    debootstrap {DEBIAN_SUITE} (about a minute)")
    run_logged(
        [
            "debootstrap", "--variant=minbase",
            "--include=" + ",".join(IMAGE_PACKAGES),
            DEBIAN_SUITE, str(staging), DEBIAN_MIRROR,
        ],
        CACHE_DIR / "debootstrap.log",
        "debootstrap",
        env=CLEAN_ENV,
    )
    _configure(staging)
    say("    installing the salt-minion from the wheelhouse")
    _in_image(
        staging,
        f"python3 -m venv {MINION_VENV} && "
        f"{MINION_VENV}/bin/pip install --quiet --no-index --find-links {NODE_WHEELHOUSE} "
        f"-r /mnt/requirements/minion.txt -c /mnt/requirements/host.lock && "
        f"ln -s {MINION_VENV}/bin/salt-call /usr/local/bin/salt-call",
    )
    staging.rename(image)
    for old in CACHE_DIR.glob("image-*"):
        if old != image and old not in in_use:
            say(f"    removing outdated image {old}")
            shutil.rmtree(old, ignore_errors=True)
    return image


def _configure(root):
    etc = root / "etc"
    (etc / "systemd" / "system" / "salt-minion.service").write_text(
        MINION_UNIT.format(venv=MINION_VENV)
    )
    (etc / "salt" / "minion.d").mkdir(parents=True)
    (etc / "salt" / "minion.d" / "lab.conf").write_text(MINION_CONF)
    wants = etc / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / "salt-minion.service").symlink_to("/etc/systemd/system/salt-minion.service")
    (wants / "systemd-networkd.service").symlink_to("/lib/systemd/system/systemd-networkd.service")
    # The minion starts once the node has its address.
    online = etc / "systemd" / "system" / "network-online.target.wants"
    online.mkdir(parents=True, exist_ok=True)
    (online / "systemd-networkd-wait-online.service").symlink_to(
        "/lib/systemd/system/systemd-networkd-wait-online.service"
    )
    # Nothing to remount in a container (nspawn mounts the root); the unit
    # only fails there now and then on cgroup set-up.
    (etc / "systemd" / "system" / "systemd-remount-fs.service").symlink_to("/dev/null")
    # debootstrap leaves no hosts file; servers resolve localhost.
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    # Each node gets its own machine id at first boot (bin/lab writes it).
    (etc / "machine-id").write_text("")


def _in_image(root, script):
    """Run a shell script inside the image, offline, with the wheelhouse and
    the requirements mounted."""
    result = run(
        [
            "systemd-nspawn", "--quiet", "--register=no", "--keep-unit",
            "--private-network", "-D", str(root),
            f"--bind-ro={WHEELHOUSE}:{NODE_WHEELHOUSE}",
            f"--bind-ro={REPO / 'requirements'}:/mnt/requirements",
            "/bin/sh", "-ec", script,
        ],
        check=False,
        env=CLEAN_ENV,
    )
    if result.returncode != 0:
        raise LabError(f"configuring the image failed:\n{result.stdout}{result.stderr}")
