a = base + 1
b = a * 2


def twice():
    return base * 2
