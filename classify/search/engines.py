"""Where stage 2's cross-validation fits run: this machine's cores, or a Ray cluster."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import ClassifyError


@contextlib.contextmanager
def search_backend(engine: str, ray_address: str | None = None) -> Iterator[None]:
    """Run the searches inside this block on ``engine``.

    ``local`` changes nothing (joblib's own processes). ``ray`` joins the cluster at
    ``ray_address`` (default ``$RAY_ADDRESS``, else a local instance started here and stopped
    on leaving) and makes every joblib task a Ray task: each cross-validation fit of a search.
    Setup failures raise :class:`ClassifyError` in one line; ``local`` never imports Ray.
    """
    if engine != "ray":
        yield
        return
    from extract.ray_engine import RayEngineError, RayOptions, connect, ray_available

    if not ray_available():
        raise ClassifyError('--engine ray needs Ray: pip install -e ".[ray]"')
    import joblib
    import ray
    from ray.util.joblib import register_ray

    try:
        started = connect(RayOptions(address=ray_address))
    except RayEngineError as exc:
        raise ClassifyError(str(exc)) from None
    try:
        register_ray()
        with joblib.parallel_backend("ray"):
            yield
    finally:
        if started:  # an instance of ours: stop it; a cluster we joined keeps running
            ray.shutdown()
