"""The deployment files agree with the project (README "Beyond one machine").

Docker, Kubernetes and Helm are not run here: the files are read and checked for consistency.
The user code image (Dockerfile), the single-host deployment (deploy/docker-compose.yaml,
deploy/dagster-docker.yaml, deploy/workspace-docker.yaml) and the Helm values
(deploy/helm/values.yaml) must serve the same code location module, carry the same instance
settings as the repository's dagster.yaml (the storage class, run coordinator, the
`concurrency:` block, run monitoring), give every process that opens the Docker instance the
storage module (the webserver/daemon image copies it, the user code image installs it, and
.dockerignore lets it in), depend on nothing of the local setup (embedded PostgreSQL, the
Airtable emulator, local data files) and hold no secret value, only references to the
environment or to Secrets.

Every check reads the files from a root folder (`load_files`) and returns the problems it
finds (`problems`), so `test_a_changed_copy_is_reported` proves each check fails on a copy of
the files with one thing changed.
"""

import ast
import importlib
import json
import posixpath
import re
import shlex
import shutil
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

MODULE = "reconcile_pipeline.definitions"
GRPC_PORT = 4000
GRPC_CMD = ["dagster", "api", "grpc", "-m", MODULE, "-h", "0.0.0.0", "-p", str(GRPC_PORT)]
AIRTABLE_API = "https://api.airtable.com"
BASE_IMAGE = "python:3.11-slim"
INSTANCE_DB_IMAGE = "postgres:15"
# Variables a run needs that only the deployment can give (the image sets the rest).
RUN_SECRETS = ("DATABASE_URL", "AIRTABLE_API_KEY")
# The tag limits DESIGN §6 and README "Concurrency" rely on.
TAG_KEYS = ("reconcile/base", "reconcile/token")

YAML_FILES = {
    "instance": "dagster.yaml",
    "workspace": "workspace.yaml",
    "docker_instance": "deploy/dagster-docker.yaml",
    "docker_workspace": "deploy/workspace-docker.yaml",
    "compose": "deploy/docker-compose.yaml",
    "helm": "deploy/helm/values.yaml",
}
# The storage module dagster.yaml selects and its package: the webserver/daemon image copies
# exactly these (deploy/Dockerfile.dagster), and the copies the mutation cases start from hold them.
STORAGE_SOURCES = ("reconcile_pipeline/__init__.py", "reconcile_pipeline/dagster_storage.py")
TEXT_FILES = (
    "Dockerfile",
    "deploy/Dockerfile.dagster",
    ".dockerignore",
    "pyproject.toml",
    *STORAGE_SOURCES,
)
DAGSTER_IMAGE = "deploy/Dockerfile.dagster"
# The webserver and the daemon: built from deploy/Dockerfile.dagster with the repository root as
# context (it copies the storage module), each loading the workspace file given by `-w`.
DAGSTER_SERVICES = ("dagster-webserver", "dagster-daemon")
DAGSTER_IMAGE_BUILD = ("..", DAGSTER_IMAGE)
# What .dockerignore must keep out of the build context (the repository root).
NEVER_IN_CONTEXT = (".reconcile", ".venv", ".env", "deploy/.env")
# Files that must hold no secret and nothing of the local setup.
DEPLOY_FILES = (
    "Dockerfile",
    "deploy/Dockerfile.dagster",
    "deploy/docker-compose.yaml",
    "deploy/dagster-docker.yaml",
    "deploy/workspace-docker.yaml",
    "deploy/helm/values.yaml",
)

SECRET_NAME = re.compile(r"KEY|TOKEN|PASSWORD|SECRET|DATABASE_URL|WEBHOOK")
# A compose reference to the environment without a default value: ${X}, ${X:?msg}, ${X:-}.
COMPOSE_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*|:?-)?\}$")
COMPOSE_REQUIRED = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}$")
SECRET_TEXT = {
    "an Airtable personal access token": re.compile(r"\bpat[A-Za-z0-9]{14}\.[A-Za-z0-9]{16,}"),
    "an Airtable API key": re.compile(r"\bkey[A-Za-z0-9]{14}\b"),
    "a URL with a password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@]+:(?!\$\{)[^\s@/]+@"),
}
LOCAL_SETUP = {
    "the Airtable emulator": re.compile(r"emulator|:8765\b", re.IGNORECASE),
    "the embedded PostgreSQL": re.compile(r"pgserver|embedded|\bdb start\b", re.IGNORECASE),
    "a local host": re.compile(r"\blocalhost\b|\b127\.0\.0\.1\b"),
    "local data files": re.compile(r"(?:^|[\s/=:])\.reconcile\b|RECONCILE_HOME"),
    "a local command": re.compile(r"\breconcile (?:demo|ui)\b|TEST_DATABASE_URL"),
}


@dataclass
class Files:
    root: Path
    yaml: dict[str, Any]
    text: dict[str, str]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.yaml[name]
        except KeyError:
            raise AttributeError(name) from None


def load_files(root: Path) -> Files:
    loaded = {
        key: yaml.safe_load((root / rel).read_text()) or {} for key, rel in YAML_FILES.items()
    }
    texts = {rel: (root / rel).read_text() for rel in (*TEXT_FILES, *YAML_FILES.values())}
    return Files(root=root, yaml=loaded, text=texts)


# ----- reading the files ----------------------------------------------------------------------


def dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            instructions.append((word.upper(), rest.strip()))
    return instructions


def dockerfile_settings(text: str, instruction: str) -> dict[str, str]:
    """The NAME=value pairs of every ENV (or ARG) instruction."""
    settings: dict[str, str] = {}
    for word, args in dockerfile(text):
        if word != instruction:
            continue
        tokens = shlex.split(args)
        if tokens and "=" not in tokens[0] and instruction == "ENV":
            settings[tokens[0]] = " ".join(tokens[1:])  # legacy `ENV NAME value`
            continue
        for token in tokens:
            name, _, value = token.partition("=")
            settings[name] = value
    return settings


def pyproject_pins(files: Files) -> dict[str, str]:
    project = tomllib.loads(files.text["pyproject.toml"])["project"]
    pins = {}
    for requirement in project["dependencies"]:
        name, sep, version = requirement.partition("==")
        if sep:
            pins[name.strip()] = version.strip()
    return pins


def dockerfile_copies(text: str) -> list[tuple[list[str], str]]:
    """(sources, absolute destination) of every COPY or ADD from the build context (not
    `--from` a stage), ARG defaults substituted, a relative destination resolved against the
    WORKDIR in force; a destination ending in / stays so."""
    args = dockerfile_settings(text, "ARG")
    workdir = "/"
    copies: list[tuple[list[str], str]] = []
    for word, rest in dockerfile(text):
        rest = re.sub(
            r"\$\{(\w+)\}|\$(\w+)",
            lambda m: args.get(m.group(1) or m.group(2), m.group(0)),
            rest,
        )
        if word == "WORKDIR":
            workdir = posixpath.normpath(posixpath.join(workdir, rest.strip()))
            continue
        if word not in ("COPY", "ADD"):
            continue
        parts = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
        if any(part.startswith("--from") for part in parts):
            continue
        parts = [part for part in parts if not part.startswith("--")]
        if len(parts) < 2:
            continue
        *sources, dest = parts
        slash = "/" if dest.endswith("/") else ""
        dest = posixpath.normpath(posixpath.join(workdir, dest))
        copies.append((sources, dest.rstrip("/") + slash if dest != "/" else "/"))
    return copies


def copied_to(copies: list[tuple[list[str], str]], rel: str) -> list[str]:
    """Where an image puts the context's file `rel`: the destination of every COPY whose source
    is that file or a folder holding it."""
    targets = []
    for sources, dest in copies:
        for source in sources:
            src = posixpath.normpath(source)
            if src == rel:
                into_folder = dest.endswith("/") or len(sources) > 1
                targets.append(
                    posixpath.join(dest, posixpath.basename(rel)) if into_folder else dest
                )
            elif src == "." or rel.startswith(src + "/"):
                targets.append(posixpath.join(dest, rel if src == "." else rel[len(src) + 1 :]))
    return targets


def dockerignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match syntax plus `**`) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        else:
            char = pattern[i]
            out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
            i += 1
    return re.compile(out)


def dockerignore_excludes(text: str, rel: str) -> bool:
    """Whether .dockerignore keeps `rel` (a path from the context root) out of the build
    context, as Docker reads it: each pattern is matched against the path and every folder
    holding it, and the last matching line decides (`!` lets the path back in)."""
    parts = rel.split("/")
    paths = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    excluded = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex = dockerignore_regex(pattern)
        if any(regex.fullmatch(path) for path in paths):
            excluded = not negate
    return excluded


def module_files(module: str, root: Path) -> list[str]:
    """The files importing `module` reads: each package's __init__.py, then the module's own file
    (its package's __init__.py when it is a folder of `root`)."""
    parts = module.split(".")
    files = ["/".join(parts[:index]) + "/__init__.py" for index in range(1, len(parts))]
    path = "/".join(parts)
    files.append(f"{path}/__init__.py" if (root / path).is_dir() else f"{path}.py")
    return files


def module_imports(files: Files, module: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The project files importing `module` needs (its own, its packages', and those of every
    project module it imports, transitively), and each (file, top-level name) of a module from
    outside the project they import."""
    project = module.split(".")[0]
    needed: list[str] = []
    outside: list[tuple[str, str]] = []
    todo = [module]
    while todo:
        current = todo.pop()
        for rel in module_files(current, files.root):
            if rel in needed:
                continue
            needed.append(rel)
            source = files.root / rel
            if not source.is_file():
                continue
            name = rel.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
            package = name if rel.endswith("__init__.py") else name.rpartition(".")[0]
            for node in ast.walk(ast.parse(source.read_text())):
                imported: list[str] = []
                if isinstance(node, ast.Import):
                    imported = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                        base = ".".join([*anchor, *([base] if base else [])])
                    imported = [base]
                    for alias in node.names:  # `from package import submodule`
                        path = files.root / base.replace(".", "/") / alias.name
                        if path.is_dir() or path.with_suffix(".py").is_file():
                            imported.append(f"{base}.{alias.name}")
                for dotted in imported:
                    top = dotted.split(".")[0]
                    if top == project:
                        todo.append(dotted)
                    elif top:
                        outside.append((rel, top))
    return needed, outside


@cache
def installed_by(text: str) -> frozenset[str]:
    """The distributions a Dockerfile's `pip install "name==version"` lines put in the image, and
    everything they require, as this environment's package metadata tells (the same releases:
    the images pin pyproject.toml's versions)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    runs = " ".join(args for word, args in dockerfile(text) if word == "RUN")
    todo = re.findall(r"[\"']([A-Za-z0-9_.-]+)==", runs)
    seen: set[str] = set()
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for line in requirements:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return frozenset(seen)


@cache
def import_names() -> dict[str, list[str]]:
    """Top-level import name -> the distributions providing it, in this environment."""
    from importlib import metadata

    return dict(metadata.packages_distributions())


def provided(top_level: str, distributions: frozenset[str]) -> bool:
    """Whether the import name `top_level` is the standard library's or one of `distributions`'."""
    from packaging.utils import canonicalize_name

    if top_level in sys.stdlib_module_names or top_level == "__future__":
        return True
    names = {*import_names().get(top_level, []), top_level}
    return any(canonicalize_name(name) in distributions for name in names)


def compose_env(service: dict[str, Any]) -> dict[str, str | None]:
    """A compose service's environment (merge keys already applied by the YAML loader);
    None for a variable passed through by name."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return {
            item.partition("=")[0]: (item.partition("=")[2] if "=" in item else None)
            for item in env
        }
    return {name: (None if value is None else str(value)) for name, value in env.items()}


def docker_storage_db(files: Files) -> dict[str, Any]:
    """The postgres_db config of deploy/dagster-docker.yaml's storage (custom or stock)."""
    storage = files.docker_instance.get("storage") or {}
    config = ((storage.get("custom") or {}).get("config") or {}) if "custom" in storage else None
    db = (config if config is not None else storage.get("postgres") or {}).get("postgres_db")
    return db if isinstance(db, dict) else {}


def helm_user_deployments(files: Files) -> list[dict[str, Any]]:
    return (files.helm.get("dagster-user-deployments") or {}).get("deployments") or []


def env_settings(files: Files) -> Iterator[tuple[str, str, str | None]]:
    """Every environment variable a deployment file sets: (where, name, value or None when only
    named: passed through from the environment or read from a Secret)."""
    for name, service in (files.compose.get("services") or {}).items():
        for var, value in compose_env(service).items():
            yield f"deploy/docker-compose.yaml service {name}", var, value
    launcher = (files.docker_instance.get("run_launcher") or {}).get("config") or {}
    for item in launcher.get("env_vars") or []:
        var, sep, value = str(item).partition("=")
        yield "deploy/dagster-docker.yaml env_vars", var, value if sep else None

    def walk(node: Any, path: str) -> Iterator[tuple[str, str, str | None]]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "env" and isinstance(value, list):
                    for item in value:
                        if isinstance(item, dict) and "name" in item:
                            yield (
                                f"deploy/helm/values.yaml {path}",
                                item["name"],
                                (None if "value" not in item else str(item["value"])),
                            )
                elif key == "env" and isinstance(value, dict):
                    for var, val in value.items():
                        yield f"deploy/helm/values.yaml {path}", var, str(val)
                else:
                    yield from walk(value, f"{path}.{key}" if path else str(key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                yield from walk(item, f"{path}[{index}]")

    yield from walk(files.helm, "")
    for rel in ("Dockerfile", "deploy/Dockerfile.dagster"):
        for instruction in ("ENV", "ARG"):
            for var, value in dockerfile_settings(files.text[rel], instruction).items():
                yield f"{rel} {instruction}", var, value


def strings(node: Any) -> Iterator[str]:
    """Every string scalar of a parsed YAML document, keys included."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key)
            yield from strings(value)
    elif isinstance(node, list):
        if node and all(isinstance(item, str) for item in node):
            yield " ".join(node)  # a command given as a list
        for item in node:
            yield from strings(item)
    elif isinstance(node, str):
        yield node


# ----- the checks -------------------------------------------------------------------------------


def check_module(files: Files) -> list[str]:
    found = []
    tool = tomllib.loads(files.text["pyproject.toml"]).get("tool", {}).get("dagster", {})
    if tool.get("module_name") != MODULE:
        found.append(f"pyproject.toml: [tool.dagster] module_name is not {MODULE}")
    local = [entry["python_module"] for entry in files.workspace.get("load_from") or []]
    if [entry.get("module_name") for entry in local] != [MODULE]:
        found.append(f"workspace.yaml: does not load the module {MODULE}")
    location = local[0].get("location_name") if local else None

    cmds = [args for word, args in dockerfile(files.text["Dockerfile"]) if word == "CMD"]
    if not cmds or yaml.safe_load(cmds[-1]) != GRPC_CMD:
        found.append(f"Dockerfile: CMD is not {GRPC_CMD}")

    grpc = [e["grpc_server"] for e in files.docker_workspace.get("load_from") or []]
    services = files.compose.get("services") or {}
    if len(grpc) != 1:
        found.append("deploy/workspace-docker.yaml: expected one grpc_server entry")
    else:
        server = grpc[0]
        if server.get("port") != GRPC_PORT:
            found.append(f"deploy/workspace-docker.yaml: grpc_server port is not {GRPC_PORT}")
        if server.get("location_name") != location:
            found.append(
                f"deploy/workspace-docker.yaml: location_name {server.get('location_name')!r} "
                f"is not workspace.yaml's {location!r}"
            )
        service = services.get(server.get("host"))
        if service is None:
            found.append(
                f"deploy/workspace-docker.yaml: grpc_server host {server.get('host')!r} is no "
                "service of deploy/docker-compose.yaml"
            )
        else:
            build = service.get("build") or {}
            if (build.get("context"), build.get("dockerfile")) != ("..", "Dockerfile"):
                found.append(
                    f"deploy/docker-compose.yaml: the gRPC service {server.get('host')} is not "
                    "built from the repository's Dockerfile (context .., dockerfile Dockerfile)"
                )
            command = service.get("command")
            if command is not None and MODULE not in " ".join(map(str, command)):
                found.append(
                    f"deploy/docker-compose.yaml: the gRPC service's command does not load {MODULE}"
                )
            current = compose_env(service).get("DAGSTER_CURRENT_IMAGE")
            if current != service.get("image"):
                found.append(
                    "deploy/docker-compose.yaml: the gRPC service's DAGSTER_CURRENT_IMAGE "
                    f"{current!r} is not its own image {service.get('image')!r}: runs would "
                    "start in another image"
                )

    deployments = helm_user_deployments(files)
    if not (files.helm.get("dagster-user-deployments") or {}).get("enabled"):
        found.append("deploy/helm/values.yaml: dagster-user-deployments.enabled is not true")
    if len(deployments) != 1:
        found.append("deploy/helm/values.yaml: expected one user code deployment")
    for deployment in deployments:
        if deployment.get("dagsterApiGrpcArgs") != ["-m", MODULE]:
            found.append(f"deploy/helm/values.yaml: dagsterApiGrpcArgs is not ['-m', '{MODULE}']")
        if deployment.get("port") != GRPC_PORT:
            found.append(f"deploy/helm/values.yaml: the user deployment's port is not {GRPC_PORT}")
    return found


def check_run_coordinator(files: Files) -> list[str]:
    found = []
    reference = files.instance.get("run_coordinator") or {}
    docker = files.docker_instance.get("run_coordinator") or {}
    for field in ("module", "class"):
        if docker.get(field) != reference.get(field):
            found.append(
                f"deploy/dagster-docker.yaml: run_coordinator {field} {docker.get(field)!r} is "
                f"not dagster.yaml's {reference.get(field)!r}"
            )
    daemon = files.helm.get("dagsterDaemon") or {}
    coordinator = daemon.get("runCoordinator") or {}
    if not daemon.get("enabled") or not coordinator.get("enabled"):
        found.append(
            "deploy/helm/values.yaml: dagsterDaemon.enabled and dagsterDaemon.runCoordinator."
            "enabled must be true (the queue and its limits live in the daemon)"
        )
    if coordinator.get("type") != reference.get("class"):
        found.append(
            f"deploy/helm/values.yaml: dagsterDaemon.runCoordinator.type "
            f"{coordinator.get('type')!r} is not dagster.yaml's {reference.get('class')!r}"
        )
    queued = (coordinator.get("config") or {}).get("queuedRunCoordinator") or {}
    for key in ("maxConcurrentRuns", "tagConcurrencyLimits"):
        if queued.get(key) not in (None, []):
            found.append(
                f"deploy/helm/values.yaml: queuedRunCoordinator.{key} is set: the limits belong "
                "in `concurrency:` (the chart refuses both)"
            )
    return found


def helm_concurrency(values: dict[str, Any]) -> dict[str, Any]:
    """The chart's `concurrency` value as the dagster.yaml block it renders (camelCase to
    snake_case, as the chart's instance template does); unknown keys are kept as they are."""
    names = {
        "defaultLimit": "default_limit",
        "opGranularityRunBuffer": "op_granularity_run_buffer",
        "maxConcurrentRuns": "max_concurrent_runs",
        "tagConcurrencyLimits": "tag_concurrency_limits",
    }
    rendered: dict[str, Any] = {}
    for section in ("runs", "pools"):
        block = values.get(section) or {}
        if block:
            rendered[section] = {names.get(key, key): value for key, value in block.items()}
    for key, value in values.items():
        if key not in ("enabled", "runs", "pools"):
            rendered[key] = value
    return rendered


def compare_concurrency(label: str, deployed: dict[str, Any], reference: dict[str, Any]):
    found = []
    runs, ref_runs = deployed.get("runs") or {}, reference.get("runs") or {}
    if runs.get("max_concurrent_runs") != ref_runs.get("max_concurrent_runs"):
        found.append(
            f"{label}: max_concurrent_runs {runs.get('max_concurrent_runs')!r} is not "
            f"dagster.yaml's {ref_runs.get('max_concurrent_runs')!r}"
        )
    tags = {item.get("key"): item for item in runs.get("tag_concurrency_limits") or []}
    ref_tags = {item.get("key"): item for item in ref_runs.get("tag_concurrency_limits") or []}
    for key, ref in ref_tags.items():
        item = tags.get(key)
        if item is None:
            found.append(f"{label}: no tag concurrency limit for {key} (dagster.yaml has one)")
            continue
        if item.get("limit") != ref.get("limit"):
            found.append(
                f"{label}: tag {key} limit {item.get('limit')!r} is not dagster.yaml's "
                f"{ref.get('limit')!r}"
            )
        if item.get("value") != ref.get("value"):
            found.append(
                f"{label}: tag {key} value {item.get('value')!r} is not dagster.yaml's "
                f"{ref.get('value')!r} (applyLimitPerUniqueValue: one limit per base / token)"
            )
    for key in tags.keys() - ref_tags.keys():
        found.append(f"{label}: tag {key} has a limit dagster.yaml does not have")
    pools, ref_pools = deployed.get("pools") or {}, reference.get("pools") or {}
    for key in ("granularity", "default_limit"):
        if pools.get(key) != ref_pools.get(key):
            found.append(
                f"{label}: pools {key} {pools.get(key)!r} is not dagster.yaml's "
                f"{ref_pools.get(key)!r}"
            )
    if not found and deployed != reference:
        found.append(f"{label}: the concurrency block differs from dagster.yaml's")
    return found


def check_concurrency(files: Files) -> list[str]:
    found = []
    reference = files.instance.get("concurrency") or {}
    ref_tags = {
        item.get("key"): item
        for item in (reference.get("runs") or {}).get("tag_concurrency_limits") or []
    }
    for key in TAG_KEYS:
        if (ref_tags.get(key) or {}).get("value") != {"applyLimitPerUniqueValue": True}:
            found.append(f"dagster.yaml: no per-unique-value tag limit for {key}")
    found += compare_concurrency(
        "deploy/dagster-docker.yaml concurrency",
        files.docker_instance.get("concurrency") or {},
        reference,
    )
    helm = files.helm.get("concurrency") or {}
    if helm.get("enabled") is not True:
        found.append(
            "deploy/helm/values.yaml: concurrency.enabled is not true (the chart renders no "
            "concurrency block without it)"
        )
    found += compare_concurrency(
        "deploy/helm/values.yaml concurrency", helm_concurrency(helm), reference
    )
    return found


HELM_RUN_MONITORING = {
    "enabled": "enabled",
    "startTimeoutSeconds": "start_timeout_seconds",
    "cancelTimeoutSeconds": "cancel_timeout_seconds",
    "maxResumeRunAttempts": "max_resume_run_attempts",
    "pollIntervalSeconds": "poll_interval_seconds",
    "freeSlotsAfterRunEndSeconds": "free_slots_after_run_end_seconds",
}


def check_run_monitoring(files: Files) -> list[str]:
    found = []
    reference = files.instance.get("run_monitoring") or {}
    docker = files.docker_instance.get("run_monitoring") or {}
    for key in sorted(reference.keys() | docker.keys()):
        if docker.get(key) != reference.get(key):
            found.append(
                f"deploy/dagster-docker.yaml: run_monitoring {key} {docker.get(key)!r} is not "
                f"dagster.yaml's {reference.get(key)!r}"
            )
    helm = (files.helm.get("dagsterDaemon") or {}).get("runMonitoring") or {}
    for camel, snake in HELM_RUN_MONITORING.items():
        if helm.get(camel) != reference.get(snake):
            found.append(
                f"deploy/helm/values.yaml: dagsterDaemon.runMonitoring.{camel} "
                f"{helm.get(camel)!r} is not dagster.yaml's {snake} {reference.get(snake)!r}"
            )
    return found


def check_instance_config_loads(files: Files) -> list[str]:
    """Dagster itself accepts deploy/dagster-docker.yaml (schema, storage, and no limit both in
    run_coordinator and in concurrency)."""
    from dagster._core.errors import DagsterInvalidConfigError
    from dagster._core.instance.config import dagster_instance_config

    try:
        dagster_instance_config(str(files.root / "deploy"), "dagster-docker.yaml")
    except DagsterInvalidConfigError as exc:
        return [f"deploy/dagster-docker.yaml: Dagster refuses it: {exc}"]
    return []


def check_launchers(files: Files) -> list[str]:
    found = []
    launcher = files.docker_instance.get("run_launcher") or {}
    if (launcher.get("module"), launcher.get("class")) != ("dagster_docker", "DockerRunLauncher"):
        found.append(
            "deploy/dagster-docker.yaml: run_launcher is not dagster_docker's DockerRunLauncher"
        )
    config = launcher.get("config") or {}
    networks = {
        (network or {}).get("name", key)
        for key, network in (files.compose.get("networks") or {}).items()
    }
    if config.get("network") not in networks:
        found.append(
            f"deploy/dagster-docker.yaml: run_launcher network {config.get('network')!r} is not "
            f"a network of deploy/docker-compose.yaml ({sorted(networks)})"
        )
    forwarded = [str(item).partition("=")[0] for item in config.get("env_vars") or []]
    storage_vars = [
        value["env"]
        for value in docker_storage_db(files).values()
        if isinstance(value, dict) and "env" in value
    ]
    for var in (*storage_vars, *RUN_SECRETS):
        if var not in forwarded:
            found.append(
                f"deploy/dagster-docker.yaml: run_launcher env_vars lacks {var}: run "
                "containers would not have it"
            )
    services = files.compose.get("services") or {}
    daemon_env = compose_env(services.get("dagster-daemon") or {})
    for var in forwarded:
        if var not in daemon_env:
            found.append(
                f"deploy/docker-compose.yaml: the dagster-daemon service does not set {var}, "
                "which the run launcher copies into run containers"
            )
    grpc_hosts = [
        e["grpc_server"].get("host") for e in files.docker_workspace.get("load_from") or []
    ]
    for name in (*grpc_hosts, "reconcile-init"):
        env = compose_env(services.get(name) or {})
        for var in (*storage_vars, *RUN_SECRETS):
            if var not in env:
                found.append(f"deploy/docker-compose.yaml: the {name} service does not set {var}")

    if (files.helm.get("runLauncher") or {}).get("type") != "K8sRunLauncher":
        found.append("deploy/helm/values.yaml: runLauncher.type is not K8sRunLauncher")
    for deployment in helm_user_deployments(files):
        if not deployment.get("envSecrets"):
            found.append(
                "deploy/helm/values.yaml: the user deployment has no envSecrets (the Airtable "
                "token and DATABASE_URL come from a Secret)"
            )
        if (deployment.get("includeConfigInLaunchedRuns") or {}).get("enabled") is False:
            found.append(
                "deploy/helm/values.yaml: includeConfigInLaunchedRuns is disabled: run pods "
                "would not get the Secret"
            )
    return found


def check_instance_database(files: Files) -> list[str]:
    found = []
    db = docker_storage_db(files)
    if not db:
        found.append(
            "deploy/dagster-docker.yaml: the storage config is not postgres_db (the instance "
            "database from DAGSTER_PG_*)"
        )
    else:
        for field in ("username", "password", "hostname", "db_name"):
            if not (isinstance(db.get(field), dict) and "env" in db[field]):
                found.append(
                    f"deploy/dagster-docker.yaml: storage {field} is not read from the "
                    "environment ({env: …})"
                )
    services = files.compose.get("services") or {}
    postgres = services.get("dagster-postgres") or {}
    if postgres.get("image") != INSTANCE_DB_IMAGE:
        found.append(
            f"deploy/docker-compose.yaml: the dagster-postgres service's image is not "
            f"{INSTANCE_DB_IMAGE}"
        )
    for name, service in services.items():
        host = compose_env(service).get("DAGSTER_PG_HOST")
        if host is not None and host not in services:
            found.append(
                f"deploy/docker-compose.yaml: service {name} has DAGSTER_PG_HOST {host!r}, no "
                "service of this file"
            )

    pg = files.helm.get("postgresql") or {}
    if pg.get("enabled") is not False:
        found.append(
            "deploy/helm/values.yaml: postgresql.enabled is not false (use your own PostgreSQL)"
        )
    if not pg.get("postgresqlHost"):
        found.append("deploy/helm/values.yaml: postgresql.postgresqlHost is empty")
    if files.helm.get("generatePostgresqlPasswordSecret") is not False:
        found.append(
            "deploy/helm/values.yaml: generatePostgresqlPasswordSecret is not false (the "
            "password would come from this file)"
        )
    if "postgresqlPassword" in pg:
        found.append("deploy/helm/values.yaml: postgresql.postgresqlPassword is set")
    return found


STOCK_STORAGE_KEYS = ("storage", "run_storage", "event_log_storage", "schedule_storage")


def check_storage(files: Files) -> list[str]:
    """The Docker instance selects dagster.yaml's storage class, with a config that class
    accepts, and every image whose processes open that instance can import it: the
    webserver/daemon image copies the module (and whatever project module it imports) onto its
    PYTHONPATH and installs every other module it imports; the user code image (code server,
    `reconcile-init`, run containers) copies it into the project it installs. The Helm chart
    cannot select a storage class: its values must not try."""
    found = []
    reference = (files.instance.get("storage") or {}).get("custom") or {}
    if not reference.get("module") or not reference.get("class"):
        found.append("dagster.yaml: storage is not `custom:` with a module and a class")
    storage = files.docker_instance.get("storage") or {}
    custom = storage.get("custom")
    if not isinstance(custom, dict):
        found.append(
            f"deploy/dagster-docker.yaml: storage is {sorted(storage)}, not custom: with "
            f"dagster.yaml's class {reference.get('class')!r}"
        )
        custom = {}
    for field in ("module", "class"):
        if custom and custom.get(field) != reference.get(field):
            found.append(
                f"deploy/dagster-docker.yaml: storage {field} {custom.get(field)!r} is not "
                f"dagster.yaml's {reference.get(field)!r}"
            )
    module, name = custom.get("module"), custom.get("class")
    if not (module and name):
        return found

    from dagster._config import validate_config

    try:
        storage_class = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        found.append(
            f"deploy/dagster-docker.yaml: cannot import the storage {module}.{name}: {exc}"
        )
    else:
        result = validate_config(storage_class.config_type(), custom.get("config") or {})
        if not result.success:
            found.append(
                f"deploy/dagster-docker.yaml: {name} refuses its storage config: "
                + "; ".join(error.message for error in result.errors)
            )

    dagster_text = files.text[DAGSTER_IMAGE]
    path_dirs = [
        folder
        for folder in dockerfile_settings(dagster_text, "ENV").get("PYTHONPATH", "").split(":")
        if folder
    ]
    dagster_copies = dockerfile_copies(dagster_text)
    user_copies = dockerfile_copies(files.text["Dockerfile"])
    ignore = files.text[".dockerignore"]
    needed, outside = module_imports(files, module)
    for rel in needed:
        if not (files.root / rel).is_file():
            found.append(f"{rel}: no such file, needed to import the storage {module}")
        targets = copied_to(dagster_copies, rel)
        if not any(posixpath.join(folder, rel) in targets for folder in path_dirs):
            found.append(
                f"deploy/Dockerfile.dagster: does not copy {rel} onto its PYTHONPATH "
                f"({':'.join(path_dirs) or 'unset'}): the webserver and the daemon could not "
                f"import the instance's storage {module}"
            )
        if not copied_to(user_copies, rel):
            found.append(
                f"Dockerfile: does not copy {rel}: the code server and run containers could not "
                f"import the instance's storage {module}"
            )
        if dockerignore_excludes(ignore, rel):
            found.append(
                f".dockerignore: excludes {rel}, which both images need for the instance's "
                f"storage {module}"
            )
    distributions = installed_by(dagster_text)
    for rel, top_level in outside:
        if not provided(top_level, distributions):
            found.append(
                f"{rel}: imports {top_level}, which deploy/Dockerfile.dagster does not install: "
                "the webserver and the daemon could not load the instance's storage"
            )

    extra = files.helm.get("additionalInstanceConfig") or {}
    for key in STOCK_STORAGE_KEYS:
        if key in extra:
            found.append(
                f"deploy/helm/values.yaml: additionalInstanceConfig sets {key}: the chart always "
                "renders dagster_postgres's run, event log and schedule storage (Dagster refuses "
                "`storage` beside them, and the chart's images lack the project's module)"
            )
    return found


def check_images(files: Files) -> list[str]:
    found = []
    steps = dockerfile(files.text["Dockerfile"])
    froms = [args for word, args in steps if word == "FROM"]
    if froms != [BASE_IMAGE]:
        found.append(f"Dockerfile: FROM is not {BASE_IMAGE}")
    users = [args for word, args in steps if word == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        found.append("Dockerfile: the last USER is not an unprivileged user")
    if any(word == "ENTRYPOINT" for word, _ in steps):
        found.append(
            "Dockerfile: ENTRYPOINT set (run launchers and the Helm chart replace the command)"
        )
    installs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    if not any(re.search(r"pip install \.(\s|$)", args) for args in installs):
        found.append("Dockerfile: the project is not installed with `pip install .`")
    if any(re.search(r"\.\[|dev\b|-e \.", args) for args in installs):
        found.append("Dockerfile: installs dev extras or an editable project")
    env = dockerfile_settings(files.text["Dockerfile"], "ENV")
    config = env.get("RECONCILE_CONFIG")
    copies = [shlex.split(args) for word, args in steps if word == "COPY"]
    if not config or not any(parts and parts[-1] == config for parts in copies):
        found.append(
            "Dockerfile: RECONCILE_CONFIG does not name the file the project file is copied to"
        )

    pins = pyproject_pins(files)
    libraries = pins.get("dagster-postgres")
    for rel in ("Dockerfile", "deploy/Dockerfile.dagster"):
        args = dockerfile_settings(files.text[rel], "ARG")
        if args.get("DAGSTER_LIBRARIES_VERSION") != libraries:
            found.append(
                f"{rel}: DAGSTER_LIBRARIES_VERSION {args.get('DAGSTER_LIBRARIES_VERSION')!r} is "
                f"not pyproject.toml's dagster-postgres pin {libraries!r}"
            )
    dagster_args = dockerfile_settings(files.text["deploy/Dockerfile.dagster"], "ARG")
    if dagster_args.get("DAGSTER_VERSION") != pins.get("dagster"):
        found.append(
            f"deploy/Dockerfile.dagster: DAGSTER_VERSION {dagster_args.get('DAGSTER_VERSION')!r} "
            f"is not pyproject.toml's dagster pin {pins.get('dagster')!r}"
        )
    dagster_steps = " ".join(
        args for word, args in dockerfile(files.text["deploy/Dockerfile.dagster"]) if word == "RUN"
    )
    for package in ("dagster-webserver", "dagster-postgres", "dagster-docker"):
        if f'"{package}==' not in dagster_steps:
            found.append(f"deploy/Dockerfile.dagster: does not install {package} (pinned)")

    services = files.compose.get("services") or {}
    for name in DAGSTER_SERVICES:
        build = (services.get(name) or {}).get("build") or {}
        if (build.get("context"), build.get("dockerfile")) != DAGSTER_IMAGE_BUILD:
            found.append(
                f"deploy/docker-compose.yaml: {name} is not built from deploy/Dockerfile.dagster "
                "with the repository root as context (context .., dockerfile "
                "deploy/Dockerfile.dagster)"
            )

    # The webserver/daemon image: the instance file where Dagster reads it, the workspace file
    # where each service's `-w` names it, every source a file of the repository root.
    dagster_text = files.text[DAGSTER_IMAGE]
    dagster_copies = dockerfile_copies(dagster_text)
    home = dockerfile_settings(dagster_text, "ENV").get("DAGSTER_HOME")
    instance_target = posixpath.join(home or "$DAGSTER_HOME", "dagster.yaml")
    if instance_target not in copied_to(dagster_copies, "deploy/dagster-docker.yaml"):
        found.append(
            f"deploy/Dockerfile.dagster: does not copy deploy/dagster-docker.yaml to "
            f"{instance_target} (DAGSTER_HOME/dagster.yaml)"
        )
    workspace_targets = copied_to(dagster_copies, "deploy/workspace-docker.yaml")
    for name in DAGSTER_SERVICES:
        command = [str(part) for part in (services.get(name) or {}).get("command") or []]
        workspace = command[command.index("-w") + 1] if "-w" in command[:-1] else None
        if workspace not in workspace_targets:
            found.append(
                f"deploy/Dockerfile.dagster: does not copy deploy/workspace-docker.yaml to "
                f"{workspace!r}, the workspace the {name} service loads (-w)"
            )
    for sources, _ in dagster_copies:
        for source in sources:
            if not (files.root / posixpath.normpath(source)).is_file():
                found.append(
                    f"deploy/Dockerfile.dagster: COPY {source}: no such file in the repository "
                    "root, its build context"
                )

    ignore = files.text[".dockerignore"]
    for entry in NEVER_IN_CONTEXT:
        if not dockerignore_excludes(ignore, entry):
            found.append(f".dockerignore: does not exclude {entry}")
    for rel in ("Dockerfile", DAGSTER_IMAGE):
        for sources, _ in dockerfile_copies(files.text[rel]):
            for source in sources:
                if dockerignore_excludes(ignore, posixpath.normpath(source)):
                    found.append(f".dockerignore: excludes {source}, which {rel} copies")
    return found


def check_local_setup(files: Files) -> list[str]:
    found = []
    sources: dict[str, list[str]] = {
        rel: list(strings(files.yaml[key]))
        for key, rel in YAML_FILES.items()
        if rel.startswith("deploy/")
    }
    for rel in ("Dockerfile", "deploy/Dockerfile.dagster"):
        sources[rel] = [f"{word} {args}" for word, args in dockerfile(files.text[rel])]
    for rel, values in sources.items():
        for what, pattern in LOCAL_SETUP.items():
            hits = sorted({value for value in values if pattern.search(value)})
            if hits:
                found.append(f"{rel}: refers to {what}: {hits[0]!r}")

    endpoints = [
        (where, value)
        for where, name, value in env_settings(files)
        if name == "AIRTABLE_ENDPOINT_URL"
    ]
    for where, value in endpoints:
        if value != AIRTABLE_API:
            found.append(f"{where}: AIRTABLE_ENDPOINT_URL is {value!r}, not {AIRTABLE_API}")
    # The code location binds the Airtable endpoint to AIRTABLE_ENDPOINT_URL without a default,
    # and Dagster fails a run whose bound variable is unset: the image sets the real API.
    image_env = dockerfile_settings(files.text["Dockerfile"], "ENV")
    if image_env.get("AIRTABLE_ENDPOINT_URL") != AIRTABLE_API:
        found.append(f"Dockerfile: ENV AIRTABLE_ENDPOINT_URL is not {AIRTABLE_API}")
    return found


def check_secrets(files: Files) -> list[str]:
    found = []
    for where, name, value in env_settings(files):
        if not SECRET_NAME.search(name.upper()) or value in (None, ""):
            continue
        if where.startswith("deploy/docker-compose.yaml") and COMPOSE_REFERENCE.match(value):
            continue
        found.append(
            f"{where}: {name} is given a value; secrets come from the environment or a Secret"
        )
    services = files.compose.get("services") or {}
    for name, service in services.items():
        for var, value in compose_env(service).items():
            required = var in RUN_SECRETS or var.endswith("PASSWORD")
            if required and value is not None and not COMPOSE_REQUIRED.match(value):
                found.append(
                    f"deploy/docker-compose.yaml service {name}: {var} is not required with "
                    "${" + var + ":?…}: an unset variable would start the service without it "
                    "(DATABASE_URL unset means the embedded PostgreSQL)"
                )
    for rel in DEPLOY_FILES:
        for number, line in enumerate(files.text[rel].splitlines(), 1):
            for what, pattern in SECRET_TEXT.items():
                if pattern.search(line):
                    found.append(f"{rel}: line {number} holds what looks like {what}")
    return found


CHECKS: tuple[Callable[[Files], list[str]], ...] = (
    check_module,
    check_run_coordinator,
    check_concurrency,
    check_run_monitoring,
    check_instance_config_loads,
    check_launchers,
    check_instance_database,
    check_storage,
    check_images,
    check_local_setup,
    check_secrets,
)


def problems(files: Files) -> list[str]:
    return [problem for check in CHECKS for problem in check(files)]


# ----- the tests --------------------------------------------------------------------------------


def copy_files(destination: Path) -> Path:
    for rel in (*TEXT_FILES, *YAML_FILES.values()):
        target = destination / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / rel, target)
    return destination


def test_the_deployment_files_agree_with_the_project():
    found = problems(load_files(REPO))
    assert found == [], "\n".join(found)


def test_a_copy_of_the_files_agrees(tmp_path):
    """The copy the mutation cases start from is clean: each case's problem is its own."""
    assert problems(load_files(copy_files(tmp_path))) == []


def edit_yaml(rel: str, change: Callable[[Any], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        data = yaml.safe_load((root / rel).read_text())
        change(data)
        (root / rel).write_text(yaml.safe_dump(data, sort_keys=False))

    return apply


def edit_text(rel: str, old: str, new: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        text = (root / rel).read_text()
        assert old in text, f"{old!r} not in {rel}"
        (root / rel).write_text(text.replace(old, new))

    return apply


def tag(block: dict[str, Any], key: str, runs: str = "runs", tags: str = "tag_concurrency_limits"):
    return next(item for item in block[runs][tags] if item["key"] == key)


def helm_tag(data: dict[str, Any], key: str) -> dict[str, Any]:
    return tag(data["concurrency"], key, tags="tagConcurrencyLimits")


def helm_deployment(data: dict[str, Any]) -> dict[str, Any]:
    return data["dagster-user-deployments"]["deployments"][0]


def service(data: dict[str, Any], name: str) -> dict[str, Any]:
    return data["services"][name]


def docker_db(data: dict[str, Any]) -> dict[str, Any]:
    return data["storage"]["custom"]["config"]["postgres_db"]


def edits(*changes: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for change in changes:
            change(root)

    return apply


def copy_from_repo(*rels: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for rel in rels:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(REPO / rel, root / rel)

    return apply


def prepend(rel: str, text: str) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        (root / rel).write_text(text + (root / rel).read_text())

    return apply


DOCKER = "deploy/dagster-docker.yaml"
HELM = "deploy/helm/values.yaml"
COMPOSE = "deploy/docker-compose.yaml"
STORAGE_MODULE = "reconcile_pipeline/dagster_storage.py"
PAT = "pat" + "A1b2C3d4E5f6G7" + "." + "0123456789abcdef" * 4

CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    # --- the concurrency block
    "docker token limit": (
        edit_yaml(DOCKER, lambda d: tag(d["concurrency"], "reconcile/token").update(limit=11)),
        "tag reconcile/token limit 11",
    ),
    "docker base limit dropped": (
        edit_yaml(
            DOCKER,
            lambda d: d["concurrency"]["runs"]["tag_concurrency_limits"].pop(0),
        ),
        "no tag concurrency limit for reconcile/base",
    ),
    "docker extra tag": (
        edit_yaml(
            DOCKER,
            lambda d: d["concurrency"]["runs"]["tag_concurrency_limits"].append(
                {"key": "other", "limit": 3}
            ),
        ),
        "tag other has a limit",
    ),
    "docker max runs": (
        edit_yaml(DOCKER, lambda d: d["concurrency"]["runs"].update(max_concurrent_runs=20)),
        "dagster-docker.yaml concurrency: max_concurrent_runs 20",
    ),
    "docker granularity": (
        edit_yaml(DOCKER, lambda d: d["concurrency"]["pools"].update(granularity="op")),
        "pools granularity 'op'",
    ),
    "docker op buffer": (
        edit_yaml(DOCKER, lambda d: d["concurrency"]["pools"].update(op_granularity_run_buffer=1)),
        "dagster-docker.yaml concurrency: the concurrency block differs",
    ),
    "helm base per-value": (
        edit_yaml(HELM, lambda d: helm_tag(d, "reconcile/base").update(value="x")),
        "tag reconcile/base value 'x'",
    ),
    "helm base limit": (
        edit_yaml(HELM, lambda d: helm_tag(d, "reconcile/base").update(limit=2)),
        "values.yaml concurrency: tag reconcile/base limit 2",
    ),
    "helm token limit": (
        edit_yaml(HELM, lambda d: helm_tag(d, "reconcile/token").update(limit=50)),
        "tag reconcile/token limit 50",
    ),
    "helm max runs": (
        edit_yaml(HELM, lambda d: d["concurrency"]["runs"].update(maxConcurrentRuns=5)),
        "values.yaml concurrency: max_concurrent_runs 5",
    ),
    "helm default limit": (
        edit_yaml(HELM, lambda d: d["concurrency"]["pools"].update(defaultLimit=2)),
        "pools default_limit 2",
    ),
    "helm concurrency disabled": (
        edit_yaml(HELM, lambda d: d["concurrency"].update(enabled=False)),
        "concurrency.enabled is not true",
    ),
    "dagster.yaml changed alone": (
        edit_yaml(
            "dagster.yaml", lambda d: tag(d["concurrency"], "reconcile/token").update(limit=5)
        ),
        "is not dagster.yaml's 5",
    ),
    "dagster.yaml loses per-value": (
        edit_yaml("dagster.yaml", lambda d: tag(d["concurrency"], "reconcile/base").pop("value")),
        "dagster.yaml: no per-unique-value tag limit for reconcile/base",
    ),
    # --- run coordinator
    "docker coordinator": (
        edit_yaml(
            DOCKER, lambda d: d["run_coordinator"].update({"class": "DefaultRunCoordinator"})
        ),
        "run_coordinator class 'DefaultRunCoordinator'",
    ),
    "docker limits in the coordinator": (
        edit_yaml(DOCKER, lambda d: d["run_coordinator"].update(config={"max_concurrent_runs": 3})),
        "Dagster refuses it",
    ),
    "helm coordinator type": (
        edit_yaml(HELM, lambda d: d["dagsterDaemon"]["runCoordinator"].update(type="Custom")),
        "runCoordinator.type 'Custom'",
    ),
    "helm daemon disabled": (
        edit_yaml(HELM, lambda d: d["dagsterDaemon"].update(enabled=False)),
        "dagsterDaemon.enabled",
    ),
    "helm limits in the coordinator": (
        edit_yaml(
            HELM,
            lambda d: d["dagsterDaemon"]["runCoordinator"].update(
                config={"queuedRunCoordinator": {"maxConcurrentRuns": 10}}
            ),
        ),
        "queuedRunCoordinator.maxConcurrentRuns is set",
    ),
    # --- run monitoring
    "docker resume": (
        edit_yaml(DOCKER, lambda d: d["run_monitoring"].update(max_resume_run_attempts=3)),
        "run_monitoring max_resume_run_attempts 3",
    ),
    "helm poll interval": (
        edit_yaml(
            HELM, lambda d: d["dagsterDaemon"]["runMonitoring"].update(pollIntervalSeconds=120)
        ),
        "runMonitoring.pollIntervalSeconds 120",
    ),
    # --- the module and the gRPC server
    "Dockerfile module": (
        edit_text("Dockerfile", '"reconcile_pipeline.definitions"', '"reconcile_pipeline.other"'),
        "Dockerfile: CMD is not",
    ),
    "helm module": (
        edit_yaml(HELM, lambda d: helm_deployment(d).update(dagsterApiGrpcArgs=["-f", "x.py"])),
        "dagsterApiGrpcArgs is not",
    ),
    "helm port": (
        edit_yaml(HELM, lambda d: helm_deployment(d).update(port=3030)),
        "the user deployment's port is not 4000",
    ),
    "workspace.yaml module": (
        edit_text("workspace.yaml", "reconcile_pipeline.definitions", "other.definitions"),
        "workspace.yaml: does not load the module",
    ),
    "docker workspace location": (
        edit_yaml(
            "deploy/workspace-docker.yaml",
            lambda d: d["load_from"][0]["grpc_server"].update(location_name="other"),
        ),
        "location_name 'other'",
    ),
    "docker workspace host": (
        edit_yaml(
            "deploy/workspace-docker.yaml",
            lambda d: d["load_from"][0]["grpc_server"].update(host="elsewhere"),
        ),
        "grpc_server host 'elsewhere'",
    ),
    "compose command": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "reconcile-user-code").update(
                command=["dagster", "api", "grpc", "-f", "repo.py"]
            ),
        ),
        "command does not load",
    ),
    "compose current image": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "reconcile-user-code")["environment"].update(
                DAGSTER_CURRENT_IMAGE="other:latest"
            ),
        ),
        "DAGSTER_CURRENT_IMAGE 'other:latest'",
    ),
    "compose user code build": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "reconcile-user-code")["build"].update(dockerfile="Other"),
        ),
        "is not built from the repository's Dockerfile",
    ),
    # --- launchers and what runs receive
    "docker launcher": (
        edit_yaml(DOCKER, lambda d: d["run_launcher"].update(module="dagster._core.launcher")),
        "run_launcher is not dagster_docker's DockerRunLauncher",
    ),
    "docker network": (
        edit_yaml(DOCKER, lambda d: d["run_launcher"]["config"].update(network="bridge")),
        "run_launcher network 'bridge'",
    ),
    "docker env_vars": (
        edit_yaml(DOCKER, lambda d: d["run_launcher"]["config"]["env_vars"].remove("DATABASE_URL")),
        "env_vars lacks DATABASE_URL",
    ),
    "compose daemon env": (
        edit_yaml(
            COMPOSE, lambda d: service(d, "dagster-daemon")["environment"].pop("AIRTABLE_API_KEY")
        ),
        "dagster-daemon service does not set AIRTABLE_API_KEY",
    ),
    "compose user code env": (
        edit_yaml(
            COMPOSE, lambda d: service(d, "reconcile-user-code")["environment"].pop("DATABASE_URL")
        ),
        "the reconcile-user-code service does not set DATABASE_URL",
    ),
    "helm launcher": (
        edit_yaml(HELM, lambda d: d["runLauncher"].update(type="CeleryK8sRunLauncher")),
        "runLauncher.type is not K8sRunLauncher",
    ),
    "helm secret": (
        edit_yaml(HELM, lambda d: helm_deployment(d).pop("envSecrets")),
        "has no envSecrets",
    ),
    "helm runs without config": (
        edit_yaml(
            HELM,
            lambda d: helm_deployment(d).update(includeConfigInLaunchedRuns={"enabled": False}),
        ),
        "includeConfigInLaunchedRuns is disabled",
    ),
    # --- the instance database
    "docker storage literal": (
        edit_yaml(DOCKER, lambda d: docker_db(d).update(hostname="db.internal")),
        "storage hostname is not read from the environment",
    ),
    "docker storage password literal": (
        edit_yaml(DOCKER, lambda d: docker_db(d).update(password="s3cret")),
        "storage password is not read from the environment",
    ),
    "docker storage url": (
        edit_yaml(
            DOCKER,
            lambda d: d["storage"]["custom"].update(
                config={"postgres_url": {"env": "DAGSTER_POSTGRES_URL"}}
            ),
        ),
        "the storage config is not postgres_db",
    ),
    # --- the storage class
    "docker stock storage": (
        edit_yaml(
            DOCKER, lambda d: d.update(storage={"postgres": d["storage"]["custom"]["config"]})
        ),
        "storage is ['postgres'], not custom:",
    ),
    "docker storage class": (
        edit_yaml(
            DOCKER, lambda d: d["storage"]["custom"].update({"class": "DagsterPostgresStorage"})
        ),
        "storage class 'DagsterPostgresStorage' is not dagster.yaml's 'PooledPostgresStorage'",
    ),
    "docker storage module": (
        edit_yaml(DOCKER, lambda d: d["storage"]["custom"].update(module="dagster_postgres")),
        "storage module 'dagster_postgres' is not dagster.yaml's",
    ),
    "dagster.yaml storage changed alone": (
        edit_yaml(
            "dagster.yaml", lambda d: d["storage"]["custom"].update({"class": "OtherStorage"})
        ),
        "storage class 'PooledPostgresStorage' is not dagster.yaml's 'OtherStorage'",
    ),
    "docker storage config refused": (
        edit_yaml(DOCKER, lambda d: docker_db(d).update(database="dagster")),
        "PooledPostgresStorage refuses its storage config",
    ),
    "Dockerfile.dagster storage not copied": (
        edit_text(
            DAGSTER_IMAGE,
            "COPY reconcile_pipeline/__init__.py reconcile_pipeline/dagster_storage.py ",
            "COPY reconcile_pipeline/__init__.py ",
        ),
        "does not copy reconcile_pipeline/dagster_storage.py onto its PYTHONPATH",
    ),
    "Dockerfile.dagster package not copied": (
        edit_text(
            DAGSTER_IMAGE,
            "COPY reconcile_pipeline/__init__.py reconcile_pipeline/dagster_storage.py "
            "/opt/dagster/lib/reconcile_pipeline/",
            "COPY reconcile_pipeline/dagster_storage.py /opt/dagster/lib/reconcile_pipeline/",
        ),
        "does not copy reconcile_pipeline/__init__.py onto its PYTHONPATH",
    ),
    "Dockerfile.dagster storage off the path": (
        edit_text(DAGSTER_IMAGE, "ENV PYTHONPATH=/opt/dagster/lib", "ENV PYTHONPATH=/opt/other"),
        "does not copy reconcile_pipeline/dagster_storage.py onto its PYTHONPATH (/opt/other)",
    ),
    "Dockerfile.dagster no PYTHONPATH": (
        edit_text(DAGSTER_IMAGE, "ENV PYTHONPATH=/opt/dagster/lib", ""),
        "onto its PYTHONPATH (unset)",
    ),
    "Dockerfile.dagster storage elsewhere": (
        edit_text(
            DAGSTER_IMAGE, "/opt/dagster/lib/reconcile_pipeline/", "/opt/dagster/lib/storage/"
        ),
        "does not copy reconcile_pipeline/dagster_storage.py onto its PYTHONPATH",
    ),
    "Dockerfile storage not copied": (
        edit_text(
            "Dockerfile",
            "COPY reconcile_pipeline ./reconcile_pipeline",
            "COPY reconcile_pipeline/definitions.py ./reconcile_pipeline/",
        ),
        "Dockerfile: does not copy reconcile_pipeline/dagster_storage.py: the code server",
    ),
    "storage module imports a project module": (
        edits(
            copy_from_repo(
                "reconcile_pipeline/db/__init__.py", "reconcile_pipeline/db/base_lock.py"
            ),
            prepend(STORAGE_MODULE, "from reconcile_pipeline.db import base_lock  # noqa\n"),
        ),
        "does not copy reconcile_pipeline/db/base_lock.py onto its PYTHONPATH",
    ),
    "storage module imports another library": (
        prepend(STORAGE_MODULE, "import pandas  # noqa\n"),
        "reconcile_pipeline/dagster_storage.py: imports pandas, which deploy/Dockerfile.dagster "
        "does not install",
    ),
    "storage package imports another library": (
        prepend("reconcile_pipeline/__init__.py", "from pydantic_settings import BaseSettings\n"),
        "reconcile_pipeline/__init__.py: imports pydantic_settings, which",
    ),
    "storage module ignored": (
        edit_text(
            ".dockerignore", "\nMakefile\n", "\nMakefile\nreconcile_pipeline/dagster_storage.py\n"
        ),
        ".dockerignore: excludes reconcile_pipeline/dagster_storage.py, which both images need",
    ),
    "helm storage in additionalInstanceConfig": (
        edit_yaml(
            HELM,
            lambda d: d.update(
                additionalInstanceConfig={
                    "storage": {"custom": {"module": "reconcile_pipeline.dagster_storage"}}
                }
            ),
        ),
        "additionalInstanceConfig sets storage",
    ),
    "compose postgres image": (
        edit_yaml(COMPOSE, lambda d: service(d, "dagster-postgres").update(image="postgres:16")),
        "image is not postgres:15",
    ),
    "compose postgres host": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "dagster-daemon")["environment"].update(DAGSTER_PG_HOST="db"),
        ),
        "DAGSTER_PG_HOST 'db'",
    ),
    "helm bundled postgres": (
        edit_yaml(HELM, lambda d: d["postgresql"].update(enabled=True)),
        "postgresql.enabled is not false",
    ),
    "helm no host": (
        edit_yaml(HELM, lambda d: d["postgresql"].update(postgresqlHost="")),
        "postgresqlHost is empty",
    ),
    "helm generated password": (
        edit_yaml(HELM, lambda d: d.update(generatePostgresqlPasswordSecret=True)),
        "generatePostgresqlPasswordSecret is not false",
    ),
    "helm password": (
        edit_yaml(HELM, lambda d: d["postgresql"].update(postgresqlPassword="")),
        "postgresqlPassword is set",
    ),
    # --- the images
    "Dockerfile base": (
        edit_text("Dockerfile", "FROM python:3.11-slim", "FROM python:3.12"),
        "FROM is not python:3.11-slim",
    ),
    "Dockerfile root": (
        edit_text("Dockerfile", "USER 10001:10001", "USER root"),
        "the last USER is not an unprivileged user",
    ),
    "Dockerfile no user": (
        edit_text("Dockerfile", "USER 10001:10001", ""),
        "the last USER is not an unprivileged user",
    ),
    "Dockerfile entrypoint": (
        edit_text("Dockerfile", "EXPOSE 4000", 'EXPOSE 4000\nENTRYPOINT ["dagster"]'),
        "ENTRYPOINT set",
    ),
    "Dockerfile dev extras": (
        edit_text("Dockerfile", "pip install . \\", "pip install '.[dev]' \\"),
        "installs dev extras",
    ),
    "Dockerfile project file": (
        edit_text(
            "Dockerfile",
            "RECONCILE_CONFIG=/opt/dagster/app/reconcile.yaml",
            "RECONCILE_CONFIG=/etc/reconcile.yaml",
        ),
        "RECONCILE_CONFIG does not name the file",
    ),
    "Dockerfile libraries": (
        edit_text(
            "Dockerfile", "DAGSTER_LIBRARIES_VERSION=0.29.27", "DAGSTER_LIBRARIES_VERSION=0.28.0"
        ),
        "Dockerfile: DAGSTER_LIBRARIES_VERSION '0.28.0'",
    ),
    "Dockerfile.dagster version": (
        edit_text("deploy/Dockerfile.dagster", "DAGSTER_VERSION=1.13.27", "DAGSTER_VERSION=1.12.0"),
        "DAGSTER_VERSION '1.12.0'",
    ),
    "Dockerfile.dagster package": (
        edit_text("deploy/Dockerfile.dagster", '"dagster-docker==', '"dagster-k8s=='),
        "does not install dagster-docker",
    ),
    "compose daemon image": (
        edit_yaml(
            COMPOSE, lambda d: service(d, "dagster-daemon")["build"].update(dockerfile="Dockerfile")
        ),
        "dagster-daemon is not built from deploy/Dockerfile.dagster",
    ),
    "compose webserver context": (
        edit_yaml(COMPOSE, lambda d: service(d, "dagster-webserver")["build"].update(context=".")),
        "dagster-webserver is not built from deploy/Dockerfile.dagster with the repository root",
    ),
    "compose daemon old dockerfile path": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "dagster-daemon")["build"].update(dockerfile="Dockerfile.dagster"),
        ),
        "dagster-daemon is not built from deploy/Dockerfile.dagster",
    ),
    "Dockerfile.dagster instance path": (
        edit_text(DAGSTER_IMAGE, "COPY deploy/dagster-docker.yaml", "COPY dagster-docker.yaml"),
        "does not copy deploy/dagster-docker.yaml to /opt/dagster/dagster_home/dagster.yaml",
    ),
    "Dockerfile.dagster source outside the context": (
        edit_text(DAGSTER_IMAGE, "COPY deploy/workspace-docker.yaml", "COPY workspace-docker.yaml"),
        "COPY workspace-docker.yaml: no such file in the repository root",
    ),
    "compose workspace path": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "dagster-webserver").update(
                command=["dagster-webserver", "-w", "/opt/dagster/workspace.yaml"]
            ),
        ),
        "the workspace the dagster-webserver service loads (-w)",
    ),
    ".dockerignore": (
        edit_text(".dockerignore", "\n.reconcile\n", "\n"),
        ".dockerignore: does not exclude .reconcile",
    ),
    ".dockerignore compose secrets": (
        edits(
            edit_text(".dockerignore", "\n**/.env\n", "\n"),
            edit_text(".dockerignore", "\ndeploy\n", "\ndeploy/helm\n"),
        ),
        ".dockerignore: does not exclude deploy/.env",
    ),
    ".dockerignore deploy files": (
        edit_text(".dockerignore", "\n!deploy/dagster-docker.yaml\n", "\n"),
        ".dockerignore: excludes deploy/dagster-docker.yaml, which deploy/Dockerfile.dagster",
    ),
    # --- nothing of the local setup
    "compose emulator endpoint": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "reconcile-user-code")["environment"].update(
                AIRTABLE_ENDPOINT_URL="http://airtable-emulator:8765"
            ),
        ),
        "AIRTABLE_ENDPOINT_URL is 'http://airtable-emulator:8765'",
    ),
    "helm endpoint": (
        edit_yaml(
            HELM,
            lambda d: helm_deployment(d)["env"].append(
                {"name": "AIRTABLE_ENDPOINT_URL", "value": "http://airtable.internal"}
            ),
        ),
        "AIRTABLE_ENDPOINT_URL is 'http://airtable.internal'",
    ),
    "Dockerfile endpoint unset": (
        edit_text("Dockerfile", "    AIRTABLE_ENDPOINT_URL=https://api.airtable.com", "    X=1"),
        "ENV AIRTABLE_ENDPOINT_URL is not",
    ),
    "compose embedded database": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "reconcile-init").update(command=["reconcile", "db", "start"]),
        ),
        "refers to the embedded PostgreSQL",
    ),
    "helm emulator": (
        edit_yaml(
            HELM,
            lambda d: helm_deployment(d)["env"].append(
                {"name": "RECONCILE_NOTE", "value": "airtable-emulator --port 8765"}
            ),
        ),
        "refers to the Airtable emulator",
    ),
    "docker local data": (
        edit_yaml(
            DOCKER,
            lambda d: d.update(local_artifact_storage={"config": {"base_dir": ".reconcile"}}),
        ),
        "refers to local data files",
    ),
    "Dockerfile local host": (
        edit_text("Dockerfile", "EXPOSE 4000", "ENV DATABASE_HOST=localhost\nEXPOSE 4000"),
        "refers to a local host",
    ),
    # --- no secret values
    "compose token value": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "reconcile-user-code")["environment"].update(AIRTABLE_API_KEY=PAT),
        ),
        "AIRTABLE_API_KEY is given a value",
    ),
    "compose token default": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "dagster-daemon")["environment"].update(
                AIRTABLE_API_KEY="${AIRTABLE_API_KEY:-" + PAT + "}"
            ),
        ),
        "AIRTABLE_API_KEY is given a value",
    ),
    "compose database url value": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "reconcile-init")["environment"].update(
                DATABASE_URL="postgresql://app:hunter2@db:5432/portal"
            ),
        ),
        "DATABASE_URL is given a value",
    ),
    "compose database url optional": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "reconcile-user-code")["environment"].update(
                DATABASE_URL="${DATABASE_URL:-}"
            ),
        ),
        "DATABASE_URL is not required",
    ),
    "compose instance password": (
        edit_yaml(
            COMPOSE,
            lambda d: service(d, "dagster-postgres")["environment"].update(
                POSTGRES_PASSWORD="dagster"
            ),
        ),
        "POSTGRES_PASSWORD is given a value",
    ),
    "docker env_vars value": (
        edit_yaml(
            DOCKER,
            lambda d: d["run_launcher"]["config"]["env_vars"].append(
                "RECONCILE_ALERT_WEBHOOK_URL=https://hooks.example.com/x"
            ),
        ),
        "RECONCILE_ALERT_WEBHOOK_URL is given a value",
    ),
    "helm env value": (
        edit_yaml(
            HELM,
            lambda d: helm_deployment(d)["env"].append({"name": "DATABASE_URL", "value": "x"}),
        ),
        "DATABASE_URL is given a value",
    ),
    "Dockerfile token": (
        edit_text("Dockerfile", "EXPOSE 4000", "ENV AIRTABLE_API_KEY=x\nEXPOSE 4000"),
        "Dockerfile ENV: AIRTABLE_API_KEY is given a value",
    ),
    "token in a comment": (
        edit_text(HELM, "telemetry:", f"# {PAT}\ntelemetry:"),
        "looks like an Airtable personal access token",
    ),
    "password in a URL": (
        edit_text(HELM, "telemetry:", "# postgresql://dagster:s3cret@db/dagster\ntelemetry:"),
        "looks like a URL with a password",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_changed_copy_is_reported(tmp_path, case):
    change, expected = CASES[case]
    root = copy_files(tmp_path)
    change(root)
    found = problems(load_files(root))
    assert any(expected in problem for problem in found), (case, found)
