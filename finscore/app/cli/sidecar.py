"""`finscore sidecar`: run the sidecar (:mod:`finscore.app.sidecar`) until Ctrl-C/SIGTERM."""

from __future__ import annotations

import click

from finscore.app.sidecar import Sidecar, SidecarConfig
from finscore.logging import get_logger

log = get_logger("sidecar")


@click.command()
@click.option(
    "--interval", type=float, default=0.0, help="Also recompress every S seconds (0 = off)."
)
@click.option("--min-outcomes", type=int, default=5000, show_default=True)
@click.option("--ap-drop", type=float, default=0.10, show_default=True, help="Drift trigger.")
@click.option(
    "--tolerance", type=float, default=0.02, show_default=True, help="Gate vs the champion."
)
@click.option("--metrics-port", type=int, default=None,
              help="Serve the sidecar's status on /health at this port (0 = any free).")  # fmt: skip
def sidecar(
    interval: float, min_outcomes: int, ap_drop: float, tolerance: float, metrics_port: int | None
) -> None:
    """Watch model quality and drift; recompress, gate, sign and hot-swap fraud and market
    models."""
    import signal

    from finscore.settings import Settings
    from finscore.streams.admin import check_reachable

    s = Settings()
    check_reachable(s.kafka_config())
    sc = Sidecar(SidecarConfig(
        client=s.kafka_config(), topic_prefix=s.topic_prefix, registry_dir=s.registry_dir,
        signing_key=s.model_keys().signing_key, allow_unsigned=s.allow_unsigned_models,
        interval_s=interval, min_outcomes=min_outcomes, ap_drop=ap_drop, tolerance=tolerance,
        schema_registry=s.schema_registry_config(),
    ))  # fmt: skip
    if sc.cfg.signing_key is None:
        log.warning("security.no_signing_key", unsigned_allowed=s.allow_unsigned_models,
                    message="the sidecar has no signing key: recompressed models are "
                    + ("announced UNSIGNED (development only)" if s.allow_unsigned_models
                       else "not published"))  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sc.stop())
    signal.signal(signal.SIGINT, lambda *_: sc.stop())
    server = None
    if metrics_port is not None:
        from finscore.app.sidecar.status import StatusServer

        server = StatusServer(sc.status, metrics_port, s.metrics_host).start()
        log.info("sidecar.status_server", url=server.url + "/health")
    try:
        sc.run()
    finally:
        if server is not None:
            server.stop()
