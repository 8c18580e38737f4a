"""A Trainer class whose fit() method drives training."""
import torch


class Trainer:
    def __init__(self, epochs):
        torch.manual_seed(0)
        self.epochs = epochs
        self.model = torch.nn.Linear(2, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05)
        self.data = [(torch.randn(4, 2), torch.randn(4, 1)) for _ in range(3)]

    def train_epoch(self):
        for x, y in self.data:
            self.optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(self.model(x), y)
            loss.backward()
            self.optimizer.step()
        return loss.item()

    def fit(self):
        for epoch in range(self.epochs):
            print("epoch", epoch, self.train_epoch())


if __name__ == "__main__":
    Trainer(epochs=2).fit()
