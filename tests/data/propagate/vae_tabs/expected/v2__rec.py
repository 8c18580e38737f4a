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


data = torch.rand(1000, 784)
beta = flor.arg("beta", 1.0)
vae = VAE()
opt = torch.optim.Adam(vae.parameters(), lr=flor.arg("lr", 1e-3))

for epoch in flor.loop("epoch", range(flor.arg("epochs", 10))):
	for x in flor.loop("step", data.split(100)):
		recon, mu, logvar = vae(x)
		loss, rec, kl = vae_loss(recon, x, mu, logvar, beta)
		opt.zero_grad()
		loss.backward()
		flor.log("rec", rec.item())
		opt.step()
	flor.log("loss", loss.item())
