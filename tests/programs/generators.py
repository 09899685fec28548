def countdown(n):
    while n > 0:
        yield n
        n -= 1


def echo():
    received = None
    while True:
        received = yield received


values = list(countdown(3))
e = echo()
next(e)
e.send("ping")
e.close()
print(values)
