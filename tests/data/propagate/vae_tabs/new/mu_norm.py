import torch
import torch.nn as nn
import torch.nn.functional as F
import flordb as flor


class VAE(nn.Module):
	def __init__(self, d=784, z=16):
		super().__init__()
		self.enc = nn.Linear(d, 2 * z)
		self.dec = nn.Linear(z, d)

	def forward(self, x):
		mu, logvar = self.enc(x).chunk(2, dim=-1)
		z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
		return self.dec(z), mu, logvar


def vae_loss(recon, x, mu, logvar, beta):
	"""Negative ELBO with a weighted KL term."""
	rec = F.binary_cross_entropy_with_logits(recon, x, reduction="sum")
	kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
	return rec + beta * kl, rec, kl


class Trainer:
	def __init__(self, model, lr, beta):
		self.model = model
		self.opt = torch.optim.Adam(model.parameters(), lr=lr)
		self.beta = beta

	def train_step(self, x):
		recon, mu, logvar = self.model(x)
		flor.log("mu_norm", mu.norm().item())
		loss, rec, kl = vae_loss(recon, x, mu, logvar, self.beta)
		self.opt.zero_grad()
		loss.backward()
		self.opt.step()
		return loss, rec, kl

	def fit(self, data, epochs):
		for epoch in flor.loop("epoch", range(epochs)):
			for x in flor.loop("step", data.split(100)):
				loss, rec, kl = self.train_step(x)
			flor.log("loss", loss.item())


if __name__ == "__main__":
	trainer = Trainer(VAE(), flor.arg("lr", 1e-3), flor.arg("beta", 1.0))
	with flor.checkpointing(model=trainer.model, opt=trainer.opt):
		trainer.fit(torch.rand(1000, 784), flor.arg("epochs", 10))
