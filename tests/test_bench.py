"""hwlib.bench: results files and the Worker that runs one side of a comparison in a process of its own."""
from __future__ import annotations

import os

import pytest
import torch

from hwlib.bench import Worker, is_dense


class _Probe:
    """What a Worker builds in its process: reports what it sees there."""

    def __init__(self, value: int) -> None:
        self.value = value

    def report(self) -> tuple[int, str | None, int, int]:
        return self.value, os.environ.get("HWLIB_PROBE"), torch.get_num_threads(), os.getpid()

    def fail(self) -> None:
        raise ValueError("bad input")


def test_worker_builds_and_calls_an_object_in_its_own_process():
    worker = Worker(_Probe, "the probe", env={"HWLIB_PROBE": "yes"}, value=3)
    try:
        value, env, threads, pid = worker("report")
        assert (value, env, threads) == (3, "yes", torch.get_num_threads())  # the parent's thread count
        assert pid != os.getpid() and "HWLIB_PROBE" not in os.environ  # its own process and environment
        with pytest.raises(RuntimeError, match=r"(?s)the probe failed in its process.*ValueError: bad input"):
            worker("fail")
    finally:
        worker.close()
    assert not worker.process.is_alive()


def test_is_dense_names_convolutions_and_matrix_products():
    assert is_dense("aten::mkldnn_convolution") and is_dense("aten::addmm") and is_dense("aten::linear")
    assert not is_dense("aten::add_") and not is_dense("aten::native_group_norm")


def test_gemm_gflop_per_s_is_the_flops_of_a_matrix_product_over_its_median_time(monkeypatch):
    import time

    from hwlib.bench import gemm_gflop_per_s

    # a clock that only the matrix products move: the warm-up takes 9 s, the timed products 2, 1 and 4 s
    clock, durations, calls = [0.0], iter([9.0, 2.0, 1.0, 4.0]), []

    def product(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append((a.shape, a.dtype))
        clock[0] += next(durations)
        return a

    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    monkeypatch.setattr(torch.Tensor, "__matmul__", product)
    rate = gemm_gflop_per_s("cpu", torch.bfloat16, n=8, repeats=3)
    assert rate == pytest.approx(2 * 8 ** 3 / 2.0 / 1e9)  # the median of 2, 1 and 4 s; the warm-up left out
    assert calls == [((8, 8), torch.bfloat16)] * 4


def test_ratio_summary_is_the_median_with_its_range_under_one_name():
    from hwlib.bench import ratio_summary

    assert ratio_summary([1.2, 0.9, 1.5]) == {"speedup": 1.2, "speedup_min": 0.9, "speedup_max": 1.5,
                                              "speedup_per_round": [1.2, 0.9, 1.5]}
    assert ratio_summary([1.234, 1.0], "keep_over_glibc", digits=2) == {
        "keep_over_glibc": 1.12, "keep_over_glibc_min": 1.0, "keep_over_glibc_max": 1.23,
        "keep_over_glibc_per_round": [1.23, 1.0]}


def test_minor_page_faults_count_memory_the_kernel_maps_afresh():
    import mmap

    from hwlib.bench import minor_page_faults

    before = minor_page_faults()
    # fresh anonymous pages from the kernel, faulted in when written (not malloc's: an earlier test in this process
    # may have set train.keep_freed_memory, after which malloc serves a block from memory it kept)
    with mmap.mmap(-1, 128 << 20) as block:
        block[::4096] = bytes(len(range(0, len(block), 4096)))
        assert minor_page_faults() - before >= (128 << 20) // (2 << 20)  # at least one fault per 2 MiB (huge pages)
