"""A torch MLP on scikit-learn's bundled digits data, recorded with flordb.

    python train.py --kwargs lr=0.05 epochs=6
"""
import torch
from sklearn.datasets import load_digits
from torch import nn

import flordb as flor

torch.manual_seed(0)
digits = load_digits()
X = torch.tensor(digits.data, dtype=torch.float32) / 16.0
y = torch.tensor(digits.target)
train_X, val_X = X[:1400], X[1400:]
train_y, val_y = y[:1400], y[1400:]
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(train_X, train_y), batch_size=64, shuffle=True
)

lr = flor.arg("lr", 0.05)
epochs = flor.arg("epochs", 6)
hidden = flor.arg("hidden", 64)

model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()

with flor.checkpointing(model=model, optimizer=optimizer):
    for epoch in flor.loop("epoch", range(epochs)):
        for xb, yb in flor.loop("step", loader):
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
        with torch.no_grad():
            acc = (model(val_X).argmax(dim=1) == val_y).float().mean().item()
        flor.log("val_acc", acc)
