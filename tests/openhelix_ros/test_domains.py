"""Isolated ROS domain ids: inside the safe range, never the user's, the deployment's or a taken one."""
import random

import pytest

from openhelix_ros.domains import ISOLATED_DOMAINS, isolated_domain_id
from openhelix_ros.security import DEFAULT_DOMAIN_ID


def test_never_the_users_the_deployments_or_an_avoided_domain(monkeypatch):
    monkeypatch.setenv("ROS_DOMAIN_ID", "7")
    drawn = {isolated_domain_id(avoid={8, 9}) for _ in range(2000)}
    assert drawn <= set(ISOLATED_DOMAINS) and 0 not in drawn
    assert not drawn & {7, 8, 9, DEFAULT_DOMAIN_ID}
    assert len(drawn) > 50  # spread over the range, so concurrent runs rarely meet


def test_a_seeded_random_module_does_not_make_every_process_draw_the_same_domain():
    random.seed(0)
    first = [isolated_domain_id() for _ in range(20)]
    random.seed(0)
    assert [isolated_domain_id() for _ in range(20)] != first


def test_an_exhausted_range_is_an_error(monkeypatch):
    monkeypatch.delenv("ROS_DOMAIN_ID", raising=False)
    with pytest.raises(ValueError, match="no domain"):
        isolated_domain_id(avoid=ISOLATED_DOMAINS)
