def migrate():
    step = "add orders"
    return step
