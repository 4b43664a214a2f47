"""Finding, reading, importing and validating the configuration, with errors that say where."""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from clusterwatch.config import clusterai
from clusterwatch.config.files import FileProblem
from clusterwatch.config.schema import CHECK_KINDS, NAME_PATTERN, Config
from clusterwatch.config.yamlpos import Path_, Position, YAMLProblems, read_yaml
from clusterwatch.redact import Redactor

SYSTEM_CONFIG = "/etc/clusterwatch/clusterwatch.yaml"
BUILTIN = "built-in defaults"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    field: str
    message: str

    def __post_init__(self) -> None:  # one line each, whatever a value held
        for name in ("file", "field", "message"):
            object.__setattr__(self, name, _one_line(getattr(self, name)))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


def _one_line(text: str) -> str:
    """Newlines and other control characters escaped, so one problem is one line of a log or terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


MAX_PROBLEMS = 100  # a file of 500,000 broken checks is one mistake, not 500,000 lines to read


class ConfigError(Exception):
    """The problems found, each naming file, line and field (the first hundred, then how many more)."""

    def __init__(self, problems: list[Problem], more: int = 0) -> None:
        more += max(0, len(problems) - MAX_PROBLEMS)
        problems = problems[:MAX_PROBLEMS]
        if more:
            problems.append(Problem(problems[-1].file, 0, "", f"{more} more problems not shown"))
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class LoadedConfig:
    config: Config
    source: str  # the file read, or "built-in defaults"
    redactor: Redactor
    notes: list[str] = field(default_factory=list)  # what was imported from where
    cluster_env: dict[str, str] = field(default_factory=dict)  # Cluster AI's .env values, as read

    def alert_channels(self, environ: typing.Mapping[str, str] | None = None) -> dict[str, str]:
        """Cluster AI's SMTP_* and SLACK_* variables as channels: its .env, then the environment."""
        from clusterwatch.alerting.channels import channels_from_env

        environ = os.environ if environ is None else environ
        names = (
            "SMTP_SERVER",
            "SMTP_PORT",
            "SMTP_USERNAME",
            "SMTP_PASSWORD",
            "FROM_EMAIL",
            "ALERT_EMAIL",
            "SLACK_WEBHOOK_URL",
            "SLACK_CHANNEL",
        )
        values = {**self.cluster_env, **{n: environ[n] for n in names if environ.get(n)}}
        for name in ("SMTP_PASSWORD", "SLACK_WEBHOOK_URL"):
            self.redactor.add(values.get(name))
        return channels_from_env(values)


def default_data() -> dict[str, Any]:
    """The standard local ports of an AI cluster, checked when there is no config file."""
    return {
        "checks": [
            {"name": "docker", "kind": "docker"},
            {"name": "dask", "kind": "dask"},
            {"name": "ollama", "kind": "ollama"},
            {"name": "webui", "kind": "openwebui"},
            {"name": "system", "kind": "node"},
        ]
    }


def find_config(explicit: str | None, env: typing.Mapping[str, str], cwd: Path) -> Path | None:
    """`-c FILE`, `$CLUSTERWATCH_CONFIG`, `./clusterwatch.yaml`, then the system file."""
    for candidate, must_exist in (
        (explicit, True),
        (env.get("CLUSTERWATCH_CONFIG"), True),
        (str(cwd / "clusterwatch.yaml"), False),
        (SYSTEM_CONFIG, False),
    ):
        if not candidate:
            continue
        path = Path(candidate).expanduser()
        if must_exist or _is_file(path):
            return path
    return None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL character
        return False


def load_config(
    explicit: str | None = None, *, env: typing.Mapping[str, str] | None = None, cwd: str | Path | None = None
) -> LoadedConfig:
    env = os.environ if env is None else env
    cwd = Path(cwd or os.getcwd())
    path = find_config(explicit, env, cwd)
    redactor = Redactor()
    notes: list[str] = []
    try:
        if path is None:
            source, data, positions = BUILTIN, default_data(), {}
            data["cluster_ai"] = _discover_cluster_ai(cwd, env)
        else:
            source = str(path)
            if not _is_file(path):
                raise ConfigError([Problem(source, 0, "", "no such file")])
            data, positions = read_yaml(path)
            if data is None or data == {}:
                # A truncated file must not pass for a healthy cluster: nothing checked is not "ok".
                message = "no checks: the file is empty or only comments (truncated?)"
                raise ConfigError([Problem(source, 1, "", message)])
            if not isinstance(data, dict):
                raise ConfigError([Problem(source, 1, "", "expected a mapping of keys (interval:, checks:, ...)")])
        unset: list[tuple[Path_, str]] = []
        data = _substitute(data, (), env, redactor, unset)
        if unset:
            raise ConfigError(
                [
                    Problem(
                        *_position(path, positions, source),
                        _field(path, data),
                        f"environment variable {name} is not set",
                    )
                    for path, name in unset
                ]
            )
        cluster_env = _import_cluster_ai(data, positions, path.parent if path else cwd, redactor, notes)
    except YAMLProblems as exc:
        found = [Problem(p.file, p.line, _field(p.path or (), exc.data), p.message) for p in exc.problems]
        raise ConfigError(list(dict.fromkeys(found))) from None
    except FileProblem as exc:
        raise ConfigError([Problem(exc.file, exc.line, _field(exc.path) if exc.path else "", exc.message)]) from None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        found = _problems(exc, data, positions, source)
        raise ConfigError(found, more=exc.error_count() - len(found)) from None
    if config.store.url:
        redactor.add(urllib.parse.urlsplit(config.store.url).password)  # a password written into the URL
    return LoadedConfig(config, source, redactor, notes, cluster_env)


def _discover_cluster_ai(cwd: Path, env: typing.Mapping[str, str]) -> dict[str, Any]:
    """With no config at all, Cluster AI's files in the working directory are read, as it did."""
    found: dict[str, Any] = {"env_files": [str(p) for p in (cwd / ".env", cwd / ".env.local") if p.is_file()]}
    if (cwd / "cluster.yaml").is_file():
        found["cluster_yaml"] = str(cwd / "cluster.yaml")
    home = Path(env.get("HOME") or Path.home())
    if (home / ".cluster_config" / "nodes_list.conf").is_file():
        found["nodes_list"] = str(home / ".cluster_config" / "nodes_list.conf")
    return found


def _substitute(
    value: Any, path: Path_, env: typing.Mapping[str, str], redactor: Redactor, unset: list[tuple[Path_, str]]
) -> Any:
    """`${VAR}` and `${VAR:-default}` in values; every substituted value is treated as secret."""
    if isinstance(value, dict):
        return {k: _substitute(v, (*path, k), env, redactor, unset) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, (*path, i), env, redactor, unset) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env:
            redactor.add(env[name])
            return env[name]
        if default is not None:
            return default
        unset.append((path, name))
        return ""

    return _ENV_REF.sub(replace, value)


def _import_cluster_ai(
    data: dict[str, Any],
    positions: dict[Path_, Position],
    base: Path,
    redactor: Redactor,
    notes: list[str],
) -> dict[str, str]:
    spec = data.get("cluster_ai")
    if not isinstance(spec, dict):
        return {}

    def resolve(p: str, *field: Any) -> Path:  # relative to the config file, as people expect
        if "\0" in p:
            file, line = _position(("cluster_ai", *field), positions, "")
            raise FileProblem(file, line, "a file name cannot hold a NUL character", ("cluster_ai", *field))
        path = Path(os.path.expanduser(p))
        return path if path.is_absolute() else base / path

    env = clusterai.EnvFile()
    env_files = spec.get("env_files") or []
    if isinstance(env_files, list) and env_files:
        env = clusterai.read_env_files([resolve(str(p), "env_files", i) for i, p in enumerate(env_files)])
        for name, value in env.values.items():
            if Redactor.is_sensitive_name(name):
                redactor.add(value)
        notes.append(f"read {', '.join(str(p) for p in env_files)}")

    imported: list[clusterai.ImportedNode] = []
    skip_workers = env.values.get("SKIP_WORKERS", "false").strip().lower() in ("1", "true", "yes")
    for key, reader in (("cluster_yaml", clusterai.read_cluster_yaml), ("nodes_list", clusterai.read_nodes_list)):
        if isinstance(spec.get(key), str) and not skip_workers:
            found = reader(resolve(spec[key], key))
            imported.extend(found)
            notes.append(f"{len(found)} node(s) from {spec[key]}")

    nodes = data.setdefault("nodes", [])
    if isinstance(nodes, list) and imported:
        names = {n.get("name") for n in nodes if isinstance(n, dict) and isinstance(n.get("name"), str)}
        for item in imported:
            if item.data["name"] in names:
                continue  # the config's own definition wins
            names.add(item.data["name"])
            index = len(nodes)
            nodes.append(item.data)
            for sub in ((), ("name",), ("host",), ("ssh",), ("ssh", "user"), ("ssh", "port")):
                positions[("nodes", index, *sub)] = item.position
        for _, check in _checks(data, "dask"):
            check.setdefault("expect_workers", [{"name": n.data["name"], "host": n.data["host"]} for n in imported])
    _apply_env(data, positions, env)
    return env.values


def _checks(data: dict[str, Any], kind: str) -> list[tuple[int, dict[str, Any]]]:
    """The checks of one kind, with their index (for positions)."""
    checks = data.get("checks")
    if not isinstance(checks, list):
        return []
    return [(i, c) for i, c in enumerate(checks) if isinstance(c, dict) and c.get("kind") == kind]


_THRESHOLD_VARS = {
    # variable: (section, resource, level)
    "DISK_WARN_THRESHOLD": ("thresholds", "disk", "warning"),
    "DISK_CRIT_THRESHOLD": ("thresholds", "disk", "critical"),
    "DISK_ALERT_THRESHOLD": ("thresholds", "disk", "critical"),
    "MEM_WARN_THRESHOLD": ("thresholds", "memory", "warning"),
    "MEM_CRIT_THRESHOLD": ("thresholds", "memory", "critical"),
    "MEMORY_ALERT_THRESHOLD": ("thresholds", "memory", "critical"),
    "CPU_ALERT_THRESHOLD": ("thresholds", "cpu", "critical"),
    "CPU_CRIT_THRESHOLD": ("node_thresholds", "cpu", "critical"),
    "WORKER_DISK_CRIT_THRESHOLD": ("node_thresholds", "disk", "critical"),
}


def _apply_env(data: dict[str, Any], positions: dict[Path_, Position], env: clusterai.EnvFile) -> None:
    """Cluster AI's variables fill in what the config leaves unset; the config file wins."""
    values = env.values

    def mark(path: Path_, var: str) -> None:
        positions[path] = env.positions[var]

    for var, (section, resource, level) in _THRESHOLD_VARS.items():
        if var not in values:
            continue
        block = data.setdefault(section, {})
        if not isinstance(block, dict) or not isinstance(block.setdefault(resource, {}), dict):
            continue
        if (
            level in block[resource]
            and (section, resource, level) in positions
            and positions[(section, resource, level)][0] != env.positions[var][0]
        ):
            continue  # set in the config file itself
        block[resource][level] = values[var]
        mark((section, resource, level), var)
        if level == "critical" and "warning" not in block[resource]:
            # A critical below the default warning would make the pair invalid: follow it down.
            default_warning = {"cpu": 80, "memory": 85, "disk": 80 if section == "thresholds" else 85}
            with contextlib.suppress(ValueError):  # a bad number is reported by validation
                block[resource]["warning"] = min(default_warning[resource], float(values[var]))
            mark((section, resource, "warning"), var)

    checks = data.setdefault("checks", [])
    if not isinstance(checks, list):
        return
    url_vars = (("ollama", "url", "OLLAMA_BASE_URL"), ("dask", "scheduler", "DASK_SCHEDULER_ADDRESS"))
    for kind, key, var in url_vars:
        if var in values:
            for index, check in _checks(data, kind):
                if key not in check:
                    check[key] = values[var]
                    mark(("checks", index, key), var)
    if values.get("DOCKER_SERVICES", "").strip():
        containers = values["DOCKER_SERVICES"].split()
        docker_checks = _checks(data, "docker")
        if not docker_checks:
            docker_checks = [(len(checks), {"name": "docker", "kind": "docker"})]
            checks.append(docker_checks[0][1])
        for index, check in docker_checks:
            if "containers" not in check:
                check["containers"] = containers
                mark(("checks", index, "containers"), "DOCKER_SERVICES")
    has_dashboard = any(isinstance(c, dict) and c.get("name") == "dashboard" for c in checks)
    if values.get("DASHBOARD_HEALTH_URL", "").strip() and not has_dashboard:
        check = {"name": "dashboard", "kind": "http", "url": values["DASHBOARD_HEALTH_URL"]}
        if values.get("DASHBOARD_HEALTH_TIMEOUT"):
            check["timeout"] = values["DASHBOARD_HEALTH_TIMEOUT"]
        checks.append(check)
        index = len(checks) - 1
        mark(("checks", index), "DASHBOARD_HEALTH_URL")
        mark(("checks", index, "url"), "DASHBOARD_HEALTH_URL")
        if "timeout" in check:
            mark(("checks", index, "timeout"), "DASHBOARD_HEALTH_TIMEOUT")


# --- turning pydantic's errors into file:line: field: message ---------------------------------


def _problems(exc: ValidationError, data: Any, positions: dict[Path_, Position], source: str) -> list[Problem]:
    """The first problems pydantic found, as file:line: field: message, each once."""
    problems: dict[Problem, None] = {}
    for error in exc.errors(include_url=False):
        if len(problems) == MAX_PROBLEMS:
            break
        loc = tuple(error["loc"])
        ctx = error.get("ctx") or {}
        custom_loc = getattr(ctx.get("error"), "loc", None)
        if custom_loc is not None:  # our validators name the field, relative to where they run
            loc = (*loc, *custom_loc)
        path, schema_loc = _data_path(loc, data)
        if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path = (*path, "kind")
        message = _message(error, path, schema_loc)
        file, line = _position(path, positions, source)
        problems[Problem(file, line, _field(path, data), message)] = None
    return list(problems)


def _data_path(loc: tuple[Any, ...], data: Any) -> tuple[Path_, Path_]:
    """Drop the discriminator tags pydantic puts into locations (`checks.0.http.url`)."""
    path: list[Any] = []
    current = data
    for element in loc:
        if _has(current, element):
            current = current[element]
            path.append(element)
        elif _is_tag(current, element):
            continue
        elif isinstance(current, dict) and element == 0:
            continue  # one mapping where a list may stand (`restart:`): the list pydantic made of it
        else:
            path.append(element)
            current = None
    return tuple(path), loc


def _has(container: Any, element: Any) -> bool:
    if isinstance(container, dict):
        return element in container
    return isinstance(container, list) and isinstance(element, int) and 0 <= element < len(container)


def _is_tag(current: Any, element: Any) -> bool:
    if not isinstance(element, str):
        return False
    if isinstance(current, dict) and element in CHECK_KINDS and current.get("kind") == element:
        return True
    return element.startswith(("function-", "list[", "dict["))


def _message(error: Any, path: Path_, loc: Path_) -> str:
    kind, msg = error["type"], error["msg"]
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        key = str(path[-1]) if path else ""
        allowed = _allowed_keys(loc[:-1])
        hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        text = f"unknown key {key!r}"
        if hint:
            return f"{text} (did you mean {hint[0]!r}?)"
        return f"{text} (allowed: {', '.join(sorted(allowed))})" if allowed else text
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        hint = difflib.get_close_matches(tag, list(CHECK_KINDS), n=1, cutoff=0.5)
        text = f"unknown check kind {tag!r}"
        return f"{text} (did you mean {hint[0]!r}?)" if hint else f"{text} (kinds: {', '.join(CHECK_KINDS)})"
    if kind == "union_tag_not_found":
        return f"missing `kind:` (one of {', '.join(CHECK_KINDS)})"
    if kind == "missing":
        return "required key is missing"
    if kind in ("value_error", "assertion_error"):
        return re.sub(r"^(Value|Assertion) error, ", "", msg)
    value = error.get("input")
    msg = msg[:1].lower() + msg[1:]  # not the rest: a pattern in it would change meaning
    if isinstance(value, dict | list):
        return f"{msg} (got a {'mapping' if isinstance(value, dict) else 'list'})"
    return f"{msg} (got {_shown(value)})"


def _shown(value: Any) -> str:
    """A value in a message: at most 60 characters, and a huge int is not turned into its digits."""
    if isinstance(value, int) and abs(value) > 10**60:
        return f"a number of about {int(abs(value).bit_length() * 0.30103) + 1} digits"
    return repr(value)[:60]


def _allowed_keys(loc: Path_) -> list[str]:
    model: Any = Config
    for element in loc:
        model = _step(model, element)
        if model is None:
            return []
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _step(annotation: Any, element: Any) -> Any:
    """One step down the schema along a pydantic location element."""
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        info = annotation.model_fields.get(element) if isinstance(element, str) else None
        return _unwrap(info.annotation) if info else None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and isinstance(element, int):
        return _unwrap(args[0])
    if origin is dict:
        return _unwrap(args[1])
    if origin in (typing.Union, __import__("types").UnionType) and isinstance(element, str):
        for arg in args:
            arg = _unwrap(arg)
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                kind = arg.model_fields.get("kind")
                if kind and element in typing.get_args(kind.annotation):
                    return arg
    return None


def _unwrap(annotation: Any) -> Any:
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, __import__("types").UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return _unwrap(args[0])
    return annotation


def _position(path: Path_, positions: dict[Path_, Position], source: str) -> Position:
    for cut in range(len(path), -1, -1):
        if path[:cut] in positions:
            return positions[path[:cut]]
    return source, 0


def _field(path: Path_, data: Any = None) -> str:
    """`checks[0](ollama).expect_models`: a check's name helps find it in a long list."""
    text = ""
    current = data
    for element in path[:_FIELD_DEPTH]:
        if isinstance(element, int) and not isinstance(element, bool):
            text += f"[{element}]"
            if isinstance(current, list) and 0 <= element < len(current):
                current = current[element]
                name = current.get("name") if isinstance(current, dict) else None
                if isinstance(name, str) and _NAME.match(name):
                    text += f"({_clip(name)})"
            else:
                current = None
        else:
            text += f".{_clip(str(element))}" if text else _clip(str(element))
            current = current.get(element) if isinstance(current, dict) else None
    return text + "..." if len(path) > _FIELD_DEPTH else text


_NAME = re.compile(NAME_PATTERN)
_FIELD_DEPTH = 12  # deeper fields are shown by their first steps: the line says the rest


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
