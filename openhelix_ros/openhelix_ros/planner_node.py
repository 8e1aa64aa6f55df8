"""System 2 planner node: camera image + instruction -> goal embedding, at its own rate.

Subscribes:  color image (``sensor_msgs/Image``), instruction (``std_msgs/String``, latched).
Publishes:   ``openhelix_msgs/GoalEmbedding`` stamped with the image it was computed from.
Lifecycle:   configure loads the model (a trained checkpoint, a preset, or System 2 of the
             published OpenHelix release when ``release_dir`` is set), runs it once to warm it
             up and creates the topics, activate starts planning, deactivate stops it, cleanup
             destroys what configure created. A model that cannot be loaded fails configure
             with the cause in the log; the node stays up, unconfigured.

LLaVA runs on a worker thread of its own: lifecycle transitions, parameter requests and
diagnostics are served while it computes (a 7B forward pass takes half a minute on a CPU).

Images stamped in the future or larger than ``max_image_width`` x ``max_image_height`` are
refused (logged once, counted on /diagnostics): a goal carries its image's stamp, and the
controller must be able to trust it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String

from openhelix_core.checkpoints import LOAD_ERRORS, OPENHELIX_VARIANTS, RELEASE_ARCHITECTURES
from openhelix_core.runtime.devices import limit_cpu_threads
from openhelix_core.runtime.planner import GoalPlanner
from openhelix_core.runtime.worker import LatestOnlyWorker
from openhelix_core.types import Goal
from openhelix_msgs.msg import GoalEmbedding
from openhelix_ros import topics
from openhelix_ros.conversions import (
    InvalidMessageError,
    check_image_size,
    goal_to_msg,
    image_to_rgb,
    stamp_to_seconds,
)
from openhelix_ros.node_main import run_node
from openhelix_ros.parameters import (
    ParameterSpec,
    declare_and_validate,
    non_negative,
    one_of,
    optional_path,
    positive,
    topic_name,
)
from openhelix_ros.qos import LATCHED, LATEST_SENSOR, RELIABLE
from openhelix_ros.refusals import RefusalLog


def prompt_question(value: str) -> str | None:
    """'' (the model's own setting), 'random' or a non-negative index."""
    if value in ("", "random") or value.isdigit():
        return None
    return f"must be '', 'random' or a question index such as '0', got {value!r}"


PARAMETERS = (
    ParameterSpec("autostart", True, "Configure and activate on start-up (false: wait for the lifecycle services)."),
    ParameterSpec("rate_hz", 2.0, "How often a goal is computed from the newest image (Hz).", positive),
    ParameterSpec("preset", "tiny", "Model architecture when no checkpoint is given: 'tiny' (random "
                  "weights, for tests) or 'llava_7b' (needs llava_path).", one_of("tiny", "llava_7b")),
    ParameterSpec("checkpoint", "", "Directory of a trained System 2 checkpoint ('' = untrained preset)."),
    ParameterSpec("llava_path", "", "Local directory of the frozen LLaVA weights (Hugging Face layout)."),
    ParameterSpec("release_dir", "", "Local copy of the Hugging Face repo OpenHelix/openhelix (the folder holding "
                  "prompt_tuning/ and prompt_tuning_aux/, or one variant folder). When set, System 2 is read from "
                  "<release_variant>/llava_ckpt_safetensors/ and preset, checkpoint and llava_path are not used; "
                  "goals carry the model id 'openhelix/<release_variant>/<release_dir>' ('' = no release).",
                  optional_path),
    ParameterSpec("release_variant", "prompt_tuning_aux", "Variant of the release: 'prompt_tuning' or "
                  "'prompt_tuning_aux' (trained with the auxiliary action head).", one_of(*OPENHELIX_VARIANTS)),
    ParameterSpec("release_architecture", "openhelix", "Model size the release is read into: 'openhelix' (the "
                  "published weights) or 'tiny' (a release written from the tiny test models, for tests and smoke "
                  "runs only).", one_of(*RELEASE_ARCHITECTURES)),
    ParameterSpec("device", "cpu", "Torch device, e.g. 'cpu' or 'cuda:0'."),
    ParameterSpec("seed", 0, "Seed of the random initialisation when no checkpoint is given."),
    ParameterSpec("prefix_cache", True, "Reuse the key/values of the prompt tokens before the image on every call "
                  "(the same goal to float rounding; false runs the whole prompt every call, the reference)."),
    ParameterSpec("int8", False, "Quantize the LLaVA language model's Linear layers to int8 (CPU and float32 only; "
                  "faster, but the goal moves: see README, System 2 speed). Fails configure on another device."),
    ParameterSpec("prompt_question", "", "Which question the prompt asks: 'random' (a seeded draw per call, as "
                  "OpenHelix's evaluation; the default of the OpenHelix configurations), a question's index ('0': "
                  "'Can you <instruction>?', '1': 'Can you control the robot to <instruction>?'), or '' to keep "
                  "what the loaded model's configuration says.", prompt_question),
    ParameterSpec("warm_up", True, "Run System 2 once on a black image at configure, so that the first real call "
                  "is not the slow first one."),
    ParameterSpec("torch_threads", 1, "CPU threads torch may use (0 = torch's default). Several nodes "
                  "sharing a few cores run fastest with 1: idle OpenMP threads spin and starve the others.",
                  non_negative),
    ParameterSpec("inference_delay_s", 0.0, "Seconds added to every System 2 call, to measure what a slow "
                  "planner costs (0 in deployment).", non_negative),
    ParameterSpec("future_stamp_tolerance_s", 0.1, "Images stamped further ahead of this node's clock are "
                  "refused (s).", non_negative),
    ParameterSpec("max_image_width", 2048, "Larger images are refused (pixels).", positive),
    ParameterSpec("max_image_height", 2048, "Larger images are refused (pixels).", positive),
    ParameterSpec("image_topic", topics.camera_color("static"), "Color image System 2 looks at.", topic_name),
    ParameterSpec("instruction_topic", topics.INSTRUCTION, "Language instruction (latched).", topic_name),
    ParameterSpec("goal_topic", topics.GOAL_EMBEDDING, "Where goal embeddings are published.", topic_name),
)


class PlannerNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("planner")
        self.params = declare_and_validate(self, PARAMETERS)
        self.refusals = RefusalLog(self.get_logger())
        self.planner: GoalPlanner | None = None
        self.worker: LatestOnlyWorker | None = None
        self.plan_timer = None
        self.data_path = []  # (destroy function, entity) created by configure, destroyed by cleanup
        self._forget_inputs()
        self.diagnostics_publisher = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)
        self.create_timer(1.0, self.publish_diagnostics)

    def _forget_inputs(self) -> None:
        self.latest_image: Image | None = None
        self.last_planned_stamp: float | None = None
        self.instruction: str | None = None
        self.sequence = 0
        self.last_plan_seconds = float("nan")

    def destroy_node(self) -> None:
        """Ends the worker thread before the node goes (a call in flight is waited for, briefly)."""
        if self.worker is not None:
            self.worker.stop()
        super().destroy_node()

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        p = self.params
        limit_cpu_threads(p["torch_threads"])
        try:
            planner = self._load_system2()
            if p["prompt_question"]:
                planner.ask(p["prompt_question"] if p["prompt_question"] == "random" else int(p["prompt_question"]))
            if p["warm_up"]:
                self.get_logger().info(f"System 2 warm-up call: {planner.warm_up():.3f} s")
        except LOAD_ERRORS as error:
            self.get_logger().error(f"cannot load System 2: {error}")
            return TransitionCallbackReturn.FAILURE
        self.planner = planner
        self.data_path = [
            (self.destroy_subscription, self.create_subscription(Image, p["image_topic"], self.on_image,
                                                                 LATEST_SENSOR)),
            (self.destroy_subscription, self.create_subscription(String, p["instruction_topic"], self.on_instruction,
                                                                 LATCHED)),
        ]
        self.goal_publisher = self.create_lifecycle_publisher(GoalEmbedding, p["goal_topic"], RELIABLE)
        ready = self.create_guard_condition(self.publish_goal)
        self.data_path += [(self.destroy_lifecycle_publisher, self.goal_publisher),
                           (self.destroy_guard_condition, ready)]
        planner, delay = self.planner, p["inference_delay_s"]

        def plan(job: PlanJob) -> np.ndarray:
            time.sleep(delay)
            return planner.plan(job.image, job.instruction)

        self.worker = LatestOnlyWorker(plan, ready.trigger, name="system2")
        self.get_logger().info(f"System 2 '{self.planner.model_id}' loaded")
        return TransitionCallbackReturn.SUCCESS

    def _load_system2(self) -> GoalPlanner:
        """System 2 of the release when ``release_dir`` is set (it takes precedence), else the
        checkpoint or the preset. Raises one of ``LOAD_ERRORS`` naming what failed."""
        p = self.params
        if not p["release_dir"]:
            return self._with_speed_options(GoalPlanner.load(
                checkpoint=p["checkpoint"] or None, preset=p["preset"], llava_path=p["llava_path"] or None,
                device=p["device"], seed=p["seed"]))
        self.get_logger().info(f"loading System 2 of the OpenHelix release '{p['release_dir']}' "
                               f"({p['release_variant']}, architecture {p['release_architecture']}) on {p['device']}; "
                               "preset, checkpoint and llava_path are not used")
        planner = GoalPlanner.from_release(p["release_dir"], p["release_variant"], p["release_architecture"],
                                           p["device"])
        for part, report in planner.reports.items():
            self.get_logger().info(f"key mapping ({part}): {report.summary()}")
        return self._with_speed_options(planner)

    def _with_speed_options(self, planner: GoalPlanner) -> GoalPlanner:
        """Applies ``prefix_cache`` and ``int8``; raises ValueError / RuntimeError (both in
        ``LOAD_ERRORS``) naming why int8 cannot run here."""
        model = planner.model
        model.config = replace(model.config, prefix_cache=self.params["prefix_cache"])
        if self.params["int8"]:
            model.quantize_int8()
            self.get_logger().info("System 2's language model runs with int8 dynamic quantization")
        return planner

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.plan_timer = self.create_timer(1.0 / self.params["rate_hz"], self.plan)
        self.get_logger().info(f"planning at {self.params['rate_hz']} Hz from {self.params['image_topic']}")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_planning()
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._destroy_data_path()
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_planning()
        self._destroy_data_path()
        return TransitionCallbackReturn.SUCCESS

    def _stop_planning(self) -> None:
        if self.plan_timer is not None:
            self.destroy_timer(self.plan_timer)
        self.plan_timer = None
        if self.worker is not None:
            self.worker.discard()  # no goal computed before deactivation is published after it

    def _destroy_data_path(self) -> None:
        if self.worker is not None and not self.worker.stop():
            self.get_logger().warning("a System 2 call outlasted the worker's stop; its result is dropped")
        self.worker = None
        for destroy, entity in reversed(self.data_path):
            destroy(entity)
        self.data_path = []
        self.planner = None
        self._forget_inputs()

    def on_image(self, msg: Image) -> None:
        try:
            check_image_size(msg, self.params["max_image_width"], self.params["max_image_height"])
        except InvalidMessageError as error:
            self.refusals.refuse("oversized_image", f"dropping image: {error}")
            return
        ahead = stamp_to_seconds(msg.header.stamp) - stamp_to_seconds(self.get_clock().now().to_msg())
        if ahead > self.params["future_stamp_tolerance_s"]:
            self.refusals.refuse("future_image", f"dropping image stamped {ahead:.3f} s ahead of this node's clock")
            return
        self.refusals.clear("future_image")
        self.latest_image = msg

    def on_instruction(self, msg: String) -> None:
        if not msg.data.strip():
            self.refusals.refuse("empty_instruction", "received an empty instruction; keeping the previous one")
            return
        if msg.data != self.instruction:
            self.get_logger().info(f"instruction: '{msg.data}'")
        self.instruction = msg.data

    def plan(self) -> None:
        """Hands the newest image and the instruction to System 2's worker when it is free."""
        image_msg = self.latest_image
        if image_msg is None or self.instruction is None or self.worker.busy:
            return
        stamp = stamp_to_seconds(image_msg.header.stamp)
        if stamp == self.last_planned_stamp:
            return
        try:
            image = image_to_rgb(image_msg)
        except InvalidMessageError as error:
            self.refusals.refuse("invalid_image", f"not planning: {error}")
            return
        self.refusals.clear("invalid_image")
        self.last_planned_stamp = stamp
        self.worker.submit(PlanJob(image, self.instruction, stamp, image_msg.header.frame_id))

    def publish_goal(self) -> None:
        """On the executor thread when System 2's worker has a result."""
        result = self.worker.take_result() if self.worker is not None else None
        if result is None:
            return
        if result.error is not None:
            self.refusals.refuse("planning_failed", f"System 2 failed: {result.error!r}")
            return
        self.refusals.clear("planning_failed")
        self.last_plan_seconds = result.duration_s
        job = result.job
        self.sequence += 1
        goal = Goal(embedding=result.output, sequence=self.sequence, instruction=job.instruction,
                    stamp=job.stamp, model_id=self.planner.model_id)
        self.goal_publisher.publish(goal_to_msg(goal, frame_id=job.frame_id))

    def publish_diagnostics(self) -> None:
        level = DiagnosticStatus.WARN if self.refusals.active else DiagnosticStatus.OK
        state = "planning" if self.plan_timer else "inactive" if self.planner else "unconfigured"
        values = {"goals_published": self.sequence, "instruction": self.instruction or "",
                  "planning": bool(self.worker and self.worker.busy),
                  "system2_seconds_last": f"{self.last_plan_seconds:.3f}"}
        values.update({f"refused_{cause}": count for cause, count in self.refusals.counts.items()})
        status = DiagnosticStatus(level=level, name="openhelix/planner",
                                  message="; ".join(self.refusals.active.values()) or state,
                                  hardware_id=self.planner.model_id if self.planner else "",
                                  values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        self.diagnostics_publisher.publish(DiagnosticArray(header=Header(stamp=self.get_clock().now().to_msg()),
                                                           status=[status]))


@dataclass(frozen=True)
class PlanJob:
    """One System 2 call and what its goal message carries."""

    image: np.ndarray
    instruction: str
    stamp: float
    frame_id: str


def main(args: list[str] | None = None) -> None:
    run_node(PlannerNode, args)


if __name__ == "__main__":
    main()
