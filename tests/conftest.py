"""One Ray instance for the whole test session, started here and only stopped
here when this session started it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    import ray

    started = not ray.is_initialized()
    if started:
        # More logical CPUs than cores: Ray Data and (later) Train workers must
        # never starve each other on this 2-core machine.
        # The dashboard (127.0.0.1) serves the state API that Ray Train uses to
        # reclaim the placement groups of trials Tune stops early; without it
        # the next trial can wait forever for CPUs.
        # Named to its own workers: with another local Ray on the machine (a `rayfolio run` a test
        # starts), Train's placement-group cleaner would otherwise fail to find this one.
        from rayfolio.cluster.runtime import init_local_ray

        init_local_ray(num_cpus=4, include_dashboard=True, log_to_driver=False, object_store_memory=512 << 20)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()
