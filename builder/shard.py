"""Which shard of the plan this worker builds: --shard i/N, or the scheduler's environment (Slurm job arrays,
Kubernetes Indexed Jobs). Pure: the environment is passed in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Optional

from validator.errors import UserError

# Kubernetes Indexed Jobs give only the index: the manifest we render sets the count next to it.
COUNT_ENV = "GPUFORGE_SHARDS"


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based
    count: int
    source: str  # where it came from: --shard, SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX

    @property
    def name(self) -> str:
        return f"{self.index}-of-{self.count}"

    def as_tuple(self) -> tuple:
        return self.index, self.count


def parse_shard(text: str, source: str = "--shard") -> Shard:
    m = re.fullmatch(r"(\d{1,6})/(\d{1,6})", text.strip())
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise UserError(f"{source}: {text!r} is not a shard i/N with 1 <= i <= N (e.g. 2/4)")
    return Shard(int(m.group(1)), int(m.group(2)), source)


def _int(env: Mapping[str, str], name: str) -> int:
    v = env.get(name, "")
    if not re.fullmatch(r"\d{1,9}", v.strip()):
        raise UserError(f"${name}={v!r} is not a whole number (set by the scheduler)")
    return int(v)


def shard_from_env(env: Mapping[str, str]) -> Optional[Shard]:
    """The shard a Slurm array task or a Kubernetes Indexed Job pod stands for; None outside both."""
    if "SLURM_ARRAY_TASK_ID" in env:
        task, count = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_COUNT")
        lo = _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 1
        stride = _int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
        if count < 1 or stride < 1 or task < lo or (task - lo) % stride:
            raise UserError(f"SLURM_ARRAY_TASK_ID={task} is not a task of the array (min {lo}, step {stride}, count {count})")
        index = (task - lo) // stride + 1
        if index > count:
            raise UserError(f"SLURM_ARRAY_TASK_ID={task} is shard {index}, but the array has {count} task(s)")
        return Shard(index, count, "SLURM_ARRAY_TASK_ID")
    if "JOB_COMPLETION_INDEX" in env:
        index = _int(env, "JOB_COMPLETION_INDEX")
        if COUNT_ENV not in env:
            raise UserError(f"JOB_COMPLETION_INDEX is set but ${COUNT_ENV} (the Job's completions) is not",
                            hint="render the Job with `gpuforge k8s render`, which sets both")
        count = _int(env, COUNT_ENV)
        if not 0 <= index < count:
            raise UserError(f"JOB_COMPLETION_INDEX={index} is outside 0..{count - 1} (${COUNT_ENV}={count})")
        return Shard(index + 1, count, "JOB_COMPLETION_INDEX")
    return None


def resolve_shard(option: Optional[str], env: Mapping[str, str]) -> Optional[Shard]:
    """--shard wins over the environment."""
    return parse_shard(option) if option else shard_from_env(env)
