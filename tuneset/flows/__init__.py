"""Prefect flows: score, curate, select, finetune, evaluate, pipeline, compare, serve.

Tasks pass paths and fingerprints, never DataFrames; each expensive result lives in the
content-addressed store, so reruns and interrupted runs pick up finished work."""

from tuneset.runtime import configure

configure()
