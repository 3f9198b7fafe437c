"""Hypothesis properties of `derive_node_phase` (DESIGN §6)."""

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from nodeplane.protocol import (
    DesiredState,
    NodePhase,
    ObservedNodeState,
    ObservedProcess,
    ProcessStatus,
    derive_node_phase,
)


@dataclass(frozen=True)
class Scenario:
    desired: DesiredState | str
    revision: int
    deleted: bool
    observed: ObservedNodeState | None

    @property
    def desired_state(self) -> DesiredState:
        return DesiredState(self.desired)

    def phase(self) -> NodePhase:
        return derive_node_phase(
            desired_state=self.desired,
            revision=self.revision,
            deleted=self.deleted,
            observed=self.observed,
        )


desired_states = st.sampled_from(list(DesiredState)) | st.sampled_from(
    [d.value for d in DesiredState]
)
statuses = st.lists(st.sampled_from(list(ProcessStatus)), max_size=8)
apply_errors = st.none() | st.text(alphabet="abc xyz:\t", max_size=30)


def make_observed(
    revision: int, process_statuses: list[ProcessStatus], apply_error: str | None
) -> ObservedNodeState:
    return ObservedNodeState(
        revision=revision,
        processes=[
            ObservedProcess(role=f"role-{i}", status=s) for i, s in enumerate(process_statuses)
        ],
        apply_error=apply_error,
    )


@st.composite
def observations(draw: st.DrawFn, spec_revision: int) -> ObservedNodeState:
    # Mostly near the spec revision (behind / current / ahead), sometimes anywhere.
    near = st.integers(min_value=max(0, spec_revision - 2), max_value=spec_revision + 2)
    revision = draw(near | st.integers(min_value=0, max_value=10**9))
    return make_observed(revision, draw(statuses), draw(apply_errors))


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    desired: st.SearchStrategy[DesiredState | str] = desired_states,
    deleted: st.SearchStrategy[bool] = st.booleans(),
    observed_present: st.SearchStrategy[bool] = st.booleans(),
) -> Scenario:
    revision = draw(st.integers(min_value=0, max_value=10**9))
    obs = draw(observations(revision)) if draw(observed_present) else None
    return Scenario(draw(desired), revision, draw(deleted), obs)


live = scenarios(deleted=st.just(False), observed_present=st.just(True))


@given(scenarios(deleted=st.just(True)))
def test_deleted_node_is_always_deleting(s: Scenario) -> None:
    assert s.phase() is NodePhase.DELETING


@given(scenarios(deleted=st.just(False), observed_present=st.just(False)))
def test_no_observation_is_provisioning(s: Scenario) -> None:
    assert s.phase() is NodePhase.PROVISIONING


@given(scenarios(desired=st.sampled_from([DesiredState.STOPPED, "stopped"])))
def test_desired_stopped_never_looks_alive(s: Scenario) -> None:
    result = s.phase()
    assert result not in {
        NodePhase.RUNNING,
        NodePhase.SYNCING,
        NodePhase.STARTING,
        NodePhase.CONFIGURING,
        NodePhase.ERROR,
    }
    if not s.deleted and s.observed is not None:
        assert result in {NodePhase.STOPPING, NodePhase.STOPPED}


@given(scenarios(desired=st.sampled_from([DesiredState.RUNNING, "running"])))
def test_desired_running_never_looks_stopped(s: Scenario) -> None:
    assert s.phase() not in {NodePhase.STOPPING, NodePhase.STOPPED}


@given(scenarios())
def test_result_is_always_a_node_phase(s: Scenario) -> None:
    result = s.phase()
    assert type(result) is NodePhase
    assert isinstance(result, str)
    assert NodePhase(result.value) is result


@given(
    scenarios(
        desired=st.sampled_from([DesiredState.RUNNING, "running"]),
        deleted=st.just(False),
        observed_present=st.just(True),
    ),
    st.integers(min_value=0, max_value=8),
)
def test_any_process_error_with_desired_running_is_error(s: Scenario, at: int) -> None:
    assert s.observed is not None
    processes = list(s.observed.processes)
    processes.insert(
        min(at, len(processes)), ObservedProcess(role="broken", status=ProcessStatus.ERROR)
    )
    obs = s.observed.model_copy(update={"processes": processes})
    s = Scenario(s.desired, s.revision, s.deleted, obs)
    assert s.phase() is NodePhase.ERROR


@given(live, st.data())
def test_phase_is_invariant_under_process_order(s: Scenario, data: st.DataObject) -> None:
    assert s.observed is not None
    shuffled = data.draw(st.permutations(s.observed.processes))
    reordered = Scenario(
        s.desired,
        s.revision,
        s.deleted,
        s.observed.model_copy(update={"processes": shuffled}),
    )
    assert reordered.phase() is s.phase()


@given(live)
def test_stopped_exactly_when_desired_stopped_applied_and_at_rest(s: Scenario) -> None:
    assert s.observed is not None
    at_rest = all(
        p.status in (ProcessStatus.STOPPED, ProcessStatus.ERROR) for p in s.observed.processes
    )
    applied = s.observed.revision >= s.revision
    expected = s.desired_state is DesiredState.STOPPED and applied and at_rest
    assert (s.phase() is NodePhase.STOPPED) == expected


@given(live)
def test_running_exactly_when_desired_running_applied_clean_and_all_running(
    s: Scenario,
) -> None:
    assert s.observed is not None
    all_running = all(p.status is ProcessStatus.RUNNING for p in s.observed.processes)
    expected = (
        s.desired_state is DesiredState.RUNNING
        and s.observed.revision >= s.revision
        and s.observed.apply_error is None
        and all_running
    )
    assert (s.phase() is NodePhase.RUNNING) == expected


@given(live)
def test_desired_running_behind_is_configuring_unless_a_process_errored(s: Scenario) -> None:
    assert s.observed is not None
    result = s.phase()
    if s.desired_state is DesiredState.RUNNING and s.observed.revision < s.revision:
        has_error = any(p.status is ProcessStatus.ERROR for p in s.observed.processes)
        assert result is (NodePhase.ERROR if has_error else NodePhase.CONFIGURING)
    else:
        assert result is not NodePhase.CONFIGURING


@given(live)
def test_enum_and_string_desired_state_agree(s: Scenario) -> None:
    as_enum = Scenario(s.desired_state, s.revision, s.deleted, s.observed)
    as_str = Scenario(s.desired_state.value, s.revision, s.deleted, s.observed)
    assert as_enum.phase() is as_str.phase()
