import helper_sibling

print(helper_sibling.double(21))
