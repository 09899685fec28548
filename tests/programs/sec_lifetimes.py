"""Objects die when the program drops them, recorded or not (issue 9, item 4)."""
import gc
import threading
import weakref

gc.disable()  # only reference counting decides here


class Noisy:
    def __init__(self, name):
        self.name = name

    def __del__(self):
        print("del", self.name)


class StartsThread:
    def __del__(self):
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        print("thread from __del__ joined")


class Plain:
    pass


def locals_die():
    x = Noisy("local")
    x = None
    print("after local")
    y = Plain()
    r = weakref.ref(y)
    del y
    print("weakref dead:", r() is None)


def exception_holds_nothing():
    obj = Plain()
    r = weakref.ref(obj)
    try:
        raise ValueError(obj)
    except ValueError:
        pass
    del obj
    print("exception's argument dead:", r() is None)


def shared_in_one_step():
    a = Noisy("shared")
    pair = [a, a]
    del a
    pair = None
    print("after shared")


locals_die()
exception_holds_nothing()
shared_in_one_step()
s = StartsThread()
s = None
print("after thread")
module_level = Noisy("module")
module_level = None
print("end")
