"""Preparing and running a program as python would."""

from __future__ import annotations

import sys

import pytest
from conftest import PROGRAMS

from timelapse.errors import UsageError
from timelapse.runner import prepare_module, prepare_script, program_traceback, run


def test_prepare_script_compiles_with_the_absolute_path(tmp_path, monkeypatch):
    (tmp_path / "ok.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    program = prepare_script("ok.py", ["-a"])
    assert program.argv0 == "ok.py" and program.path == str(tmp_path / "ok.py")
    assert program.code.co_filename == str(tmp_path / "ok.py") and program.args == ["-a"]


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"), ("def (:\n", "line 1"), (b"\xff\xfe\x00bad", "cannot record"),
])
def test_prepare_script_refuses_in_one_line(tmp_path, content, message):
    script = tmp_path / "s.py"
    if isinstance(content, str):
        script.write_text(content)
    elif content is not None:
        script.write_bytes(content)
    with pytest.raises(UsageError, match=message) as caught:
        prepare_script(str(script), [])
    assert "\n" not in str(caught.value)


def test_prepare_module_finds_files_without_running_them(monkeypatch, tmp_path):
    # As python -m: looked up from the working directory, whatever sys.path[0] is now (under the
    # console script, the folder of the script).
    monkeypatch.chdir(PROGRAMS)
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path[1:]])
    sys.modules.pop("pkg", None)
    assert prepare_module("pkg", []).path == str(PROGRAMS / "pkg" / "__main__.py")
    assert prepare_module("pkg.work", ["1"]).path == str(PROGRAMS / "pkg" / "work.py")
    assert "pkg" not in sys.modules  # nothing imported, nothing ran
    for name, message in [("pkg.nothing", "no module named 'pkg.nothing'"),
                          ("pkg.work.deeper", "'pkg.work' is not a package"),
                          ("not-a-name", "not a module name")]:
        with pytest.raises(UsageError, match=message):
            prepare_module(name, [])


def test_the_programs_traceback_starts_at_its_own_frame(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("def f():\n    raise ValueError('x')\nf()\n")
    program = prepare_script(str(script), [])
    saved = sys.modules["__main__"]
    try:
        run(program)
    except ValueError as exc:
        tb = program_traceback(exc.__traceback__)
    finally:
        sys.modules["__main__"] = saved
    names = []
    while tb is not None:
        names.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert names == ["<module>", "f"]


def test_a_module_with_a_syntax_error_is_refused_before_running(tmp_path, monkeypatch):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "__init__.py").write_text("")
    (tmp_path / "bad" / "broken.py").write_text("x = 1\ndef (:\n")
    (tmp_path / "worse").mkdir()
    (tmp_path / "worse" / "__init__.py").write_text("import os\nif :\n")
    (tmp_path / "worse" / "fine.py").write_text("x = 1\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"module 'bad.broken': invalid syntax \(line 2 of .*broken.py\)"):
        prepare_module("bad.broken", [])
    with pytest.raises(UsageError, match=r"line 2 of .*worse/__init__.py"):
        prepare_module("worse.fine", [])
