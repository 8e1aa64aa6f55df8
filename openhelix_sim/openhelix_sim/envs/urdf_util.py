"""Tiny helpers that write URDF text for bodies built from primitive shapes.

PyBullet's ``createMultiBody`` cannot set joint limits, so articulated scene parts
(doors, drawer, button, switch) are described as URDF strings instead and written to a
temporary directory before loading.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence


def _v(values: Sequence[float]) -> str:
    return " ".join(f"{float(x):.6g}" for x in values)


@dataclass
class Shape:
    """One box / cylinder / sphere, placed in its link's frame."""

    kind: str  # "box" | "cylinder" | "sphere"
    size: Sequence[float]  # box: full extents xyz; cylinder: (radius, length); sphere: (radius,)
    xyz: Sequence[float] = (0.0, 0.0, 0.0)
    rpy: Sequence[float] = (0.0, 0.0, 0.0)
    rgba: Sequence[float] = (0.8, 0.8, 0.8, 1.0)
    collide: bool = True
    visual: bool = True

    def geometry(self) -> str:
        if self.kind == "box":
            return f'<box size="{_v(self.size)}"/>'
        if self.kind == "cylinder":
            return f'<cylinder radius="{self.size[0]:.6g}" length="{self.size[1]:.6g}"/>'
        if self.kind == "sphere":
            return f'<sphere radius="{self.size[0]:.6g}"/>'
        raise ValueError(f"unknown shape kind {self.kind!r}")


@dataclass
class Link:
    name: str
    shapes: list = field(default_factory=list)
    mass: float = 0.0
    inertia: float = 1e-3  # diagonal inertia entries; crude but stable for small parts

    def xml(self) -> str:
        parts = [f'  <link name="{self.name}">']
        parts.append(
            "    <inertial><origin xyz=\"0 0 0\" rpy=\"0 0 0\"/>"
            f"<mass value=\"{self.mass:.6g}\"/>"
            f"<inertia ixx=\"{self.inertia:.6g}\" ixy=\"0\" ixz=\"0\" iyy=\"{self.inertia:.6g}\" "
            f"iyz=\"0\" izz=\"{self.inertia:.6g}\"/></inertial>"
        )
        for i, s in enumerate(self.shapes):
            origin = f'<origin xyz="{_v(s.xyz)}" rpy="{_v(s.rpy)}"/>'
            if s.visual:
                parts.append(
                    f"    <visual>{origin}<geometry>{s.geometry()}</geometry>"
                    f'<material name="{self.name}_m{i}"><color rgba="{_v(s.rgba)}"/></material></visual>'
                )
            if s.collide:
                parts.append(f"    <collision>{origin}<geometry>{s.geometry()}</geometry></collision>")
        parts.append("  </link>")
        return "\n".join(parts)


@dataclass
class Joint:
    name: str
    kind: str  # "fixed" | "prismatic"
    parent: str
    child: str
    xyz: Sequence[float] = (0.0, 0.0, 0.0)
    rpy: Sequence[float] = (0.0, 0.0, 0.0)
    axis: Sequence[float] = (1.0, 0.0, 0.0)
    lower: float = 0.0
    upper: float = 0.0

    def xml(self) -> str:
        s = [f'  <joint name="{self.name}" type="{self.kind}">']
        s.append(f'    <parent link="{self.parent}"/><child link="{self.child}"/>')
        s.append(f'    <origin xyz="{_v(self.xyz)}" rpy="{_v(self.rpy)}"/>')
        if self.kind != "fixed":
            s.append(f'    <axis xyz="{_v(self.axis)}"/>')
            s.append(f'    <limit lower="{self.lower:.6g}" upper="{self.upper:.6g}" effort="1000" velocity="10"/>')
        s.append("  </joint>")
        return "\n".join(s)


def robot_xml(name: str, links: Sequence[Link], joints: Sequence[Joint]) -> str:
    body = "\n".join([lk.xml() for lk in links] + [j.xml() for j in joints])
    return f'<?xml version="1.0"?>\n<robot name="{name}">\n{body}\n</robot>\n'


def write_text(directory: str, filename: str, text: str) -> str:
    path = os.path.join(directory, filename)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path
