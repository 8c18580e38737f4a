"""Trains until a step budget is used up, with `while True`."""
import random

random.seed(0)
w, step = 0.0, 0
while True:
    x = random.random()
    grad = 2 * (w * x - 3 * x) * x
    w -= 0.5 * grad
    step += 1
    if step % 100 == 0:
        print(step, w)
    if step >= 300:
        break
