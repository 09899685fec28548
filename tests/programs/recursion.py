BASE = 2


def fib(n):
    if n < BASE:
        return n
    return fib(n - 1) + fib(n - 2)


print(fib(15))
