"""Secrets made of the characters that break configuration files, the lab's
pillar with every secret set to one of them, and readers that take a file
the way its program does where that program cannot run here: Airflow's
configuration parser, Celery's broker URL parser, SQLAlchemy's URL parser
and systemd's EnvironmentFile=.

Used by tests/render/test_secret_escaping.py and
tests/functional/test_secret_escaping.py."""

import configparser
import os
import re
import shutil
from urllib.parse import unquote, urlparse

import yaml
from saltfactories.utils.functional import Loaders

from tests.conftest import REPO

# Every character the issue names, spaces at both ends, and what a reader
# could take for an escape, a variable, a comment or an interpolation.
ODD = " ~a@b/c#d%e&f:g?h'i\"j\\k$l m $HOME ${PATH} `id` %(here)s %% \\x41 \\n ;= "

# One value per secret, so that a secret written in the wrong place shows.
SECRETS = {
    "postgresql:airflow_password": ODD + "db ",
    "postgresql:replication_password": ODD + "replication ",
    "redis:password": ODD + "redis ",
    "airflow:webserver_secret_key": ODD + "webserver ",
    "airflow:admin:password": ODD + "admin ",
    "airflow:flower:password": ODD + "flower ",
    "airflow:users:viewer:password": ODD + "viewer ",
    "airflow:users:operator:password": ODD + "operator ",
    "haproxy:stats_password": ODD + "stats ",
}


def odd_pillar(root, environment="odd"):
    """A pillar tree at root: the repository's, plus the environment
    `environment`, which is the lab's with SECRETS."""
    shutil.copytree(REPO / "pillar", root)
    data = {"include": ["lab"]}
    for key, value in SECRETS.items():
        *parents, last = key.split(":")
        node = data
        for parent in parents:
            node = node.setdefault(parent, {})
        node[last] = value
    (root / environment).mkdir()
    (root / environment / "init.sls").write_text(yaml.safe_dump(data))
    return root


def odd_node_rendered(salt_factories, name, node, pillar, environment, record):
    """(Loaders, highstate) of the lab node `node` rendered by a local
    minion `name` from the pillar tree `pillar` (its environment
    `environment`, no topology record at `record`)."""
    factory = salt_factories.salt_minion_daemon(
        name,
        overrides={
            "id": node,
            "file_client": "local",
            "file_roots": {"base": [str(REPO / "salt")]},
            "pillar_roots": {"base": [str(pillar)]},
            "airflow_environment": environment,
            "airflow_topology_record": str(record),
            "grains": {"os_family": "Debian"},
        },
    )
    loaders = Loaders(factory.config.copy())
    highstate = loaders.modules.state.show_highstate()
    assert isinstance(highstate, dict), f"{node} did not render: {highstate}"
    return loaders, highstate


def state_args(states, state_id, function):
    """The arguments of one state of a rendered highstate or SLS, as a dict."""
    return {key: value for item in states[state_id][function] if isinstance(item, dict)
            for key, value in item.items()}


def write_file_state(loaders, states, state_id, path):
    """Run the file.managed of state_id, as the state would, into path
    (owner, group and requisites left out): the file as Salt writes it."""
    args = state_args(states, state_id, "file")
    for key in ("require", "watch", "user", "group", "check_cmd", "makedirs"):
        args.pop(key, None)
    args["name"] = str(path)
    result = loaders.states.file.managed(**args)
    assert result.result is True, result.comment
    return path.read_text()


# --- Airflow: airflow.cfg ----------------------------------------------------------


def airflow_expand_env_var(value):
    """What Airflow 2.10 does to each value it reads from airflow.cfg after
    configparser's interpolation (airflow/configuration.py, expand_env_var):
    expandvars and expanduser until nothing changes."""
    while True:
        expanded = os.path.expanduser(os.path.expandvars(value))
        if expanded == value:
            return expanded
        value = expanded


def read_airflow_cfg(text):
    """{(section, key): value} of airflow.cfg's text as Airflow 2.10 reads
    its file: AirflowConfigParser is a ConfigParser with the default
    (basic) interpolation, then airflow_expand_env_var."""
    parser = configparser.ConfigParser()
    parser.read_string(text)
    return {(section, key): airflow_expand_env_var(parser.get(section, key))
            for section in parser.sections() for key in parser.options(section)}


def sqlalchemy_url_password(url):
    """The password in a database URL as SQLAlchemy 1.4 (Airflow 2.10's)
    reads it: sqlalchemy/engine/url.py, _parse_rfc1738_args."""
    match = re.match(r"(?P<name>[\w\+]+)://(?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?", url)
    return unquote(match.group("username")), unquote(match.group("password"))


def kombu_url_password(url):
    """The password in a broker URL as Celery's kombu 5 reads it:
    kombu/utils/url.py, url_to_parts."""
    scheme = urlparse(url).scheme
    parts = urlparse("http://" + url[len(scheme) + 3:])
    return unquote(parts.password or "") or None


# --- systemd: EnvironmentFile= -----------------------------------------------------


def read_environment_file(text):
    """{name: value} of an EnvironmentFile='s text, by the rules of
    systemd.exec(5) and the state machine of systemd's own parser
    (src/basic/env-file.c, parse_env_file_internal): # and ; comments;
    unquoted values lose surrounding whitespace and keep what follows a
    backslash; 'single quotes' keep everything; in "double quotes" a
    backslash escapes " \\ ` $ (and a newline) and is kept before anything
    else. Quoted and unquoted parts concatenate."""
    variables = {}
    state, key, value, value_end = "pre_key", "", "", None

    def finish():
        variables[key.rstrip(" \t")] = value if value_end is None else value[:value_end]

    for char in text:
        if state == "pre_key":
            if char in "#;":
                state = "comment"
            elif char not in " \t\n\r":
                state, key = "key", char
        elif state == "key":
            if char in "\n\r":
                state = "pre_key"  # a line without "=" is ignored
            elif char == "=":
                state, value, value_end = "pre_value", "", None
            else:
                key += char
        elif state == "pre_value":
            if char in "\n\r":
                finish()
                state = "pre_key"
            elif char == "'":
                state = "single_quote"
            elif char == '"':
                state = "double_quote"
            elif char == "\\":
                state = "escape"
            elif char not in " \t":
                state, value = "value", value + char
        elif state == "value":
            if char in "\n\r":
                finish()
                state = "pre_key"
            elif char == "\\":
                state, value_end = "escape", None
            else:
                if char not in " \t":
                    value_end = None
                elif value_end is None:
                    value_end = len(value)
                value += char
        elif state == "escape":
            state = "value"
            if char not in "\n\r":
                value += char
        elif state == "single_quote":
            if char == "'":
                state = "pre_value"
            else:
                value += char
        elif state == "double_quote":
            if char == '"':
                state = "pre_value"
            elif char == "\\":
                state = "double_quote_escape"
            else:
                value += char
        elif state == "double_quote_escape":
            state = "double_quote"
            if char in '"\\`$':
                value += char
            elif char != "\n":
                value += "\\" + char
        elif state == "comment":
            if char == "\\":
                state = "comment_escape"
            elif char in "\n\r":
                state = "pre_key"
        elif state == "comment_escape":
            state = "comment"
    if state in ("pre_value", "value", "escape"):
        finish()
    elif state in ("single_quote", "double_quote", "double_quote_escape"):
        raise ValueError(f"{key}: unterminated quotes")
    return variables
