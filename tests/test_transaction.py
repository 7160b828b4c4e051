"""install/transaction.py in this process, over a layout and a lifecycle that only record what
they are asked: `recover` as a function of the journal and of what the layout reports, each
branch on its own (the crash tests with kill -9 and the real layouts are test_failpoints.py
and test_update_e2e.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.simulator import FeedSimulator, SimHost
from updaterd.host.state import AppState, Transaction
from updaterd.install.apprun import AppRun
from updaterd.install.layout import Kept
from updaterd.install.transaction import recover


@dataclass
class Recorded:
    """An `InstallLayout` that answers as told and records every call."""

    on_disk: str | None = "1.0.0"
    switched: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    knows_version: bool = True
    keeps_trees: bool = False

    def clean_leftovers(self) -> list[str]:
        return []

    def installed(self) -> str | None:
        return self.on_disk

    def switched_to(self, tx: Transaction) -> bool:
        return self.switched

    def settle(self, version: str | None) -> None:
        self.calls.append(("settle", version))

    def undo_interrupted(self, tx: Transaction) -> None:
        self.calls.append(("undo", tx.to_version))

    def restore(self, version: str | None, backup: str, failpoint: str) -> None:
        self.calls.append(("restore", version))

    def discard(self, version: str) -> None:
        self.calls.append(("discard", version))

    def run_dir(self, version: str) -> Path:
        return Path("/nonexistent") / version

    def kept(self) -> list[Kept]:
        return []

    def prune(self, current: str | None, previous: str | None, retain: int) -> list[str]:
        self.calls.append(("prune", current))
        return []

    def release_folders(self) -> None:
        return None


@dataclass
class Lifecycle:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    given_up: dict[str, str] = field(default_factory=dict)

    def running(self) -> str | None:
        return None

    async def start(self, run: AppRun, from_version: str | None, version: str,
                    env: dict[str, str], timeout: float) -> bool:
        self.calls.append(("start", version))
        return True

    async def restart_back(self, run: AppRun, to_version: str, env: dict[str, str],
                           timeout: float) -> None:
        self.calls.append(("restart_back", to_version))

    def committed(self, run: AppRun) -> None:
        self.calls.append(("committed", None))

    def rolled_back(self, run: AppRun, to_version: str | None) -> None:
        self.calls.append(("rolled_back", to_version))

    def gave_up(self) -> dict[str, str]:
        return self.given_up


def a_run(tmp_path: Path, layout: Recorded, life: Lifecycle, st: AppState) -> AppRun:
    config = SimHost(tmp_path, FeedSimulator()).configure(health_check=[], install="inplace",
                                                           target=str(tmp_path / "bin" / "t"))
    (tmp_path / "bin").mkdir(exist_ok=True)
    folder = tmp_path / "state" / "hello"
    folder.mkdir(parents=True, exist_ok=True)
    return AppRun(name="hello", cfg=config.apps["hello"], config=config,
                  layout=layout, state_folder=folder,  # type: ignore[arg-type]
                  cache=tmp_path / "cache", state=st, emit=lambda e: None,
                  lifecycle=life)  # type: ignore[arg-type]


def journal(kind: str, frm: str | None, to: str, **kw: Any) -> Transaction:
    return Transaction(kind=kind, from_version=frm, to_version=to,  # type: ignore[arg-type]
                       started_at=0.0, **kw)


def test_no_journal_and_the_disk_agrees_nothing_happens(tmp_path: Path) -> None:
    layout, life = Recorded(), Lifecycle()
    st = AppState(installed="1.0.0", history=[])
    trio.run(recover, a_run(tmp_path, layout, life, st))
    assert (layout.calls, life.calls, st.installed) == ([], [], "1.0.0")


@pytest.mark.parametrize(("said", "first"), [(None, True), ("0.9.0", False)])
def test_no_journal_the_state_follows_the_disk(tmp_path: Path, said: str | None,
                                               first: bool) -> None:
    st = AppState(installed=said)
    trio.run(recover, a_run(tmp_path, Recorded(on_disk="1.0.0"), Lifecycle(), st))
    assert st.installed == "1.0.0"
    assert [h.action for h in st.history] == (["found"] if first else [])


def test_a_switched_update_is_finished_and_committed(tmp_path: Path) -> None:
    layout, life = Recorded(switched=True), Lifecycle()
    st = AppState(installed="1.0.0", pending=journal("update", "1.0.0", "1.1.0"))
    trio.run(recover, a_run(tmp_path, layout, life, st))
    assert layout.calls == [("settle", "1.1.0"), ("prune", "1.1.0")]
    assert life.calls == [("start", "1.1.0"), ("committed", None)]
    assert (st.installed, st.previous, st.pending) == ("1.1.0", "1.0.0", None)


def test_an_update_cut_before_its_switch_is_undone(tmp_path: Path) -> None:
    layout, life = Recorded(switched=False), Lifecycle()
    st = AppState(installed="1.0.0", pending=journal("update", "1.0.0", "1.1.0"))
    trio.run(recover, a_run(tmp_path, layout, life, st))
    assert layout.calls == [("undo", "1.1.0")] and life.calls == []
    assert (st.installed, st.pending, st.blocked) == ("1.0.0", None, [])
    assert st.history[-1].action == "interrupted"


def test_a_version_the_launcher_gave_up_on_is_blocked(tmp_path: Path) -> None:
    life = Lifecycle(given_up={"1.1.0": "updaterd 1.1.0 did not start three times"})
    st = AppState(installed="1.0.0", pending=journal("update", "1.0.0", "1.1.0"))
    trio.run(recover, a_run(tmp_path, Recorded(switched=False), life, st))
    assert st.blocked == ["1.1.0"] and st.last_error == \
        "updaterd 1.1.0 did not start three times"


@pytest.mark.parametrize("block", [True, False])
def test_a_journaled_rollback_is_finished(tmp_path: Path, block: bool) -> None:
    layout, life = Recorded(), Lifecycle()
    st = AppState(installed="1.1.0", pending=journal("rollback", "1.1.0", "1.0.0",
                                                     block=block, reason="exit 1"))
    trio.run(recover, a_run(tmp_path, layout, life, st))
    assert layout.calls[0] == ("restore", "1.0.0")
    assert ("discard", "1.1.0") in layout.calls if block else len(layout.calls) == 1
    assert life.calls == [("restart_back", "1.0.0"), ("rolled_back", "1.0.0")]
    assert (st.installed, st.pending) == ("1.0.0", None)
    assert st.blocked == (["1.1.0"] if block else [])


@pytest.mark.parametrize(("with_data", "to", "home", "restored"), [
    (True, "1.0.0", True, True),
    (False, "1.0.0", True, False),  # the code only
    (True, "", True, False),  # back to nothing: no data of nothing to put back
    (True, "1.0.0", False, False),  # no snapshots for this app (no shared paths)
])
def test_a_rollback_puts_the_data_back_only_when_asked_and_there_is_a_home(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_data: bool, to: str, home: bool,
        restored: bool) -> None:
    from updaterd.install import transaction

    done: list[tuple[str, str | None]] = []
    monkeypatch.setattr(transaction.snapshots, "home",
                        lambda cfg: tmp_path / "prefix" if home else None)
    monkeypatch.setattr(transaction.snapshots, "restore",
                        lambda prefix, version, leaving: done.append((version, leaving)))
    monkeypatch.setattr(transaction.snapshots, "tidy", lambda prefix, kept: [])
    phases: list[str] = []
    layout, life = Recorded(), Lifecycle()
    st = AppState(installed="1.1.0", pending=journal("rollback", "1.1.0", to,
                                                     with_data=with_data, reason="asked"))
    run = a_run(tmp_path, layout, life, st)
    run.emit = lambda e: phases.append(e.message)  # type: ignore[method-assign]
    trio.run(recover, run)
    assert done == ([("1.0.0", "1.1.0")] if restored else [])
    said = f"rolled back to {to or 'nothing'}" + (" with its data" if with_data else "")
    assert said in phases
