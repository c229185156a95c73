# finscore sidecar image: the `compress` extra with the CPU build of torch.
# Build from the repository root:  docker build -f docker/sidecar.Dockerfile -t finscore-sidecar .
# Layers, least to most often changed: the dependencies with the `compress` extra (from
# pyproject.toml alone, so a code change reuses them), then the source, without dependencies.
FROM python:3.11.10-slim-bookworm
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 FINSCORE_LOG_FORMAT=json
WORKDIR /src
COPY pyproject.toml ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['compress']))" > /tmp/requirements.txt \
    && python -m pip install --extra-index-url https://download.pytorch.org/whl/cpu -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
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
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:9100/health', timeout=2)" || exit 1
ENTRYPOINT ["finscore"]
CMD ["sidecar", "--metrics-port", "9100"]
