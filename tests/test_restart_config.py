"""Restart ladders, per-entity actions and stop-then-start in the config: what loads, and what a mistake says."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterwatch.config.loader import ConfigError, load_config


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(str(path), env={}, cwd=path.parent)
    return [str(p) for p in info.value.problems]


def test_one_action_or_a_ladder_of_them(write):
    path = write(
        "c.yaml",
        "checks:\n"
        "  - name: dask\n    kind: dask\n    expect_workers: [w1, w2]\n"
        "    restart:\n"
        "      - {supervisor: 'dask-worker-{entity}', max_attempts: 2}\n"
        "      - {command: [recreate, '{entity}'], stop: [pkill, -x, '{entity}']}\n"
        "      - {command: [reboot-node], node: '{node}', max_attempts: 1}\n"
        "  - name: web\n    kind: http\n    url: http://127.0.0.1:1\n    restart: {systemd: web}\n",
    )
    dask, web = load_config(str(path), env={}, cwd=path.parent).config.checks
    assert [s.action for s in dask.restart] == ["supervisor", "command", "command"]
    assert dask.restart[1].for_entity("w2", "gpu-1").stop == ["pkill", "-x", "w2"]
    assert dask.restart[2].for_entity("w2", "gpu-1").target == "command:reboot-node@gpu-1"
    assert web.restart[0].target == "systemd:web" and not web.restart[0].templated
    assert web.fix_hint() == "`systemctl restart web`"
    assert dask.fix_hint("w1") == "`supervisorctl restart dask-worker-w1`" and dask.fix_hint() is None


def test_a_mistake_in_a_single_restart_names_its_own_line(write):
    path = write("c.yaml", "checks:\n  - name: t\n    kind: tcp\n    port: 1\n    restart:\n      command: [x]\n"
                 "      max_atempts: 2\n")
    assert problems(path) == [
        f"{path}:7: checks[0](t).restart.max_atempts: unknown key 'max_atempts' (did you mean 'max_attempts'?)"
    ]


def test_a_mistake_in_a_ladder_step_names_the_step(write):
    path = write("c.yaml", "checks:\n  - name: t\n    kind: tcp\n    port: 1\n    restart:\n"
                 "      - {command: [x]}\n      - {command: [y], timeout: soon}\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:7: checks[0](t).restart[1].timeout:")


def test_entity_placeholder_on_a_check_with_no_entities_is_refused(write):
    path = write("c.yaml", "checks:\n  - name: t\n    kind: tcp\n    port: 1\n    restart:\n"
                 "      command: [restart, '{entity}']\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:5: checks[0](t).restart:") and "a tcp check has only itself" in problem


def test_stop_belongs_to_a_command_restart(write):
    path = write("c.yaml", "checks:\n  - name: t\n    kind: tcp\n    port: 1\n    restart:\n"
                 "      systemd: x\n      stop: [y]\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:7: checks[0](t).restart.stop:") and "goes with a `command`" in problem


def test_an_unknown_node_in_a_ladder_step_is_named(write):
    path = write("c.yaml", "checks:\n  - name: t\n    kind: tcp\n    port: 1\n    restart:\n"
                 "      - {command: [x]}\n      - {command: [y], node: nowhere}\n")
    [problem] = problems(path)
    assert problem.startswith(f"{path}:7: checks[0](t).restart[1].node: unknown node 'nowhere'")
