# finscore worker image: onnxruntime only, no torch (the `compress` extra is never installed).
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t finscore-worker .
# Layers, least to most often changed: the dependencies (from pyproject.toml alone, so a code
# change reuses them), then the source, installed without its dependencies.
FROM python:3.11.10-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    FINSCORE_LOG_FORMAT=json FINSCORE_METRICS_PORT=9100 FINSCORE_METRICS_HOST=0.0.0.0
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && python -m pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt \
    && useradd --create-home --uid 10001 finscore \
    && mkdir -p /models /home/finscore/reports \
    && chown finscore:finscore /models /home/finscore/reports
COPY README.md ./
COPY finscore ./finscore
COPY streams ./streams
COPY schemas ./schemas
COPY compression ./compression
RUN python -m pip install --no-deps . && rm -rf /src/build
USER finscore
WORKDIR /home/finscore
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9100/health', timeout=2)" || exit 1
ENTRYPOINT ["finscore"]
CMD ["worker", "fraud"]
