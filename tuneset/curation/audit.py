"""The accounting: every input row ends kept, dropped, corrected or quarantined, with a reason.

The curated output plus the audit reconstruct the input exactly; `check_accounting` proves it.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from tuneset.errors import TunesetError

ACTIONS = ("kept", "dropped", "corrected", "quarantined")
AUDIT_SCHEMA = {
    "id": pl.String, "source": pl.String, "action": pl.String, "reason": pl.String,
    "old_response": pl.String, "new_response": pl.String,
    # The rest of the input row, so curated output + audit rebuild the input exactly.
    "instruction": pl.String, "choices": pl.List(pl.String), "metadata": pl.String,
}


def audit_frame(records: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(records, schema=AUDIT_SCHEMA)


def check_accounting(audit: pl.DataFrame, n_input: int) -> dict[str, int]:
    """Counts per action; raises if any input row is missing or counted twice."""
    counts = {a: int((audit["action"] == a).sum()) for a in ACTIONS}
    unknown = set(audit["action"].unique().to_list()) - set(ACTIONS)
    if unknown:
        raise TunesetError(f"audit has unknown actions {sorted(unknown)}; valid: {', '.join(ACTIONS)}")
    if sum(counts.values()) != n_input or audit.height != n_input:
        raise TunesetError(f"accounting broken: {counts} sums to {sum(counts.values())}, input had {n_input} rows")
    ids = audit.filter(pl.col("action") != "quarantined")["id"]
    if ids.n_unique() != ids.len():
        raise TunesetError("accounting broken: an id appears twice in the audit")
    return counts


def summary_by_source(audit: pl.DataFrame) -> pl.DataFrame:
    return (
        audit.with_columns(pl.col("source").fill_null("<quarantined>"))
        .pivot(on="action", index="source", values="id", aggregate_function="len")
        .fill_null(0)
        .sort("source")
    )


def reconstruct_input(curated: pl.DataFrame, audit: pl.DataFrame) -> pl.DataFrame:
    """The input rows, rebuilt from the curated rows plus the audit (quarantined lines excepted,
    they never parsed): kept rows as they are, corrected rows with their old response back,
    dropped rows from the audit. Proves nothing was lost."""
    from tuneset.data.schema import ROW_SCHEMA

    rows = audit.filter(pl.col("action") != "quarantined")
    out = curated.select(list(ROW_SCHEMA)).join(
        rows.select("id", "action", "old_response"), on="id", how="full", coalesce=True)
    missing = out.filter(pl.col("action").is_null())
    if missing.height:
        raise TunesetError(f"curated row '{missing['id'][0]}' is not in the audit")
    dropped = rows.filter(pl.col("action") == "dropped").select(
        "id", "source", "instruction", pl.col("old_response").alias("response"), "choices", "metadata")
    kept = out.filter(pl.col("action") != "dropped").with_columns(
        pl.when(pl.col("action") == "corrected").then(pl.col("old_response")).otherwise(pl.col("response")).alias("response"))
    full = pl.concat([kept.select(list(ROW_SCHEMA)), dropped.select(list(ROW_SCHEMA))])
    return rows.select("id").join(full, on="id", how="left", maintain_order="left")
