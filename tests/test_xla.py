"""experiments.xla: the XLA_FLAGS it writes, and that it refuses once JAX's backend runs."""

import pytest

from experiments import xla


def test_cpu_flags():
    assert xla.cpu_flags(1) == [
        "--xla_cpu_multi_thread_eigen=false",
        "--xla_cpu_experimental_ynn_fusion_type=",
    ]
    assert xla.cpu_flags(2, ynnpack=True) == []
    with pytest.raises(ValueError, match="threads must be >= 1"):
        xla.cpu_flags(0)


def test_configure_cpu_keeps_user_flags_and_refuses_after_backend_start(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true --xla_foo=1")
    monkeypatch.setattr(xla, "backend_started", lambda: False)
    flags = xla.configure_cpu(1, pin=False)
    # the user's eigen setting is kept, the YNNPACK switch appended once
    assert flags.split() == [
        "--xla_cpu_multi_thread_eigen=true",
        "--xla_foo=1",
        "--xla_cpu_experimental_ynn_fusion_type=",
    ]
    assert xla.configure_cpu(1, pin=False) == flags  # idempotent
    monkeypatch.setenv("XLA_FLAGS", "")
    monkeypatch.setattr(xla, "backend_started", lambda: True)
    with pytest.raises(RuntimeError, match="already started"):
        xla.configure_cpu(1, pin=False)
