"""Which usage engine a worker runs: `METERLINE_ENGINE` (`Settings.engine`).

- `native`: the Rust engine (`streams.usage.engine.native`); an error naming
  METERLINE_ENGINE when it is not installed (`make install` builds it when cargo is on
  PATH);
- `python`: the reference engine;
- `auto` (the default): native when it can be imported, else python.

`make_engine` returns the engine and its name ("native", "native (2 threads)" or
"python"), for the worker's start-up log and /healthz. The native engine folds a batch on
`threads` threads (`METERLINE_ENGINE_THREADS`), each holding a share of the partitions.
"""

from __future__ import annotations

from streams.schemas.catalog import Catalog
from streams.usage.engine.contract import Limits, UsageEngine
from streams.usage.engine.reference import ReferenceEngine
from streams.usage.validate import Horizon

KINDS = ("auto", "native", "python")


class EngineUnavailable(RuntimeError):
    """METERLINE_ENGINE=native, and the native engine cannot be imported."""


def make_engine(
    kind: str,
    partitions: int,
    catalog: Catalog | None,
    horizon: Horizon,
    retention_days: int,
    limits: Limits,
    threads: int = 1,
) -> tuple[UsageEngine, str]:
    if kind not in KINDS:
        raise ValueError(f"METERLINE_ENGINE must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind != "python":
        try:
            from streams.usage.engine.native import NativeEngine
        except ImportError as exc:
            if kind == "native":
                raise EngineUnavailable(
                    f"METERLINE_ENGINE=native, but the native usage engine is not installed "
                    f"({exc}); run `make install` with cargo on PATH to build it, or set "
                    "METERLINE_ENGINE=auto (or python) to use the Python engine"
                ) from exc
        else:
            native = NativeEngine(partitions, catalog, horizon, retention_days, limits, threads)
            return native, "native" if threads == 1 else f"native ({threads} threads)"
    return ReferenceEngine(partitions, catalog, horizon, retention_days, limits), "python"
