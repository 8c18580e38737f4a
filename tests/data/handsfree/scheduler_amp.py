"""A timm-style script: train_one_epoch(), cosine LR schedule, GradScaler, logging."""
from __future__ import annotations

import argparse
import logging
import sys

import torch
from torch import nn

_logger = logging.getLogger("train")


def train_one_epoch(epoch, model, loader, optimizer, loss_fn, scaler):
    model.train()
    total = 0.0
    for step, (inputs, targets) in enumerate(loader):
        with torch.autocast("cpu", enabled=False):
            loss = loss_fn(model(inputs), targets)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item()
        if step % 2 == 0:
            _logger.info("Train: %d [%d/%d] loss %r", epoch, step, len(loader), loss.item())
    return total / len(loader)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--name", default="cosine")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    torch.manual_seed(0)
    data = [(torch.randn(8, 4), torch.randn(8, 2)) for _ in range(4)]
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    loss_fn = nn.MSELoss()

    start_epoch = 0
    for epoch in range(start_epoch, args.epochs):
        train_loss = train_one_epoch(epoch, model, data, optimizer, loss_fn, scaler)
        scheduler.step()
        print(f"epoch {epoch} train_loss {train_loss!r} lr {scheduler.get_last_lr()[0]!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
