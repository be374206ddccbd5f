"""Rows in, validated and fingerprinted; bad rows named or quarantined, never dropped silently."""

from tuneset.data.fingerprint import dataset_fingerprint, fingerprint
from tuneset.data.io import LoadResult, load_rows, read_jsonl, write_jsonl
from tuneset.data.schema import ROW_COLUMNS, Example

__all__ = [
    "Example", "LoadResult", "ROW_COLUMNS", "dataset_fingerprint",
    "fingerprint", "load_rows", "read_jsonl", "write_jsonl",
]
