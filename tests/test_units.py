"""Sizes, durations and counts as the UI, the CLI and error messages print them."""

from __future__ import annotations

from panel.units import GiB, MiB, human_bytes, human_eta, human_memory, human_params


def test_decimal_bytes_for_files() -> None:
    assert human_bytes(None) == "?"
    assert human_bytes(100) == "100 B"
    assert human_bytes(4_200_000) == "4.2 MB"
    assert human_bytes(8.1e9) == "8.1 GB"
    assert human_bytes(3e15) == "3000.0 TB"


def test_binary_bytes_for_memory() -> None:
    assert human_memory(88 * MiB) == "88 MiB"
    assert human_memory(int(1.2 * GiB)) == "1.2 GiB"
    assert human_memory(512 * 1024) == "512 KiB"
    assert human_memory(100) == "100 B"
    assert human_memory(2048 * GiB) == "2.0 TiB"


def test_eta_and_parameters() -> None:
    assert (human_eta(None), human_eta(45), human_eta(187), human_eta(7500)) == ("–", "45s", "3m07s", "2h05m")
    assert (human_params(None), human_params(134_515_008), human_params(7_000_000_000)) == ("?", "134.5M", "7B")
