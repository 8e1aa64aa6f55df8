"""The ``main()`` every node of the suite shares: init, spin, clean shutdown."""
from __future__ import annotations

import time
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node


def _context_shuts_down(within_s: float) -> bool:
    """Whether rclpy's default context is (or within ``within_s`` becomes) shut down."""
    deadline = time.monotonic() + within_s
    while rclpy.ok():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def run_node(make_node: Callable[[], Node], args: list[str] | None = None) -> None:
    """Spins the node until shutdown; a lifecycle node with ``autostart`` is configured and, when that
    succeeded, activated first (a failed configure leaves it unconfigured and spinning, its cause logged).

    A node ends its own run by raising ``SystemExit`` (the sim bridge when its work is done).
    """
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        if (isinstance(node, LifecycleNode) and node.params["autostart"]
                and node.trigger_configure() == TransitionCallbackReturn.SUCCESS):
            node.trigger_activate()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException, SystemExit):
        pass
    except RuntimeError:
        # SIGINT arriving while rclpy converts a taken message surfaces as a pybind11
        # RuntimeError instead of an interrupt. rclpy's signal handler shuts the context down
        # from its own thread, possibly a moment after this exception: wait for that before
        # calling it a failure.
        if not _context_shuts_down(within_s=1.0):
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
