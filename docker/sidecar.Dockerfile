# finscore sidecar image: the `compress` extra with the CPU build of torch.
# Build from the repository root:  docker build -f docker/sidecar.Dockerfile -t finscore-sidecar .
FROM python:3.11.10-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 FINSCORE_LOG_FORMAT=json
WORKDIR /src
COPY pyproject.toml README.md ./
COPY finscore ./finscore
COPY streams ./streams
COPY schemas ./schemas
COPY compression ./compression
RUN python -m pip install --extra-index-url https://download.pytorch.org/whl/cpu ".[compress]" \
    && useradd --create-home --uid 10001 finscore \
    && mkdir -p /models /home/finscore/reports \
    && chown finscore:finscore /models /home/finscore/reports
USER finscore
WORKDIR /home/finscore
ENTRYPOINT ["finscore"]
CMD ["sidecar"]
