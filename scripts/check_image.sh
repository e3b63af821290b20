#!/usr/bin/env bash
# Checks the production image without a Docker engine, as far as a machine without one allows
# (not run in CI; docs/operations.md "How the image was checked"). As root, it:
#   1. lints the Dockerfile and docker-compose.yml (tests/ops/test_deploy_files.py);
#   2. makes a Debian bookworm root filesystem with debootstrap (python3.11, a venv on PATH standing
#      in for the python:3.11-slim-bookworm base; kept in $PARLEY_IMAGE_DIR/base and reused);
#   3. runs the Dockerfile's own steps (scripts/dockerfile_chroot.py): the widget stage with this
#      machine's Node, the final stage in a fresh copy of that root (chroot), .dockerignore honoured;
#      torch from ARG TORCH_INDEX: PyTorch's CPU index when reachable, else a local index made of
#      `pip download torch==<pin>` (this machine's wheel and PyPI's dependencies);
#   4. starts a PostgreSQL (the embedded one, from the repo's venv), runs `parley migrate` and then
#      `parley serve` and `parley jobs` from the root as the image's user, and runs the compose
#      file's own health checks (web: /readyz; jobs: the heartbeat file) until they pass;
#   5. prints the root's size next to the development venv's.
# Environment: PARLEY_IMAGE_DIR (default .parley/image), TORCH_INDEX (an index URL to use instead),
# CHECK_IMAGE_TIMEOUT (seconds for /readyz, default 900).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${PARLEY_IMAGE_DIR:-$REPO/.parley/image}
ROOT=$WORK/root
BASE=$WORK/base
VENV_PY=$REPO/.venv/bin/python
TIMEOUT=${CHECK_IMAGE_TIMEOUT:-900}
[ "$(id -u)" = 0 ] || { echo "check_image.sh: run as root (debootstrap, chroot)" >&2; exit 2; }
mkdir -p "$WORK"
say() { printf '\n== %s\n' "$*"; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  PARLEY_DATA_DIR=$WORK/db "$REPO/.venv/bin/parley" db stop >/dev/null 2>&1 || true
  for m in mnt/torch-index dev/pts dev proc; do mountpoint -q "$ROOT/$m" && umount -l "$ROOT/$m"; done
  return 0
}
trap cleanup EXIT

say "1. Dockerfile and compose file: structure"
"$VENV_PY" -m pytest -q -p no:randomly -p no:cacheprovider tests/ops/test_deploy_files.py

say "2. base root filesystem (debootstrap bookworm, python3.11)"
if [ ! -x "$BASE/usr/local/python/bin/pip" ]; then
  command -v debootstrap >/dev/null || apt-get install -y debootstrap >/dev/null
  rm -rf "$BASE.tmp"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$BASE.tmp" \
    http://deb.debian.org/debian >"$WORK/debootstrap.log"
  # python:3.11-slim has python and pip on PATH (in /usr/local); Debian's own python refuses pip
  # installs outside a venv, so a venv on PATH stands in for it.
  chroot "$BASE.tmp" python3 -m venv /usr/local/python
  chroot "$BASE.tmp" apt-get clean
  rm -rf "$BASE.tmp"/var/lib/apt/lists/*  # as the slim image does
  mv "$BASE.tmp" "$BASE"
fi
echo "base: $(du -sxh "$BASE" | cut -f1) ($(chroot "$BASE" /usr/local/python/bin/python --version))"

say "3. the Dockerfile's steps"
rm -rf "$ROOT" "$WORK/scratch"
cp -a "$BASE" "$ROOT"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# This machine reaches PyPI through a TLS proxy whose CA only its own bundle has: the build steps get
# that bundle (as `docker build` here would need), and pip is pointed at it for RUN steps only.
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
mount -t proc proc "$ROOT/proc"
mount --bind /dev "$ROOT/dev"
mount --bind /dev/pts "$ROOT/dev/pts"
torch_index=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
torch_pin=$(python3 -c 'import re,tomllib;print(next(d for d in tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"] if re.match(r"torch\b",d)))')
if [ -z "${TORCH_INDEX:-}" ] && ! curl -fsS -m 15 -o /dev/null "$torch_index/torch/"; then
  echo "PyTorch's index ($torch_index) is unreachable: a local index of $torch_pin and its dependencies instead"
  rm -rf "$WORK/torch-index" && mkdir -p "$WORK/torch-index" "$ROOT/mnt/torch-index"
  python3 -m pip download -q --only-binary=:all: --dest "$WORK/torch-wheels" "$torch_pin"
  "$VENV_PY" - "$WORK/torch-wheels" "$WORK/torch-index" <<'PY'
import html, re, shutil, sys
from pathlib import Path
# A PEP 503 index: one folder per normalised project name, with an index.html listing its files.
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
for wheel in sorted(src.glob("*.whl")):
    name = re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()
    (dst / name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(wheel, dst / name / wheel.name)
for folder in dst.iterdir():
    links = "".join(f'<a href="{html.escape(f.name)}">{html.escape(f.name)}</a>\n' for f in sorted(folder.glob("*.whl")))
    (folder / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
PY
  mount --bind -o ro "$WORK/torch-index" "$ROOT/mnt/torch-index"  # seen by the build, not part of the image
  torch_index=file:///mnt/torch-index
fi
base_env=(--base-env "PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
          --base-env "LANG=C.UTF-8")
started=$(date +%s)
"$VENV_PY" scripts/dockerfile_chroot.py --dockerfile Dockerfile --context . --root "$ROOT" \
  --scratch "$WORK/scratch" "${base_env[@]}" --build-arg "TORCH_INDEX=$torch_index" \
  --run-env PIP_CERT=/etc/ssl/certs/ca-certificates.crt | tee "$WORK/build.log"
echo "build: $(( $(date +%s) - started )) s"
mountpoint -q "$ROOT/mnt/torch-index" && umount "$ROOT/mnt/torch-index"
image_size=$(du -sxh "$ROOT" | cut -f1)  # before the stack writes its data (the model's ONNX file) into it
meta=$(tail -n 1 "$WORK/build.log")
field() { "$VENV_PY" -c 'import json,sys; m=json.loads(sys.argv[1]); print(eval(sys.argv[2], {"m": m}))' "$meta" "$1"; }
user=$(field 'm["user"]')
workdir=$(field 'm["workdir"]')
mapfile -t image_env < <(field '"\n".join(f"{k}={v}" for k, v in m["env"].items() if k != "TORCH_INDEX")')

say "4. the stack: migrate, serve, jobs, the compose health checks"
rm -rf "$WORK/db"  # a new database each run, as compose's first `up`
PARLEY_DATA_DIR=$WORK/db "$REPO/.venv/bin/parley" db start >/dev/null
db_url=$(PARLEY_DATA_DIR=$WORK/db "$REPO/.venv/bin/parley" db url)
port=$("$VENV_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics_port=$("$VENV_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# As compose sets them (docker-compose.yml, x-parley_env), on a free port instead of 8080: other
# servers may hold 8080 on this machine, and a chroot shares the host's network.
stack_env=("${image_env[@]}" "HOME=/var/lib/parley" "DATABASE_URL=$db_url" "PARLEY_SECRET_KEY=$(head -c 32 /dev/urandom | base64)"
           "PARLEY_PUBLIC_URL=http://127.0.0.1:$port" "PARLEY_PORT=$port" "PARLEY_LOG_FORMAT=json")
in_image() { chroot --userspec="$user:$user" "$ROOT" /usr/bin/env -i "${stack_env[@]}" /bin/sh -c "cd $workdir && $*"; }
in_image parley migrate
chroot --userspec="$user:$user" "$ROOT" /usr/bin/env -i "${stack_env[@]}" \
  parley serve --host 127.0.0.1 --port "$port" >"$WORK/serve.log" 2>&1 &
pids+=($!)
chroot --userspec="$user:$user" "$ROOT" /usr/bin/env -i "${stack_env[@]}" "PARLEY_JOBS_METRICS_BIND=127.0.0.1:$metrics_port" \
  parley jobs >"$WORK/jobs.log" 2>&1 &
pids+=($!)
checks=$("$VENV_PY" - "$port" <<'PY'
import shlex, sys, yaml
# The compose file's own health checks (web, jobs), the web one pointed at this run's port.
services = yaml.safe_load(open("docker-compose.yml"))["services"]
for name in ("web", "jobs"):
    test = services[name]["healthcheck"]["test"]
    command = test[1] if test[0] == "CMD-SHELL" else shlex.join(test[1:])
    print(name + "\t" + command.replace("$$", "$").replace("127.0.0.1:8080", f"127.0.0.1:{sys.argv[1]}"))
PY
)
started=$(date +%s)
while IFS=$'\t' read -r name command; do
  until in_image "$command" >/dev/null 2>&1; do
    if (( $(date +%s) - started > TIMEOUT )); then
      echo "$name: health check still failing after ${TIMEOUT}s: $command" >&2
      tail -n 20 "$WORK/serve.log" "$WORK/jobs.log" >&2
      exit 1
    fi
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null || { echo "a process of the stack exited" >&2; tail -n 20 "$WORK/serve.log" "$WORK/jobs.log" >&2; exit 1; }; done
    sleep 2  # the compose interval is 10 s; polling faster only shortens the check
  done
  echo "$name: healthy after $(( $(date +%s) - started )) s ($command)"
done <<<"$checks"
curl -fsS "http://127.0.0.1:$port/readyz"; echo
curl -fsS -o /dev/null -w "GET /api/docs: %{http_code}\n" "http://127.0.0.1:$port/api/docs"
curl -fsS -o /dev/null -w "GET /widget.js: %{http_code}\n" "http://127.0.0.1:$port/widget.js" || true

say "5. sizes"
venv=$(readlink -f "$REPO/.venv")
site=$(chroot "$ROOT" /usr/local/python/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
printf '%-46s %s\n' \
  "root filesystem after the build (the image)" "$image_size" \
  "  and after the first start (+ /var/lib/parley)" "$(du -sxh "$ROOT" | cut -f1)" \
  "  of which the base (debootstrap + python)" "$(du -sxh "$BASE" | cut -f1)" \
  "  of which site-packages" "$(du -sxh "$ROOT$site" | cut -f1)" \
  "  of which torch" "$(du -sxh "$ROOT$site/torch" | cut -f1)" \
  "development venv ($venv)" "$(du -sxh "$venv" | cut -f1)" \
  "  of which torch" "$(du -sxh "$venv"/lib/python3*/site-packages/torch | cut -f1)"
echo "nvidia packages in the root: $(chroot "$ROOT" /usr/local/python/bin/pip list 2>/dev/null | grep -ci '^nvidia-' || true)"
say "image check passed"
