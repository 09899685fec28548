"""Count how often the uncaught exception's __str__ / __notes__ (argv[1] "raise") or a SystemExit
subclass's code property (argv[1] "exit") run; print the counts at exit."""
import atexit, sys
counts = {"str": 0, "notes": 0, "code": 0}
atexit.register(lambda: print(counts, flush=True))
class Loud(Exception):
    def __str__(self):
        counts["str"] += 1
        return "loud"
    @property
    def __notes__(self):
        counts["notes"] += 1
        return ["a note"]
class Leave(SystemExit):
    @property
    def code(self):
        counts["code"] += 1
        return 4
if sys.argv[1] == "raise":
    raise Loud()
raise Leave()
