"""The production image and the compose file, checked as far as this machine can (it has no
Docker): the compose file parses, every long-running service has a health check (the web's reads
/readyz), start order waits on health; the Dockerfile installs torch from the CPU wheel index at
pyproject's pin before the project, and copies only paths that exist; constraints.txt (the locked
versions every install uses) agrees with pyproject.toml."""
from __future__ import annotations

import re
import tomllib

import yaml
from support.knowledge import ROOT


def test_compose_parses_and_checks_health():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) >= {"db", "migrate", "web", "jobs"}
    for name in ("db", "web", "jobs"):
        check = services[name]["healthcheck"]
        assert check["test"] and check["interval"] and check["retries"], name
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    for name in ("web", "jobs"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql://") and "PARLEY_SECRET_KEY" in env
    assert services["jobs"]["environment"]["PARLEY_JOBS_METRICS_BIND"]
    assert "ports" not in services["jobs"]  # its metrics stay on the compose network


def test_dockerfile_installs_the_cpu_torch_first():
    text = (ROOT / "Dockerfile").read_text()
    pins = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
            if re.match(r"torch\b", d)]
    assert len(pins) == 1 and re.fullmatch(r"torch==[\d.]+", pins[0]), pins  # an exact pin, no local label
    cpu = text.index("--index-url \"$TORCH_INDEX\"")
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu" in text
    project = text.index("pip install --no-cache-dir -c constraints.txt .")
    assert cpu < project
    # The project install must not swap the CPU build for another one.
    assert "torch.version.cuda is None" in text[project:]
    # Every COPY source exists in the repository (widget/dist comes from the build stage).
    for line in text.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            for source in line.split()[1:-1]:
                assert (ROOT / source.rstrip("/")).exists(), source
    assert "nodejs" not in text.split("FROM python")[1]  # no Node in the final image


def _image_tool():
    """scripts/dockerfile_chroot.py, the interpreter scripts/check_image.sh runs the Dockerfile with."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("dockerfile_chroot", ROOT / "scripts" / "dockerfile_chroot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_build_context_leaves_out_local_state():
    tool = _image_tool()
    patterns = tool.ignore_patterns(ROOT)
    # Never sent to a build: the venv, the embedded databases (their passwords), caches, a host's
    # node_modules (the widget stage's `COPY widget/ ./` would overwrite its own `npm ci`), built output.
    for path in (".venv", ".parley/db.json", ".git", "widget/node_modules/esbuild", "widget/dist/widget.js",
                 "pyapp/__pycache__/db.cpython-311.pyc", "jobs/__pycache__", "test-artifacts/x.png"):
        assert tool.ignored(path, patterns), path
    stages = tool.stages(tool.instructions((ROOT / "Dockerfile").read_text()))  # every instruction understood
    assert [s["name"] for s in stages] == ["widget", "1"]
    for stage in stages:
        for word, rest in stage["steps"]:
            if word == "COPY" and "--from=" not in rest:
                for source in rest.split()[:-1]:
                    assert not tool.ignored(source.strip("/"), patterns), source  # what it copies is sent
    final = dict((w, r) for w, r in stages[-1]["steps"] if w in ("USER", "HEALTHCHECK", "CMD"))
    assert final["USER"] != "root" and "/readyz" in final["HEALTHCHECK"] and final["CMD"] == '["parley", "serve"]'


def test_constraints_lock_every_dependency_at_a_version_pyproject_allows():
    """constraints.txt (written by scripts/lock.sh) holds one exact version of each package
    pyproject.toml names, runtime and test tools, and each is one pyproject's own specifier allows:
    a dependency added to pyproject but not locked, or a minimum raised past the lock, fails here
    rather than as an install that quietly falls back to the newest versions."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        assert sep and re.fullmatch(r"[\w.!]+", version), line  # exact, no local label (+cpu)
        assert canonicalize_name(name) not in pins, f"{name} locked twice"
        pins[canonicalize_name(name)] = version
    for text in project["dependencies"] + project["optional-dependencies"]["test"]:
        req = Requirement(text)
        version = pins.get(canonicalize_name(req.name))
        assert version, f"{req.name} is not in constraints.txt (bash scripts/lock.sh)"
        assert req.specifier.contains(version, prereleases=True), f"{req} but constraints.txt has {version}"
    text = (ROOT / "Dockerfile").read_text()
    assert "constraints.txt" in text.split("COPY pyproject.toml", 1)[1].splitlines()[0]
    assert "pip install --no-cache-dir -c constraints.txt ." in text
    assert "-c constraints.txt" in (ROOT / "scripts" / "setup.sh").read_text()
