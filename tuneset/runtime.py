"""Process set-up that must happen before Prefect is imported: PREFECT_HOME in the user's
tuneset home (never the current directory: importing tuneset must not litter it, and every run
lands in one history whatever the directory it started from), telemetry off (no internet here:
it logged errors and once locked Prefect's SQLite database), our logger routed into Prefect's
run logs."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "tuneset",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
}


def cache_dir() -> Path:
    """Machine-wide cache for what no recipe changes (the converted embedded model)."""
    return Path(os.environ.get("TUNESET_CACHE", Path.home() / ".cache" / "tuneset")).expanduser()


def home() -> Path:
    """Per-user state (Prefect's database and logs): TUNESET_HOME, else ~/.tuneset."""
    return Path(os.environ.get("TUNESET_HOME", Path.home() / ".tuneset")).expanduser().resolve()


def configure() -> None:
    for k, v in DEFAULTS.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("PREFECT_HOME", str(home() / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect does not create parents
    import logging
    import warnings

    if logging.getLogger("tuneset").level == logging.NOTSET:
        logging.getLogger("tuneset").setLevel(logging.INFO)  # Prefect prints it (extra logger)

    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")
