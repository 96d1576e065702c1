"""Ctrl-C and SIGTERM never cut a store write in the middle: an interrupted SQLite write keeps its lock in the
process, and the run could then not be closed as KILLED (CI saw a run left RUNNING so, "database is locked")."""

import os
import signal

import mlflow
import pytest

from training import tracking


def _self_signal(sig: int) -> None:
    os.kill(os.getpid(), sig)


def test_a_signal_inside_the_block_surfaces_when_it_ends():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with tracking.signals_deferred():
            _self_signal(signal.SIGINT)
            done.append("after the signal")  # still inside the block: the interrupt has waited
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_second_signal_does_not_wait():
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with tracking.signals_deferred():
            _self_signal(signal.SIGINT)
            _self_signal(signal.SIGINT)
            reached.append("not here")
    assert reached == []
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nothing_pending_nothing_raised():
    with tracking.signals_deferred():
        with tracking.signals_deferred():  # nested: one block
            pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_during_a_write_lets_it_finish_and_closes_the_run_killed(mlflow_store, monkeypatch, sig):
    real = mlflow.log_params

    def interrupted_mid_write(params):
        _self_signal(sig)  # arrives while the write is under way
        return real(params)

    monkeypatch.setattr(mlflow, "log_params", interrupted_mid_write)
    with pytest.raises(KeyboardInterrupt):
        with tracking.run("interrupts", "mid-write", tags={}) as active:
            tracking.log_params({"a": 1, "b": "two"})
            pytest.fail("the interrupt should surface when the write ends")
    run = mlflow.MlflowClient().get_run(active.info.run_id)
    assert run.data.params == {"a": "1", "b": "two"}
    assert run.info.status == "KILLED"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
