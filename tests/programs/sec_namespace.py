"""exec of a file's code in a dict-subclass namespace: its Python methods run only for the program."""
import os

calls = []


class Namespace(dict):
    def __contains__(self, key):
        calls.append("contains")
        return dict.__contains__(self, key)

    def __getitem__(self, key):
        calls.append("getitem")
        return dict.__getitem__(self, key)

    def items(self):
        calls.append("items")
        return dict.items(self)

    def get(self, key, default=None):
        calls.append("get")
        return dict.get(self, key, default)


path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sec_namespace_body.py")
with open(path) as f:
    code = compile(f.read(), path, "exec")
namespace = Namespace()
exec(code, Namespace(__builtins__=__builtins__, __name__="body", base=10), namespace)
print(sorted(namespace), calls)
calls.clear()
module_like = Namespace(__builtins__=__builtins__, __name__="body2", base=20)
exec(code, module_like)
print(module_like["twice"](), calls)
