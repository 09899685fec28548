"""locals() and exec() in a function (issue 9, item 17)."""


def f():
    l = locals()
    exec("x = 5", globals(), l)
    print(l["x"])
    if False:
        x = 0


def g(a):
    l = locals()
    a = 2
    print(sorted(l.items()))


f()
g(1)
