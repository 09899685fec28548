"""Build steps: the optional compiled accelerator, and the startup hook; the metadata is all in
pyproject.toml.

``timelapse._speedups`` (src/timelapse/_speedups.c) and ``timelapse._eventscan``
(src/timelapse/_eventscan.c) are optional: where there is no C compiler or
no Python headers, the build of the extension fails, setuptools says so and goes on, and
``timelapse.snapshot`` and ``timelapse.reader`` use their Python implementations (``timelapse
--version`` tells which).

``timelapse-record.pth`` (the line below) goes at the top of site-packages, where ``site`` runs it at
every interpreter start: ``TIMELAPSE_RECORD=DIR python app.py`` records app.py, and a child process
of a recording with children (``TIMELAPSE_PARENT``) records itself (src/timelapse/autostart.py,
src/timelapse/children.py, docs/autostart.md). Unset, the line costs two dict lookups. A wheel gets
it from build_py's output; an editable install (PEP 660) only puts its own path .pth in its wheel,
so the hook is added to that wheel too.
"""

import os

from setuptools import Extension, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_NAME = "timelapse-record.pth"
#: One line: site exec()s lines that start with "import". ``os`` is imported already when site runs.
PTH_LINE = ("import os; exec(\"try:\\n from timelapse.autostart import start\\nexcept Exception as e:"
            "\\n import sys; print(f'timelapse: TIMELAPSE_RECORD: not recording: {e}', file=sys.stderr)"
            "\\nelse:\\n start()\") if 'TIMELAPSE_RECORD' in os.environ or 'TIMELAPSE_PARENT' in os.environ "
            "else None\n")


def _write_pth(folder: str) -> str:
    path = os.path.join(folder, PTH_NAME)
    os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(PTH_LINE)
    return path


class BuildPyWithHook(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            _write_pth(self.build_lib)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, os.path.join(self.build_lib, PTH_NAME)]


class EditableWheelWithHook(editable_wheel):
    # Everything in the unpacked folder goes into the editable wheel, at its root (site-packages).
    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):  # type: ignore[no-untyped-def]
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        _write_pth(os.fspath(unpacked_wheel))
        return result


setup(
    cmdclass={"build_py": BuildPyWithHook, "editable_wheel": EditableWheelWithHook},
    ext_modules=[
        Extension("timelapse._speedups", ["src/timelapse/_speedups.c"], optional=True),
        # Where a stream's events end, for readers that skip Values (reader.py, timelapse summary).
        Extension("timelapse._eventscan", ["src/timelapse/_eventscan.c"], optional=True),
    ],
)
