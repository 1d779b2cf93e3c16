"""bench/token_kd_data.py's common held-out set: only rows whose prompt neither training set holds."""
from __future__ import annotations

from bench.token_kd_data import seed_cache, unseen_rows
from pipeline.records import TrainRow


def _row(i: int, text: str) -> TrainRow:
    return TrainRow(id=str(i), prompt=[{"role": "system", "content": "Sum up."}, {"role": "user", "content": text}],
                    completion=[{"role": "assistant", "content": "A summary."}])


def test_rows_seen_by_either_dataset_are_left_out():
    rows = [_row(0, "Review: a"), _row(1, "Review: b"), _row(2, "Review: c")]
    kept = unseen_rows(rows, {"Review: a", "Review: c", "Sum up."})
    assert [r.id for r in kept] == ["1"]


def test_the_held_out_cache_starts_from_the_greedy_one_and_is_never_overwritten(tmp_path):
    greedy, held = tmp_path / "greedy" / "cache.sqlite", tmp_path / "heldout" / "cache.sqlite"
    greedy.parent.mkdir()
    greedy.write_bytes(b"greedy answers")
    seed_cache(greedy, held)
    assert held.read_bytes() == b"greedy answers"
    held.write_bytes(b"greedy answers + 70 held-out answers")  # what the first run added
    seed_cache(greedy, held)
    assert held.read_bytes() == b"greedy answers + 70 held-out answers"
