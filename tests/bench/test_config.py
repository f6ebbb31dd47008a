"""Configuration: protocol overrides, devices, scoring precision, and where caches live."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from bench.paths import cache_root, default_data_root
from bench.run import config
from bench.run.config import ConfigError, RunConfig, check_protocol, resolve_device, resolve_score_dtype
from tasks.base import Protocol

DEFAULTS = Protocol(initial=10, increment=5, rounds=3, epochs=2, batch_size=8, lr=1e-3)


def test_flags_override_only_what_they_set():
    protocol = RunConfig(task="t", strategies=["random"], increment=7, lr=0.1).protocol(DEFAULTS)
    assert protocol == Protocol(initial=10, increment=7, rounds=3, epochs=2, batch_size=8, lr=0.1)


@pytest.mark.parametrize(
    "field, value", [("rounds", 0), ("initial", 0), ("epochs", 0), ("batch_size", 0), ("increment", -1), ("lr", 0.0)]
)
def test_non_positive_sizes_are_refused(field, value):
    with pytest.raises(ConfigError):
        check_protocol(DEFAULTS.replace(**{field: value}), 1000, "the pool")


def test_auto_device_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("tpu")


def test_auto_scoring_precision_is_bfloat16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(config, "fast_bfloat16", lambda device: True)
    assert resolve_score_dtype("auto", cpu) == torch.bfloat16
    monkeypatch.setattr(config, "fast_bfloat16", lambda device: False)
    assert resolve_score_dtype("auto", cpu) == torch.float32
    assert resolve_score_dtype("bfloat16", cpu) == torch.bfloat16
    assert resolve_score_dtype("float32", cpu) == torch.float32
    with pytest.raises(ConfigError, match="--score-dtype"):
        resolve_score_dtype("float16", cpu)


def test_bfloat16_scoring_ranks_like_float32():
    from bench.testing import trained_context

    ctx = trained_context()
    exact = ctx.pool_probabilities
    ctx_bf16 = trained_context()
    ctx_bf16.score_dtype = torch.bfloat16
    approx = ctx_bf16.pool_probabilities
    assert approx.dtype == torch.float32
    torch.testing.assert_close(approx, exact, atol=2e-2, rtol=0)


def test_cache_and_data_folders_follow_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("BENCH_DATA", str(tmp_path / "d"))
    assert cache_root() == tmp_path / "c" and default_data_root() == tmp_path / "d"
    monkeypatch.delenv("BENCH_CACHE")
    monkeypatch.delenv("BENCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert cache_root() == Path(tmp_path / "x" / "latent-bench")
    assert default_data_root() == cache_root() / "data"


def test_cuda_runs_are_reproducible_unless_asked_otherwise(monkeypatch):
    import torch

    from bench.run.assembly import reproducible_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    try:
        reproducible_kernels(torch.device("cpu"), nondeterministic=False)
        assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ  # CPU runs need nothing
        reproducible_kernels(torch.device("cuda"), nondeterministic=False)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        reproducible_kernels(torch.device("cuda"), nondeterministic=True)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def test_a_manifest_from_before_start_modes_resumes_with_the_same_start():
    saved = asdict(RunConfig(task="mnist", strategies=["random"]))
    for old, start in ((True, None), (False, "reset")):
        legacy = {k: v for k, v in saved.items() if k not in ("start", "optimizer", "optimizer_options")}
        legacy["warm_start"] = old
        assert RunConfig.from_manifest(json.loads(json.dumps(legacy, default=str))).start == start
