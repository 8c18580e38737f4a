"""Linear regression with a training loop at module level."""
import logging

import torch

logging.basicConfig(level=logging.INFO)
log = logging.getLogger("train")

torch.manual_seed(0)
X = torch.randn(64, 3)
y = X @ torch.tensor([1.0, -2.0, 3.0]) + 0.1 * torch.randn(64)
batches = [(X[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]
squares = {i: i * i for i in range(4) for _ in range(2)}

model = torch.nn.Linear(3, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loss_fn = torch.nn.MSELoss()

print("training", len(batches), "batches")
for epoch in range(3):
    for step, (xb, yb) in enumerate(batches):
        optimizer.zero_grad()
        loss = loss_fn(model(xb).squeeze(-1), yb)
        loss.backward()
        optimizer.step()
        print(epoch, step, loss.item())
    log.info("epoch %d done", epoch)
print("weights", model.weight.tolist())
