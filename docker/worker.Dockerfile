# finscore worker image: onnxruntime only, no torch (the `compress` extra is never installed).
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t finscore-worker .
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY finscore ./finscore
COPY streams ./streams
COPY schemas ./schemas
COPY compression ./compression
RUN python -m pip wheel --wheel-dir /wheels .

FROM python:3.11.10-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    FINSCORE_LOG_FORMAT=json FINSCORE_METRICS_PORT=9100 FINSCORE_METRICS_HOST=0.0.0.0
COPY --from=build /wheels /wheels
RUN python -m pip install /wheels/finscore-*.whl --find-links /wheels && rm -rf /wheels \
    && useradd --create-home --uid 10001 finscore \
    && mkdir -p /models /home/finscore/reports \
    && chown finscore:finscore /models /home/finscore/reports
USER finscore
WORKDIR /home/finscore
EXPOSE 9100
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9100/health', timeout=2)" || exit 1
ENTRYPOINT ["finscore"]
CMD ["worker", "fraud"]
