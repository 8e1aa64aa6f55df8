#!/usr/bin/env python3
"""Inverse kinematics solvers on pybullet_data's Panda: ours against registry libraries.

Base ``panda_link0``, tip ``panda_grasptarget`` (10.5 cm past the hand). Targets are the forward
kinematics of random configurations inside the joint limits (so each is reachable); each solver
starts from two kinds of seed:

* ``near``: the target's configuration plus up to +-0.1 rad per joint (the controller's case: the
  measured joints of an arm a few centimetres from its next command);
* ``home``: the Panda's ready pose for every target (a hard global case).

Every solver's answer is judged the same way, with :class:`openhelix_core.kinematics.KinematicChain`
(tested against pybullet's forward kinematics): a success is within ``--position-tolerance`` and
``--orientation-tolerance`` of the target and inside the joint limits, whatever the solver
claims. Errors are over successes; times are per solve, wall clock, one thread, including each
library's own conversions.

Solvers, where importable (install the libraries into a scratch venv, not the project's):

* ``ours``: :class:`openhelix_core.inverse_kinematics.InverseKinematics`, numpy, no restarts
  (what the controller uses); ``ours+restarts``: 5 restarts, 2 rad spread;
* ``ikpy``: ``Chain.inverse_kinematics_frame`` (scipy ``least_squares``, finite differences);
* ``pinocchio``: a damped least-squares loop (fixed damping, limits clamped) in Python over
  pinocchio's C++ forward kinematics and frame Jacobian;
* ``rtb``: roboticstoolbox-python's C++ ``ik_LM`` (its default, Chan's damping; a solution past a
  joint limit counts as a failure there, not clamped), one search, and with its default 100
  searches from random seeds (``rtb+restarts``).

    python benchmarks/bench_ik.py [--targets 200] [--urdf .../franka_panda/panda.urdf]
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
import warnings
from typing import Callable

import numpy as np

try:
    from openhelix_core.inverse_kinematics import InverseKinematics, rotation_vector
    from openhelix_core.kinematics import KinematicChain
except ImportError:  # running from a checkout without the workspace sourced
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "openhelix_core"))
    from openhelix_core.inverse_kinematics import InverseKinematics, rotation_vector
    from openhelix_core.kinematics import KinematicChain

BASE, TIP = "panda_link0", "panda_grasptarget"
HOME = np.array([0.0, -math.pi / 4, 0.0, -3 * math.pi / 4, 0.0, math.pi / 2, math.pi / 4])
#: (target 4x4, seed (7,)) -> joint positions (7,), or None where the solver gives up.
Solver = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]


def default_urdf() -> str | None:
    spec = importlib.util.find_spec("pybullet_data")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "franka_panda", "panda.urdf")


# solvers ---------------------------------------------------------------------------------------

def ours(chain: KinematicChain, args, restarts: int = 0) -> tuple[str, Solver]:
    ik = InverseKinematics(chain, position_tolerance_m=args.position_tolerance,
                           orientation_tolerance_rad=math.radians(args.orientation_tolerance),
                           max_iterations=args.iterations, restarts=restarts, restart_spread_rad=2.0)

    def solve(target, seed):
        return ik.solve(target, seed).positions

    return "numpy " + np.__version__, solve


def ikpy_solver(chain: KinematicChain, args) -> tuple[str, Solver]:
    import ikpy
    import ikpy.chain

    # The elements from base to tip, links and joints alternating, as ikpy wants them.
    elements = [BASE]
    for joint in chain.joints:
        elements += [joint.name, joint.child]
    # ikpy's links are its origin ("Base link") and then one per URDF joint.
    active = [False] + [joint.movable for joint in chain.joints]
    with warnings.catch_warnings():   # pybullet_data's Panda gives a fixed joint an <axis>; ikpy says so
        warnings.simplefilter("ignore", UserWarning)
        ikpy_chain = ikpy.chain.Chain.from_urdf_file(args.urdf, base_elements=elements, active_links_mask=active,
                                                     symbolic=False)
    columns = np.flatnonzero(active)
    assert [ikpy_chain.links[k].name for k in columns] == chain.joint_names, [link.name for link in ikpy_chain.links]
    full = np.zeros(len(ikpy_chain.links))

    def solve(target, seed):
        start = full.copy()
        start[columns] = seed
        return np.asarray(ikpy_chain.inverse_kinematics_frame(target, initial_position=start,
                                                              orientation_mode="all"))[columns]

    return f"ikpy {ikpy.__version__}", solve


def pinocchio_solver(chain: KinematicChain, args) -> tuple[str, Solver]:
    import pinocchio

    full_model = pinocchio.buildModelFromUrdf(args.urdf)
    others = [full_model.getJointId(name) for name in full_model.names[1:] if name not in chain.joint_names]
    model = pinocchio.buildReducedModel(full_model, others, pinocchio.neutral(full_model))
    assert list(model.names[1:]) == chain.joint_names, list(model.names)
    data = model.createData()
    frame = model.getFrameId(TIP)
    lower, upper = model.lowerPositionLimit, model.upperPositionLimit
    damping = 1e-4

    def solve(target, seed):
        q = np.clip(np.array(seed), lower, upper)
        for _ in range(args.iterations):
            pinocchio.forwardKinematics(model, data, q)
            placement = pinocchio.updateFramePlacement(model, data, frame)
            position_error = target[:3, 3] - placement.translation
            rotation_error = pinocchio.log3(target[:3, :3] @ placement.rotation.T)
            if (np.linalg.norm(position_error) <= args.position_tolerance
                    and np.linalg.norm(rotation_error) <= math.radians(args.orientation_tolerance)):
                break
            jacobian = pinocchio.computeFrameJacobian(model, data, q, frame, pinocchio.LOCAL_WORLD_ALIGNED)
            error = np.r_[position_error, rotation_error]
            q = np.clip(q + jacobian.T @ np.linalg.solve(jacobian @ jacobian.T + damping * np.eye(6), error),
                        lower, upper)
        return q

    return f"pin {pinocchio.__version__}", solve


def rtb_solver(chain: KinematicChain, args, searches: int = 1) -> tuple[str, Solver]:
    import roboticstoolbox
    from roboticstoolbox.models.URDF.URDFRobot import URDF_read

    # rtb resolves package:// mesh paths through xacro packages; these meshes lie beside the URDF.
    mesh_directory = os.path.join(os.path.dirname(os.path.abspath(args.urdf)), "meshes")
    links, name, _ = URDF_read(args.urdf, patch=lambda text: text.replace("package://meshes/", mesh_directory + "/"))
    # The chain's elementary transforms, built once: robot.ik_LM would rebuild them on every call.
    transforms = roboticstoolbox.Robot(links, name=name).ets(start=BASE, end=TIP)
    # E = e^T e / 2 with e = (position m, rotation rad): this bound keeps both within the tighter tolerance.
    tolerance = 0.5 * min(args.position_tolerance, math.radians(args.orientation_tolerance)) ** 2

    def solve(target, seed):
        solution = transforms.ik_LM(target, q0=np.array(seed), ilimit=args.iterations, slimit=searches, tol=tolerance)
        return np.asarray(solution.q) if solution.success else None

    return f"roboticstoolbox-python {roboticstoolbox.__version__}", solve


# the benchmark ---------------------------------------------------------------------------------

def judge(chain: KinematicChain, target: np.ndarray, positions: np.ndarray | None, args) -> tuple[bool, float, float]:
    """(success, position error m, orientation error rad) of one answer."""
    if positions is None or positions.shape != (len(chain.joint_names),) or not np.all(np.isfinite(positions)):
        return False, math.inf, math.inf
    limits = chain.limits
    pose = chain.forward(positions)
    position_error = float(np.linalg.norm(target[:3, 3] - pose[:3, 3]))
    orientation_error = float(np.linalg.norm(rotation_vector(target[:3, :3] @ pose[:3, :3].T)))
    inside = bool(np.all(positions >= limits[:, 0] - 1e-9) and np.all(positions <= limits[:, 1] + 1e-9))
    success = (inside and position_error <= args.position_tolerance
               and orientation_error <= math.radians(args.orientation_tolerance))
    return success, position_error, orientation_error


def run(name: str, solve: Solver, chain, targets, seeds, args) -> None:
    for target, seed in zip(targets[:args.warmup], seeds[:args.warmup]):
        solve(target, seed)
    times, results = [], []
    for target, seed in zip(targets, seeds):
        start = time.perf_counter()
        positions = solve(target, seed)
        times.append(time.perf_counter() - start)
        results.append(judge(chain, target, positions, args))
    success = np.array([r[0] for r in results])
    position_mm = 1e3 * np.array([r[1] for r in results])[success]
    orientation_deg = np.degrees(np.array([r[2] for r in results]))[success]
    ms = 1e3 * np.array(times)
    errors = (f"{np.median(position_mm):7.4f} {position_mm.max():7.4f} {np.median(orientation_deg):7.4f} "
              f"{orientation_deg.max():7.4f}" if success.any() else f"{'-':>7} {'-':>7} {'-':>7} {'-':>7}")
    print(f"{name:<16} {100 * success.mean():8.1f}% {errors} {np.median(ms):8.3f} {np.percentile(ms, 95):8.3f}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urdf", default=default_urdf(), help="pybullet_data's franka_panda/panda.urdf")
    parser.add_argument("--targets", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5, help="solves before timing (imports, caches)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=100, help="iteration limit of each iterative solver")
    parser.add_argument("--position-tolerance", type=float, default=1e-3, help="m")
    parser.add_argument("--orientation-tolerance", type=float, default=0.5, help="deg")
    parser.add_argument("--skip", nargs="*", default=[], help="solvers to leave out")
    args = parser.parse_args()
    if args.urdf is None or not os.path.exists(args.urdf):
        raise SystemExit("no Panda URDF: install pybullet (pybullet_data) or pass --urdf")
    chain = KinematicChain.from_urdf(args.urdf, BASE, TIP)
    limits = chain.limits
    rng = np.random.default_rng(args.seed)
    configurations = rng.uniform(limits[:, 0], limits[:, 1], size=(args.targets, len(chain.joint_names)))
    targets = chain.forward(configurations)
    seed_sets = {
        "near": np.clip(configurations + rng.uniform(-0.1, 0.1, configurations.shape), limits[:, 0], limits[:, 1]),
        "home": np.broadcast_to(HOME, configurations.shape),
    }
    factories = {
        "ours": lambda: ours(chain, args),
        "ours+restarts": lambda: ours(chain, args, restarts=5),
        "ikpy": lambda: ikpy_solver(chain, args),
        "pinocchio": lambda: pinocchio_solver(chain, args),
        "rtb": lambda: rtb_solver(chain, args),
        "rtb+restarts": lambda: rtb_solver(chain, args, searches=100),
    }
    solvers = {}
    for name, factory in factories.items():
        if name in args.skip:
            continue
        try:
            version, solve = factory()
        except ImportError as error:
            print(f"{name}: not importable ({error})")
            continue
        solvers[name] = solve
        print(f"{name}: {version}")
    print(f"\n{args.targets} reachable targets, tolerances {1e3 * args.position_tolerance:g} mm / "
          f"{args.orientation_tolerance:g} deg, {args.iterations} iterations per search; errors over successes")
    for seeds_name, seeds in seed_sets.items():
        print(f"\nseed: {seeds_name}")
        print(f"{'solver':<16} {'success':>9} {'pos mm':>7} {'max':>7} {'rot deg':>7} {'max':>7} {'p50 ms':>8} "
              f"{'p95 ms':>8}")
        for name, solve in solvers.items():
            run(name, solve, chain, targets, seeds, args)


if __name__ == "__main__":
    main()
