"""A small CNN on scikit-learn's 8x8 digits, with a cosine learning-rate schedule,
recorded with flordb. One run per learning rate of a sweep:

    python train.py --kwargs lr=0.03 epochs=6
"""
import torch
from sklearn.datasets import load_digits
from torch import nn

import flordb as flor

torch.manual_seed(0)
digits = load_digits()
X = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0  # (N, 1, 8, 8)
y = torch.tensor(digits.target)
train_X, val_X = X[:1400], X[1400:]
train_y, val_y = y[:1400], y[1400:]
loader = torch.utils.data.DataLoader(
    torch.utils.data.TensorDataset(train_X, train_y), batch_size=50, shuffle=True
)

lr = flor.arg("lr", 0.03)
epochs = flor.arg("epochs", 6)
channels = flor.arg("channels", 8)

model = nn.Sequential(
    nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),            # 4x4
    nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 2x2
    nn.Flatten(), nn.Linear(2 * channels * 4, 10),
)
optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
loss_fn = nn.CrossEntropyLoss()

with flor.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler):
    for epoch in flor.loop("epoch", range(epochs)):
        model.train()
        for xb, yb in flor.loop("step", loader):
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            flor.log("loss", loss.item())
        scheduler.step()
        model.eval()
        with torch.no_grad():
            acc = (model(val_X).argmax(dim=1) == val_y).float().mean().item()
        flor.log("val_acc", acc)
