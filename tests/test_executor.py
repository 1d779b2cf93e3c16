"""The execution layer around an in-process backend (one with ``complete_batch``): groups of
batch_size, retries of a failed group, the budget, and answers committed to the cache."""
from __future__ import annotations

import asyncio

from pipeline.config.teacher import TeacherConfig
from pipeline.records import Message, Usage
from pipeline.teachers.base import RetryableError, TeacherResponse, make_request
from pipeline.teachers.budget import Budget
from pipeline.teachers.cache import AnswerCache
from pipeline.teachers.executor import Executor, RequestToAnswer


class BatchTeacher:
    """An in-process teacher: answers a group at once; fails the first ``fail_first`` calls."""

    backend, model = "hf", "tiny"

    def __init__(self, fail_first: int = 0, short_by: int = 0):
        self.groups: list[int] = []
        self.fail_first, self.short_by = fail_first, short_by

    async def complete(self, req):  # pragma: no cover - the executor must prefer complete_batch
        raise AssertionError("complete() called on a batching backend")

    async def complete_batch(self, reqs):
        self.groups.append(len(reqs))
        if self.fail_first:
            self.fail_first -= 1
            raise RetryableError("server", "device busy")
        n = len(reqs) - self.short_by
        self.short_by = 0
        return [TeacherResponse(text=f"ok {r.messages[-1].content}", model="tiny",
                                usage=Usage(prompt_tokens=3, completion_tokens=1)) for r in reqs[:n]]

    async def aclose(self):
        pass


def _jobs(n: int) -> list[RequestToAnswer]:
    return [RequestToAnswer(*make_request("hf", "tiny", [Message(role="user", content=f"q{i}")], {"max_tokens": 4}))
            for i in range(n)]


def _run(teacher, cfg, cache, jobs, budget=None):
    budget = budget or Budget(cfg.budget, None)
    return asyncio.run(Executor(teacher, cfg, cache, budget).run(jobs))


def test_in_process_backends_get_groups_of_batch_size_and_every_answer_is_cached(tmp_path):
    cfg = TeacherConfig(backend="hf", model="tiny", batch_size=4)
    teacher, jobs = BatchTeacher(), _jobs(10)
    with AnswerCache(tmp_path / "c.sqlite") as cache:
        stats = _run(teacher, cfg, cache, jobs)
        assert teacher.groups == [4, 4, 2]
        assert stats.new_answers == 10 and len(cache) == 10
        assert cache.get(jobs[7].req.request_hash).text == "ok q7"
        again = _run(BatchTeacher(), cfg, cache, jobs + _jobs(11)[10:])
        assert again.cached == 10 and again.new_answers == 1


def test_a_failed_group_is_retried_and_a_short_answer_list_counts_as_malformed(tmp_path):
    cfg = TeacherConfig(backend="hf", model="tiny", batch_size=3, retry_initial_s=0.01)
    teacher = BatchTeacher(fail_first=1, short_by=1)
    with AnswerCache(tmp_path / "c.sqlite") as cache:
        stats = _run(teacher, cfg, cache, _jobs(3))
    assert teacher.groups == [3, 3, 3]
    assert stats.errors == {"server": 1, "malformed": 1} and stats.retries == 2 and stats.new_answers == 3


def test_the_budget_stops_the_batched_path_between_groups(tmp_path):
    cfg = TeacherConfig(backend="hf", model="tiny", batch_size=4, budget={"max_requests": 5})
    teacher = BatchTeacher()
    with AnswerCache(tmp_path / "c.sqlite") as cache:
        budget = Budget(cfg.budget, None)
        stats = _run(teacher, cfg, cache, _jobs(12), budget)
        assert teacher.groups == [4, 1] and len(cache) == 5
    assert stats.budget_stopped == "max_requests=5"


def test_duplicate_requests_in_one_run_are_sent_once(tmp_path):
    cfg = TeacherConfig(backend="hf", model="tiny", batch_size=8)
    teacher, jobs = BatchTeacher(), _jobs(3)
    with AnswerCache(tmp_path / "c.sqlite") as cache:
        _run(teacher, cfg, cache, jobs + jobs)
    assert teacher.groups == [3]
