"""Pure-Python simulated environments (no ROS imports here): the embedded play-table and CALVIN's
own simulator behind the same API (:mod:`.calvin_backend`)."""

from .play_table import PlayTableEnv

#: ``"embedded"``: :class:`PlayTableEnv`; ``"calvin"``: calvin_env's scene through
#: :class:`~.calvin_backend.CalvinPlayTableEnv`.
BACKENDS = ("embedded", "calvin")


def make_play_table(backend: str = "embedded", seed: int = 0, image_size_static: int = 200,
                    image_size_gripper: int = 84, render_static: bool = True, render_gripper: bool = True,
                    calvin_scene: str | None = "D", calvin_dataset: str | None = None):
    """The play-table of ``backend`` with cameras of the given sides (px; CALVIN's are 200 and 84).

    ``calvin_scene`` / ``calvin_dataset`` choose calvin_env's scene (see
    :class:`~.calvin_backend.CalvinPlayTableEnv`); the embedded play-table is scene D."""
    if backend == "embedded":
        return PlayTableEnv(seed=seed, image_size_static=image_size_static, image_size_gripper=image_size_gripper,
                            render_static=render_static, render_gripper=render_gripper)
    if backend == "calvin":
        from .calvin_backend import CalvinPlayTableEnv

        return CalvinPlayTableEnv(dataset_path=calvin_dataset, scene=calvin_scene, seed=seed,
                                  image_size_static=image_size_static, image_size_gripper=image_size_gripper,
                                  render_static=render_static, render_gripper=render_gripper)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")


__all__ = ["BACKENDS", "PlayTableEnv", "make_play_table"]
