"""The atheris harness (``python -m fuzzing``) without atheris: every target runs on every
seed, so the harness keeps working in CI where the optional ``fuzz`` extra is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzzing import targets
from fuzzing.__main__ import NAMES
from teaclave_ma.errors import InputError
from teaclave_ma.transport.evidence import bound_quote, extract_evidence


def test_every_command_line_target_has_a_target_and_seeds() -> None:
    assert set(NAMES) == set(targets.TARGETS)


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_target_runs_on_every_seed(name: str) -> None:
    target, seeds = targets.TARGETS[name]
    assert len(seeds()) >= 6
    for seed in seeds().values():
        target(seed)


def test_quote_seeds_cover_every_version() -> None:
    versions = {seed[0] for seed in targets.quote_seeds().values()}
    assert versions == {3, 4, 5}


def test_certificate_seeds_cover_every_mode_and_bind_their_key() -> None:
    """Seeds must pass extraction and binding, or the fuzzer would start at the first check."""
    seeds = targets.certificate_seeds().values()
    assert {seed[0] for seed in seeds} == set(targets.CertificateMode)
    for seed in seeds:
        assert bound_quote(extract_evidence(targets.certificate_input(seed)))


@pytest.mark.parametrize("name", sorted(targets.TARGETS))
def test_an_unexpected_exception_is_a_finding(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The library's own errors are swallowed; anything else escapes, for atheris to report."""
    target, seeds = targets.TARGETS[name]
    seed = next(iter(seeds().values()))

    def refuses(_data: bytes) -> None:
        raise InputError("quote", "refused")

    def breaks(_data: bytes) -> None:
        raise ZeroDivisionError

    # The library call through which each target reaches the quote.
    entry = {"quote": "parse_quote", "certificate": "bound_quote"}[name]
    monkeypatch.setattr(targets, entry, refuses)
    target(seed)
    monkeypatch.setattr(targets, entry, breaks)
    with pytest.raises(ZeroDivisionError):
        target(seed)


def test_a_kept_platform_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved inputs stay valid across runs: the second process loads the first one's root."""
    monkeypatch.setattr(targets, "platform_dir", tmp_path)
    targets.simulated_platform.cache_clear()
    try:
        first = targets.simulated_platform().root_certificate_der
        targets.simulated_platform.cache_clear()
        assert targets.simulated_platform().root_certificate_der == first
    finally:
        targets.simulated_platform.cache_clear()
