"""Rotation utilities: known values and round trips (numpy and torch)."""
import math

import numpy as np
import pytest
import torch

from openhelix_core import geometry as g

S = math.sqrt(0.5)


def _rx(a):
    return np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])


def _ry(b):
    return np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])


def _rz(c):
    return np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])


def _random_quaternions(n, seed=0):
    q = np.random.default_rng(seed).normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _same_rotation(q1, q2, atol=1e-6):
    return np.allclose(np.abs(np.sum(q1 * q2, axis=-1)), 1.0, atol=atol)


def test_quarter_turn_about_z():
    q = np.array([0.0, 0.0, S, S])
    expected = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(g.quaternion_to_matrix(q), expected, atol=1e-12)
    np.testing.assert_allclose(g.matrix_to_quaternion(expected), q, atol=1e-12)
    np.testing.assert_allclose(g.quaternion_to_euler(q, "xyz"), [0.0, 0.0, math.pi / 2], atol=1e-12)
    # The x axis goes to y.
    np.testing.assert_allclose(g.quaternion_to_matrix(q) @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)


def test_half_turns_and_identity():
    for axis in range(3):
        q = np.zeros(4)
        q[axis] = 1.0  # 180 degrees about that axis
        back = g.matrix_to_quaternion(g.quaternion_to_matrix(q))
        assert _same_rotation(back, q)
    np.testing.assert_allclose(g.matrix_to_quaternion(np.eye(3)), [0, 0, 0, 1], atol=1e-12)


def test_quaternion_matrix_round_trip_and_canonical_sign():
    q = _random_quaternions(500)
    back = g.matrix_to_quaternion(g.quaternion_to_matrix(q))
    assert np.all(back[:, 3] >= 0)
    assert _same_rotation(back, q, atol=1e-9)
    np.testing.assert_allclose(g.canonicalize_quaternion(q), back, atol=1e-9)


def test_matrix_is_proper_rotation():
    m = g.quaternion_to_matrix(_random_quaternions(100, seed=1))
    np.testing.assert_allclose(m @ np.swapaxes(m, -1, -2), np.broadcast_to(np.eye(3), m.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(m), 1.0, atol=1e-9)


def test_rotation_6d_is_first_two_columns_and_round_trips():
    q = _random_quaternions(200, seed=2)
    m = g.quaternion_to_matrix(q)
    r6 = g.matrix_to_rotation_6d(m)
    np.testing.assert_allclose(r6[:, :3], m[:, :, 0])
    np.testing.assert_allclose(r6[:, 3:], m[:, :, 1])
    np.testing.assert_allclose(g.rotation_6d_to_matrix(r6), m, atol=1e-9)
    assert _same_rotation(g.rotation_6d_to_quaternion(g.quaternion_to_rotation_6d(q)), q, atol=1e-9)


def test_rotation_6d_gram_schmidt_on_unnormalised_input():
    raw = torch.randn(64, 6, dtype=torch.float64)
    m = g.rotation_6d_to_matrix(raw)
    eye = torch.eye(3, dtype=torch.float64).expand(64, 3, 3)
    torch.testing.assert_close(m @ m.transpose(-1, -2), eye)
    torch.testing.assert_close(torch.linalg.det(m), torch.ones(64, dtype=torch.float64))
    # First column is the normalised first vector.
    torch.testing.assert_close(m[:, :, 0], raw[:, :3] / raw[:, :3].norm(dim=-1, keepdim=True))


def test_euler_conventions_known_values():
    angles = np.array([math.pi / 2, 0.0, math.pi / 2])
    # Extrinsic xyz (CALVIN / pybullet / scipy from_euler("xyz")): q = qz * qy * qx.
    np.testing.assert_allclose(g.euler_to_quaternion(angles, "xyz"), [0.5, 0.5, 0.5, 0.5], atol=1e-12)
    # Intrinsic XYZ (pytorch3d "XYZ"): q = qx * qy * qz.
    np.testing.assert_allclose(g.euler_to_quaternion(angles, "XYZ"), [0.5, -0.5, 0.5, 0.5], atol=1e-12)


def test_euler_matches_elementary_rotations():
    rng = np.random.default_rng(3)
    for a, b, c in rng.uniform(-3, 3, size=(20, 3)):
        np.testing.assert_allclose(g.euler_to_matrix(np.array([a, b, c]), "xyz"), _rz(c) @ _ry(b) @ _rx(a),
                                   atol=1e-12)
        np.testing.assert_allclose(g.euler_to_matrix(np.array([a, b, c]), "XYZ"), _rx(a) @ _ry(b) @ _rz(c),
                                   atol=1e-12)


@pytest.mark.parametrize("convention", ["xyz", "XYZ"])
def test_euler_round_trip(convention):
    rng = np.random.default_rng(4)
    euler = np.stack([rng.uniform(-np.pi, np.pi, 300), rng.uniform(-1.5, 1.5, 300),
                      rng.uniform(-np.pi, np.pi, 300)], axis=-1)
    np.testing.assert_allclose(g.matrix_to_euler(g.euler_to_matrix(euler, convention), convention), euler,
                               atol=1e-9)
    q = _random_quaternions(300, seed=5)
    assert _same_rotation(g.euler_to_quaternion(g.quaternion_to_euler(q, convention), convention), q, atol=1e-9)


@pytest.mark.parametrize("convention", ["xyz", "XYZ"])
def test_euler_gimbal_lock_gives_same_rotation(convention):
    m = g.euler_to_matrix(np.array([0.3, math.pi / 2, -0.7]), convention)
    euler = g.matrix_to_euler(m, convention)
    assert euler[2] == 0.0
    np.testing.assert_allclose(g.euler_to_matrix(euler, convention), m, atol=1e-9)


def test_torch_float32_and_batch_shapes():
    q = torch.tensor(_random_quaternions(12, seed=6), dtype=torch.float32).view(3, 4, 4)
    m = g.quaternion_to_matrix(q)
    assert m.shape == (3, 4, 3, 3) and m.dtype == torch.float32
    back = g.matrix_to_quaternion(m)
    assert torch.allclose((back * q).sum(-1).abs(), torch.ones(3, 4), atol=1e-5)
    e = g.quaternion_to_euler(q, "XYZ")
    assert e.shape == (3, 4, 3)


def test_wrap_angle_and_multiply_and_angle():
    np.testing.assert_allclose(g.wrap_angle(np.array([3 * math.pi / 2, -3 * math.pi / 2, 0.1])),
                               [-math.pi / 2, math.pi / 2, 0.1], atol=1e-12)
    qz = np.array([0.0, 0.0, S, S])
    np.testing.assert_allclose(g.quaternion_multiply(qz, qz), [0.0, 0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(g.quaternion_angle(qz, np.array([0.0, 0.0, 0.0, 1.0])), math.pi / 2, atol=1e-9)
    m1, m2 = g.quaternion_to_matrix(_random_quaternions(2, seed=7))
    prod = g.quaternion_multiply(g.matrix_to_quaternion(m1), g.matrix_to_quaternion(m2))
    np.testing.assert_allclose(g.quaternion_to_matrix(prod), m1 @ m2, atol=1e-9)


def test_slerp_follows_the_shorter_arc_at_constant_speed():
    start, quarter_turn = np.array([0.0, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, S, S])
    for fraction in (0.0, 0.25, 0.5, 1.0):
        blended = g.quaternion_slerp(start, quarter_turn, fraction)
        np.testing.assert_allclose(g.quaternion_angle(blended, start), fraction * math.pi / 2, atol=1e-9)
    # -quarter_turn is the same rotation: interpolation takes the short way, not the 270 degree one.
    np.testing.assert_allclose(g.quaternion_slerp(start, -quarter_turn, 0.5), g.quaternion_slerp(start, quarter_turn, 0.5),
                               atol=1e-12)
    np.testing.assert_allclose(g.quaternion_slerp(start, start, 0.3), start, atol=1e-12)


def test_slerp_of_a_batch_matches_slerp_of_each_pair():
    starts, ends = _random_quaternions(50, seed=8), _random_quaternions(50, seed=9)
    ends[:5] = starts[:5] + 1e-9     # nearly equal pairs take the linear weights
    fractions = np.random.default_rng(10).uniform(size=50)
    batch = g.quaternion_slerp(starts, ends, fractions)
    assert batch.shape == (50, 4)
    for start, end, fraction, blended in zip(starts, ends, fractions, batch):
        np.testing.assert_allclose(g.quaternion_slerp(start, end, fraction), blended, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(batch, axis=-1), 1.0, atol=1e-12)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="quaternion"):
        g.quaternion_to_matrix(np.zeros(3))
    with pytest.raises(ValueError, match="convention"):
        g.euler_to_matrix(np.zeros(3), "zyx")
