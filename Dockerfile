FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pyapp ./pyapp
COPY jobs ./jobs
RUN pip install --no-cache-dir .
COPY migrations ./migrations
COPY sql ./sql
COPY widget ./widget
RUN cd widget && npm ci --no-audit --no-fund && npm run build && rm -rf node_modules
ENV PARLEY_HOST=0.0.0.0 PARLEY_PORT=8080 PARLEY_DATA_DIR=/var/lib/parley
EXPOSE 8080
CMD ["parley", "serve"]
