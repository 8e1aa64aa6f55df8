"""The ``main()`` every node of the suite shares: init, spin, clean shutdown."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node


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
        # RuntimeError instead of an interrupt; once the context is shut down that is the
        # requested shutdown, not a failure.
        if rclpy.ok():
            raise
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
