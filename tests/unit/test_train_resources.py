"""Resource checks at submission: a job the cluster can never place is refused before it waits forever."""

from __future__ import annotations

import pytest

from factory.errors import InvalidInputError
from factory.train._resources import check_resources, worker_bundle

TWO_CPU = [{"CPU": 2.0, "memory": 8e9}]


def test_fractional_workers_fit_a_small_machine():
    """Two workers of half a CPU fit on a 2-core machine, and so do four."""
    check_resources(2, {"CPU": 0.5}, TWO_CPU)
    check_resources(4, {"CPU": 0.5}, TWO_CPU)


def test_more_cpus_than_the_cluster_has_is_refused():
    """Asking for 3 CPUs on a 2-CPU cluster names both numbers and the settings to lower."""
    with pytest.raises(InvalidInputError, match=r"3 workers x 1 CPU = 3 CPU, and the cluster has 2.*compute.workers"):
        check_resources(3, {"CPU": 1.0}, TWO_CPU)


def test_gpus_on_a_cpu_cluster_are_refused():
    """A GPU tier on a cluster without GPUs is refused, naming the accelerator type."""
    with pytest.raises(InvalidInputError, match="needs A100 GPUs, and the cluster has no GPUs"):
        check_resources(1, worker_bundle({"CPU": 1, "GPU": 1}, "A100"), TWO_CPU)
    nodes = [{"CPU": 8, "GPU": 1, "accelerator_type:L4": 1}]
    with pytest.raises(InvalidInputError, match="needs H100 GPUs, and the cluster has only L4"):
        check_resources(1, worker_bundle({"CPU": 1, "GPU": 1}, "H100"), nodes)
    with pytest.raises(InvalidInputError, match="2 workers x 1 GPU"):
        check_resources(2, worker_bundle({"CPU": 1, "GPU": 1}, "L4"), nodes)
    check_resources(1, worker_bundle({"CPU": 1, "GPU": 1}, "L4"), nodes)


def test_a_worker_bigger_than_any_node_is_refused_even_when_the_total_fits():
    """Two nodes of 2 CPUs hold 4 CPUs, but never one worker of 3."""
    nodes = [{"CPU": 2.0}, {"CPU": 2.0}]
    with pytest.raises(InvalidInputError, match="can hold only 0 at once"):
        check_resources(1, {"CPU": 3.0}, nodes)
    with pytest.raises(InvalidInputError, match="can hold only 2 at once"):
        check_resources(3, {"CPU": 1.5}, [{"CPU": 2.0}, {"CPU": 2.0}, {"CPU": 0.5}])
    check_resources(2, {"CPU": 1.5}, nodes)
