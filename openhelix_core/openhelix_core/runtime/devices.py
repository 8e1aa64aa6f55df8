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


def check_device(name: str) -> torch.device:
    """``name`` as a torch device this process can use; ValueError naming the cause otherwise
    (a typo, CUDA asked of a torch built without it or on a machine without a GPU, a GPU
    index beyond the ones present). Checked before any weights are read."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {name!r} is not a torch device: {error}") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} asks for CUDA, but this torch ({torch.__version__}) sees no CUDA GPU")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA GPU(s) present")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ValueError(f"device {name!r}: device type {device.type!r} is not supported")
    return device
