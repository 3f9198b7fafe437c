"""The agent's pure diff: what the reconciler does to each unit of a node."""

import pytest

from nodeplane.executor.agent.backend import Action, UnitState, plan_actions
from nodeplane.protocol import DesiredState

UNIT = "nodeplane-a-node.service"


def plan(
    state: UnitState | None,
    desired: DesiredState = DesiredState.RUNNING,
    *,
    restart: bool = False,
    new_revision: bool = False,
) -> list[tuple[Action, str]]:
    return plan_actions(
        desired=desired,
        restart_requested=restart,
        wanted=[UNIT],
        installed={UNIT: state} if state else {},
        stray=[],
        new_revision=new_revision,
    )


def test_a_stopped_unit_of_a_running_node_is_started() -> None:
    assert plan(UnitState(running=False, definition_changed=False)) == [(Action.START, UNIT)]
    assert plan(None) == [(Action.START, UNIT)]


def test_a_crashed_unit_stays_down_until_a_new_revision_asks() -> None:
    down = UnitState(running=False, definition_changed=False, crashed=True)
    # The restart policy decided (Restart=no, or systemd gave up): the reconciler does not overrule.
    assert plan(down) == []
    # Start, restart or a changed definition is a new request.
    assert plan(down, new_revision=True) == [(Action.START, UNIT)]
    assert plan(down, restart=True, new_revision=True) == [(Action.START, UNIT)]
    changed = UnitState(running=False, definition_changed=True, crashed=True)
    assert plan(changed) == [(Action.START, UNIT)]


@pytest.mark.parametrize("crashed", [False, True])
def test_a_stopped_node_starts_nothing(crashed: bool) -> None:
    down = UnitState(running=False, definition_changed=False, crashed=crashed)
    assert plan(down, DesiredState.STOPPED, new_revision=True) == []
    up = UnitState(running=True, definition_changed=False)
    assert plan(up, DesiredState.STOPPED) == [(Action.STOP, UNIT)]


def test_restart_and_definition_changes_restart_a_running_unit() -> None:
    up = UnitState(running=True, definition_changed=False)
    assert plan(up) == []
    assert plan(up, restart=True, new_revision=True) == [(Action.RESTART, UNIT)]
    assert plan(UnitState(running=True, definition_changed=True)) == [(Action.RESTART, UNIT)]
