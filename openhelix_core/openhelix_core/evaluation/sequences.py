"""CALVIN long-horizon evaluation sequences (the "5 instructions in a row" protocol).

Re-implementation of the protocol in mees/calvin
``calvin_models/calvin_agent/evaluation/multistep_sequences.py`` (``get_sequences``) and
``calvin_models/calvin_agent/evaluation/utils.py`` (``get_env_state_for_initial_condition``).

Symbolic state
--------------
A state is a dict with, in this key order: ``led`` (0/1), ``lightbulb`` (0/1), ``slider``
("right"/"left": where the sliding door is), ``drawer`` ("closed"/"open"), ``red_block``,
``blue_block``, ``pink_block`` and ``grasped`` (0/1). A block is on the "table", inside the
cabinet behind the sliding door ("slider_left" / "slider_right": the left or right
compartment), in the "drawer", held ("grasped"), or part of a stack ("stacked_top" /
"stacked_bottom"). Initial states only use table / slider_left / slider_right and grasped = 0.

Initial-state distribution
--------------------------
Every combination of led x lightbulb x slider x drawer x (red, blue, pink) in {table,
slider_right, slider_left} with one or two blocks on the table and at most one block per
cabinet compartment: 16 x 12 = 192 states, enumerated in ``itertools.product`` order.

Sampling (CALVIN's algorithm, reproduced draw for draw)
------------------------------------------------------
``num_sequences`` is split over the 192 states as ``numpy.array_split`` does (the first
``num_sequences % 192`` states get one more). For state number ``i`` a legacy
``numpy.random.RandomState(i)`` draws 5 distinct tasks (``choice(34, 5, replace=False)`` over
the task table in its fixed order) until the requested number of chains is found; a chain is
kept when every task has exactly one applicable rule in turn and no two tasks share a
category. The (state, chain) pairs, in state order, are then shuffled in place by
``RandomState(0).shuffle``. numpy keeps the legacy RandomState stream stable across versions,
so with ``seed=0`` (CALVIN's fixed seed) the output equals CALVIN's ``get_sequences`` output
(checked against a published dump of CALVIN's 1000 sequences; see the tests). For another
``seed`` we use ``RandomState(i + 192 * seed)`` per state and ``RandomState(seed)`` for the
shuffle (our extension: CALVIN has no seed argument).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

SEQUENCE_LENGTH = 5
DEFAULT_NUM_SEQUENCES = 1000  # evaluate_policy.py: NUM_SEQUENCES
DEFAULT_SEED = 0  # multistep_sequences.py: temp_seed(0)
STEPS_PER_SUBTASK = 360  # evaluate_policy.py: EP_LEN (30 Hz control steps per instruction)

BLOCKS = ("red_block", "blue_block", "pink_block")
_COLOURS = ("red", "blue", "pink")

# Values of the initial-state distribution, in CALVIN's key (and product) order.
INITIAL_STATE_VALUES: dict = {
    "led": (0, 1),
    "lightbulb": (0, 1),
    "slider": ("right", "left"),
    "drawer": ("closed", "open"),
    "red_block": ("table", "slider_right", "slider_left"),
    "blue_block": ("table", "slider_right", "slider_left"),
    "pink_block": ("table", "slider_right", "slider_left"),
    "grasped": (0,),
}
STATE_KEYS = tuple(INITIAL_STATE_VALUES)


@dataclass(frozen=True)
class Rule:
    """One way a task can apply: every ``condition`` entry must hold (a tuple value means
    "any of these"), then ``effect`` is written into the state."""

    condition: Mapping
    effect: Mapping

    def applies(self, state: Mapping) -> bool:
        for key, want in self.condition.items():
            have = state[key]
            if isinstance(want, tuple):
                if have not in want:
                    return False
            elif have != want:
                return False
        return True

    def apply(self, state: Mapping) -> dict:
        out = dict(state)
        out.update(self.effect)
        return out


def _r(condition: dict, effect: dict) -> Rule:
    return Rule(condition, effect)


def _build_tasks() -> tuple[dict, dict]:
    """Task table (name -> rules) and categories (name -> int), in CALVIN's order.

    The order matters: CALVIN samples task indices into this list."""
    tasks: dict = {}
    cats: dict = {}
    free = {"grasped": 0}
    # Rotating / pushing a block leaves it on the table.
    for verb in ("rotate", "push"):
        for c in _COLOURS:
            for side in ("right", "left"):
                b = f"{c}_block"
                tasks[f"{verb}_{b}_{side}"] = (_r({b: "table", **free}, {b: "table"}),)
                cats[f"{verb}_{b}_{side}"] = 1
    tasks["move_slider_left"] = (_r({"slider": "right", **free}, {"slider": "left"}),)
    tasks["move_slider_right"] = (_r({"slider": "left", **free}, {"slider": "right"}),)
    tasks["open_drawer"] = (_r({"drawer": "closed", **free}, {"drawer": "open"}),)
    tasks["close_drawer"] = (_r({"drawer": "open", **free}, {"drawer": "closed"}),)
    cats.update(move_slider_left=2, move_slider_right=2, open_drawer=3, close_drawer=3)
    hold = {"grasped": 1}
    for c in _COLOURS:
        b = f"{c}_block"
        take = {b: "grasped", **hold}
        tasks[f"lift_{b}_table"] = (_r({b: "table", **free}, take),)
        # A block in a cabinet compartment is reachable when the door covers the other one.
        tasks[f"lift_{b}_slider"] = (
            _r({b: "slider_left", "slider": "right", **free}, take),
            _r({b: "slider_right", "slider": "left", **free}, take),
        )
        tasks[f"lift_{b}_drawer"] = (_r({b: "drawer", "drawer": "open", **free}, take),)
        cats.update({f"lift_{b}_table": 4, f"lift_{b}_slider": 5, f"lift_{b}_drawer": 6})
    # Placing into the cabinet puts the block in the open compartment (door on the other side).
    tasks["place_in_slider"] = tuple(
        _r({b: "grasped", "slider": side, **hold}, {b: f"slider_{side}", "grasped": 0})
        for b in BLOCKS for side in ("right", "left"))
    tasks["place_in_drawer"] = tuple(
        _r({b: "grasped", "drawer": "open", **hold}, {b: "drawer", "grasped": 0}) for b in BLOCKS)
    pairs = [(top, bottom) for top in BLOCKS for bottom in BLOCKS if top != bottom]
    tasks["stack_block"] = tuple(
        _r({top: "grasped", bottom: "table", **hold}, {top: "stacked_top", bottom: "stacked_bottom", "grasped": 0})
        for top, bottom in pairs)
    tasks["unstack_block"] = tuple(
        _r({top: "stacked_top", bottom: "stacked_bottom", **free}, {top: "table", bottom: "table"})
        for top, bottom in pairs)
    cats.update(place_in_slider=7, place_in_drawer=7, stack_block=10, unstack_block=11)
    for light in ("lightbulb", "led"):
        tasks[f"turn_on_{light}"] = (_r({light: 0, **free}, {light: 1}),)
        tasks[f"turn_off_{light}"] = (_r({light: 1, **free}, {light: 0}),)
        cats.update({f"turn_on_{light}": 8, f"turn_off_{light}": 8})
    # Pushing a block into the drawer: only when the other two blocks are in the cabinet.
    in_cabinet = ("slider_right", "slider_left")
    tasks["push_into_drawer"] = tuple(
        _r({b: "table", **{o: in_cabinet for o in BLOCKS if o != b}, "drawer": "open", **free},
           {b: "drawer", "grasped": 0})
        for b in BLOCKS)
    cats["push_into_drawer"] = 9
    return tasks, cats


TASKS, TASK_CATEGORIES = _build_tasks()
TASK_NAMES = tuple(TASKS)


def applicable_states(state: Mapping, task: str) -> list:
    """All successor states of ``state`` under ``task`` (one per applicable rule)."""
    return [rule.apply(state) for rule in TASKS[task] if rule.applies(state)]


def is_valid_chain(state: Mapping, tasks: Sequence[str]) -> bool:
    """CALVIN's acceptance test: every task has exactly one applicable rule in turn and no
    two tasks share a category."""
    cur = dict(state)
    for name in tasks:
        nxt = applicable_states(cur, name)
        if len(nxt) != 1:
            return False
        cur = nxt[0]
    cats = [TASK_CATEGORIES[name] for name in tasks]
    return len(cats) == len(set(cats))


def simulate_chain(state: Mapping, tasks: Sequence[str]) -> list:
    """Symbolic states after each task of a valid chain (raises ValueError if it is not)."""
    out, cur = [], dict(state)
    for name in tasks:
        nxt = applicable_states(cur, name)
        if len(nxt) != 1:
            raise ValueError(f"task {name!r} does not apply uniquely in state {cur}")
        cur = nxt[0]
        out.append(cur)
    return out


def initial_states() -> list:
    """The 192 initial states, in CALVIN's enumeration order."""
    out = []
    for values in itertools.product(*INITIAL_STATE_VALUES.values()):
        blocks = values[4:7]
        if blocks.count("table") in (1, 2) and blocks.count("slider_right") < 2 and blocks.count("slider_left") < 2:
            out.append(dict(zip(STATE_KEYS, values)))
    return out


def _split_sizes(n: int, parts: int) -> list:
    """Sizes of ``numpy.array_split(range(n), parts)``."""
    q, r = divmod(n, parts)
    return [q + 1 if i < r else q for i in range(parts)]


@functools.lru_cache(maxsize=1)
def _transition_table() -> tuple:
    """Every symbolic state reachable from the initial states, numbered, with
    ``next[state, task]`` = successor id, or the id of an absorbing "dead" state when the task
    does not have exactly one applicable rule. Returns (ids: dict tuple -> id, next (S+1, T))."""
    ids: dict = {}
    rows: list = []
    queue = [tuple(s.values()) for s in initial_states()]
    for key in queue:
        ids.setdefault(key, len(ids))
    head = 0
    while head < len(queue):
        key = queue[head]
        head += 1
        state = dict(zip(STATE_KEYS, key))
        row = []
        for name in TASK_NAMES:
            nxt = applicable_states(state, name)
            if len(nxt) != 1:
                row.append(-1)
                continue
            nkey = tuple(nxt[0][k] for k in STATE_KEYS)
            if nkey not in ids:
                ids[nkey] = len(ids)
                queue.append(nkey)
            row.append(ids[nkey])
        rows.append(row)
    dead = len(ids)
    table = np.full((dead + 1, len(TASK_NAMES)), dead, dtype=np.int64)
    for key, row in zip(queue, rows):
        r = np.asarray(row)
        table[ids[key]] = np.where(r < 0, dead, r)
    return ids, table


_CATEGORY_OF = np.array([TASK_CATEGORIES[n] for n in TASK_NAMES])


def _valid_rows(state_id: int, draws: np.ndarray) -> np.ndarray:
    """Vectorised ``is_valid_chain`` for rows of task indices (all starting in one state)."""
    _, table = _transition_table()
    dead = table.shape[0] - 1
    cur = np.full(draws.shape[0], state_id, dtype=np.int64)
    for k in range(draws.shape[1]):
        cur = table[cur, draws[:, k]]
    cats = np.sort(_CATEGORY_OF[draws], axis=1)
    distinct = np.all(np.diff(cats, axis=1) != 0, axis=1)
    return (cur != dead) & distinct


def _sample_chains(state: Mapping, count: int, rng: np.random.RandomState, max_draws: int,
                   batch: int = 4096) -> list:
    """First ``count`` valid chains among successive ``rng.choice(34, 5, replace=False)`` draws.

    ``choice`` without replacement is ``permutation(34)[:5]``, i.e. an in-place shuffle of
    ``arange(34)``; shuffling rows of a pre-filled array consumes the same random stream, only
    faster, and the validity test is done on a whole batch at once."""
    ids, _ = _transition_table()
    state_id = ids[tuple(state[k] for k in STATE_KEYS)]
    n = len(TASK_NAMES)
    chains: list = []
    drawn = 0
    while len(chains) < count:
        if drawn >= max_draws:
            raise RuntimeError(f"found only {len(chains)} of {count} valid chains for {dict(state)} in {drawn} draws")
        perms = np.tile(np.arange(n), (batch, 1))
        for row in perms:
            rng.shuffle(row)
        drawn += batch
        draws = perms[:, :SEQUENCE_LENGTH]
        for row in draws[_valid_rows(state_id, draws)]:
            chains.append(tuple(TASK_NAMES[i] for i in row))
            if len(chains) == count:
                break
    return chains


@functools.lru_cache(maxsize=8)
def _generate(num_sequences: int, seed: int, max_draws_per_state: int) -> tuple:
    states = initial_states()
    sizes = _split_sizes(num_sequences, len(states))
    pairs = []
    for i, (state, count) in enumerate(zip(states, sizes)):
        if count == 0:
            continue
        rng = np.random.RandomState(i + len(states) * seed)
        for chain in _sample_chains(state, count, rng, max_draws_per_state):
            pairs.append((tuple(state.values()), chain))
    np.random.RandomState(seed).shuffle(pairs)
    return tuple(pairs)


def get_sequences(num_sequences: int = DEFAULT_NUM_SEQUENCES, seed: int = DEFAULT_SEED,
                  max_draws_per_state: int = 10_000_000) -> list:
    """Evaluation sequences as a list of ``(initial_state: dict, tasks: tuple of 5 names)``.

    ``seed=0`` with ``num_sequences=1000`` reproduces CALVIN's benchmark list exactly (same
    order). Results are cached per argument set (CALVIN caches too); each call returns fresh
    dicts. The default 1000 sequences take about 10 s on one core (CALVIN uses a process pool)."""
    if isinstance(num_sequences, bool) or not isinstance(num_sequences, (int, np.integer)) or num_sequences < 0:
        raise ValueError(f"num_sequences must be a non-negative integer, got {num_sequences!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    pairs = _generate(int(num_sequences), int(seed), int(max_draws_per_state))
    return [(dict(zip(STATE_KEYS, values)), chain) for values, chain in pairs]


def sequence_at(index: int, num_sequences: int = DEFAULT_NUM_SEQUENCES, seed: int = DEFAULT_SEED) -> tuple:
    """Entry ``index`` of ``get_sequences(num_sequences, seed)`` without generating the others
    (only its initial state's chains are sampled): handy for sharded evaluation."""
    if not 0 <= index < num_sequences:
        raise IndexError(f"index {index} out of range for {num_sequences} sequences")
    order = list(range(num_sequences))
    np.random.RandomState(seed).shuffle(order)
    flat = order[index]  # position before the final shuffle
    states = initial_states()
    start = 0
    for i, count in enumerate(_split_sizes(num_sequences, len(states))):
        if flat < start + count:
            k = flat - start
            rng = np.random.RandomState(i + len(states) * seed)
            return dict(states[i]), _sample_chains(states[i], k + 1, rng, 10_000_000)[k]
        start += count
    raise AssertionError("unreachable")


# ----------------------------------------------------------------- env reset values
# calvin_agent/evaluation/utils.py: get_env_state_for_initial_condition
CALVIN_EVAL_ROBOT_OBS = np.array([
    0.02586889, -0.2313129, 0.5712808,            # TCP xyz
    3.09045411, -0.02908596, 1.50013585,          # TCP Euler xyz
    0.07999963,                                   # gripper opening width
    -1.21779124, 1.03987629, 2.11978254, -2.34205014, -0.87015899, 1.64119093, 0.55344928,  # arm joints
    1.0,                                          # gripper action (open)
])
BLOCK_POS_SLIDER_LEFT = np.array([-2.40851662e-01, 9.24044687e-02, 4.60990009e-01])
BLOCK_POS_SLIDER_RIGHT = np.array([7.03416330e-02, 9.24044687e-02, 4.60990009e-01])
BLOCK_POS_TABLE = (
    np.array([5.00000896e-02, -1.20000177e-01, 4.59990009e-01]),
    np.array([2.29995412e-01, -1.19995140e-01, 4.59990010e-01]),
)
BLOCK_YAW_RANGE = (np.pi / 2 - np.pi / 8, np.pi / 2 + np.pi / 8)
SLIDER_LEFT_POSITION = 0.28  # slide joint when the door is on the left
DRAWER_OPEN_POSITION = 0.22  # drawer joint when open
SWITCH_ON_POSITION = 0.088  # switch joint when the lightbulb is on


def fnv1_32(data: bytes, value: int = 0) -> int:
    """32-bit FNV-1 (multiply, then xor) starting from ``value`` (pyhash's default seed is 0,
    not the usual FNV offset basis)."""
    for byte in data:
        value = (value * 0x01000193) & 0xFFFFFFFF
        value ^= byte
    return value


def normalize_initial_state(state: Mapping) -> dict:
    """Copy of ``state`` in CALVIN's key order, with plain ints / strs and ``grasped`` 0 when
    absent. Raises ValueError for missing keys or values outside the initial distribution."""
    out = {}
    for key, allowed in INITIAL_STATE_VALUES.items():
        if key not in state:
            if key == "grasped":
                out[key] = 0
                continue
            raise ValueError(f"initial state lacks {key!r}")
        v = state[key]
        v = int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else (str(v) if isinstance(v, str) else v)
        if v not in allowed:
            raise ValueError(f"initial state {key}={v!r} is not one of {allowed}")
        out[key] = v
    return out


def initial_state_seed(state: Mapping) -> int:
    """CALVIN's per-state seed: pyhash ``fnv1_32`` of ``str(state.values())``. pyhash hashes a
    Python str as UTF-16 (native byte order, no BOM), i.e. UTF-16-LE on x86 / ARM."""
    s = normalize_initial_state(state)
    text = "dict_values([" + ", ".join(repr(v) for v in s.values()) + "])"
    return fnv1_32(text.encode("utf-16-le"))


def env_state_for_initial_state(state: Mapping) -> tuple:
    """``(robot_obs (15,), scene_obs (24,))`` reset values for a symbolic initial state, as
    CALVIN's ``get_env_state_for_initial_condition`` computes them (same numbers, same random
    block-yaw draws from the same per-state seed)."""
    s = normalize_initial_state(state)
    rng = np.random.RandomState(initial_state_seed(s))
    table = [BLOCK_POS_TABLE[0].copy(), BLOCK_POS_TABLE[1].copy()]
    rng.shuffle(table)  # which table spot comes first
    scene_obs = np.zeros(24)
    if s["slider"] == "left":
        scene_obs[0] = SLIDER_LEFT_POSITION
    if s["drawer"] == "open":
        scene_obs[1] = DRAWER_OPEN_POSITION
    if s["lightbulb"] == 1:
        scene_obs[3] = SWITCH_ON_POSITION
    scene_obs[4] = s["lightbulb"]
    scene_obs[5] = s["led"]
    cabinet = {"slider_right": BLOCK_POS_SLIDER_RIGHT, "slider_left": BLOCK_POS_SLIDER_LEFT}
    for k, block in enumerate(BLOCKS):
        where = s[block]
        if where in cabinet:
            pos = cabinet[where]
        elif block == "red_block":
            pos = table[0]
        elif block == "blue_block":
            # second table spot if red already took the first one
            pos = table[1] if s["red_block"] == "table" else table[0]
        else:
            pos = table[1]
        base = 6 + 6 * k
        scene_obs[base:base + 3] = pos
        scene_obs[base + 5] = rng.uniform(*BLOCK_YAW_RANGE)
    return CALVIN_EVAL_ROBOT_OBS.copy(), scene_obs
