import sys

from pkg import work

print("pkg main", sys.argv[1:], work.square(6))
