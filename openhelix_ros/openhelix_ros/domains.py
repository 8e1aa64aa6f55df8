"""ROS domain ids for runs that start their own nodes and must not cross-talk with anything
else on the host: the tests, bag evaluation, benchmarks, evaluation workers.

One domain per run keeps two runs (two test sessions, a test beside a demo) from hearing
each other's topics, and keeps them off the domain the user works in.
"""
from __future__ import annotations

import os
import random
from collections.abc import Collection

from openhelix_ros.security import DEFAULT_DOMAIN_ID

#: Domains an isolated run may take. On Linux, 101 is the largest domain whose DDS ports all
#: stay below the kernel's ephemeral port range (ROS 2 "The ROS_DOMAIN_ID" guide); 0 is every
#: ROS install's default, so it is never taken.
ISOLATED_DOMAINS = range(1, 102)


def _user_domain_id() -> int:
    """The domain the user's shell runs ROS in: ``ROS_DOMAIN_ID``, or ROS's default 0."""
    value = os.environ.get("ROS_DOMAIN_ID", "").strip()
    return int(value) if value.isdigit() else 0


def isolated_domain_id(avoid: Collection[int] = ()) -> int:
    """A ROS domain id for a run of its own, different per process (and per call).

    Drawn at random from :data:`ISOLATED_DOMAINS`, leaving out the user's domain
    (``ROS_DOMAIN_ID``, else 0), the split deployment's (``config/split_deployment.env``) and
    ``avoid`` (domains this process already uses, such as other evaluation workers'). Two
    processes drawing at the same time share a domain with a probability of about 1 in 100;
    nothing on the network is probed.
    """
    taken = {_user_domain_id(), DEFAULT_DOMAIN_ID, *avoid}
    free = [domain for domain in ISOLATED_DOMAINS if domain not in taken]
    if not free:
        raise ValueError(f"no domain of {ISOLATED_DOMAINS} is left once {sorted(taken)} are avoided")
    # The OS's entropy, not the random module: tests seed that one, which would give every
    # process of a test run the same domain.
    return random.SystemRandom().choice(free)


__all__ = ["ISOLATED_DOMAINS", "isolated_domain_id"]
