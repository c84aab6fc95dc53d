"""Settings several recipes share, each declared once: `threshold: float = threshold_setting()` in a config."""

from __future__ import annotations

from dataclasses import field

from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.server import EmbeddedConfig

from pipelines.dedup.index import index_dir_problem


def threshold_setting(of: str = ""):
    return field(default=0.8, metadata={"help": f"near-duplicate Jaccard threshold{of}", "range": "(0, 1]"})


def index_setting(of: str = ""):
    return field(default="", metadata={"help": f"directory of a persistent near-duplicate index{of}",
                                       "check": index_dir_problem})


def benchmarks_setting(default: tuple[str, ...] = ()):
    return field(default=default, metadata={"help": "[NAME=]PATH of benchmark prompts to remove, or an eval suite's "
                                                    "name (ifbench, ifeval_dev, gsm8k, judged)"})


def test_fraction_setting(splits: str = "splits"):
    return field(default=0.1, metadata={"help": f"share of prompts in the test {splits}", "range": "[0, 1)"})


def gen_fraction_setting():
    return field(default=0.25, metadata={"help": "share of prompts in the *_gen splits", "range": "[0, 1]"})


def embedded_teacher_setting(model: str):
    """A teacher (or judge) on the embedded `model`, 8 requests in flight; equal configs share one server."""
    return field(default_factory=lambda: TeacherConfig(max_concurrency=8, embedded=EmbeddedConfig(model=model)))
