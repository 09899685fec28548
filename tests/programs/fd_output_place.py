import os, time

os.write(1, b"from fd\n")
time.sleep(0.5)
print("done")
