"""Run folders: one run per folder, writable places only, torn last lines skipped and said."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.metrics.results import (
    RunWriter,
    check_new_run_dir,
    check_runs_root,
    read_turns,
    read_turns_file,
)


def _turns(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "turns.jsonl").write_text(text, encoding="utf-8")
    return folder


def test_a_torn_last_line_is_skipped_and_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = _turns(tmp_path / "run", '{"turn": 0}\n{"turn": 1}\n{"turn": 2, "stat')
    turns = read_turns_file(run)
    assert [r["turn"] for r in turns.records] == [0, 1]
    assert turns.torn_line == 3
    assert turns.warning is not None and "turns.jsonl:3: skipped an incomplete last line" in turns.warning
    with caplog.at_level(logging.WARNING):
        assert [r["turn"] for r in read_turns(run)] == [0, 1]
    assert "skipped an incomplete last line" in caplog.text


def test_a_complete_file_reports_nothing(tmp_path: Path) -> None:
    turns = read_turns_file(_turns(tmp_path / "run", '{"turn": 0}\n\n{"turn": 1}\n'))
    assert len(turns.records) == 2 and turns.torn_line is None and turns.warning is None


def test_a_bad_line_before_the_last_is_an_error_with_its_line(tmp_path: Path) -> None:
    run = _turns(tmp_path / "run", '{"turn": 0}\nnot json\n{"turn": 2}\n')
    with pytest.raises(ConfigError, match=r"turns.jsonl:2: not a JSON turn record"):
        read_turns_file(run)


def test_a_folder_holding_a_run_is_refused(tmp_path: Path) -> None:
    run = _turns(tmp_path / "run", '{"turn": 0}\n')
    with pytest.raises(ConfigError, match="not empty"):
        check_new_run_dir(run, option="--out")
    with pytest.raises(ConfigError, match="not empty"):
        RunWriter(run)
    assert (run / "turns.jsonl").read_text() == '{"turn": 0}\n'  # untouched


def test_new_and_empty_folders_are_fine(tmp_path: Path) -> None:
    check_new_run_dir(tmp_path / "a" / "b")
    (tmp_path / "empty").mkdir()
    writer = RunWriter(tmp_path / "empty")
    writer.close()
    assert (tmp_path / "empty" / "turns.jsonl").exists()


def test_a_file_where_a_folder_should_be_is_one_clear_error(tmp_path: Path) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    for check in (check_runs_root, check_new_run_dir):
        with pytest.raises(ConfigError, match="is not a folder"):
            check(file)
        with pytest.raises(ConfigError, match="is not a folder"):
            check(file / "below")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_folder_is_one_clear_error(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(ConfigError, match="is not writable"):
        check_runs_root(locked / "runs")


def test_the_writer_masks_registered_secrets_and_key_shapes(tmp_path: Path) -> None:
    key = "sk-proj-AbCdEfGhIjKlMnOpQrStUv0123"
    writer = RunWriter(tmp_path / "run")
    writer.append_turn({"turn": 0, "reason": f"HTTP 401: bad key {key}"})  # type: ignore[typeddict-item]
    writer.write_json("manifest.json", {"url": f"http://h/?key={key}"})
    writer.close()
    for name in ("turns.jsonl", "manifest.json"):
        text = (tmp_path / "run" / name).read_text()
        assert key not in text and "***" in text
    assert json.loads((tmp_path / "run" / "turns.jsonl").read_text())["reason"] == "HTTP 401: bad key ***"
