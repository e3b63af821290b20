"""Run the Dockerfile's own steps without a Docker engine (used by scripts/check_image.sh).

Reads the Dockerfile and carries out its instructions: the builder stages (the widget's Node
stage) in a scratch directory on this machine, the final stage inside a root filesystem made by
debootstrap (chroot). Understood: FROM (stage names), WORKDIR, ARG (defaults, overridable with
--build-arg), ENV, COPY (from the context or `--from=<stage>`), RUN, USER, EXPOSE, HEALTHCHECK, CMD.
Anything else stops the run: a new instruction must be taught here before the check can pass.

Prints the final stage's metadata (user, workdir, env, healthcheck, cmd) as JSON on the last line,
for the script to start the server the way the image would.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

KNOWN = {"FROM", "WORKDIR", "ARG", "ENV", "COPY", "RUN", "USER", "EXPOSE", "HEALTHCHECK", "CMD"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per logical line: comments dropped, backslash continuations joined."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if current and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    if current:
        raise SystemExit(f"Dockerfile ends inside a continued line: {current[:80]!r}")
    return out


def stages(steps: list[tuple[str, str]]) -> list[dict]:
    found: list[dict] = []
    for word, rest in steps:
        if word not in KNOWN:
            raise SystemExit(f"instruction {word} is not understood by {Path(__file__).name}")
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(found))
            found.append({"base": parts[0], "name": name, "steps": []})
        elif not found:
            if word != "ARG":
                raise SystemExit(f"{word} before the first FROM")
        else:
            found[-1]["steps"].append((word, rest))
    return found


def ignore_patterns(context: Path) -> list[str]:
    """The context's .dockerignore (comments and blank lines dropped; `!` exceptions not supported)."""
    path = context / ".dockerignore"
    if not path.exists():
        return []
    patterns = [line.strip().strip("/") for line in path.read_text().splitlines()]
    patterns = [p for p in patterns if p and not p.startswith("#")]
    if any(p.startswith("!") for p in patterns):
        raise SystemExit(".dockerignore exceptions (!) are not understood here")
    return patterns


def ignored(rel: str, patterns: list[str]) -> bool:
    """Whether a context path (relative, /-separated) is left out of the build context."""
    for pattern in patterns:
        if pattern.startswith("**/"):
            name = pattern[3:]
            if any(fnmatch.fnmatchcase(part, name) for part in rel.split("/")):
                return True
        elif fnmatch.fnmatchcase(rel, pattern) or rel.startswith(pattern + "/"):
            return True
    return False


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), value)


def env_pairs(rest: str) -> list[tuple[str, str]]:
    words = shlex.split(rest)
    if words and "=" not in words[0]:  # the legacy form: ENV KEY value with spaces
        return [(words[0], " ".join(words[1:]))]
    return [tuple(w.split("=", 1)) for w in words]  # type: ignore[misc]


class Stage:
    """One stage's state: where its / is, its workdir and environment."""

    def __init__(
        self,
        spec: dict,
        root: Path | None,
        scratch: Path,
        base_env: dict[str, str],
        build_args: dict,
        run_env: dict[str, str] | None = None,
    ):
        self.spec = spec
        self.run_env = run_env or {}  # the build machine's, for RUN only (not the image's)
        self.root = root  # the chroot for the final stage; None: the builder runs on this machine
        self.scratch = scratch  # builder stages: their / maps here
        self.env = dict(base_env)
        self.build_args = build_args
        self.workdir = "/"
        self.user = "root"
        self.meta: dict = {"expose": [], "healthcheck": None, "cmd": None}

    def host_path(self, path: str) -> Path:
        path = path if path.startswith("/") else os.path.join(self.workdir, path)
        base = self.root if self.root is not None else self.scratch
        return base / path.lstrip("/")

    def run(self, command: str) -> None:
        print(f"[{self.spec['name']}] RUN {command[:160]}", flush=True)
        if self.root is None:
            cwd = self.host_path(self.workdir)
            subprocess.run(["sh", "-c", command], cwd=cwd, env={**os.environ, **self.env}, check=True)
            return
        spec = [] if self.user == "root" else [f"--userspec={self.user}:{self.user}"]
        script = f"cd {shlex.quote(self.workdir)} && {command}"
        env = {"HOME": "/root" if self.user == "root" else f"/home/{self.user}", **self.run_env, **self.env}
        subprocess.run(["chroot", *spec, str(self.root), "/bin/sh", "-c", script], env=env, check=True)

    def copy(self, rest: str, built: dict[str, Path], context: Path) -> None:
        words = shlex.split(rest)
        source_root = context
        if words[0].startswith("--from="):
            source_root = built[words.pop(0).split("=", 1)[1]]
        *sources, dest = words
        print(f"[{self.spec['name']}] COPY {' '.join(sources)} -> {dest}", flush=True)
        target = self.host_path(dest)
        from_context = source_root is context
        patterns = ignore_patterns(context) if from_context else []
        for source in sources:
            src = (context / source) if from_context else (source_root / source.lstrip("/"))
            if not src.exists() or (from_context and ignored(source.strip("/"), patterns)):
                raise SystemExit(f"COPY source {source} is not in the build context")
            if src.is_dir():
                # Docker copies a directory's contents (into dest, made if missing), minus .dockerignore.
                def skip(folder: str, names: list[str]) -> set[str]:
                    rel = Path(folder).relative_to(context).as_posix() if from_context else ""
                    return {n for n in names if from_context and ignored(n if rel == "." else f"{rel}/{n}", patterns)}

                shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True, ignore=skip)
            else:
                into = target / src.name if dest.endswith("/") or target.is_dir() else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, into)

    def apply(self, built: dict[str, Path], context: Path) -> None:
        for word, rest in self.spec["steps"]:
            rest = expand(rest, self.env) if word not in ("RUN", "HEALTHCHECK", "CMD") else rest
            if word == "WORKDIR":
                self.workdir = rest if rest.startswith("/") else os.path.join(self.workdir, rest)
                self.host_path(self.workdir).mkdir(parents=True, exist_ok=True)
            elif word == "ARG":
                name, _, default = rest.partition("=")
                self.env[name] = self.build_args.get(name, default)
            elif word == "ENV":
                for key, value in env_pairs(rest):
                    self.env[key] = expand(value, self.env)
            elif word == "COPY":
                self.copy(rest, built, context)
            elif word == "RUN":
                self.run(rest)
            elif word == "USER":
                self.user = rest
            elif word == "EXPOSE":
                self.meta["expose"].append(rest)
            elif word == "HEALTHCHECK":
                options, _, command = rest.partition("CMD ")
                self.meta["healthcheck"] = {"options": options.split(), "cmd": command.strip()}
            elif word == "CMD":
                self.meta["cmd"] = json.loads(rest) if rest.startswith("[") else ["/bin/sh", "-c", rest]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dockerfile", required=True, type=Path)
    parser.add_argument("--context", required=True, type=Path)
    parser.add_argument("--root", required=True, type=Path, help="the final stage's root filesystem")
    parser.add_argument("--scratch", required=True, type=Path, help="where builder stages run")
    parser.add_argument("--base-env", action="append", default=[], help="KEY=VALUE the final base image sets")
    parser.add_argument("--build-arg", action="append", default=[], help="KEY=VALUE")
    parser.add_argument("--run-env", action="append", default=[], help="KEY=VALUE for RUN steps only")
    args = parser.parse_args()

    build_args = dict(a.split("=", 1) for a in args.build_arg)
    all_stages = stages(instructions(args.dockerfile.read_text()))
    built: dict[str, Path] = {}
    final = None
    for i, spec in enumerate(all_stages):
        last = i == len(all_stages) - 1
        scratch = args.scratch / spec["name"]
        scratch.mkdir(parents=True, exist_ok=True)
        if last:
            base_env = dict(e.split("=", 1) for e in args.base_env)
            run_env = dict(e.split("=", 1) for e in args.run_env)
            stage = Stage(spec, args.root, scratch, base_env, build_args, run_env)
        else:
            stage = Stage(spec, None, scratch, {}, build_args)
        print(f"== stage {spec['name']} (FROM {spec['base']})", flush=True)
        stage.apply(built, args.context)
        built[spec["name"]] = args.root if last else scratch
        if last:
            final = stage
    if final is not None:
        meta = {**final.meta, "user": final.user, "workdir": final.workdir, "env": final.env}
        print(json.dumps(meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
