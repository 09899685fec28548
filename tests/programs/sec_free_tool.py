"""The program frees every sys.monitoring tool id it finds in use (issue 9, item 20)."""
import sys

freed = 0
for tool_id in range(6):
    if sys.monitoring.get_tool(tool_id) is not None:
        sys.monitoring.free_tool_id(tool_id)
        freed += 1
x = 1
print("went on", x)
