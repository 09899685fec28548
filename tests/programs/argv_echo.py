import sys

print("name:", __name__)
print("argv:", sys.argv)
print("path0:", sys.path[0])
print("main-file:", __file__)
