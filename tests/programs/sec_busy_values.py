"""Busy with big locals, so that saving the trace takes a while (issue 9, item 6)."""
rows = [{"id": i, "name": f"row {i}", "tags": ["a", "b", "c"]} for i in range(100)]
print("ready", flush=True)
n = 0
while True:
    n += 1
    rows[n % 100]["id"] = n
