"""Rewrites a module of its own and reloads it: old and new code each point at their own source."""
import importlib
import pathlib
import sys

here = pathlib.Path(sys.argv[1])
sys.path.insert(0, str(here))
module_file = here / "mutable_mod.py"
module_file.write_text("def answer():\n    return 'old'\n")
import mutable_mod  # noqa: E402

old_answer = mutable_mod.answer
print(old_answer())
module_file.write_text("# version two\n\ndef answer():\n    value = 'new'\n    return value\n")
importlib.reload(mutable_mod)
print(mutable_mod.answer(), old_answer())
