import sec_empty
print("imported")
