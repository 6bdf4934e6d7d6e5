"""Per-phase measurement and the process set-up that the runner applies (glibc heap settings)."""
import platform
import resource

import pytest
import torch

from stbench.measure import Meter, setup_process

MIB = 1 << 20
glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc heap settings")


def _touch(nbytes: int) -> torch.Tensor:
    return torch.empty(nbytes // 4).fill_(1.0)


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@glibc_only
def test_a_freed_large_tensor_is_reused_without_page_faults():
    """Training allocates the same large activations every step. Without the set-up glibc maps a
    64 MiB block afresh each time (16,384 faults per allocation). With it, a freed block is reused
    once glibc's per-size cache of small split-off remainders (7 entries) has filled: until then
    each remainder keeps the freed block from merging with its neighbour, so the first rounds are
    fresh memory."""
    setup_process()
    for _ in range(10):
        del_me = _touch(64 * MIB)
        del del_me
    before = _minor_faults()
    again = _touch(64 * MIB)
    faults = _minor_faults() - before
    assert faults < 64 * MIB // 4096 // 10, faults
    del again


@glibc_only
def test_a_phase_peak_does_not_count_memory_freed_by_an_earlier_phase():
    setup_process()
    meter = Meter()
    with meter.phase("big"):
        big = _touch(256 * MIB)
        del big
    with meter.phase("small"):
        small = _touch(MIB)
        del small
    if meter.rss_peak_is_process:
        pytest.skip("this kernel does not let the RSS high-water mark be reset")
    assert meter.rss_peak["big"] - meter.rss_peak["small"] > 200 * MIB
