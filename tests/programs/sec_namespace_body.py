a = base + 1
b = a * 2
