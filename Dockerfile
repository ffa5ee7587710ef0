# The node image, built from the project's wheel:
#   docker build -t tadpole-state:0.1.0 .
# Runs `tadpole node`; pass its flags (or --config FILE) as the container command.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY consensus consensus
COPY crdt crdt
COPY gossip gossip
COPY node node
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/tadpole --create-home tadpole
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN python -m venv /opt/tadpole/venv \
    && /opt/tadpole/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels \
       -c /tmp/constraints.txt tadpole-state \
    && rm -rf /wheels /tmp/constraints.txt
ENV PATH=/opt/tadpole/venv/bin:$PATH
USER tadpole
WORKDIR /var/lib/tadpole
# gRPC (clients and peers), then Prometheus /metrics and /healthz.
EXPOSE 7101 7201
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7201/healthz', timeout=2)"
ENTRYPOINT ["tadpole", "node"]
