# Parley's production image: the server (`parley serve`) and the jobs process (`parley jobs`).
#
# Stage 1 builds the widget with Node; the final image has no Node, npm or node_modules.
FROM node:20-bookworm-slim AS widget
WORKDIR /widget
COPY widget/package.json widget/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY widget/ ./
RUN npm run build

FROM python:3.11-slim-bookworm
WORKDIR /app
# torch first, from PyTorch's CPU-only wheel index, at the version pyproject.toml pins: a plain
# `pip install .` would resolve PyPI's default Linux build, which pulls the CUDA libraries
# (gigabytes the embedding model never uses). The project's own install below then finds
# torch==X already satisfied (X+cpu matches ==X) and leaves it. This index is used for torch only.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
COPY pyproject.toml README.md constraints.txt ./
RUN TORCH_PIN="$(python -c 'import re,tomllib;print(next(d for d in tomllib.load(open("pyproject.toml","rb"))["project"]["dependencies"] if re.match(r"torch\b",d)))')" \
 && pip install --no-cache-dir --index-url "$TORCH_INDEX" "$TORCH_PIN" \
 && python -c "import torch; assert not torch.cuda.is_available() and torch.version.cuda is None, torch.__version__; print('torch', torch.__version__, 'CPU only')"
COPY pyapp ./pyapp
COPY jobs ./jobs
RUN pip install --no-cache-dir -c constraints.txt . \
 && python -c "import torch; assert torch.version.cuda is None, 'the project install replaced the CPU torch'" \
 && ! pip list 2>/dev/null | grep -i '^nvidia-'
COPY migrations ./migrations
COPY sql ./sql
COPY --from=widget /widget/dist ./widget/dist
# Run the source tree in /app (migrations, sql, templates and widget/dist sit beside pyapp there),
# not the copy pip put in site-packages, which has the code but not those files.
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1 \
    PARLEY_HOST=0.0.0.0 PARLEY_PORT=8080 PARLEY_DATA_DIR=/var/lib/parley PARLEY_LOG_FORMAT=json
# The embedding model's ONNX files, exported here once from the installed weights instead of at each
# new container's first start (which wrote ~150 MB into the data directory and delayed /readyz).
ENV PARLEY_MODEL_CACHE=/opt/parley-model
RUN parley embeddings export
RUN useradd --system --home /var/lib/parley --create-home parley
USER parley
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"
CMD ["parley", "serve"]
