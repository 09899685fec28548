"""Huge values held across many steps: the trace must stay small."""
big_list = list(range(200_000))
big_text = "x" * 1_000_000
total = 0
for i in range(300):
    total += big_list[i]
print(total, len(big_text))
