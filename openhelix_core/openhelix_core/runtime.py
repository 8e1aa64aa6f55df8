"""Process-wide settings for running the models inside robot processes."""
import torch


def limit_cpu_threads(threads: int) -> None:
    """Caps torch's intra-op CPU threads; 0 keeps torch's default.

    Several model processes on a few cores (planner, controller, simulator) run far faster
    with one thread each: idle OpenMP workers spin and take the cores from the others.
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    if threads:
        torch.set_num_threads(threads)
