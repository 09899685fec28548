#!/usr/bin/env bash
# Run the tests of the compiled code (tests/test_speedups.py: the signature and the walk; and
# tests/test_encoder.py, tests/test_reuse.py, whose encoders use the compiled walk;
# tests/test_eventscan.py: the reader's event scanner) against timelapse._speedups and
# timelapse._eventscan built with AddressSanitizer (and UndefinedBehaviorSanitizer), then against
# the normal build under `python -X dev` (the debug allocator hooks catch a write past a PyMem
# buffer, faulthandler shows where a crash was).
#
#   benchmarks/sanitize.sh [PYTHON ...]      (default: python3; e.g. /work/venv3.12/bin/python)
#
# Each PYTHON needs the test requirements installed (pip install -e '.[test]').  The ASan build
# goes to a temporary copy of the package, put first on PYTHONPATH, so the checkout is untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- python3

asan=$(gcc -print-file-name=libasan.so)
[ -e "$asan" ] || { echo "sanitize: libasan not found (gcc -print-file-name=libasan.so: $asan)"; exit 1; }

tests="tests/test_speedups.py tests/test_encoder.py tests/test_reuse.py tests/test_eventscan.py"
status=0
for python in "$@"; do
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  version=$("$python" -c 'import sys; print(sys.version.split()[0])')
  include=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  suffix=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
  mkdir -p "$work/timelapse"
  cp src/timelapse/*.py "$work/timelapse/"
  gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
      -fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter -Werror \
      -I"$include" src/timelapse/_speedups.c -o "$work/timelapse/_speedups$suffix"
  gcc -shared -fPIC -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
      -fno-sanitize-recover=undefined -Wall -Wextra -Wno-unused-parameter -Werror \
      -I"$include" src/timelapse/_eventscan.c -o "$work/timelapse/_eventscan$suffix"

  echo "=== sanitize: Python $version, AddressSanitizer + UBSan build"
  # PYTHONMALLOC=malloc: the words buffer and the rest go through malloc, where ASan sees them
  # (pymalloc would hide an overrun inside its arenas).  detect_leaks=0: CPython itself does
  # not free everything at exit.
  if ! env PYTHONPATH="$work" PYTHONMALLOC=malloc LD_PRELOAD="$asan" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$python" -c "import timelapse._speedups as m, timelapse._eventscan as e, timelapse.snapshot as s, sys; \
assert m.__file__.startswith('$work') and e.__file__.startswith('$work'), (m.__file__, e.__file__); \
print('sanitize: using', m.__file__, e.__file__, s.IMPLEMENTATION)"; then
    status=1
  elif ! env PYTHONPATH="$work" PYTHONMALLOC=malloc LD_PRELOAD="$asan" \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$python" -m pytest -q -p no:cacheprovider $tests; then
    status=1
  fi

  echo "=== sanitize: Python $version, normal build, python -X dev -X faulthandler"
  "$python" -c "import timelapse._speedups" 2>/dev/null \
    || { echo "sanitize: timelapse._speedups is not built for $python (pip install -e .)"; status=1; }
  "$python" -X dev -X faulthandler -m pytest -q -p no:cacheprovider -W error $tests \
    || status=1
  rm -rf "$work"
  trap - EXIT
done
[ $status -eq 0 ] && echo "sanitize: all clean" || echo "sanitize: FAILED"
exit $status
